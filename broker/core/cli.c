#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker/core/admin_token.h"
#include "broker/core/cli.h"
#include "broker/common/util.h"
#include "broker/core/conf.h"
#include "broker/core/crypto.h"
#include "broker/core/keys.h"
#include "broker/core/privdrop.h"
#include "broker/state/store.h"

static const char usage[] =
    "usage: tsbroker -f FILE server add NAME --address HOST [--port N] [--weight N]\n"
    "                                  [--max-sessions N] [--fqdn NAME]\n"
    "       tsbroker -f FILE server list | drain NAME | enable NAME | remove NAME\n"
    "       tsbroker -f FILE session list [--user U] [--server NAME] [--state S]\n"
    "                                   [--desk NAME]\n"
    "       tsbroker -f FILE session forget ID\n"
    "       tsbroker -f FILE session logoff ID | disconnect ID [--timeout S]\n"
    "       tsbroker -f FILE admin password   (reads the new password from stdin)\n"
    "       tsbroker -f FILE admin token add NAME | list | remove NAME\n"
    "       tsbroker -f FILE admin token-key record   (key rotation: docs/ha-keys.md)\n";

static int
fail(int r, const char *what, const char *name)
{
	if (r == STORE_NOT_FOUND)
		fprintf(stderr, "tsbroker: %s '%s' not found\n", what, name);
	else if (r == STORE_EXISTS)
		fprintf(stderr, "tsbroker: %s '%s' already exists\n", what, name);
	else
		fprintf(stderr, "tsbroker: %s '%s': %s\n", what, name, store_strerror(r));
	return 1;
}

static int
num(const char *opt, const char *v, long min, long max, int *out)
{
	char *end;
	long l;

	errno = 0;
	l = v ? strtol(v, &end, 10) : 0;
	if (v == NULL || errno != 0 || end == v || *end != '\0' || l < min || l > max) {
		fprintf(stderr, "tsbroker: %s expects a number from %ld to %ld\n", opt,
		    min, max);
		return -1;
	}
	*out = (int)l;
	return 0;
}

static int
server_add(const struct conf *c, struct store *st, int argc, char **argv)
{
	struct store_server s;
	char token[CRYPTO_TOKEN_LEN + 1], hash[CRYPTO_HASH_HEX];
	int r;

	if (argc < 1 || argv[0][0] == '-') {
		fputs(usage, stderr);
		return 2;
	}
	memset(&s, 0, sizeof(s));
	if (!wire_name_valid(argv[0])) {
		fprintf(stderr, "tsbroker: server names are 1 to %d letters, digits, "
		    "'-', '_' or '.'\n", WIRE_NAME_MAX - 1);
		return 2;
	}
	util_strlcpy(s.name, argv[0], sizeof(s.name));
	s.port = 3389;
	s.weight = 100;
	s.max_sessions = c->default_max_sessions;
	for (int i = 1; i < argc; i += 2) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(o, "--address") == 0 && v != NULL) {
			if (util_strlcpy(s.address, v, sizeof(s.address)) != 0 || !*v) {
				fprintf(stderr, "tsbroker: --address is empty or too long\n");
				return 2;
			}
		} else if (strcmp(o, "--fqdn") == 0 && v != NULL) {
			if (util_strlcpy(s.fqdn, v, sizeof(s.fqdn)) != 0) {
				fprintf(stderr, "tsbroker: --fqdn is too long\n");
				return 2;
			}
		} else if (strcmp(o, "--port") == 0) {
			if (num(o, v, 1, 65535, &s.port) != 0)
				return 2;
		} else if (strcmp(o, "--weight") == 0) {
			if (num(o, v, 1, 10000, &s.weight) != 0)
				return 2;
		} else if (strcmp(o, "--max-sessions") == 0) {
			if (num(o, v, 1, 1000000, &s.max_sessions) != 0)
				return 2;
		} else {
			fprintf(stderr, "tsbroker: unknown option '%s'\n%s", o, usage);
			return 2;
		}
	}
	if (s.address[0] == '\0') {
		fprintf(stderr, "tsbroker: server add needs --address HOST\n");
		return 2;
	}
	if (crypto_token_new(token, sizeof(token)) != 0 ||
	    crypto_sha256_hex(token, strlen(token), hash) != 0) {
		fprintf(stderr, "tsbroker: cannot make a token\n");
		return 1;
	}
	if ((r = store_server_add(st, &s, hash, util_now_ms())) != 0)
		return fail(r, "server", s.name);
	printf("server %s added (address %s:%d, weight %d, max sessions %d)\n"
	    "agent token (shown once, put it in the agent's config):\n%s\n",
	    s.name, s.address, s.port, s.weight, s.max_sessions, token);
	crypto_wipe(token, sizeof(token));
	return 0;
}

static void
age(int64_t now, int64_t then, char *out, size_t n)
{
	if (then == 0)
		snprintf(out, n, "never");
	else
		snprintf(out, n, "%llds", (long long)((now - then) / 1000));
}

static int
server_list(struct store *st)
{
	struct store_server *list = NULL;
	int64_t now = util_now_ms();
	size_t n = 0;
	int r;

	if ((r = store_server_list(st, &list, &n)) != 0)
		return fail(r, "servers", "list");
	printf("%-16s %-21s %-6s %-9s %-7s %5s %6s %9s %4s %4s %5s\n", "NAME", "ADDRESS",
	    "WEIGHT", "ADMIN", "STATE", "CPU%", "MEM%", "SESSIONS", "PEND", "LOST",
	    "BEAT");
	for (size_t i = 0; i < n; i++) {
		struct store_server *s = &list[i];
		char addr[300], sess[32], beat[32], health[24];
		double mem = s->mem_total_kb ? 100.0 * (double)(s->mem_total_kb -
		    s->mem_available_kb) / (double)s->mem_total_kb : 0;
		snprintf(addr, sizeof(addr), "%s:%d", s->address, s->port);
		snprintf(sess, sizeof(sess), "%d/%d", s->active + s->disconnected,
		    s->max_sessions);
		snprintf(health, sizeof(health), "%s%s", server_state_str(s->state),
		    s->quarantined_until > now ? "+q" : "");
		age(now, s->last_heartbeat, beat, sizeof(beat));
		printf("%-16s %-21s %-6d %-9s %-7s %5.1f %6.1f %9s %4d %4d %5s\n", s->name,
		    addr, s->weight, admin_state_str(s->admin_state), health, s->cpu_percent,
		    mem, sess, s->pending, s->lost, beat);
	}
	free(list);
	return 0;
}

static int
session_list(struct store *st, int argc, char **argv)
{
	struct store_session_filter f = { NULL, NULL, NULL, NULL };
	struct store_session *list = NULL;
	enum session_state want;
	size_t n = 0;
	int r, none = 0;

	for (int i = 0; i < argc; i += 2) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v != NULL && strcmp(argv[i], "--user") == 0)
			f.user = v;
		else if (v != NULL && strcmp(argv[i], "--server") == 0)
			f.server = v;
		else if (v != NULL && strcmp(argv[i], "--desk") == 0)
			f.desk = v;
		else if (v != NULL && strcmp(argv[i], "--state") == 0) {
			none = session_state_parse(v, &want) != 0;	/* no such state: none */
			f.state = &want;
		}
		else {
			fputs(usage, stderr);
			return 2;
		}
	}
	if (!none && (r = store_session_list(st, &f, &list, &n)) != 0)
		return fail(r, "sessions", "list");
	/* desk and client address: what the client claimed */
	printf("%-8s %-20s %-16s %-13s %-10s %-16s %-16s %s\n", "ID", "USER", "SERVER",
	    "STATE", "AGENT_ID", "CLIENT(CLAIMED)", "DESK(CLAIMED)", "UPDATED");
	for (size_t i = 0; i < n; i++) {
		struct store_session *e = &list[i];
		char ts[32];
		time_t t = (time_t)(e->updated / 1000);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
		printf("%-8lld %-20s %-16s %-13s %-10s %-16s %-16s %s\n", (long long)e->id,
		    e->user, e->server, session_state_str(e->state),
		    e->remote_id[0] ? e->remote_id : "-",
		    e->client[0] ? e->client : "-", !e->desk_known ? "(unknown)" :
		    e->desk[0] ? e->desk : "(none)", ts);
	}
	free(list);
	return 0;
}

static int
admin_password(struct store *st)
{
	char pw[256], hash[CRYPTO_PWHASH_MAX];
	size_t n;
	int r;

	if (fgets(pw, sizeof(pw), stdin) == NULL) {
		fprintf(stderr, "tsbroker: no password on stdin\n");
		return 1;
	}
	n = strcspn(pw, "\r\n");
	pw[n] = '\0';
	if (n < 8) {
		crypto_wipe(pw, sizeof(pw));
		fprintf(stderr, "tsbroker: the password must have at least 8 characters\n");
		return 1;
	}
	r = crypto_password_hash(pw, hash, sizeof(hash));
	crypto_wipe(pw, sizeof(pw));
	if (r != 0) {
		fprintf(stderr, "tsbroker: cannot hash the password\n");
		return 1;
	}
	if ((r = store_admin_password_set(st, hash, util_now_ms())) != 0)
		return fail(r, "admin", "password");
	printf("admin password changed\n");
	return 0;
}

/* `admin token add|list|remove`: bearer tokens for scripts using the admin
 * API (docs/admin-api.md). The token is printed once; the store keeps its
 * SHA-256 only. */
static int
admin_token(struct store *st, int argc, char **argv)
{
	char token[ADMIN_TOKEN_LEN + 1], hash[CRYPTO_HASH_HEX];
	struct store_admin_token *list = NULL;
	size_t n = 0;
	int r;

	if (argc == 1 && strcmp(argv[0], "list") == 0) {
		if ((r = store_admin_token_list(st, &list, &n)) != 0)
			return fail(r, "admin tokens", "list");
		printf("%-24s %-20s %s\n", "NAME", "CREATED", "LAST USED");
		for (size_t i = 0; i < n; i++) {
			char c[32], u[32] = "never";
			time_t t = (time_t)(list[i].created / 1000);
			struct tm tm;
			gmtime_r(&t, &tm);
			strftime(c, sizeof(c), "%Y-%m-%dT%H:%M:%SZ", &tm);
			if (list[i].last_used != 0) {
				t = (time_t)(list[i].last_used / 1000);
				gmtime_r(&t, &tm);
				strftime(u, sizeof(u), "%Y-%m-%dT%H:%M:%SZ", &tm);
			}
			printf("%-24s %-20s %s\n", list[i].name, c, u);
		}
		free(list);
		return 0;
	}
	if (argc != 2 || (strcmp(argv[0], "add") != 0 && strcmp(argv[0], "remove") != 0)) {
		fputs(usage, stderr);
		return 2;
	}
	if (!wire_name_valid(argv[1])) {
		fprintf(stderr, "tsbroker: token names are 1 to %d letters, digits, "
		    "'-', '_' or '.'\n", WIRE_NAME_MAX - 1);
		return 2;
	}
	if (strcmp(argv[0], "remove") == 0) {
		if ((r = store_admin_token_remove(st, argv[1], util_now_ms())) != 0)
			return fail(r, "admin token", argv[1]);
		printf("admin token %s removed\n", argv[1]);
		return 0;
	}
	if (admin_token_new(token, sizeof(token), hash) != 0) {
		fprintf(stderr, "tsbroker: cannot make a token\n");
		return 1;
	}
	if ((r = store_admin_token_add(st, argv[1], hash, util_now_ms())) != 0) {
		crypto_wipe(token, sizeof(token));
		return fail(r, "admin token", argv[1]);
	}
	printf("admin token %s added (shown once; send it as 'Authorization: Bearer "
	    "TOKEN'):\n%s\n", argv[1], token);
	crypto_wipe(token, sizeof(token));
	return 0;
}

/* `session logoff|disconnect ID [--timeout S]`: queues the command, waits
 * for its outcome (up to its deadline and the grace after it), prints it;
 * 0 only when done. */
static int
session_command(struct store *st, const char *verb, int argc, char **argv)
{
	enum wire_command_kind kind;
	struct store_command cmd;
	struct passwd *pw = getpwuid(getuid());
	char actor[STORE_ACTOR_MAX], reason[256], *end;
	int64_t until;
	long long id;
	int r, timeout = STORE_COMMAND_TIMEOUT_MS / 1000;

	if (wire_command_kind_parse(verb, &kind) != 0 || (argc != 1 && argc != 3))
		return 2;
	if (argc == 3 && (strcmp(argv[1], "--timeout") != 0 ||
	    num("--timeout", argv[2], 1, STORE_COMMAND_TIMEOUT_MAX, &timeout) != 0))
		return 2;
	errno = 0;
	id = strtoll(argv[0], &end, 10);
	if (errno != 0 || *end != '\0' || end == argv[0] || id < 1) {
		fprintf(stderr, "tsbroker: session ids are positive numbers\n");
		return 2;
	}
	snprintf(actor, sizeof(actor), "cli user %s", pw != NULL ? pw->pw_name : "?");
	if ((r = store_command_add(st, id, kind, actor, util_now_ms(), timeout * 1000, &cmd,
	    reason, sizeof(reason))) == STORE_REFUSED) {
		fprintf(stderr, "tsbroker: %s of session %lld refused: %s\n", verb, id, reason);
		return 1;
	}
	if (r != 0)
		return fail(r, "session", argv[0]);
	printf("command %lld: %s of session %lld (%s on %s) queued, waiting up to %d s\n",
	    (long long)cmd.id, verb, id, cmd.user, cmd.server, timeout);
	fflush(stdout);
	until = cmd.deadline + STORE_COMMAND_GRACE_MS + 5000;
	while ((cmd.state == COMMAND_QUEUED || cmd.state == COMMAND_SENT) &&
	    util_now_ms() < until) {
		struct timespec ts = { 0, 200 * 1000000L };

		nanosleep(&ts, NULL);
		if ((r = store_command_get(st, cmd.id, &cmd)) != 0)
			return fail(r, "command", argv[0]);
	}
	printf("command %lld: %s%s%s\n", (long long)cmd.id, command_state_str(cmd.state),
	    cmd.outcome[0] ? ": " : "", cmd.outcome);
	return cmd.state == COMMAND_DONE ? 0 : 1;
}

/* `admin token-key record`: this config's routing-token key becomes the one
 * the brokers sharing the store must use. */
static int
admin_token_key(const struct conf *c, struct store *st)
{
	char old[CRYPTO_HASH_HEX], fp[CRYPTO_HASH_HEX], err[512];

	if (keys_token_record(st, c->token_key, old, fp, err, sizeof(err)) != 0) {
		fprintf(stderr, "tsbroker: %s\n", err);
		return 1;
	}
	printf("routing-token key fingerprint recorded: %s (%s), replacing %s\n", fp,
	    c->token_key, old[0] ? old : "none");
	return 0;
}

static int
dispatch(const struct conf *c, struct store *st, int argc, char **argv)
{
	const char *obj = argv[0], *verb = argc > 1 ? argv[1] : "";
	int64_t now = util_now_ms();
	char *end;
	long long id;
	int r;

	if (strcmp(obj, "server") == 0) {
		if (strcmp(verb, "add") == 0)
			return server_add(c, st, argc - 2, argv + 2);
		if (strcmp(verb, "list") == 0 && argc == 2)
			return server_list(st);
		if (argc != 3)
			goto usage;
		if (strcmp(verb, "drain") == 0 || strcmp(verb, "enable") == 0) {
			int drain = verb[0] == 'd';
			if ((r = store_server_drain(st, argv[2], drain, now)) != 0)
				return fail(r, "server", argv[2]);
			printf("server %s %s\n", argv[2], drain ? "draining: it keeps its "
			    "users' reconnects and gets no new users" : "enabled");
			return 0;
		}
		if (strcmp(verb, "remove") == 0) {
			if ((r = store_server_remove(st, argv[2], now)) != 0)
				return fail(r, "server", argv[2]);
			printf("server %s removed\n", argv[2]);
			return 0;
		}
	} else if (strcmp(obj, "session") == 0) {
		if (strcmp(verb, "list") == 0)
			return session_list(st, argc - 2, argv + 2);
		if (strcmp(verb, "forget") == 0 && argc == 3) {
			errno = 0;
			id = strtoll(argv[2], &end, 10);
			if (errno != 0 || *end != '\0' || end == argv[2] || id < 1) {
				fprintf(stderr, "tsbroker: session ids are positive numbers\n");
				return 2;
			}
			if ((r = store_session_forget(st, id, now)) != 0)
				return fail(r, "session", argv[2]);
			printf("session %lld forgotten\n", id);
			return 0;
		}
		if (argc >= 3 && (r = session_command(st, verb, argc - 2, argv + 2)) != 2)
			return r;
	} else if (strcmp(obj, "admin") == 0 && strcmp(verb, "password") == 0 && argc == 2)
		return admin_password(st);
	else if (strcmp(obj, "admin") == 0 && strcmp(verb, "token") == 0 && argc > 2)
		return admin_token(st, argc - 2, argv + 2);
	else if (strcmp(obj, "admin") == 0 && strcmp(verb, "token-key") == 0 && argc == 3 &&
	    strcmp(argv[2], "record") == 0)
		return admin_token_key(c, st);
 usage:
	fputs(usage, stderr);
	return 2;
}

int
cli_run(const struct conf *c, int argc, char **argv)
{
	int sqlite = strcmp(c->state_engine, "sqlite") == 0;
	struct privdrop pd = { 0 };
	struct store *st = NULL;
	char err[512];
	int r;

	/* as root, the files the store creates go to the broker's user */
	if ((sqlite && privdrop_cli_prepare(&pd, c->run_user, c->state_path, err,
	    sizeof(err)) != 0) ||
	    (st = store_open_engine(c->state_engine, conf_state_location(c), err,
	    sizeof(err))) == NULL ||
	    (sqlite && privdrop_own_state(&pd, c->state_path, err, sizeof(err)) != 0)) {
		fprintf(stderr, "tsbroker: %s\n", err);
		store_close(st);
		return 1;
	}
	store_commit_timeout(st, c->commit_timeout * 1000);
	r = dispatch(c, st, argc, argv);
	store_close(st);
	return r;
}
