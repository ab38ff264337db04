/* conf: the broker's configuration file (see docs/configuration.md). */
#ifndef TS_CONF_H
#define TS_CONF_H

#include <stddef.h>
#include <stdio.h>

#include "broker/common/cfg.h"
#include "broker/front/rdp.h"

struct conf {
	char path[512];			/* the file it was read from */
	char state_engine[16];		/* [state] engine: the store's (store.h) */
	char state_path[512];		/* [state] path */
	char state_url[1024];		/* [state] url: libpq conninfo (postgresql);
					 * may hold a password: never printed */
	char run_user[64];		/* [broker] user: run as this user ("" = as started) */
	int event_retention_days;	/* [state] event_retention_days */
	int event_max;			/* [state] event_max */
	int commit_timeout;		/* [state] commit_timeout: a COMMIT's wait, s */
	int desk_keep_days;		/* [history] desk_keep_days: the desk trail's */
	struct rdp_conf rdp;		/* [rdp] */
	char token_key[512];		/* [rdp] token_key: HMAC key file */
	int token_ttl;			/* [rdp] token_ttl, seconds */
	int splice_max;			/* [rdp] splice_max: spliced connections at once */
	int splice_idle_timeout;	/* [rdp] splice_idle_timeout, seconds */
	int splice_keepalive;		/* [rdp] splice_keepalive, seconds; 0 off */
	int splice_user_timeout;	/* [rdp] splice_user_timeout, seconds; 0 off */
	int connect_timeout;		/* [rdp] connect_timeout: broker -> server, seconds */
	char http_listen[272];		/* [http] listen */
	char http_certificate[512];	/* [http] certificate, default rdp's */
	char http_private_key[512];
	char http_tls_priority[512];	/* [http] tls_priority: GnuTLS priority string */
	int http_body_limit;		/* [http] body_limit, bytes */
	int http_max_connections;
	char http_web_root[512];	/* [http] web_root: the status page's files */
	int admin_session_idle;		/* [http] admin_session_idle, seconds */
	int admin_session_max;		/* [http] admin_session_max, seconds */
	int heartbeat_interval;		/* [health] */
	int down_after;
	int quarantine_after;		/* unconfirmed placements in a row */
	int quarantine_time;		/* seconds */
	int pending_ttl;		/* [placement] */
	int pending_penalty;
	int default_max_sessions;	/* for servers added without --max-sessions */
	int history_period;		/* [history] period: a sample every, seconds */
	int history_keep;		/* [history] keep: days */
};

/* Reads path (defaults for missing keys). 0, or -1 with "file:line: msg". */
int conf_load(struct conf *c, const char *path, char *err, size_t errlen);
/* Parses text as if it were the file path (fuzzing, tests). */
int conf_load_string(struct conf *c, const char *path, const char *text,
    char *err, size_t errlen);
/* Fills c with the defaults only. */
void conf_defaults(struct conf *c);
/* Writes the default configuration (every key, `tsbroker -D`, used by
 * `make run`). 0 or -1. */
int conf_print_defaults(FILE *out);
/* An int key of a serving broker's conf, from any thread: a reload
 * (conf_take_live) stores them atomically. */
#define CONF_GET(c, field)	__atomic_load_n(&(c)->field, __ATOMIC_RELAXED)

/* cfg_diff and cfg_take_live (cfg.h) over the broker's key table. Strings
 * in a serving broker's conf are read by the main thread only. */
int conf_diff(const struct conf *a, const struct conf *b, cfg_diff_fn fn, void *ctx);
void conf_take_live(struct conf *c, const struct conf *next);
/* Calls fn for every key of c in table order with its value as written in
 * the file, or NULL for a secret ([state] url: a password may be in it);
 * live as cfg_live. Any thread: conf_take_live waits meanwhile. */
typedef void (*conf_each_fn)(void *ctx, const char *section, const char *name,
    const char *value, int live);
void conf_each(const struct conf *c, conf_each_fn fn, void *ctx);
/* The store's location for store_open_engine: [state] url for postgresql,
 * else [state] path. Borrowed from c. */
const char *conf_state_location(const struct conf *c);

#endif
