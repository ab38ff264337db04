/* splicebench: traffic through a TCP relay that routes on the X.224
 * Connection Request (the broker's token-mode splice, HAProxy's
 * `balance rdp-cookie`), or straight to the sink as the reference.
 *
 *   splicebench sink --listen HOST:PORT
 *   splicebench client --connect HOST:PORT --cookie LINE
 *               (--bytes N [--streams S] | --pingpong K [--size B] | --setup K)
 *
 * The client sends a Connection Request whose cookie/token line is LINE
 * (e.g. "Cookie: msts=tsb1...." or "Cookie: mstshash=alice"), then a
 * 9-byte command the sink reads after that request: 'T' + 64-bit length
 * (the sink reads that many bytes and answers one byte: bulk throughput,
 * S connections at once), or 'E' (the sink echoes: round trips of B bytes).
 * --setup K: K connections, each timed from connect() to its first echoed
 * byte (what routing the connection costs).
 * --hold K [--sources A,B,..] [--hold-secs T]: K connections opened one
 * after another (from the source addresses in turn) and kept open, each
 * checked by an echoed byte; the JSON is printed once all are held, then
 * they stay open T seconds (default 30) or until stdin closes, and each is
 * checked again before it is closed ("rechecked").
 * Prints one JSON object (--hold: one, then a second at the end). */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bench/benchutil.h"
#include "broker/common/net.h"

#define BUF	65536
#define LINE_MAX_LEN 256

static struct addrinfo *ai;
static char sources[1024];
static char line[LINE_MAX_LEN];
static uint64_t bytes_per_stream;

static int
write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int
read_all(int fd, void *p, size_t n)
{
	char *c = p;

	while (n > 0) {
		ssize_t r = recv(fd, c, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

static int
resolve(const char *hostport)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	char host[256], *colon;

	snprintf(host, sizeof(host), "%s", hostport);
	if ((colon = strrchr(host, ':')) == NULL)
		return -1;
	*colon = '\0';
	return getaddrinfo(host, colon + 1, &hints, &ai) == 0 ? 0 : -1;
}

/* ---- sink ---- */

static void *
sink_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	uint8_t hdr[4], cmd[9], *buf = malloc(BUF);
	size_t len;
	uint64_t n = 0;
	struct timeval tv = { 60, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (buf == NULL || read_all(fd, hdr, 4) != 0 || hdr[0] != 3)
		goto out;
	len = ((size_t)hdr[2] << 8 | hdr[3]);
	if (len < 4 || len > BUF || read_all(fd, buf, len - 4) != 0 || read_all(fd, cmd, 9) != 0)
		goto out;
	for (int i = 0; i < 8; i++)
		n = n << 8 | cmd[1 + i];
	if (cmd[0] == 'T') {
		while (n > 0) {
			ssize_t r = recv(fd, buf, n < BUF ? n : BUF, 0);
			if (r <= 0)
				goto out;
			n -= (uint64_t)r;
		}
		(void)write_all(fd, "k", 1);
	} else if (cmd[0] == 'E') {
		for (;;) {
			ssize_t r = recv(fd, buf, BUF, 0);
			if (r <= 0 || write_all(fd, buf, (size_t)r) != 0)
				break;
		}
	}
 out:
	free(buf);
	close(fd);
	return NULL;
}

static int
run_sink(const char *listen_at)
{
	char err[300];
	int lfd;

	if ((lfd = net_listen(err, sizeof(err), listen_at, 4096)) < 0 ||
	    net_set_nonblock(lfd, 0) != 0) {
		fprintf(stderr, "splicebench: %s\n", lfd < 0 ? err : strerror(errno));
		return 1;
	}
	printf("LISTENING %s\n", listen_at);
	fflush(stdout);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		pthread_attr_t a;
		pthread_t t;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return 1;
		}
		net_set_nodelay(fd);
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&a, 64 * 1024);	/* 10,000 held at once */
		if (pthread_create(&t, &a, sink_conn, (void *)(intptr_t)fd) != 0)
			close(fd);
		pthread_attr_destroy(&a);
	}
}

/* ---- client ---- */

/* Connects (from src when not NULL) and sends the Connection Request and
 * the command. -1 on failure. */
static int
open_stream_from(const char *src, char kind, uint64_t n)
{
	uint8_t b[512], cmd[9];
	size_t ll = strlen(line), li = 6 + ll + 2 + 8, tot = 5 + li;
	struct timeval tv = { 30, 0 };
	int fd, one = 1;

	if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (src != NULL) {
		struct sockaddr_in sa = { .sin_family = AF_INET };

		if (inet_pton(AF_INET, src, &sa.sin_addr) != 1 ||
		    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			close(fd);
			return -1;
		}
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		close(fd);
		return -1;
	}
	b[0] = 3; b[1] = 0; b[2] = (uint8_t)(tot >> 8); b[3] = (uint8_t)tot;
	b[4] = (uint8_t)li; b[5] = 0xe0; memset(b + 6, 0, 5);
	memcpy(b + 11, line, ll);
	memcpy(b + 11 + ll, "\r\n", 2);
	memcpy(b + 13 + ll, "\x01\x00\x08\x00\x03\x00\x00\x00", 8);	/* NEG_REQ TLS|HYBRID */
	cmd[0] = (uint8_t)kind;
	for (int i = 0; i < 8; i++)
		cmd[1 + i] = (uint8_t)(n >> (56 - 8 * i));
	if (write_all(fd, b, tot) != 0 || write_all(fd, cmd, 9) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
open_stream(char kind, uint64_t n)
{
	return open_stream_from(NULL, kind, n);
}

struct stream {
	pthread_t th;
	int ok;
};

static void *
bulk_main(void *arg)
{
	struct stream *s = arg;
	char *buf = calloc(1, BUF);
	uint64_t left = bytes_per_stream;
	int fd = open_stream('T', bytes_per_stream);
	char ack;

	if (fd >= 0 && buf != NULL) {
		while (left > 0) {
			size_t n = left < BUF ? (size_t)left : BUF;
			if (write_all(fd, buf, n) != 0)
				break;
			left -= n;
		}
		s->ok = left == 0 && read_all(fd, &ack, 1) == 0 && ack == 'k';
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

static int
run_bulk(int streams)
{
	struct stream *s = calloc((size_t)streams, sizeof(*s));
	int64_t t0 = bench_mono_us();
	int ok = 0;

	for (int i = 0; i < streams; i++)
		pthread_create(&s[i].th, NULL, bulk_main, &s[i]);
	for (int i = 0; i < streams; i++) {
		pthread_join(s[i].th, NULL);
		ok += s[i].ok;
	}
	double wall = (double)(bench_mono_us() - t0) / 1e6;
	printf("{\"streams\": %d, \"ok\": %d, \"bytes\": %llu, \"wall_s\": %.3f, "
	    "\"mb_per_s\": %.1f}\n", streams, ok,
	    (unsigned long long)(bytes_per_stream * (uint64_t)streams), wall,
	    ok == streams ? (double)bytes_per_stream * streams / wall / 1e6 : 0.0);
	free(s);
	return ok == streams ? 0 : 1;
}

static int
run_pingpong(long rounds, int size)
{
	struct lat_vec l = { 0 };
	char buf[BUF];
	int fd = open_stream('E', 0);

	if (fd < 0 || size < 1 || size > BUF)
		return 1;
	memset(buf, 'p', (size_t)size);
	for (long i = 0; i < rounds; i++) {
		int64_t t0 = bench_mono_ns();

		if (write_all(fd, buf, (size_t)size) != 0 ||
		    read_all(fd, buf, (size_t)size) != 0 || buf[0] != 'p')
			break;
		lat_push(&l, bench_mono_ns() - t0);
	}
	close(fd);
	lat_sort(&l);
	printf("{\"rounds\": %zu, \"size\": %d, \"p50_us\": %.1f, \"p99_us\": %.1f, "
	    "\"max_us\": %.1f}\n", l.n, size, lat_pct(&l, 50) / 1e3, lat_pct(&l, 99) / 1e3,
	    lat_pct(&l, 100) / 1e3);
	return l.n == (size_t)rounds ? 0 : 1;
}

static int
run_setup(long conns)
{
	struct lat_vec l = { 0 };
	long errors = 0;

	for (long i = 0; i < conns; i++) {
		int64_t t0 = bench_mono_ns();
		int fd = open_stream('E', 0);
		char c = 'x';

		if (fd < 0 || write_all(fd, &c, 1) != 0 || read_all(fd, &c, 1) != 0 || c != 'x')
			errors++;
		else
			lat_push(&l, bench_mono_ns() - t0);
		if (fd >= 0)
			close(fd);
	}
	lat_sort(&l);
	printf("{\"connections\": %zu, \"errors\": %ld, \"p50_us\": %.1f, \"p99_us\": %.1f}\n",
	    l.n, errors, lat_pct(&l, 50) / 1e3, lat_pct(&l, 99) / 1e3);
	return errors ? 1 : 0;
}

/* One echoed byte on fd: 0 or -1. */
static int
echo_byte(int fd)
{
	char c = 'h';

	return write_all(fd, &c, 1) == 0 && read_all(fd, &c, 1) == 0 && c == 'h' ? 0 : -1;
}

static int
run_hold(long conns, int secs)
{
	struct lat_vec l = { 0 };
	char *src[64], *save = NULL;
	int nsrc = 0, *fds = calloc((size_t)conns, sizeof(int));
	long held = 0, errors = 0, rechecked = 0;
	int64_t t0 = bench_mono_us();
	struct pollfd in = { 0, POLLIN, 0 };

	for (char *t = strtok_r(sources, ",", &save); t != NULL && nsrc < 64;
	    t = strtok_r(NULL, ",", &save))
		src[nsrc++] = t;
	for (long i = 0; fds != NULL && i < conns; i++) {
		int64_t c0 = bench_mono_ns();
		int fd = open_stream_from(nsrc ? src[i % nsrc] : NULL, 'E', 0);

		if (fd < 0 || echo_byte(fd) != 0) {
			if (fd >= 0)
				close(fd);
			errors++;
			continue;
		}
		lat_push(&l, bench_mono_ns() - c0);
		fds[held++] = fd;
	}
	lat_sort(&l);
	printf("{\"held\": %ld, \"errors\": %ld, \"open_s\": %.2f, \"setup_p50_us\": %.1f, "
	    "\"setup_p99_us\": %.1f}\n", held, errors, (double)(bench_mono_us() - t0) / 1e6,
	    lat_pct(&l, 50) / 1e3, lat_pct(&l, 99) / 1e3);
	fflush(stdout);
	(void)poll(&in, 1, secs * 1000);	/* stdin closed, or the time is up */
	for (long i = 0; i < held; i++) {
		rechecked += echo_byte(fds[i]) == 0;
		close(fds[i]);
	}
	printf("{\"held\": %ld, \"rechecked\": %ld}\n", held, rechecked);
	free(fds);
	return held == conns && rechecked == held ? 0 : 1;
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "listen", 1, NULL, 'l' }, { "connect", 1, NULL, 'c' }, { "cookie", 1, NULL, 'k' },
		{ "bytes", 1, NULL, 'b' }, { "streams", 1, NULL, 's' },
		{ "pingpong", 1, NULL, 'p' }, { "size", 1, NULL, 'z' }, { "setup", 1, NULL, 'S' },
		{ "hold", 1, NULL, 'H' }, { "sources", 1, NULL, 'A' }, { "hold-secs", 1, NULL, 'T' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen_at = NULL, *connect_to = NULL;
	long rounds = 0, setups = 0, holds = 0;
	int streams = 1, size = 64, ch, hold_secs = 30;

	if (argc < 2)
		goto usage;
	signal(SIGPIPE, SIG_IGN);
	optind = 2;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'l': listen_at = optarg; break;
		case 'c': connect_to = optarg; break;
		case 'k': snprintf(line, sizeof(line), "%s", optarg); break;
		case 'b': bytes_per_stream = strtoull(optarg, NULL, 10); break;
		case 's': streams = atoi(optarg); break;
		case 'p': rounds = atol(optarg); break;
		case 'z': size = atoi(optarg); break;
		case 'S': setups = atol(optarg); break;
		case 'H': holds = atol(optarg); break;
		case 'A': snprintf(sources, sizeof(sources), "%s", optarg); break;
		case 'T': hold_secs = atoi(optarg); break;
		default: goto usage;
		}
	}
	if (strcmp(argv[1], "sink") == 0 && listen_at != NULL)
		return run_sink(listen_at);
	if (strcmp(argv[1], "client") != 0 || connect_to == NULL || line[0] == '\0' ||
	    streams < 1 || streams > 256 || strlen(line) > 200 || resolve(connect_to) != 0)
		goto usage;
	if (bytes_per_stream > 0)
		return run_bulk(streams);
	if (rounds > 0)
		return run_pingpong(rounds, size);
	if (setups > 0)
		return run_setup(setups);
	if (holds > 0)
		return run_hold(holds, hold_secs);
 usage:
	fprintf(stderr, "usage: splicebench sink --listen HOST:PORT\n"
	    "       splicebench client --connect HOST:PORT --cookie LINE (--bytes N [--streams S]"
	    " | --pingpong K [--size B] | --setup K\n"
	    "       | --hold K [--sources A,B,..] [--hold-secs T])\n");
	return 2;
}
