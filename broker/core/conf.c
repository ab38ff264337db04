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

static const struct cfg_key conf_keys[] = {
	{ "state", "engine", CFG_ENUM, S(state_engine), 0, 0, "sqlite", "sqlite|postgresql" },
	{ "state", "path", CFG_STR, S(state_path), 0, 0, "var/tsbroker.db", NULL },
	{ "state", "url", CFG_STR, S(state_url), 0, 0, NULL, NULL },
	{ "state", "event_retention_days", CFG_INT, I(event_retention_days), 1, 3650, "30", NULL },
	{ "state", "event_max", CFG_INT, I(event_max), 1000, 100000000, "1000000", NULL },
	{ "state", "commit_timeout", CFG_INT, I(commit_timeout), 1, 3600, "5", NULL },
	{ "history", "desk_keep_days", CFG_INT, I(desk_keep_days), 1, 3650, "30", NULL },
	{ "broker", "user", CFG_STR, S(run_user), 0, 0, NULL, NULL },
	{ "rdp", "listen", CFG_HOSTPORT, S(rdp.listen), 0, 0, "0.0.0.0:3389", NULL },
	{ "rdp", "mode", CFG_ENUM, S(rdp.mode), 0, 0, "address", "address|token" },
	{ "rdp", "engine", CFG_ENUM, S(rdp.engine), 0, 0, "lean", "lean|freerdp" },
	{ "rdp", "certificate", CFG_STR, S(rdp.certificate), 0, 0, "var/tsbroker.crt", NULL },
	{ "rdp", "private_key", CFG_STR, S(rdp.private_key), 0, 0, "var/tsbroker.key", NULL },
	{ "rdp", "handshake_timeout", CFG_INT, I(rdp.handshake_timeout), 1, 300, "10", NULL },
	{ "rdp", "max_handshakes", CFG_INT, I(rdp.max_handshakes), 1, 100000, "64", NULL },
	{ "rdp", "max_connections", CFG_INT, I(rdp.max_connections), 1, 1000000, "4096", NULL },
	{ "rdp", "max_handshakes_per_address", CFG_INT, I(rdp.max_handshakes_per_address), 0,
	    100000, "32", NULL },
	{ "rdp", "placements_per_address_minute", CFG_INT, I(rdp.placements_per_address_minute),
	    0, 1000000, "120", NULL },
	{ "rdp", "limits_exempt", CFG_STR, S(rdp.limits_exempt), 0, 0, "", NULL },
	{ "rdp", "tls_min_version", CFG_ENUM, S(rdp.tls_min_version), 0, 0, "1.2",
	    "1.0|1.1|1.2|1.3" },
	{ "rdp", "tls_ciphers", CFG_STR, S(rdp.tls_ciphers), 0, 0, LEAN_TLS_CIPHERS, NULL },
	{ "rdp", "tls_ciphersuites", CFG_STR, S(rdp.tls_ciphersuites), 0, 0,
	    LEAN_TLS_CIPHERSUITES, NULL },
	{ "rdp", "fronts", CFG_INT, I(rdp.fronts), -1, 64, "-1", NULL },
	{ "rdp", "front_user", CFG_STR, S(rdp.front_user), 0, 0, "", NULL },
	{ "rdp", "token_key", CFG_STR, S(token_key), 0, 0, "var/token.key", NULL },
	{ "rdp", "token_ttl", CFG_INT, I(token_ttl), 5, 3600, "60", NULL },
	{ "rdp", "trust_cookie", CFG_BOOL, I(rdp.trust_cookie), 0, 0, "no", NULL },
	{ "rdp", "splice_max", CFG_INT, I(splice_max), 1, 100000, "1024", NULL },
	{ "rdp", "splice_idle_timeout", CFG_INT, I(splice_idle_timeout), 1, 604800, "7200", NULL },
	{ "rdp", "splice_keepalive", CFG_INT, I(splice_keepalive), 0, 86400, "60", NULL },
	{ "rdp", "splice_user_timeout", CFG_INT, I(splice_user_timeout), 0, 86400, "120", NULL },
	{ "rdp", "connect_timeout", CFG_INT, I(connect_timeout), 1, 60, "3", NULL },
	{ "http", "listen", CFG_HOSTPORT, S(http_listen), 0, 0, "127.0.0.1:8443", NULL },
	{ "http", "certificate", CFG_STR, S(http_certificate), 0, 0, NULL, NULL },
	{ "http", "private_key", CFG_STR, S(http_private_key), 0, 0, NULL, NULL },
	{ "http", "tls_priority", CFG_STR, S(http_tls_priority), 0, 0, HTTP_TLS_PRIORITY, NULL },
	{ "http", "body_limit", CFG_INT, I(http_body_limit), 1024, 64 << 20, "1048576", NULL },
	{ "http", "max_connections", CFG_INT, I(http_max_connections), 1, 100000, "1024", NULL },
	{ "http", "web_root", CFG_STR, S(http_web_root), 0, 0, "web", NULL },
	{ "http", "admin_session_idle", CFG_INT, I(admin_session_idle), 1, 604800, "3600", NULL },
	{ "http", "admin_session_max", CFG_INT, I(admin_session_max), 1, 604800, "28800", NULL },
	{ "health", "heartbeat_interval", CFG_INT, I(heartbeat_interval), 1, 3600, "5", NULL },
	{ "health", "down_after", CFG_INT, I(down_after), 1, 86400, "15", NULL },
	{ "health", "quarantine_after", CFG_INT, I(quarantine_after), 1, 1000, "3", NULL },
	{ "health", "quarantine_time", CFG_INT, I(quarantine_time), 1, 86400, "300", NULL },
	{ "placement", "pending_ttl", CFG_INT, I(pending_ttl), 1, 86400, "120", NULL },
	{ "placement", "pending_penalty", CFG_INT, I(pending_penalty), 0, 100, "1", NULL },
	{ "placement", "max_sessions", CFG_INT, I(default_max_sessions), 1, 1000000, "100", NULL },
	{ "history", "period", CFG_INT, I(history_period), 1, 86400, "60", NULL },
	{ "history", "keep", CFG_INT, I(history_keep), 1, 3650, "14", NULL },
	CFG_END
};

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
	fputs("# tsbroker configuration: every key with its default "
	    "(README \"Configuration\")\n", out);
	return cfg_print_defaults(conf_keys, out);
}

const char *
conf_state_location(const struct conf *c)
{
	return strcmp(c->state_engine, "postgresql") == 0 ? c->state_url : c->state_path;
}
