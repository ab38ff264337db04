#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/http/api_admin.h"
#include "broker/http/http_reply.h"
#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/common/wire.h"
#include "broker/core/conf.h"
#include "broker/state/farm.h"
#include "broker/state/placement.h"
#include "broker/state/store.h"

#define SESSIONS_LIMIT_DEF	1000
#define SESSIONS_LIMIT_MAX	100000
#define EVENTS_LIMIT_DEF	100
#define EVENTS_LIMIT_MAX	1000
#define TRAIL_LIMIT_DEF		100
#define TRAIL_LIMIT_MAX		10000

/* A row of the route table: what the route needs (auth_check runs before
 * the handler on AUTH_ADMIN routes, and who is set then) and its handler. */
struct api_admin_route {
	const char *method, *path;
	enum auth_need auth;
	void (*fn)(struct api_admin *a, const struct auth_who *who,
	    const struct http_request *req, struct http_response *res);
};

int
api_admin_init(struct api_admin *a, struct store *st, const struct conf *c,
    struct metrics_logins *logins)
{
	a->st = st;
	a->c = c;
	return auth_init(&a->auth, st, c, logins);	/* bound: by api_admin_register */
}

void
api_admin_cleanup(struct api_admin *a)
{
	if (a != NULL)
		auth_cleanup(&a->auth);
}

/* ---- small helpers ---- */

/* Parses a decimal query argument within [min, max]; def when absent or
 * empty. 0, or -1 with a 400 answered. */
static int
arg_int(const struct http_request *req, struct http_response *res, const char *name,
    int64_t min, int64_t max, int64_t def, int64_t *out)
{
	const char *v = http_arg(req, name);
	char *end, msg[128];
	long long l;

	if (v == NULL || *v == '\0') {
		*out = def;
		return 0;
	}
	errno = 0;
	l = strtoll(v, &end, 10);
	if (errno != 0 || *end != '\0' || !isdigit((unsigned char)*v) || l < min || l > max) {
		snprintf(msg, sizeof(msg), "'%s' must be an integer from %lld to %lld", name,
		    (long long)min, (long long)max);
		http_reply_error(res, 400, msg);
		return -1;
	}
	*out = l;
	return 0;
}

/* Answers the error r of a store call: 404 with not_found (if not NULL) for
 * STORE_NOT_FOUND, else 503 (disk full, database unavailable) or 500. */
static void
reply_store_error(struct api_admin *a, struct http_response *res, int r,
    const char *not_found)
{
	if (r == STORE_NOT_FOUND && not_found != NULL)
		http_reply_error(res, 404, not_found);
	else
		http_reply_store_error(res, a->st, r);
}

/* The same for a store call about server name. */
static void
reply_server_error(struct api_admin *a, struct http_response *res, int r, const char *name)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "no server '%s'", name);
	reply_store_error(a, res, r, msg);
}

/* The store's servers into *list (the caller frees it), or -1 with the
 * error answered. */
static int
servers_load(struct api_admin *a, struct http_response *res, struct store_server **list,
    size_t *n)
{
	int r;

	if ((r = store_server_list(a->st, list, n)) != 0) {
		reply_store_error(a, res, r, NULL);
		return -1;
	}
	return 0;
}

/* ---- POST /api/v1/login, POST /api/v1/logout, GET /api/v1/session ---- */

static void
api_admin_login(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	auth_login(&a->auth, req, res);
}

static void
api_admin_logout(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	auth_logout(&a->auth, who, req, res);
}

static void
api_admin_session(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	auth_session_get(&a->auth, who, res);
}

/* ---- JSON of the store's records ---- */

static struct wire_json *
server_json(const struct store_server *s, int64_t now)
{
	struct wire_json *o = wire_json_object(), *ss = wire_json_object();

	wire_json_str(o, "name", s->name);
	wire_json_str(o, "address", s->address);
	wire_json_int(o, "port", s->port);
	wire_json_str(o, "fqdn", s->fqdn);
	wire_json_int(o, "weight", s->weight);
	wire_json_int(o, "max_sessions", s->max_sessions);
	wire_json_str(o, "admin_state", admin_state_str(s->admin_state));
	wire_json_str(o, "state", server_state_str(s->state));
	wire_json_str(o, "state_reason", s->state_reason);
	wire_json_int(o, "state_since", s->state_since);
	wire_json_bool(o, "quarantined", s->quarantined_until > now);
	wire_json_int(o, "quarantined_until", s->quarantined_until);
	wire_json_bool(o, "accepting_new", farm_server_accepting(s, now));
	wire_json_int(o, "last_heartbeat", s->last_heartbeat);
	if (s->last_heartbeat > 0)
		wire_json_int(o, "heartbeat_age_ms", now - s->last_heartbeat);
	else
		wire_json_null(o, "heartbeat_age_ms");
	wire_json_bool(o, "rdp_accepting", s->rdp_accepting);
	wire_json_str(o, "agent_version", s->agent_version);
	wire_json_int(o, "ncpu", s->ncpu);
	wire_json_num(o, "cpu_percent", s->cpu_percent);
	wire_json_num(o, "load1", s->load1);
	wire_json_int(o, "mem_total_kb", s->mem_total_kb);
	wire_json_int(o, "mem_available_kb", s->mem_available_kb);
	if (s->mem_total_kb > 0)
		wire_json_num(o, "mem_percent", 100.0 * (double)(s->mem_total_kb -
		    s->mem_available_kb) / (double)s->mem_total_kb);
	else
		wire_json_null(o, "mem_percent");
	wire_json_bool(o, "sessions_known", s->sessions_known);
	wire_json_int(ss, "active", s->active);
	wire_json_int(ss, "disconnected", s->disconnected);
	wire_json_int(ss, "pending", s->pending);
	wire_json_int(ss, "lost", s->lost);
	wire_json_int(ss, "load", farm_server_sessions(s));
	wire_json_add(o, "sessions", ss);
	return o;
}

/* "desk": the name the client claimed, null if unknown */
static void
desk_json(struct wire_json *o, const char *desk, int known)
{
	if (known)
		wire_json_str(o, "desk", desk);
	else
		wire_json_null(o, "desk");
}

static struct wire_json *
session_rec_json(const struct store_session *e)
{
	struct wire_json *o = wire_json_object();

	wire_json_int(o, "id", e->id);
	wire_json_str(o, "user", e->user);
	wire_json_str(o, "login", e->login);
	wire_json_str(o, "domain", e->domain);
	wire_json_str(o, "server", e->server);
	wire_json_str(o, "state", session_state_str(e->state));
	wire_json_str(o, "remote_id", e->remote_id);
	wire_json_str(o, "client", e->client);
	desk_json(o, e->desk, e->desk_known);
	wire_json_int(o, "created", e->created);
	wire_json_int(o, "updated", e->updated);
	wire_json_int(o, "expires", e->expires);
	return o;
}

static struct wire_json *
event_json(const struct store_event *e)
{
	struct wire_json *o = wire_json_object();

	wire_json_int(o, "id", e->id);
	wire_json_int(o, "ts", e->ts);
	wire_json_str(o, "kind", e->kind);
	wire_json_str(o, "server", e->server);
	wire_json_str(o, "user", e->user);
	wire_json_str(o, "client", e->client);
	wire_json_str(o, "detail", e->detail);
	wire_json_int(o, "duration_us", e->duration_us);
	return o;
}

/* ---- GET /api/v1/status ---- */

static void
api_admin_status(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	struct store_server *list = NULL;
	struct farm_summary f;
	struct wire_json *o, *sv, *ss, *n1;
	int64_t now = util_now_ms();
	size_t n = 0;
	int r;

	if (store_outage(a->st, NULL, NULL, 0)) {
		http_reply_store_error(res, a->st, STORE_UNAVAILABLE);
		return;
	}
	if ((r = store_server_list(a->st, &list, &n)) != 0) {
		reply_store_error(a, res, r, NULL);
		return;
	}
	farm_summarise(list, n, now, &f);
	free(list);
	o = wire_json_object();
	wire_json_int(o, "now", now);
	wire_json_int(o, "heartbeat_interval", CONF_GET(a->c, heartbeat_interval));
	wire_json_int(o, "down_after", CONF_GET(a->c, down_after));
	sv = wire_json_object();
	wire_json_int(sv, "total", f.servers);
	wire_json_int(sv, "up", f.up);
	wire_json_int(sv, "down", f.down);
	wire_json_int(sv, "unknown", f.unknown);
	wire_json_int(sv, "draining", f.draining);
	wire_json_int(sv, "quarantined", f.quarantined);
	wire_json_int(sv, "accepting_new", f.accepting);
	wire_json_int(sv, "capacity", f.capacity);
	wire_json_int(sv, "free", f.free);
	wire_json_add(o, "servers", sv);
	ss = wire_json_object();
	wire_json_int(ss, "active", f.active);
	wire_json_int(ss, "disconnected", f.disconnected);
	wire_json_int(ss, "pending", f.pending);
	wire_json_int(ss, "lost", f.lost);
	wire_json_add(o, "sessions", ss);
	n1 = wire_json_object();
	wire_json_bool(n1, "ok", f.n1.ok);
	wire_json_int(n1, "up_servers", f.n1.up);
	if (f.n1.up > 0) {
		wire_json_str(n1, "worst", f.n1.worst);
		wire_json_str(n1, "busiest", f.n1.busiest);
	} else {
		wire_json_null(n1, "worst");
		wire_json_null(n1, "busiest");
	}
	wire_json_int(n1, "worst_sessions", f.n1.worst_sessions);
	wire_json_int(n1, "spare", f.n1.spare);
	wire_json_int(n1, "headroom", f.n1.headroom);
	wire_json_int(n1, "busiest_sessions", f.n1.busiest_sessions);
	wire_json_add(o, "n_plus_1", n1);
	http_reply_json(res, 200, wire_json_dump(o));
}

/* ---- GET /api/v1/servers, GET /api/v1/servers/NAME,
 *      POST /api/v1/servers/NAME/drain|enable ---- */

static void
api_admin_servers(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	struct store_server *list = NULL;
	struct wire_json *o, *arr;
	int64_t now = util_now_ms();
	size_t n = 0;

	if (servers_load(a, res, &list, &n) != 0)
		return;
	o = wire_json_object();
	arr = wire_json_array();
	for (size_t i = 0; i < n; i++)
		wire_json_add(arr, NULL, server_json(&list[i], now));
	free(list);
	wire_json_add(o, "servers", arr);
	http_reply_json(res, 200, wire_json_dump(o));
}

/* Splits "/api/v1/servers/NAME[/ACTION]". 0, or -1 with 400/404 answered. */
static int
server_path(const struct http_request *req, struct http_response *res, char *name,
    size_t n, const char **action)
{
	const char *p = req->path + strlen("/api/v1/servers/");
	size_t len = strcspn(p, "/");

	if (len == 0 || len >= n) {
		http_reply_error(res, len == 0 ? 404 : 400, len == 0 ? "no such resource" :
		    "server name too long");
		return -1;
	}
	memcpy(name, p, len);
	name[len] = '\0';
	if (!wire_name_valid(name)) {
		http_reply_error(res, 400, "server names are letters, digits, '-', '_' "
		    "or '.'");
		return -1;
	}
	*action = p[len] == '/' ? p + len + 1 : NULL;
	return 0;
}

static void
api_admin_server_get(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	struct store_server s;
	char name[WIRE_NAME_MAX];
	const char *action;
	int r;

	if (server_path(req, res, name, sizeof(name), &action) != 0)
		return;
	if (action != NULL) {
		http_reply_error(res, 404, "no such resource");
		return;
	}
	if ((r = store_server_get(a->st, name, &s)) != 0) {
		reply_server_error(a, res, r, name);
		return;
	}
	http_reply_json(res, 200, wire_json_dump(server_json(&s, util_now_ms())));
}

static void
api_admin_server_post(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	struct store_server s;
	char name[WIRE_NAME_MAX];
	const char *action;
	int r, drain;

	if (server_path(req, res, name, sizeof(name), &action) != 0)
		return;
	if (action == NULL || (strcmp(action, "drain") != 0 && strcmp(action, "enable") != 0)) {
		http_reply_error(res, 404, "no such action (drain or enable)");
		return;
	}
	drain = action[0] == 'd';
	if ((r = store_server_drain(a->st, name, drain, util_now_ms())) != 0) {
		reply_server_error(a, res, r, name);
		return;
	}
	if ((r = store_server_get(a->st, name, &s)) != 0) {
		reply_store_error(a, res, r, NULL);
		return;
	}
	log_info("server %s %s by %s from %s", name, drain ? "draining" : "enabled",
	    who->name, req->client);
	http_reply_json(res, 200, wire_json_dump(server_json(&s, util_now_ms())));
}

/* ---- GET /api/v1/sessions, DELETE /api/v1/sessions/ID ---- */

static void
api_admin_sessions(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	struct store_session_filter f = { NULL, NULL, NULL, NULL };
	struct store_session *list = NULL;
	struct store_server srv;
	const char *user = http_arg(req, "user"), *server = http_arg(req, "server");
	const char *state = http_arg(req, "state"), *desk = http_arg(req, "desk");
	char norm[WIRE_USER_MAX] = "";
	enum session_state want;
	struct wire_json *o, *arr;
	size_t n = 0, shown = 0, total = 0;
	int64_t limit;
	int r;

	if (arg_int(req, res, "limit", 1, SESSIONS_LIMIT_MAX, SESSIONS_LIMIT_DEF, &limit) != 0)
		return;
	if (state != NULL && state[0] != '\0') {
		if (session_state_parse(state, &want) != 0) {
			http_reply_error(res, 400, "'state' must be pending, active, "
			    "disconnected, lost or ended");
			return;
		}
		f.state = &want;
	}
	if (user != NULL && user[0] != '\0' &&
	    placement_user_normalise(user, norm, sizeof(norm)) != 0) {
		http_reply_error(res, 400, "'user' is not a usable user name");
		return;
	}
	if (desk != NULL && strlen(desk) >= STORE_DESK_MAX) {
		http_reply_error(res, 400, "'desk' is too long for a computer name");
		return;
	}
	f.desk = desk;
	if (server != NULL && server[0] != '\0') {
		if (!wire_name_valid(server)) {
			http_reply_error(res, 400, "'server' is not a server name");
			return;
		}
		if ((r = store_server_get(a->st, server, &srv)) != 0) {
			reply_server_error(a, res, r, server);
			return;
		}
		f.server = server;
	}
	if ((r = store_session_list(a->st, &f, &list, &n)) != 0) {
		reply_store_error(a, res, r, NULL);
		return;
	}
	o = wire_json_object();
	arr = wire_json_array();
	for (size_t i = 0; i < n; i++) {
		/* user: a part of the normalised name ("ali" finds CORP\Alice) */
		if (norm[0] != '\0' && strstr(list[i].user, norm) == NULL)
			continue;
		total++;
		if (shown < (size_t)limit) {
			wire_json_add(arr, NULL, session_rec_json(&list[i]));
			shown++;
		}
	}
	free(list);
	wire_json_add(o, "sessions", arr);
	wire_json_int(o, "total", (int64_t)total);
	wire_json_bool(o, "truncated", shown < total);
	http_reply_json(res, 200, wire_json_dump(o));
}

/* The positive id that starts path after prefix; *rest what follows it
 * ("" or "/..."). 0, or -1 with 400 answered. */
static int
path_id(const struct http_request *req, struct http_response *res, const char *prefix,
    long long *id, const char **rest)
{
	const char *p = req->path + strlen(prefix);
	char *end;

	errno = 0;
	*id = strtoll(p, &end, 10);
	if (!isdigit((unsigned char)*p) || errno != 0 || *id < 1 ||
	    (*end != '\0' && *end != '/')) {
		http_reply_error(res, 400, "ids are positive integers");
		return -1;
	}
	*rest = end;
	return 0;
}

static void
api_admin_session_delete(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	const char *rest;
	struct wire_json *o;
	char msg[96];
	long long id;
	int r;

	if (path_id(req, res, "/api/v1/sessions/", &id, &rest) != 0)
		return;
	if (*rest != '\0') {
		http_reply_error(res, 404, "no such resource");
		return;
	}
	if ((r = store_session_forget(a->st, id, util_now_ms())) != 0) {
		snprintf(msg, sizeof(msg), "no session %lld (or it has ended)", id);
		reply_store_error(a, res, r, msg);
		return;
	}
	log_info("session %lld forgotten by %s from %s", id, who->name, req->client);
	o = wire_json_object();
	wire_json_int(o, "forgotten", id);
	http_reply_json(res, 200, wire_json_dump(o));
}

/* ---- POST /api/v1/sessions/ID/logoff|disconnect, GET /api/v1/commands/ID ---- */

static struct wire_json *
command_json(const struct store_command *c)
{
	struct wire_json *o = wire_json_object();

	wire_json_int(o, "id", c->id);
	wire_json_str(o, "kind", wire_command_kind_str(c->kind));
	wire_json_int(o, "session", c->session_id);
	wire_json_str(o, "server", c->server);
	wire_json_str(o, "user", c->user);
	wire_json_str(o, "by", c->actor);
	wire_json_str(o, "state", command_state_str(c->state));
	wire_json_str(o, "outcome", c->outcome);
	wire_json_int(o, "created", c->created);
	wire_json_int(o, "deadline", c->deadline);
	wire_json_int(o, "updated", c->updated);
	return o;
}

static void
api_admin_session_post(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	enum wire_command_kind kind;
	struct store_command c;
	char actor[STORE_ACTOR_MAX], reason[256], msg[96];
	const char *rest;
	long long id;
	int64_t timeout;
	int r;

	if (path_id(req, res, "/api/v1/sessions/", &id, &rest) != 0)
		return;
	if (rest[0] != '/' || wire_command_kind_parse(rest + 1, &kind) != 0) {
		http_reply_error(res, 404, "no such action (logoff or disconnect)");
		return;
	}
	if (arg_int(req, res, "timeout", 1, STORE_COMMAND_TIMEOUT_MAX,
	    STORE_COMMAND_TIMEOUT_MS / 1000, &timeout) != 0)
		return;
	snprintf(actor, sizeof(actor), "%s %s from %s", who->kind == AUTH_BY_BEARER ?
	    "token" : "login", who->name, req->client);
	r = store_command_add(a->st, id, kind, actor, util_now_ms(), (int)timeout * 1000,
	    &c, reason, sizeof(reason));
	if (r == STORE_REFUSED) {
		http_reply_error(res, 409, reason);
		return;
	}
	if (r != 0) {
		snprintf(msg, sizeof(msg), "no session %lld", id);
		reply_store_error(a, res, r, msg);
		return;
	}
	log_info("command %lld: %s of session %lld (%s on %s) queued by %s",
	    (long long)c.id, wire_command_kind_str(kind), id, c.user, c.server, actor);
	http_reply_json(res, 202, wire_json_dump(command_json(&c)));
}

static void
api_admin_command_get(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	struct store_command c;
	const char *rest;
	char msg[64];
	long long id;
	int r;

	if (path_id(req, res, "/api/v1/commands/", &id, &rest) != 0)
		return;
	if (*rest != '\0') {
		http_reply_error(res, 404, "no such resource");
		return;
	}
	if ((r = store_command_get(a->st, id, &c)) != 0) {
		snprintf(msg, sizeof(msg), "no command %lld", id);
		reply_store_error(a, res, r, msg);
		return;
	}
	http_reply_json(res, 200, wire_json_dump(command_json(&c)));
}

/* ---- GET /api/v1/users/USER/trail ---- */

static struct wire_json *
trail_json(const struct store_trail *t)
{
	struct wire_json *o = wire_json_object();

	wire_json_int(o, "ts", t->ts);
	wire_json_str(o, "user", t->user);
	wire_json_str(o, "login", t->login);
	desk_json(o, t->desk, t->desk_known);
	wire_json_str(o, "client", t->client);
	wire_json_str(o, "server", t->server);
	wire_json_int(o, "session", t->session_id);
	wire_json_str(o, "kind", t->reconnect ? "reconnect" : "new");
	return o;
}

static void
api_admin_user_trail(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	const char *p = req->path + strlen("/api/v1/users/");
	size_t len = strcspn(p, "/");
	char login[WIRE_USER_MAX], user[WIRE_USER_MAX];
	struct store_trail *list = NULL;
	struct wire_json *o, *arr;
	int64_t limit;
	size_t n = 0;
	int r;

	if (len == 0 || strcmp(p + len, "/trail") != 0) {
		http_reply_error(res, 404, "no such resource");
		return;
	}
	if (len >= sizeof(login)) {
		http_reply_error(res, 400, "user name too long");
		return;
	}
	memcpy(login, p, len);
	login[len] = '\0';
	if (placement_user_normalise(login, user, sizeof(user)) != 0) {
		http_reply_error(res, 400, "not a usable user name");
		return;
	}
	if (arg_int(req, res, "limit", 1, TRAIL_LIMIT_MAX, TRAIL_LIMIT_DEF, &limit) != 0)
		return;
	if ((r = store_trail_list(a->st, user, (int)limit, &list, &n)) != 0) {
		reply_store_error(a, res, r, NULL);
		return;
	}
	o = wire_json_object();
	wire_json_str(o, "user", user);
	arr = wire_json_array();
	for (size_t i = 0; i < n; i++)
		wire_json_add(arr, NULL, trail_json(&list[i]));
	free(list);
	wire_json_add(o, "trail", arr);
	wire_json_int(o, "keep_days", CONF_GET(a->c, desk_keep_days));
	http_reply_json(res, 200, wire_json_dump(o));
}

/* ---- GET /api/v1/events ---- */

static void
api_admin_events(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	struct store_event *list = NULL;
	struct wire_json *o, *arr;
	int64_t since, limit;
	size_t n = 0;
	int r;

	if (arg_int(req, res, "since", 0, INT64_MAX, 0, &since) != 0 ||
	    arg_int(req, res, "limit", 1, EVENTS_LIMIT_MAX, EVENTS_LIMIT_DEF, &limit) != 0)
		return;
	if ((r = store_event_list(a->st, since, (int)limit, &list, &n)) != 0) {
		reply_store_error(a, res, r, NULL);
		return;
	}
	o = wire_json_object();
	arr = wire_json_array();
	for (size_t i = 0; i < n; i++)
		wire_json_add(arr, NULL, event_json(&list[i]));
	free(list);
	wire_json_add(o, "events", arr);
	http_reply_json(res, 200, wire_json_dump(o));
}

/* ---- GET /api/v1/history ---- */

#define HISTORY_LIMIT_DEF	1440	/* a day of 1-minute samples */
#define HISTORY_LIMIT_MAX	20000

static struct wire_json *
sample_json(const struct store_sample *s, const struct store_sample_server *sv, size_t m,
    size_t *j)
{
	struct wire_json *o = wire_json_object(), *servers = wire_json_object();

	wire_json_int(o, "ts", s->ts);
	wire_json_int(o, "span_ms", s->span);
	wire_json_int(o, "logons", s->logons);
	wire_json_int(o, "reconnects", s->reconnects);
	wire_json_int(o, "refusals", s->refusals);
	wire_json_num(o, "redirect_p50_ms", (double)s->redirect_p50_us / 1000.0);
	wire_json_num(o, "redirect_p99_ms", (double)s->redirect_p99_us / 1000.0);
	wire_json_int(o, "headroom", s->headroom);
	for (; *j < m && sv[*j].ts == s->ts && sv[*j].span == s->span; (*j)++) {
		struct wire_json *c = wire_json_object();

		wire_json_int(c, "active", sv[*j].active);
		wire_json_int(c, "disconnected", sv[*j].disconnected);
		wire_json_int(c, "pending", sv[*j].pending);
		wire_json_int(c, "lost", sv[*j].lost);
		wire_json_add(servers, sv[*j].server, c);
	}
	wire_json_add(o, "servers", servers);
	return o;
}

static void
api_admin_history(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	struct store_sample *list = NULL;
	struct store_sample_server *sv = NULL;
	struct wire_json *o, *arr;
	int64_t since, limit, now = util_now_ms();
	size_t n = 0, m = 0, j = 0;
	int r;

	if (arg_int(req, res, "since", 0, INT64_MAX, now - 86400 * 1000LL, &since) != 0 ||
	    arg_int(req, res, "limit", 1, HISTORY_LIMIT_MAX, HISTORY_LIMIT_DEF, &limit) != 0)
		return;
	if ((r = store_history_list(a->st, since, (int)limit, &list, &n, &sv, &m)) != 0) {
		free(list);
		free(sv);
		reply_store_error(a, res, r, NULL);
		return;
	}
	/* samples older than a day are merged ones: older servers' rows
	 * sort before a merged sample of the same ts (by span) */
	o = wire_json_object();
	wire_json_int(o, "period", CONF_GET(a->c, history_period));
	wire_json_int(o, "now", now);
	arr = wire_json_array();
	for (size_t i = 0; i < n; i++) {
		while (j < m && (sv[j].ts < list[i].ts || (sv[j].ts == list[i].ts &&
		    sv[j].span < list[i].span)))
			j++;
		wire_json_add(arr, NULL, sample_json(&list[i], sv, m, &j));
	}
	free(list);
	free(sv);
	wire_json_add(o, "samples", arr);
	http_reply_json(res, 200, wire_json_dump(o));
}

static void
config_key_json(void *ctx, const char *section, const char *name, const char *value,
    int live)
{
	struct wire_json *k = wire_json_object();

	wire_json_str(k, "section", section);
	wire_json_str(k, "name", name);
	if (value != NULL)
		wire_json_str(k, "value", value);
	else
		wire_json_null(k, "value");	/* a secret */
	wire_json_bool(k, "live", live);
	wire_json_add(ctx, NULL, k);
}

/* GET /api/v1/config: the configuration in effect (after reloads), every
 * key with its value (secrets null) and whether a reload can change it. */
static void
api_admin_config(struct api_admin *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res)
{
	struct wire_json *o = wire_json_object(), *arr = wire_json_array();

	(void)who;
	(void)req;
	wire_json_str(o, "path", a->c->path);
	conf_each(a->c, config_key_json, arr);
	wire_json_add(o, "keys", arr);
	http_reply_json(res, 200, wire_json_dump(o));
}

static const struct api_admin_route api_admin_routes[] = {
	{ "POST", "/api/v1/login", AUTH_NONE, api_admin_login },
	{ "POST", "/api/v1/logout", AUTH_ADMIN, api_admin_logout },
	{ "GET", "/api/v1/session", AUTH_ADMIN, api_admin_session },
	{ "GET", "/api/v1/status", AUTH_ADMIN, api_admin_status },
	{ "GET", "/api/v1/servers", AUTH_ADMIN, api_admin_servers },
	{ "GET", "/api/v1/servers/", AUTH_ADMIN, api_admin_server_get },
	{ "POST", "/api/v1/servers/", AUTH_ADMIN, api_admin_server_post },
	{ "GET", "/api/v1/sessions", AUTH_ADMIN, api_admin_sessions },
	{ "DELETE", "/api/v1/sessions/", AUTH_ADMIN, api_admin_session_delete },
	{ "POST", "/api/v1/sessions/", AUTH_ADMIN, api_admin_session_post },
	{ "GET", "/api/v1/commands/", AUTH_ADMIN, api_admin_command_get },
	{ "GET", "/api/v1/events", AUTH_ADMIN, api_admin_events },
	{ "GET", "/api/v1/history", AUTH_ADMIN, api_admin_history },
	{ "GET", "/api/v1/users/", AUTH_ADMIN, api_admin_user_trail },
	{ "GET", "/api/v1/config", AUTH_ADMIN, api_admin_config },
};
_Static_assert(sizeof(api_admin_routes) / sizeof(api_admin_routes[0]) <= API_ADMIN_ROUTES,
    "API_ADMIN_ROUTES is too small");

/* The http_handler_fn of every admin route: authenticates as the row says,
 * then runs its handler. */
static void
api_admin_call(void *ctx, const struct http_request *req, struct http_response *res)
{
	const struct api_admin_binding *bd = ctx;
	struct auth_who who = { .kind = AUTH_BY_NONE };

	if (bd->route->auth == AUTH_ADMIN && auth_check(&bd->a->auth, req, res, &who) != 0)
		return;
	bd->route->fn(bd->a, &who, req, res);
}

int
api_admin_register(struct api_admin *a, struct http *h)
{
	for (size_t i = 0; i < sizeof(api_admin_routes) / sizeof(api_admin_routes[0]); i++) {
		const struct api_admin_route *rt = &api_admin_routes[i];

		a->bound[i].a = a;
		a->bound[i].route = rt;
		if (http_route(h, rt->method, rt->path, api_admin_call, &a->bound[i]) != 0)
			return -1;
	}
	return 0;
}
