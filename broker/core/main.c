/* tsbroker: argv, config, start and stop of the parts, signals. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/http/api_admin.h"
#include "broker/common/wire.h"
#include "broker/http/api_agent.h"
#include "broker/http/metrics.h"
#include "broker/core/broker.h"
#include "broker/core/metrics.h"
#include "broker/core/cli.h"
#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/core/conf.h"
#include "broker/core/crypto.h"
#include "broker/core/keys.h"
#include "broker/state/health.h"
#include "broker/http/http.h"
#include "broker/core/privdrop.h"
#include "broker/core/reload.h"
#include "broker/front/frontproc.h"
#include "broker/front/pem_cache.h"
#include "broker/front/rdp.h"
#include "broker/state/store.h"

static void
usage(void)
{
	fprintf(stderr, "usage: tsbroker [-f FILE] [-t] [-v] [COMMAND ...] | -D | -V\n"
	    "  -f FILE  configuration file (default var/tsbroker.conf)\n"
	    "  -t       check the configuration and exit 0 (valid) or 1\n"
	    "  -v       verbose (debug) log\n"
	    "  -D       print a default configuration and exit\n"
	    "  -V       print the version and exit\n"
	    "Commands: server add|list|drain|enable|remove, session list|forget, "
	    "admin password, admin token add|list|remove, admin token-key record\n");
}

/* Creates the certificate and key on first start. 0 or -1 (logged). */
static int
ensure_certificate(const char *cert, const char *key)
{
	char err[256], host[256] = "localhost";

	if (access(cert, F_OK) == 0 || access(key, F_OK) == 0)
		return 0;
	(void)gethostname(host, sizeof(host));
	host[sizeof(host) - 1] = '\0';
	if (crypto_selfsigned_create(cert, key, host, err, sizeof(err)) != 0) {
		log_error("cannot create a self-signed certificate: %s", err);
		return -1;
	}
	log_info("created a self-signed certificate %s for %s (key %s)", cert, host, key);
	return 0;
}

/* Sets a generated first admin password if none exists; prints it once. */
static int
ensure_admin(struct store *st)
{
	char hash[CRYPTO_PWHASH_MAX], pw[21];
	int r;

	if ((r = store_admin_password_get(st, hash, sizeof(hash))) != STORE_NOT_FOUND)
		return r;
	if (crypto_password_generate(pw, sizeof(pw)) != 0 ||
	    crypto_password_hash(pw, hash, sizeof(hash)) != 0) {
		log_error("cannot make the first admin password");
		return -1;
	}
	if ((r = store_admin_password_set(st, hash, util_now_ms())) == 0)
		printf("First admin password (shown once, stored hashed; change it with "
		    "'tsbroker admin password'): %s\n", pw);
	crypto_wipe(pw, sizeof(pw));
	return r;
}

/* -t: the fingerprints by which brokers sharing a store compare their
 * certificate and routing-token key (docs/ha-keys.md). 0, or 1 if the
 * token key in use (token mode) cannot be read. */
static int
print_fingerprints(const struct conf *c)
{
	char fp[CRYPTO_CERT_FP], kfp[CRYPTO_HASH_HEX], err[512];
	int token = strcmp(c->rdp.mode, "token") == 0, r;

	if (access(c->rdp.certificate, F_OK) != 0)
		printf("RDP certificate: none yet (made at the first start): %s\n",
		    c->rdp.certificate);
	else if (crypto_cert_fingerprint(c->rdp.certificate, fp, err, sizeof(err)) == 0)
		printf("RDP certificate SHA-256 fingerprint: %s\n", fp);
	else
		printf("RDP certificate: %s\n", err);
	r = keys_token_fingerprint(c->token_key, 0, kfp, err, sizeof(err));
	if (r == 0)
		printf("routing-token key fingerprint: %s (%s)\n", kfp, c->token_key);
	else if (r == KEYS_NONE)
		printf("routing-token key: none yet (made at the first start in token "
		    "mode): %s\n", c->token_key);
	else
		printf("routing-token key: %s\n", err);
	return r == 0 || r == KEYS_NONE || !token ? 0 : 1;
}

/* Token mode: the routing-token key must be the one the brokers sharing the
 * store use; the first records it. 0 or -1 (logged). */
static int
check_token_key(const struct conf *c, struct store *st)
{
	char err[768];
	int first = 0;

	if (strcmp(c->rdp.mode, "token") != 0)
		return 0;
	if (keys_token_check(st, c->token_key, &first, err, sizeof(err)) != 0) {
		log_error("%s", err);
		return -1;
	}
	if (first)
		log_info("recorded the routing-token key's fingerprint in the store: the "
		    "brokers sharing it must use the same key (%s)", c->token_key);
	return 0;
}

/* The spliced-connections gauge of /metrics. */
static int
splices_active(const void *broker)
{
	return broker_splices_active(broker);
}

/* Raises the soft open-files limit to the hard one and warns if that is
 * short of what the limits in c may need: a descriptor per RDP connection
 * (max_connections), a few more per handshake (FreeRDP's event handles),
 * two per splice, one per HTTPS connection, and some spare. */
static void
nofile_raise(const struct conf *c)
{
	struct rlimit rl;
	unsigned long long need;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	need = (unsigned long long)c->rdp.max_connections +
	    8ULL * (unsigned long long)c->rdp.max_handshakes +
	    2ULL * (unsigned long long)c->splice_max +
	    (unsigned long long)c->http_max_connections + 64;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		log_warn("open files limit %llu is below the %llu that [rdp] max_connections, "
		    "max_handshakes, splice_max and [http] max_connections may need: raise it (ulimit -n, "
		    "systemd LimitNOFILE=) or lower them", (unsigned long long)rl.rlim_cur, need);
}

/* The HTTPS door refused a TLS hello: an event (http.c logs it). */
static void
https_tls_refused(void *ctx, const char *client, const char *offered)
{
	char detail[300];

	snprintf(detail, sizeof(detail), "HTTPS: TLS refused by the policy (tls_priority): "
	    "client offered %s", offered);
	(void)store_event_add(ctx, "tls_refused", "", "", client, detail, 0);
}

static int
serve(struct conf *c)
{
	struct store *st = NULL;
	struct http *http = NULL;
	struct rdp *rdp = NULL;
	struct health *health = NULL;
	struct api_agent agent = { 0 };
	struct api_admin admin = { 0 };
	struct broker broker = { 0 };
	struct metrics metrics = { 0 };		/* counters of the parts below */
	struct metrics_page mpage = { &metrics, NULL, splices_active, &broker, pem_cache_hits };
	struct reload rl = { c, NULL, NULL, NULL, &broker, &metrics.reloads };
	struct timespec tick = { 1, 0 };
	struct http_conf hc;
	struct privdrop pd;
	struct door_ops ops;
	sigset_t sigs;
	char err[512];
	int sig, ret = 1;

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);	/* threads inherit it */
	signal(SIGPIPE, SIG_IGN);
	nofile_raise(c);

	if (privdrop_prepare(&pd, c->run_user, c->state_path, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	if (ensure_certificate(c->rdp.certificate, c->rdp.private_key) != 0 ||
	    ensure_certificate(c->http_certificate, c->http_private_key) != 0)
		goto out;
	if ((st = store_open_engine(c->state_engine, conf_state_location(c), err,
	    sizeof(err))) == NULL ||
	    privdrop_own_state(&pd, c->state_path, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	store_commit_timeout(st, c->commit_timeout * 1000);
	if (ensure_admin(st) != 0 || check_token_key(c, st) != 0)
		goto out;

	agent.st = st;
	agent.c = c;
	agent.m = &metrics.heartbeats;
	mpage.st = st;
	reload_http_conf(&hc, c);
	hc.tls_refused = https_tls_refused;
	hc.tls_refused_ctx = st;
	if ((http = http_new(&hc, err, sizeof(err))) == NULL) {
		log_error("https: %s", err);
		goto out;
	}
	/* these leave err unset: they fail only on HTTP_MAX_ROUTES or a mutex */
	if (http_route(http, "POST", "/api/v1/heartbeat", api_agent_heartbeat, &agent) != 0 ||
	    api_admin_init(&admin, st, c, &metrics.logins) != 0 ||
	    api_admin_register(&admin, http) != 0 || metrics_register(&mpage, http) != 0) {
		log_error("https: cannot register the agent and admin API routes");
		goto out;
	}

	broker.st = st;
	broker.c = c;
	broker.metrics = &metrics.broker;
	if (broker_start(&broker, err, sizeof(err)) != 0) {
		log_error("rdp: %s", err);
		goto out;
	}
	broker_door_ops(&broker, &ops);
	/* the fronts are started (and restarted) as their own user */
	pd.keep_setid = c->rdp.fronts != 0 && strcmp(c->rdp.engine, "freerdp") != 0;
	if ((rdp = rdp_new(&c->rdp, &ops, &metrics.front_restarts, err, sizeof(err))) == NULL) {
		log_error("rdp: %s", err);
		goto out;
	}
	/* ports bound, keys read: the rest runs as [broker] user, if set */
	if (privdrop_drop(&pd, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	if (http_static(http, c->http_web_root) != 0 ||
	    http_start(http, err, sizeof(err)) != 0) {
		log_error("https: %s", err);
		goto out;
	}
	if (rdp_start(rdp) != 0) {
		log_error("rdp: cannot start");
		goto out;
	}
	if ((health = health_start(st, c)) == NULL)
		goto out;

	printf("tsbroker ready\n  RDP endpoint:          %s (%s mode)\n"
	    "  Status page and API:   https://%s/\n  State:                 %s\n",
	    c->rdp.listen, c->rdp.mode, c->http_listen, c->state_path);
	fflush(stdout);
	log_info("serving; SIGHUP reloads the configuration, SIGINT or SIGTERM stops");
	rl.st = st;
	rl.rdp = rdp;
	rl.http = http;
	for (;;) {
		/* a second's tick: replaced HTTPS daemons stop once idle */
		if ((sig = sigtimedwait(&sigs, NULL, &tick)) < 0) {
			(void)http_reap(http);
			continue;
		}
		if (sig != SIGHUP)
			break;
		(void)reload_run(&rl);
	}
	log_info("signal %d: stopping", sig);
	ret = 0;
 out:
	health_stop(health);
	rdp_free(rdp);
	http_free(http);
	broker_stop(&broker);		/* after rdp (route) and http (/metrics) */
	api_admin_cleanup(&admin);
	store_close(st);
	return ret;
}

int
main(int argc, char **argv)
{
	const char *path = "var/tsbroker.conf";
	struct conf c;
	char err[512];
	int opt, check = 0, verbose = 0;

	/* a front process (front/fronts.h): started by this program, never by hand */
	if (argc == 2 && strcmp(argv[1], "--front") == 0)
		return frontproc_main();
	wire_init();
	/* A fixed threshold: a login's 16 MiB of scrypt is always mmap'd and
	 * given back. glibc's moving one would keep it in the arena of each
	 * HTTPS thread that ran a login (32 of them: ~550 MiB; make soak). */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	setvbuf(stdout, NULL, _IOLBF, 0);
	umask(077);	/* the database, keys and tokens are private */
	while ((opt = getopt(argc, argv, "+f:tvDVh")) != -1) {
		switch (opt) {
		case 'f': path = optarg; break;
		case 't': check = 1; break;
		case 'v': verbose = 1; break;
		case 'D': return conf_print_defaults(stdout) == 0 ? 0 : 1;
		case 'V': puts("tsbroker " TS_VERSION); return 0;
		default: usage(); return 2;
		}
	}
	log_init("tsbroker", verbose ? LOG_DEBUG : LOG_INFO);
	if (conf_load(&c, path, err, sizeof(err)) != 0) {
		fprintf(stderr, "tsbroker: %s\n", err);
		return 1;
	}
	if (check && reload_check(&c, err, sizeof(err)) != 0) {
		fprintf(stderr, "tsbroker: %s: %s\n", path, err);
		return 1;
	}
	if (check) {
		printf("%s: configuration ok\n", path);
		return print_fingerprints(&c);
	}
	if (optind < argc)
		return cli_run(&c, argc - optind, argv + optind);
	return serve(&c);
}
