#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "broker/common/cfg.h"
#include "broker/common/util.h"
#include "broker/core/conf.h"
#include "broker/front/lean.h"
#include "broker/http/http.h"

#define S(f) offsetof(struct conf, f), sizeof(((struct conf *)0)->f)
#define I(f) offsetof(struct conf, f), 0

/* { section, name, type, field, min, max, default, choices, live?, description } */
static const struct cfg_key conf_keys[] = {
	{ "state", "engine", CFG_ENUM, S(state_engine), 0, 0, "sqlite", "sqlite|postgresql",
	    CFG_RESTART, "The state store's engine: sqlite (a local file, one broker) or "
	    "postgresql (several brokers sharing one database)." },
	{ "state", "path", CFG_STR, S(state_path), 0, 0, "var/tsbroker.db", NULL, CFG_RESTART,
	    "The SQLite database file (engine = sqlite)." },
	{ "state", "url", CFG_STR, S(state_url), 0, 0, NULL, NULL, CFG_RESTART,
	    "engine = postgresql: a libpq connection string or URI, required with that engine. "
	    "It may hold a password and is never printed." },
	{ "state", "event_retention_days", CFG_INT, I(event_retention_days), 1, 3650, "30", NULL,
	    CFG_LIVE, "Days events and ended sessions are kept; older ones are pruned." },
	{ "state", "event_max", CFG_INT, I(event_max), 1000, 100000000, "1000000", NULL, CFG_LIVE,
	    "At most this many events are kept; the oldest beyond it are pruned." },
	{ "state", "commit_timeout", CFG_INT, I(commit_timeout), 1, 3600, "5", NULL, CFG_LIVE,
	    "engine = postgresql: seconds a COMMIT may wait (for a synchronous standby) before "
	    "the broker cancels the wait; such a commit is treated as not durable." },
	{ "history", "desk_keep_days", CFG_INT, I(desk_keep_days), 1, 3650, "30", NULL, CFG_LIVE,
	    "Days each user's desk trail (personal data: where they logged on from) is kept; "
	    "older rows are deleted by the brokers' background work." },
	{ "broker", "user", CFG_STR, S(run_user), 0, 0, NULL, NULL, CFG_RESTART,
	    "When started as root: bind the ports and read the keys, then run as this user. "
	    "Empty: keep running as started." },
	{ "rdp", "listen", CFG_HOSTPORT, S(rdp.listen), 0, 0, "0.0.0.0:3389", NULL, CFG_RESTART,
	    "The RDP endpoint thin clients connect to, host:port." },
	{ "rdp", "mode", CFG_ENUM, S(rdp.mode), 0, 0, "address", "address|token", CFG_RESTART,
	    "address: redirect clients to the chosen server's address; token: redirect them "
	    "back to the broker with a routing token and splice them to the server." },
	{ "rdp", "engine", CFG_ENUM, S(rdp.engine), 0, 0, "lean", "lean|freerdp", CFG_RESTART,
	    "lean: the broker's own RDP connection sequence up to the redirect; freerdp: "
	    "FreeRDP's server peer (about 80 times the memory per handshake)." },
	{ "rdp", "certificate", CFG_STR, S(rdp.certificate), 0, 0, "var/tsbroker.crt", NULL,
	    CFG_LIVE, "PEM certificate of the RDP endpoint (and of HTTPS unless [http] names "
	    "its own). A self-signed pair is created on first start if both files are missing." },
	{ "rdp", "private_key", CFG_STR, S(rdp.private_key), 0, 0, "var/tsbroker.key", NULL,
	    CFG_LIVE, "PEM private key of the RDP certificate." },
	{ "rdp", "handshake_timeout", CFG_INT, I(rdp.handshake_timeout), 1, 300, "10", NULL,
	    CFG_LIVE, "Seconds a client has to send its Connection Request (and get a handshake "
	    "slot), and again to reach the redirect." },
	{ "rdp", "max_handshakes", CFG_INT, I(rdp.max_handshakes), 1, 100000, "64", NULL, CFG_LIVE,
	    "Connections handled at once (the lean engine: about 20 KB each, no thread of its "
	    "own; freerdp: a worker thread, 2.8 MB); more wait for a slot up to handshake_timeout." },
	{ "rdp", "max_connections", CFG_INT, I(rdp.max_connections), 1, 1000000, "4096", NULL,
	    CFG_LIVE, "Connections open at once, waiting for their Connection Request or in a "
	    "handshake; more are closed at accept. The open-files limit must fit it." },
	{ "rdp", "max_handshakes_per_address", CFG_INT, I(rdp.max_handshakes_per_address), 0,
	    100000, "32", NULL, CFG_LIVE, "Connections open at once from one client address "
	    "(from accept to the end of the handshake), per broker; more are closed at accept. "
	    "0: no limit." },
	{ "rdp", "placements_per_address_minute", CFG_INT, I(rdp.placements_per_address_minute),
	    0, 1000000, "120", NULL, CFG_LIVE, "New placements in a sliding minute for one client "
	    "address, per broker; more logons from it are refused while it is over. 0: no limit." },
	{ "rdp", "limits_exempt", CFG_STR, S(rdp.limits_exempt), 0, 0, "", NULL, CFG_LIVE,
	    "Networks the two per-address limits never apply to, separated by spaces, e.g. "
	    "10.0.0.0/8 192.168.7.1 fd00::/8 (an office NAT)." },
	{ "rdp", "tls_min_version", CFG_ENUM, S(rdp.tls_min_version), 0, 0, "1.2",
	    "1.0|1.1|1.2|1.3", CFG_LIVE, "The lowest TLS version the RDP endpoint accepts." },
	{ "rdp", "tls_ciphers", CFG_STR, S(rdp.tls_ciphers), 0, 0, LEAN_TLS_CIPHERS, NULL,
	    CFG_LIVE, "TLS 1.2 cipher suites of the RDP endpoint, an OpenSSL cipher list "
	    "(openssl ciphers -v LIST shows what it means)." },
	{ "rdp", "tls_ciphersuites", CFG_STR, S(rdp.tls_ciphersuites), 0, 0,
	    LEAN_TLS_CIPHERSUITES, NULL, CFG_LIVE, "TLS 1.3 cipher suites of the RDP endpoint "
	    "(OpenSSL ciphersuites; the lean engine only)." },
	{ "rdp", "fronts", CFG_INT, I(rdp.fronts), -1, 64, "-1", NULL, CFG_RESTART,
	    "Unprivileged front processes running the lean engine's handshakes (docs/security.md): "
	    "-1: one per CPU; 0: handshakes in the core process (for debugging)." },
	{ "rdp", "front_user", CFG_STR, S(rdp.front_user), 0, 0, "", NULL, CFG_RESTART,
	    "The user the front processes run as. Empty: tsbroker-front, or nobody (with a "
	    "warning) where that user does not exist; root is refused." },
	{ "rdp", "token_key", CFG_STR, S(token_key), 0, 0, "var/token.key", NULL, CFG_RESTART,
	    "Routing-token key file (32 bytes, mode 0600), created on first start in token mode. "
	    "Every broker sharing a database must have the same key." },
	{ "rdp", "token_ttl", CFG_INT, I(token_ttl), 5, 3600, "60", NULL, CFG_LIVE,
	    "Seconds a routing token stays valid after it is issued." },
	{ "rdp", "trust_cookie", CFG_BOOL, I(rdp.trust_cookie), 0, 0, "no", NULL, CFG_LIVE,
	    "Splice a client sending Cookie: mstshash=USER straight to USER's live session "
	    "(a hint, not an authentication), in either mode." },
	{ "rdp", "splice_max", CFG_INT, I(splice_max), 1, 100000, "10000", NULL, CFG_LIVE,
	    "Spliced connections at once (two descriptors each, two more per direction while "
	    "bulk moves through a pipe); more are closed." },
	{ "rdp", "splice_idle_timeout", CFG_INT, I(splice_idle_timeout), 1, 604800, "7200", NULL,
	    CFG_LIVE, "Seconds a spliced connection may make no progress either way before the "
	    "broker closes it." },
	{ "rdp", "splice_keepalive", CFG_INT, I(splice_keepalive), 0, 86400, "60", NULL, CFG_LIVE,
	    "TCP keepalive on both legs of a splice: seconds of silence before the first probe "
	    "(then every quarter of it). 0: off." },
	{ "rdp", "splice_user_timeout", CFG_INT, I(splice_user_timeout), 0, 86400, "120", NULL,
	    CFG_LIVE, "TCP_USER_TIMEOUT on both legs of a splice: seconds sent data or probes may "
	    "go unacknowledged before the leg is dropped. 0: off." },
	{ "rdp", "connect_timeout", CFG_INT, I(connect_timeout), 1, 60, "3", NULL, CFG_LIVE,
	    "Seconds the broker waits to connect to a terminal server when splicing." },
	{ "http", "listen", CFG_HOSTPORT, S(http_listen), 0, 0, "127.0.0.1:8443", NULL,
	    CFG_RESTART, "The HTTPS endpoint, host:port: agent API, admin API and status page. "
	    "Agents must reach it." },
	{ "http", "certificate", CFG_STR, S(http_certificate), 0, 0, NULL, NULL, CFG_LIVE,
	    "PEM certificate of the HTTPS endpoint. Empty: [rdp] certificate." },
	{ "http", "private_key", CFG_STR, S(http_private_key), 0, 0, NULL, NULL, CFG_LIVE,
	    "PEM private key of the HTTPS certificate. Empty: [rdp] private_key." },
	{ "http", "tls_priority", CFG_STR, S(http_tls_priority), 0, 0, HTTP_TLS_PRIORITY, NULL,
	    CFG_LIVE, "TLS policy of the HTTPS endpoint, a GnuTLS priority string "
	    "(gnutls-cli --priority STRING -l shows what it means)." },
	{ "http", "body_limit", CFG_INT, I(http_body_limit), 1024, 64 << 20, "1048576", NULL,
	    CFG_LIVE, "Largest request body in bytes; larger requests get HTTP 413." },
	{ "http", "max_connections", CFG_INT, I(http_max_connections), 1, 100000, "1024", NULL,
	    CFG_LIVE, "HTTPS connections open at once." },
	{ "http", "web_root", CFG_STR, S(http_web_root), 0, 0, "web", NULL, CFG_LIVE,
	    "Directory of the status page's files." },
	{ "http", "admin_session_idle", CFG_INT, I(admin_session_idle), 1, 604800, "3600", NULL,
	    CFG_LIVE, "Seconds an admin's browser login lasts unused." },
	{ "http", "admin_session_max", CFG_INT, I(admin_session_max), 1, 604800, "28800", NULL,
	    CFG_LIVE, "Seconds an admin's browser login lasts at most." },
	{ "health", "heartbeat_interval", CFG_INT, I(heartbeat_interval), 1, 3600, "5", NULL,
	    CFG_LIVE, "Seconds between heartbeats, told to the agents in every answer." },
	{ "health", "down_after", CFG_INT, I(down_after), 1, 86400, "15", NULL, CFG_LIVE,
	    "Seconds without a heartbeat before a server is down; must exceed "
	    "heartbeat_interval." },
	{ "health", "quarantine_after", CFG_INT, I(quarantine_after), 1, 1000, "3", NULL, CFG_LIVE,
	    "Placements in a row a server leaves unconfirmed before it is quarantined as a "
	    "black hole." },
	{ "health", "quarantine_time", CFG_INT, I(quarantine_time), 1, 86400, "300", NULL,
	    CFG_LIVE, "Seconds a quarantined server gets no new users." },
	{ "placement", "pending_ttl", CFG_INT, I(pending_ttl), 1, 86400, "120", NULL, CFG_LIVE,
	    "Seconds a placement waits for the server's agent to confirm the session." },
	{ "placement", "pending_penalty", CFG_INT, I(pending_penalty), 0, 100, "1", NULL,
	    CFG_LIVE, "Weight of a pending placement in a server's load." },
	{ "placement", "max_sessions", CFG_INT, I(default_max_sessions), 1, 1000000, "100", NULL,
	    CFG_LIVE, "Session limit of a server added without --max-sessions." },
	{ "history", "period", CFG_INT, I(history_period), 1, 86400, "60", NULL, CFG_LIVE,
	    "Seconds between samples of the farm's history." },
	{ "history", "keep", CFG_INT, I(history_keep), 1, 3650, "14", NULL, CFG_LIVE,
	    "Days of history kept; samples older than a day are merged into 15-minute ones." },
	CFG_END
};

const struct cfg_key *
conf_keys_table(void)
{
	return conf_keys;
}

static void
conf_finish(struct conf *c)
{
	/* the HTTPS listener shares the RDP certificate unless told otherwise */
	if (c->http_certificate[0] == '\0')
		memcpy(c->http_certificate, c->rdp.certificate, sizeof(c->http_certificate));
	if (c->http_private_key[0] == '\0')
		memcpy(c->http_private_key, c->rdp.private_key, sizeof(c->http_private_key));
}

void
conf_defaults(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	cfg_defaults(conf_keys, c);
	conf_finish(c);
}

/* Loads the file at path, or text as if it were that file when not NULL. */
static int
conf_parse(struct conf *c, const char *path, const char *text, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	if ((text ? cfg_load_string(conf_keys, c, path, text, err, errlen) :
	    cfg_load(conf_keys, c, path, err, errlen)) != 0)
		return -1;
	if (c->down_after <= c->heartbeat_interval) {
		snprintf(err, errlen, "%s: 'down_after' (%d) must exceed "
		    "'heartbeat_interval' (%d)", path, c->down_after,
		    c->heartbeat_interval);
		return -1;
	}
	if (strcmp(c->state_engine, "postgresql") == 0 && c->state_url[0] == '\0') {
		snprintf(err, errlen, "%s: [state] engine = postgresql needs 'url'", path);
		return -1;
	}
	util_strlcpy(c->path, path, sizeof(c->path));
	conf_finish(c);
	return 0;
}

int
conf_load(struct conf *c, const char *path, char *err, size_t errlen)
{
	return conf_parse(c, path, NULL, err, errlen);
}

int
conf_load_string(struct conf *c, const char *path, const char *text, char *err,
    size_t errlen)
{
	return conf_parse(c, path, text, err, errlen);
}

int
conf_print_defaults(FILE *out)
{
	fputs("# tsbroker configuration: every key with its default (tsbroker.conf(5), docs/configuration.md).\n"
	    "# (live): re-read on SIGHUP; (restart): takes effect at the next start.\n", out);
	return cfg_print_defaults(conf_keys, out);
}

int
conf_diff(const struct conf *a, const struct conf *b, cfg_diff_fn fn, void *ctx)
{
	return cfg_diff(conf_keys, a, b, fn, ctx);
}

/* conf_take_live against conf_each's readers */
static pthread_mutex_t conf_lock = PTHREAD_MUTEX_INITIALIZER;

void
conf_take_live(struct conf *c, const struct conf *next)
{
	pthread_mutex_lock(&conf_lock);
	cfg_take_live(conf_keys, c, next);
	pthread_mutex_unlock(&conf_lock);
}

void
conf_each(const struct conf *c, conf_each_fn fn, void *ctx)
{
	char value[1024];

	pthread_mutex_lock(&conf_lock);
	for (const struct cfg_key *k = conf_keys; k->name != NULL; k++) {
		int secret = k->offset == offsetof(struct conf, state_url);

		cfg_format(k, c, value, sizeof(value));
		fn(ctx, k->section, k->name, secret ? NULL : value, cfg_live(k));
	}
	pthread_mutex_unlock(&conf_lock);
}

const char *
conf_state_location(const struct conf *c)
{
	return strcmp(c->state_engine, "postgresql") == 0 ? c->state_url : c->state_path;
}
