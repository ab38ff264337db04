/* conf: the agent's configuration file ([agent] section, see
 * tsagent.conf.example). Everything lives in fixed buffers inside
 * struct agent_conf: nothing to free. */
#ifndef TS_AGENT_CONF_H
#define TS_AGENT_CONF_H

#include <stddef.h>
#include <stdio.h>

#include "agent/brokers.h"
#include "broker/common/cfg.h"
#include "broker/common/wire.h"

#define CONF_PATH_MAX	1024

struct agent_conf {
	char name[WIRE_NAME_MAX];	/* default: the host name */
	char broker[1024];		/* as written: URLs, spaces or commas */
	struct brokers brokers;		/* broker parsed (a path is kept) */
	char token[512];		/* secret: never log it */
	char ca[CONF_PATH_MAX];		/* CA bundle, or the broker's own certificate */
	char rdp_address[WIRE_ADDR_MAX];/* reported; probed (127.0.0.1 if empty) */
	int rdp_port;
	char sessions[CONF_PATH_MAX];	/* auto|xrdp|utmp|logind|file:PATH|command:CMD */
	int interval;			/* seconds between beats until the broker says */
	int connect_timeout;		/* seconds, TCP+TLS connect to the broker */
	int timeout;			/* seconds, whole request */
	int retry_max;			/* seconds, cap of the backoff while unreachable */
	int command_timeout;		/* seconds, for sessions = command:CMD and
					 * each logoff/disconnect */
	char logoff_command[CONF_PATH_MAX];	/* command:'s, see sessions.h */
	char disconnect_command[CONF_PATH_MAX];
};

/* Loads path into c. 0, or -1 with "path:line: message" (or "path: message")
 * in err. Also checks what the INI table cannot: the https broker URLs
 * (parsed into c->brokers), a token, a known sessions provider. */
int conf_load(const char *path, struct agent_conf *c, char *err, size_t errlen);

/* Writes the default configuration (every key, `tsagent -D`). 0 or -1. */
int conf_print_defaults(FILE *out);

/* cfg_diff and cfg_take_live (cfg.h) over the agent's key table. */
int conf_diff(const struct agent_conf *a, const struct agent_conf *b, cfg_diff_fn fn,
    void *ctx);
void conf_take_live(struct agent_conf *c, const struct agent_conf *next);

#endif
