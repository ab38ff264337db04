/* rdpprobe: a headless RDP client on libfreerdp-client2 for tests. It
 * connects with TLS (certificates ignored), lets FreeRDP follow a Server
 * Redirection PDU exactly as the stock client does (rdp_client_redirect,
 * driven from the connect loop), and prints one line at the end:
 *
 *   RESULT ok host=ADDR port=P redirected=0|1
 *   RESULT fail reason=NAME [errinfo=0xN]
 *
 *   rdpprobe --host H --port P --user U [--domain D] [--password X]
 *            [--load-balance-info S] [--sec tls|any|rdp] [--timeout S]
 *            [--hold S] [--source ADDR] [--verbose]
 *
 * --timeout bounds the connection (default 15 s); --hold S stays connected
 * S seconds, then disconnects (a drop while holding is "fail
 * reason=dropped"). A watchdog ends the process with "RESULT fail
 * reason=timeout" at timeout + hold + 5 s whatever FreeRDP is doing.
 * --source ADDR (IPv4) binds every connection FreeRDP opens to that local
 * address first (another "desk" on loopback, e.g. 127.0.0.5): this file
 * defines connect(), which FreeRDP's calls resolve to.
 * Exit status 0 for ok, 1 for fail, 2 for usage. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <freerdp/client.h>
#include <freerdp/error.h>
#include <freerdp/freerdp.h>
#include <freerdp/primitives.h>
#include <freerdp/settings.h>
#include <winpr/synch.h>
#include <winpr/wlog.h>

#include "broker/front/frpeer.h"

static pthread_mutex_t result_lock = PTHREAD_MUTEX_INITIALIZER;
static int result_done;
static int source_set;			/* --source given */
static struct in_addr source_addr;

/* Interposes libc's connect() for FreeRDP's sockets: with --source, an IPv4
 * socket is bound to that address (any port) before it connects. */
int
connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	static int (*real_connect)(int, const struct sockaddr *, socklen_t);
	struct sockaddr_in sin;

	if (real_connect == NULL &&
	    (real_connect = (int (*)(int, const struct sockaddr *, socklen_t))
	    dlsym(RTLD_NEXT, "connect")) == NULL) {
		errno = ENOSYS;
		return -1;
	}
	if (source_set && sa != NULL && sa->sa_family == AF_INET) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr = source_addr;
		if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 && errno != EINVAL)
			return -1;	/* EINVAL: already bound */
	}
	return real_connect(fd, sa, len);
}

/* Prints the one RESULT line (the first caller wins). */
static void
result_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
result_print(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&result_lock);
	if (!result_done) {
		result_done = 1;
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		putchar('\n');
		fflush(stdout);
	}
	pthread_mutex_unlock(&result_lock);
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *
watchdog_main(void *arg)
{
	int64_t ms = *(int64_t *)arg;
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	result_print("RESULT fail reason=timeout");
	_exit(1);
	return NULL;
}

static BOOL
probe_pre_connect(freerdp *instance)
{
	return TRUE;
}

static BOOL
probe_post_connect(freerdp *instance)
{
	return TRUE;
}

static void
probe_post_disconnect(freerdp *instance)
{
}

static BOOL
probe_client_new(freerdp *instance, rdpContext *context)
{
	instance->PreConnect = probe_pre_connect;
	instance->PostConnect = probe_post_connect;
	instance->PostDisconnect = probe_post_disconnect;
	return TRUE;
}

static void
probe_fail(rdpContext *ctx, const char *fallback)
{
	UINT32 err = freerdp_get_last_error(ctx);
	UINT32 info = freerdp_error_info(ctx->instance);
	const char *name;

	if (info != 0) {
		name = freerdp_get_error_info_name(info);
		result_print("RESULT fail reason=%s errinfo=0x%X", name ? name : "ERRINFO",
		    (unsigned)info);
	} else if (err != 0 && (name = freerdp_get_last_error_name(err)) != NULL)
		result_print("RESULT fail reason=%s", name);
	else
		result_print("RESULT fail reason=%s", fallback);
}

/* Keeps the connection up for ms; 0 if it stayed up. */
static int
probe_hold(rdpContext *ctx, int64_t ms)
{
	HANDLE handles[MAXIMUM_WAIT_OBJECTS];
	int64_t end = mono_ms() + ms, left;
	DWORD n;

	while ((left = end - mono_ms()) > 0) {
		if ((n = freerdp_get_event_handles(ctx, handles, MAXIMUM_WAIT_OBJECTS)) == 0)
			return -1;
		if (WaitForMultipleObjects(n, handles, FALSE, (DWORD)left) == WAIT_FAILED)
			return -1;
		if (!freerdp_check_event_handles(ctx) || freerdp_shall_disconnect(ctx->instance))
			return -1;
	}
	return 0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: rdpprobe --host H --port P --user U [--domain D] "
	    "[--password X] [--load-balance-info S] [--sec tls|any|rdp] "
	    "[--timeout S] [--hold S] [--source ADDR] [--verbose]\n");
	exit(2);
}

static int
parse_seconds(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 86400)
		return -1;
	*out = v;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'h' },
		{ "port", required_argument, NULL, 'p' },
		{ "user", required_argument, NULL, 'u' },
		{ "domain", required_argument, NULL, 'd' },
		{ "password", required_argument, NULL, 'w' },
		{ "load-balance-info", required_argument, NULL, 'b' },
		{ "sec", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "hold", required_argument, NULL, 'H' },
		{ "source", required_argument, NULL, 'S' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	const char *host = NULL, *user = NULL, *domain = NULL, *password = NULL;
	const char *lbinfo = NULL, *sec = "tls";
	double timeout = 15, hold = 0;
	RDP_CLIENT_ENTRY_POINTS ep;
	static int64_t watchdog_ms;
	rdpContext *ctx = NULL;
	rdpSettings *s;
	pthread_t wd;
	int c, port = 0, verbose = 0, rc = 1;
	char *end;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'h': host = optarg; break;
		case 'p':
			port = (int)strtol(optarg, &end, 10);
			if (*end != '\0' || port < 1 || port > 65535)
				usage();
			break;
		case 'u': user = optarg; break;
		case 'd': domain = optarg; break;
		case 'w': password = optarg; break;
		case 'b': lbinfo = optarg; break;
		case 's': sec = optarg; break;
		case 't': if (parse_seconds(optarg, &timeout) != 0) usage(); break;
		case 'H': if (parse_seconds(optarg, &hold) != 0) usage(); break;
		case 'S':
			if (inet_pton(AF_INET, optarg, &source_addr) != 1)
				usage();
			source_set = 1;
			break;
		case 'v': verbose = 1; break;
		default: usage();
		}
	}
	if (optind != argc || host == NULL || port == 0 || user == NULL || timeout <= 0 ||
	    (strcmp(sec, "tls") != 0 && strcmp(sec, "any") != 0 && strcmp(sec, "rdp") != 0))
		usage();
	signal(SIGPIPE, SIG_IGN);
	watchdog_ms = (int64_t)((timeout + hold + 5) * 1000);
	if (pthread_create(&wd, NULL, watchdog_main, &watchdog_ms) != 0) {
		result_print("RESULT fail reason=thread");
		return 1;
	}
	frpeer_wlog_setup(verbose ? WLOG_DEBUG : WLOG_FATAL);
	/* skip the per-process primitives benchmark (about 1 s here) */
	primitives_set_hints(PRIMITIVES_ONLY_CPU);

	memset(&ep, 0, sizeof(ep));
	ep.Size = sizeof(ep);
	ep.Version = RDP_CLIENT_INTERFACE_VERSION;
	ep.ContextSize = sizeof(rdpContext);
	ep.ClientNew = probe_client_new;
	if ((ctx = freerdp_client_context_new(&ep)) == NULL) {
		result_print("RESULT fail reason=context");
		return 1;
	}
	s = ctx->settings;
	if (!freerdp_settings_set_string(s, FreeRDP_ServerHostname, host) ||
	    !freerdp_settings_set_string(s, FreeRDP_Username, user) ||
	    (domain && !freerdp_settings_set_string(s, FreeRDP_Domain, domain)) ||
	    (password && !freerdp_settings_set_string(s, FreeRDP_Password, password))) {
		result_print("RESULT fail reason=settings");
		goto out;
	}
	s->ServerPort = (UINT32)port;
	s->IgnoreCertificate = TRUE;
	s->AutoLogonEnabled = password != NULL;
	s->TcpConnectTimeout = (UINT32)(timeout * 1000);
	s->TcpAckTimeout = (UINT32)(timeout * 1000);
	if (strcmp(sec, "tls") == 0) {
		s->RdpSecurity = FALSE;
		s->TlsSecurity = TRUE;
		s->NlaSecurity = FALSE;
	} else if (strcmp(sec, "rdp") == 0) {
		s->RdpSecurity = TRUE;
		s->TlsSecurity = FALSE;
		s->NlaSecurity = FALSE;
		s->UseRdpSecurityLayer = TRUE;
	}			/* any: FreeRDP's default offer (TLS + NLA) */
	s->ExtSecurity = FALSE;
	if (lbinfo != NULL) {
		size_t n = strlen(lbinfo);

		free(s->LoadBalanceInfo);
		if ((s->LoadBalanceInfo = (BYTE *)strdup(lbinfo)) == NULL) {
			result_print("RESULT fail reason=settings");
			goto out;
		}
		s->LoadBalanceInfoLength = (UINT32)n;
	}

	if (!freerdp_connect(ctx->instance)) {
		probe_fail(ctx, "connect");
		goto out;
	}
	if (hold > 0 && probe_hold(ctx, (int64_t)(hold * 1000)) != 0) {
		result_print("RESULT fail reason=dropped");
		freerdp_disconnect(ctx->instance);
		goto out;
	}
	result_print("RESULT ok host=%s port=%u redirected=%d", s->ServerHostname,
	    (unsigned)s->ServerPort, s->RedirectionFlags != 0);
	freerdp_disconnect(ctx->instance);
	rc = 0;
 out:
	freerdp_client_context_free(ctx);
	return rc;
}
