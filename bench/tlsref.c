/* tlsref: the reference for the redirect benchmark. A bare OpenSSL accept
 * loop with the broker's certificate and key, OpenSSL's defaults (as FreeRDP
 * 2.11 uses them: TLS 1.2-1.3, session tickets on): each connection gets a
 * full TLS handshake and one byte, then the server waits for the client to
 * close. No RDP, no database: what a TLS terminator alone costs here.
 *
 *   tlsref --listen HOST:PORT --cert FILE --key FILE [--threads N]
 *
 * Prints "LISTENING HOST:PORT" when ready; SIGTERM/SIGINT stop it and it
 * prints "handshakes N failed M" on stderr. The key is parsed once (one
 * SSL_CTX), as a TLS server should. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "broker/common/net.h"

#define THREADS_MAX	256

static SSL_CTX *ctx;
static int lfd = -1;
static volatile sig_atomic_t stopping;
static long handshakes, failed;

static void
on_signal(int sig)
{
	stopping = 1;
	if (lfd >= 0)
		shutdown(lfd, SHUT_RDWR);	/* wakes accept() */
}

static void
serve(int fd)
{
	SSL *ssl;
	char b;

	net_set_timeouts(fd, 10000, 10000);
	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1 ||
	    SSL_accept(ssl) != 1 || SSL_write(ssl, "x", 1) != 1) {
		__atomic_add_fetch(&failed, 1, __ATOMIC_RELAXED);
		ERR_clear_error();
	} else {
		__atomic_add_fetch(&handshakes, 1, __ATOMIC_RELAXED);
		(void)SSL_read(ssl, &b, 1);	/* until the client closes */
		ERR_clear_error();
	}
	SSL_free(ssl);
	close(fd);
}

static void *
worker_main(void *arg)
{
	while (!stopping) {
		int fd = net_accept(lfd, NULL, 0);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		net_set_nodelay(fd);
		serve(fd);
	}
	return NULL;
}

static void
usage(void)
{
	fprintf(stderr, "usage: tlsref --listen HOST:PORT --cert FILE --key FILE "
	    "[--threads N]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "listen", 1, NULL, 'l' }, { "cert", 1, NULL, 'c' }, { "key", 1, NULL, 'k' },
		{ "threads", 1, NULL, 't' }, { NULL, 0, NULL, 0 },
	};
	const char *listen_at = NULL, *cert = NULL, *key = NULL;
	pthread_t th[THREADS_MAX];
	char err[300];
	int nthreads = 8, ch;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'l': listen_at = optarg; break;
		case 'c': cert = optarg; break;
		case 'k': key = optarg; break;
		case 't': nthreads = atoi(optarg); break;
		default: usage();
		}
	}
	if (listen_at == NULL || cert == NULL || key == NULL || nthreads < 1 ||
	    nthreads > THREADS_MAX)
		usage();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
	    SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		fprintf(stderr, "tlsref: certificate or key: ");
		ERR_print_errors_fp(stderr);
		return 1;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_SSLv3);
	if ((lfd = net_listen(err, sizeof(err), listen_at, 512)) < 0 ||
	    net_set_nonblock(lfd, 0) != 0) {
		fprintf(stderr, "tlsref: %s\n", lfd < 0 ? err : strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&th[i], NULL, worker_main, NULL) != 0) {
			fprintf(stderr, "tlsref: cannot start threads\n");
			return 1;
		}
	printf("LISTENING %s\n", listen_at);
	fflush(stdout);
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	fprintf(stderr, "handshakes %ld failed %ld\n", handshakes, failed);
	close(lfd);
	SSL_CTX_free(ctx);
	return 0;
}
