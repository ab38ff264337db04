#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/conf.h"
#include "agent/sessions.h"
#include "broker/common/cfg.h"
#include "broker/common/util.h"

#define K(name, type, field, min, max, def, choices, flags, desc) \
	{ "agent", name, type, offsetof(struct agent_conf, field), \
	  sizeof(((struct agent_conf *)0)->field), min, max, def, choices, flags, desc }

static const struct cfg_key conf_keys[] = {
	K("name", CFG_STR, name, 0, 0, NULL, NULL, CFG_RESTART,
	    "The server's name, as added with tsbroker server add. Empty: the host name up to "
	    "the first dot."),
	K("broker", CFG_STR, broker, 0, 0, NULL, NULL, CFG_RESTART,
	    "The broker's https URL (required), or up to 8 of them separated by spaces or "
	    "commas: a beat goes to the current one and fails over to the next."),
	K("token", CFG_STR, token, 0, 0, NULL, NULL, CFG_RESTART,
	    "The server's token, printed once by tsbroker server add (required, never logged)."),
	K("ca", CFG_STR, ca, 0, 0, NULL, NULL, CFG_RESTART,
	    "How to trust the broker: one self-signed certificate (pinned by its key) or a CA "
	    "bundle. Empty: the system's CAs."),
	K("rdp_address", CFG_STR, rdp_address, 0, 0, NULL, NULL, CFG_RESTART,
	    "The server's RDP address reported to the broker. Empty: reported empty and "
	    "probed at 127.0.0.1."),
	K("rdp_port", CFG_INT, rdp_port, 1, 65535, "3389", NULL, CFG_RESTART,
	    "The RDP port reported, and probed at every beat."),
	K("sessions", CFG_STR, sessions, 0, 0, "auto", NULL, CFG_LIVE,
	    "Where the sessions are read from: auto, xrdp, utmp, logind, file:PATH or "
	    "command:CMD."),
	K("interval", CFG_INT, interval, 1, 3600, "5", NULL, CFG_LIVE,
	    "Seconds between heartbeats until the broker answers another interval."),
	K("connect_timeout", CFG_INT, connect_timeout, 1, 300, "5", NULL, CFG_LIVE,
	    "Seconds to connect to the broker (TCP and TLS)."),
	K("timeout", CFG_INT, timeout, 1, 600, "10", NULL, CFG_LIVE,
	    "Seconds a whole heartbeat request may take."),
	K("retry_max", CFG_INT, retry_max, 1, 3600, "60", NULL, CFG_LIVE,
	    "Cap in seconds of the backoff while the broker is unreachable."),
	K("command_timeout", CFG_INT, command_timeout, 1, 600, "5", NULL, CFG_LIVE,
	    "Seconds a sessions = command:CMD run, and each log off or disconnect, may take "
	    "before its process group is killed."),
	K("logoff_command", CFG_STR, logoff_command, 0, 0, "", NULL, CFG_LIVE,
	    "With sessions = command:CMD, what logs a user off: split on blanks (no shell), "
	    "run with the session id and the user as its last two arguments. Empty: not "
	    "supported."),
	K("disconnect_command", CFG_STR, disconnect_command, 0, 0, "", NULL, CFG_LIVE,
	    "With sessions = command:CMD, what disconnects a session, run as logoff_command "
	    "is. Empty: not supported."),
	CFG_END
};

const struct cfg_key *
conf_keys_table(void)
{
	return conf_keys;
}

int
conf_print_defaults(FILE *out)
{
	fputs("# tsagent configuration: every key with its default (tsagent.conf(5)).\n"
	    "# (live): re-read on SIGHUP; (restart): takes effect at the next start.\n"
	    "# broker and token are required.\n", out);
	return cfg_print_defaults(conf_keys, out);
}

/* The line of the last "key =" in [agent] of path (as inih keeps the last
 * one), or 0 if the key is not in the file. */
static int
conf_key_line(const char *path, const char *key)
{
	char line[2048];
	int n = 0, found = 0, in_agent = 0;
	size_t klen = strlen(key);
	FILE *f;

	if ((f = fopen(path, "re")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = line;

		n++;
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '[') {
			in_agent = strncmp(p, "[agent]", 7) == 0;
			continue;
		}
		if (!in_agent || strncmp(p, key, klen) != 0)
			continue;
		p += klen;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '=' || *p == ':')
			found = n;
	}
	fclose(f);
	return found;
}

static int
conf_fail(const char *path, const char *key, char *err, size_t errlen,
    const char *msg)
{
	int line = conf_key_line(path, key);

	if (line > 0)
		snprintf(err, errlen, "%s:%d: %s", path, line, msg);
	else
		snprintf(err, errlen, "%s: %s", path, msg);
	return -1;
}

/* Completes and checks what cfg cannot check for us. */
static int
conf_check(const char *path, struct agent_conf *c, char *err, size_t errlen)
{
	char host[256], msg[256];
	char *dot;

	if (c->name[0] == '\0') {
		if (gethostname(host, sizeof(host)) != 0)
			return conf_fail(path, "name", err, errlen,
			    "'name' is not set and the host name is unknown");
		host[sizeof(host) - 1] = '\0';
		if ((dot = strchr(host, '.')) != NULL)
			*dot = '\0';
		if (util_strlcpy(c->name, host, sizeof(c->name)) != 0)
			return conf_fail(path, "name", err, errlen,
			    "'name' is not set and the host name is too long");
	}
	if (brokers_parse(c->broker, &c->brokers, msg, sizeof(msg)) != 0)
		return conf_fail(path, "broker", err, errlen, msg);
	if (c->token[0] == '\0')
		return conf_fail(path, "token", err, errlen,
		    "'token' is required (printed by 'tsbroker server add')");
	if (c->ca[0] != '\0' && access(c->ca, R_OK) != 0) {
		snprintf(msg, sizeof(msg), "'ca': cannot read %.*s: %s", 200,
		    c->ca, strerror(errno));
		return conf_fail(path, "ca", err, errlen, msg);
	}
	if (sessions_spec_check(c->sessions, msg, sizeof(msg)) != 0)
		return conf_fail(path, "sessions", err, errlen, msg);
	return 0;
}

int
conf_load(const char *path, struct agent_conf *c, char *err, size_t errlen)
{
	struct agent_conf tmp;
	int r;

	if ((r = cfg_load(conf_keys, &tmp, path, err, errlen)) == 0 &&
	    (r = conf_check(path, &tmp, err, errlen)) == 0)
		*c = tmp;
	explicit_bzero(&tmp, sizeof(tmp));
	return r;
}

int
conf_diff(const struct agent_conf *a, const struct agent_conf *b, cfg_diff_fn fn, void *ctx)
{
	return cfg_diff(conf_keys, a, b, fn, ctx);
}

void
conf_take_live(struct agent_conf *c, const struct agent_conf *next)
{
	cfg_take_live(conf_keys, c, next);
}
