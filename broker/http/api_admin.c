#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "broker/http/api_admin.h"
#include "broker/http/api_agent.h"
#include "broker/core/broker.h"
#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/common/wire.h"
#include "broker/core/conf.h"
#include "broker/core/crypto.h"
#include "broker/front/pem_cache.h"
#include "broker/state/farm.h"
#include "broker/state/placement.h"
#include "broker/state/store.h"

#define LOGIN_FREE_FAILURES	3		/* failures before a lockout */
#define LOGIN_LOCK_MAX_MS	(15 * 60 * 1000)
#define LOGIN_FORGET_MS		(15 * 60 * 1000)	/* failures older are forgiven */
#define LOGIN_BUCKET_SIZE	8.0		/* scrypt checks in a burst, any client */
#define LOGIN_BUCKET_RATE	4.0		/* ... and per second after it */
#define SESSIONS_LIMIT_DEF	1000
#define SESSIONS_LIMIT_MAX	100000
#define EVENTS_LIMIT_DEF	100
#define EVENTS_LIMIT_MAX	1000

enum auth_kind { AUTH_COOKIE = 1, AUTH_BEARER };

/* Who made a request, for the log. */
struct who {
	enum auth_kind kind;
	char name[WIRE_NAME_MAX];	/* token name, or "admin" */
	int slot;			/* session slot (AUTH_COOKIE) */
};

int
api_admin_init(struct api_admin *a, struct store *st, const struct conf *c,
    const struct broker *broker, const struct api_agent *agent)
{
	memset(a, 0, sizeof(*a));
	a->st = st;
	a->c = c;
	a->broker = broker;
	a->agent = agent;
	a->bucket = LOGIN_BUCKET_SIZE;
	a->bucket_ms = util_mono_ms();
	if (pthread_mutex_init(&a->lock, NULL) != 0)
		return -1;
	a->ready = 1;
	return 0;
}

void
api_admin_cleanup(struct api_admin *a)
{
	if (a == NULL || !a->ready)
		return;
	crypto_wipe(a->sessions, sizeof(a->sessions));
	pthread_mutex_destroy(&a->lock);
	a->ready = 0;
}

/* ---- small helpers ---- */

static int
method_changes_state(const char *m)
{
	return strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0;
}

static int
is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return 0;
	return s[n] == '\0';
}

/* The value of cookie name in the Cookie header into out, 0 or -1. */
static int
cookie_get(const struct http_request *req, const char *name, char *out, size_t n)
{
	const char *h = http_header(req, "Cookie"), *p, *end;
	size_t nl = strlen(name);

	for (p = h; p != NULL && *p != '\0'; p = end) {
		while (*p == ' ' || *p == ';')
			p++;
		end = p + strcspn(p, ";");
		if ((size_t)(end - p) > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			size_t vl = (size_t)(end - p) - nl - 1;
			if (vl >= n)
				return -1;
			memcpy(out, p + nl + 1, vl);
			out[vl] = '\0';
			return 0;
		}
	}
	return -1;
}

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

static void
reply_store_error(struct http_response *res, int r)
{
	http_reply_error(res, r == STORE_FULL ? 503 : 500, store_strerror(r));
}

/* ---- sessions (browser logins) ---- */

/* Drops expired sessions. Lock held. */
static void
sessions_expire(struct api_admin *a, int64_t now)
{
	int64_t idle = (int64_t)a->c->admin_session_idle * 1000;
	int64_t max = (int64_t)a->c->admin_session_max * 1000;

	for (int i = 0; i < API_ADMIN_SESSIONS; i++) {
		struct api_admin_session *s = &a->sessions[i];
		if (s->used && (now - s->last >= idle || now - s->created >= max))
			crypto_wipe(s, sizeof(*s));
	}
}

/* Finds the session of the cookie value id. Lock held. Slot or -1. */
static int
session_find(struct api_admin *a, const char *id)
{
	char hash[CRYPTO_HASH_HEX];

	if (strlen(id) != CRYPTO_TOKEN_LEN || !is_hex(id, CRYPTO_TOKEN_LEN) ||
	    crypto_sha256_hex(id, CRYPTO_TOKEN_LEN, hash) != 0)
		return -1;
	for (int i = 0; i < API_ADMIN_SESSIONS; i++) {
		struct api_admin_session *s = &a->sessions[i];
		if (s->used && crypto_equal(s->id_hash, hash, CRYPTO_HASH_HEX - 1))
			return i;
	}
	return -1;
}

/* Authenticates req; 0 with *who filled, or -1 with 401/403 answered. */
static int
admin_auth(struct api_admin *a, const struct http_request *req, struct http_response *res,
    struct who *who)
{
	const char *auth = http_header(req, "Authorization"), *csrf;
	char id[CRYPTO_TOKEN_LEN + 2], hash[CRYPTO_HASH_HEX];
	size_t plen = strlen(API_ADMIN_TOKEN_PREFIX);
	int64_t now = util_mono_ms();
	int slot, r;

	memset(who, 0, sizeof(*who));
	if (auth != NULL) {
		if (strncasecmp(auth, "Bearer ", 7) != 0) {
			http_add_header(res, "WWW-Authenticate", "Bearer realm=\"tsbroker\"");
			http_reply_error(res, 401, "expected 'Authorization: Bearer TOKEN'");
			return -1;
		}
		auth += 7;
		if (strlen(auth) != plen + CRYPTO_TOKEN_LEN ||
		    strncmp(auth, API_ADMIN_TOKEN_PREFIX, plen) != 0 ||
		    !is_hex(auth + plen, CRYPTO_TOKEN_LEN) ||
		    crypto_sha256_hex(auth, strlen(auth), hash) != 0 ||
		    (r = store_admin_token_auth(a->st, hash, util_now_ms(), who->name,
		    sizeof(who->name))) == STORE_NOT_FOUND) {
			log_warn("admin API request from %s refused: invalid bearer token",
			    req->client);
			http_add_header(res, "WWW-Authenticate", "Bearer realm=\"tsbroker\"");
			http_reply_error(res, 401, "invalid token");
			return -1;
		}
		if (r != 0) {
			reply_store_error(res, r);
			return -1;
		}
		who->kind = AUTH_BEARER;
		return 0;
	}
	if (cookie_get(req, API_ADMIN_COOKIE, id, sizeof(id)) != 0) {
		http_reply_error(res, 401, "login required");
		return -1;
	}
	pthread_mutex_lock(&a->lock);
	sessions_expire(a, now);
	if ((slot = session_find(a, id)) < 0) {
		pthread_mutex_unlock(&a->lock);
		http_reply_error(res, 401, "login required (the session has ended)");
		return -1;
	}
	if (method_changes_state(req->method)) {
		csrf = http_header(req, "X-CSRF-Token");
		if (csrf == NULL || strlen(csrf) != CRYPTO_TOKEN_LEN ||
		    !crypto_equal(csrf, a->sessions[slot].csrf, CRYPTO_TOKEN_LEN)) {
			pthread_mutex_unlock(&a->lock);
			log_warn("admin %s %s from %s refused: missing or wrong CSRF token",
			    req->method, req->path, req->client);
			http_reply_error(res, 403, "missing or wrong X-CSRF-Token");
			return -1;
		}
	}
	a->sessions[slot].last = now;
	pthread_mutex_unlock(&a->lock);
	who->kind = AUTH_COOKIE;
	who->slot = slot;
	util_strlcpy(who->name, "admin", sizeof(who->name));
	return 0;
}

/* ---- login rate limits ---- */

/* The limiter slot of client, made if needed (the stalest goes). Lock held. */
static struct api_admin_limit *
limit_slot(struct api_admin *a, const char *client, int64_t now)
{
	struct api_admin_limit *free_slot = NULL, *oldest = NULL;

	for (int i = 0; i < API_ADMIN_LIMITS; i++) {
		struct api_admin_limit *l = &a->limits[i];
		if (l->client[0] != '\0' && now - l->last_fail >= LOGIN_FORGET_MS &&
		    now >= l->until)
			memset(l, 0, sizeof(*l));	/* forgiven */
		if (l->client[0] == '\0') {
			if (free_slot == NULL)
				free_slot = l;
			continue;
		}
		if (strcmp(l->client, client) == 0)
			return l;
		if (oldest == NULL || l->last_fail < oldest->last_fail)
			oldest = l;
	}
	if (free_slot == NULL)
		free_slot = oldest;
	memset(free_slot, 0, sizeof(*free_slot));
	util_strlcpy(free_slot->client, client, sizeof(free_slot->client));
	return free_slot;
}

/* May client try a password now? 0, or the seconds to wait (>= 1). Takes
 * one check from the global bucket when it may. */
static int64_t
login_allowed(struct api_admin *a, const char *client)
{
	int64_t now = util_mono_ms(), wait = 0;
	struct api_admin_limit *l;

	pthread_mutex_lock(&a->lock);
	l = limit_slot(a, client, now);
	a->bucket += (double)(now - a->bucket_ms) * LOGIN_BUCKET_RATE / 1000.0;
	if (a->bucket > LOGIN_BUCKET_SIZE)
		a->bucket = LOGIN_BUCKET_SIZE;
	a->bucket_ms = now;
	if (now < l->until)
		wait = (l->until - now + 999) / 1000;
	else if (a->bucket < 1.0)
		wait = 1;
	else
		a->bucket -= 1.0;
	pthread_mutex_unlock(&a->lock);
	return wait;
}

/* Records a failed login of client; returns the failures in a row. */
static int
login_failed(struct api_admin *a, const char *client)
{
	int64_t now = util_mono_ms();
	struct api_admin_limit *l;
	int n;

	pthread_mutex_lock(&a->lock);
	l = limit_slot(a, client, now);
	n = ++l->failures;
	l->last_fail = now;
	if (n > LOGIN_FREE_FAILURES) {
		int shift = n - LOGIN_FREE_FAILURES - 1;
		int64_t lock = shift >= 20 ? LOGIN_LOCK_MAX_MS : (int64_t)1000 << shift;
		l->until = now + (lock < LOGIN_LOCK_MAX_MS ? lock : LOGIN_LOCK_MAX_MS);
	}
	pthread_mutex_unlock(&a->lock);
	return n;
}

/* At most one line a second for refused (locked out) attempts. */
static void
log_limited(struct api_admin *a, const char *client, int64_t wait)
{
	int64_t now = util_mono_ms();
	uint64_t quiet;

	pthread_mutex_lock(&a->lock);
	if (now - a->limited_log_ms < 1000) {
		a->limited_quiet++;
		pthread_mutex_unlock(&a->lock);
		return;
	}
	a->limited_log_ms = now;
	quiet = a->limited_quiet;
	a->limited_quiet = 0;
	pthread_mutex_unlock(&a->lock);
	log_warn("admin login from %s refused without checking: too many failed "
	    "logins, retry in %lld s (and %" PRIu64 " more such refusals since the "
	    "last line)", client, (long long)wait, quiet);
}

static void
event_add(struct api_admin *a, const char *kind, const char *server, const char *client,
    const char *detail)
{
	(void)store_event_add(a->st, kind, server, NULL, client, detail, 0);
}

/* ---- POST /api/v1/login, POST /api/v1/logout, GET /api/v1/session ---- */

static char *
session_json(struct api_admin *a, const struct api_admin_session *s, int64_t now)
{
	int64_t left_max = s->created + (int64_t)a->c->admin_session_max * 1000 - now;
	struct wire_json *o = wire_json_object();

	wire_json_str(o, "user", "admin");
	wire_json_str(o, "csrf_token", s->csrf);
	wire_json_int(o, "expires", util_now_ms() + left_max);
	wire_json_int(o, "idle_timeout", a->c->admin_session_idle);
	return wire_json_dump(o);
}

static void
set_cookie(struct http_response *res, const char *value, int max_age)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "%s=%s; Path=/; Max-Age=%d; HttpOnly; Secure; "
	    "SameSite=Strict", API_ADMIN_COOKIE, value, max_age);
	http_add_header(res, "Set-Cookie", buf);
}

static void
api_admin_login(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_admin *a = ctx;
	const char *ct = http_header(req, "Content-Type");
	char pw[256], hash[CRYPTO_PWHASH_MAX], err[128], id[CRYPTO_TOKEN_LEN + 1], buf[24];
	struct api_admin_session s;
	int64_t wait, now;
	int r, slot, failures;

	if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0) {
		http_reply_error(res, 415, "Content-Type must be application/json");
		return;
	}
	if ((wait = login_allowed(a, req->client)) > 0) {
		__atomic_add_fetch(&a->logins_limited, 1, __ATOMIC_RELAXED);
		log_limited(a, req->client, wait);
		snprintf(buf, sizeof(buf), "%lld", (long long)wait);
		http_add_header(res, "Retry-After", buf);
		http_reply_error(res, 429, "too many failed logins: try again later");
		return;
	}
	if (wire_login_decode(req->body, req->body_len, pw, sizeof(pw), err,
	    sizeof(err)) != 0) {
		http_reply_error(res, 400, err);
		goto out;
	}
	if ((r = store_admin_password_get(a->st, hash, sizeof(hash))) != 0) {
		reply_store_error(res, r);
		goto out;
	}
	if ((r = crypto_password_verify(pw, hash)) != 0) {
		if (r == -2)
			log_error("the stored admin password hash is malformed: set a new "
			    "one with 'tsbroker admin password'");
		failures = login_failed(a, req->client);
		__atomic_add_fetch(&a->logins_failed, 1, __ATOMIC_RELAXED);
		log_warn("admin login from %s failed: wrong password (%d in a row)",
		    req->client, failures);
		event_add(a, "admin_login_failed", NULL, req->client, "wrong password");
		http_reply_error(res, 401, "wrong password");
		goto out;
	}
	memset(&s, 0, sizeof(s));
	if (crypto_token_new(id, sizeof(id)) != 0 ||
	    crypto_sha256_hex(id, CRYPTO_TOKEN_LEN, s.id_hash) != 0 ||
	    crypto_token_new(s.csrf, sizeof(s.csrf)) != 0) {
		http_reply_error(res, 500, "cannot make a session");
		goto out;
	}
	now = util_mono_ms();
	s.used = 1;
	s.created = s.last = now;
	util_strlcpy(s.client, req->client, sizeof(s.client));
	pthread_mutex_lock(&a->lock);
	sessions_expire(a, now);
	slot = 0;
	for (int i = 0; i < API_ADMIN_SESSIONS; i++) {
		if (!a->sessions[i].used) {
			slot = i;
			break;
		}
		if (a->sessions[i].last < a->sessions[slot].last)
			slot = i;	/* full: the least recently used goes */
	}
	a->sessions[slot] = s;
	for (int i = 0; i < API_ADMIN_LIMITS; i++)
		if (strcmp(a->limits[i].client, req->client) == 0)
			memset(&a->limits[i], 0, sizeof(a->limits[i]));
	pthread_mutex_unlock(&a->lock);
	__atomic_add_fetch(&a->logins_ok, 1, __ATOMIC_RELAXED);
	log_info("admin logged in from %s", req->client);
	event_add(a, "admin_login", NULL, req->client, "status page login");
	set_cookie(res, id, a->c->admin_session_max);
	http_reply_json(res, 200, session_json(a, &s, now));
	crypto_wipe(&s, sizeof(s));
 out:
	crypto_wipe(id, sizeof(id));
	crypto_wipe(pw, sizeof(pw));
}

static void
api_admin_logout(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_admin *a = ctx;
	struct who who;

	if (admin_auth(a, req, res, &who) != 0)
		return;
	if (who.kind == AUTH_COOKIE) {
		pthread_mutex_lock(&a->lock);
		crypto_wipe(&a->sessions[who.slot], sizeof(a->sessions[who.slot]));
		pthread_mutex_unlock(&a->lock);
		log_info("admin logged out from %s", req->client);
	}
	set_cookie(res, "", 0);
	http_reply_json(res, 200, strdup("{\"logged_out\":true}"));
}

static void
api_admin_session(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_admin *a = ctx;
	struct api_admin_session s;
	struct who who;
	struct wire_json *o;

	if (admin_auth(a, req, res, &who) != 0)
		return;
	if (who.kind == AUTH_BEARER) {
		o = wire_json_object();
		wire_json_str(o, "user", who.name);
		wire_json_str(o, "auth", "bearer");
		http_reply_json(res, 200, wire_json_dump(o));
		return;
	}
	pthread_mutex_lock(&a->lock);
	s = a->sessions[who.slot];
	pthread_mutex_unlock(&a->lock);
	http_reply_json(res, 200, session_json(a, &s, util_mono_ms()));
	crypto_wipe(&s, sizeof(s));
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
	wire_json_str(o, "admin_state", s->admin_state);
	wire_json_str(o, "state", s->state);
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

static struct wire_json *
session_rec_json(const struct store_session *e)
{
	struct wire_json *o = wire_json_object();

	wire_json_int(o, "id", e->id);
	wire_json_str(o, "user", e->user);
	wire_json_str(o, "login", e->login);
	wire_json_str(o, "domain", e->domain);
	wire_json_str(o, "server", e->server);
	wire_json_str(o, "state", e->state);
	wire_json_str(o, "remote_id", e->remote_id);
	wire_json_str(o, "client", e->client);
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
api_admin_status(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_admin *a = ctx;
	struct store_server *list = NULL;
	struct farm_summary f;
	struct wire_json *o, *sv, *ss, *n1;
	struct who who;
	int64_t now = util_now_ms();
	size_t n = 0;
	int r;

	if (admin_auth(a, req, res, &who) != 0)
		return;
	if ((r = store_server_list(a->st, &list, &n)) != 0) {
		reply_store_error(res, r);
		return;
	}
	farm_summarise(list, n, now, &f);
	free(list);
	o = wire_json_object();
	wire_json_int(o, "now", now);
	wire_json_int(o, "heartbeat_interval", a->c->heartbeat_interval);
	wire_json_int(o, "down_after", a->c->down_after);
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
api_admin_servers(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_admin *a = ctx;
	struct store_server *list = NULL;
	struct wire_json *o, *arr;
	struct who who;
	int64_t now = util_now_ms();
	size_t n = 0;
	int r;

	if (admin_auth(a, req, res, &who) != 0)
		return;
	if ((r = store_server_list(a->st, &list, &n)) != 0) {
		reply_store_error(res, r);
		return;
	}
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
api_admin_server_get(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_admin *a = ctx;
	struct store_server s;
	char name[WIRE_NAME_MAX], msg[128];
	const char *action;
	struct who who;
	int r;

	if (admin_auth(a, req, res, &who) != 0 ||
	    server_path(req, res, name, sizeof(name), &action) != 0)
		return;
	if (action != NULL) {
		http_reply_error(res, 404, "no such resource");
		return;
	}
	if ((r = store_server_get(a->st, name, &s)) == STORE_NOT_FOUND) {
		snprintf(msg, sizeof(msg), "no server '%s'", name);
		http_reply_error(res, 404, msg);
		return;
	}
	if (r != 0) {
		reply_store_error(res, r);
		return;
	}
	http_reply_json(res, 200, wire_json_dump(server_json(&s, util_now_ms())));
}

static void
api_admin_server_post(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_admin *a = ctx;
	struct store_server s;
	char name[WIRE_NAME_MAX], msg[128];
	const char *action;
	struct who who;
	int r, drain;

	if (admin_auth(a, req, res, &who) != 0 ||
	    server_path(req, res, name, sizeof(name), &action) != 0)
		return;
	if (action == NULL || (strcmp(action, "drain") != 0 && strcmp(action, "enable") != 0)) {
		http_reply_error(res, 404, "no such action (drain or enable)");
		return;
	}
	drain = action[0] == 'd';
	if ((r = store_server_drain(a->st, name, drain, util_now_ms())) == STORE_NOT_FOUND) {
		snprintf(msg, sizeof(msg), "no server '%s'", name);
		http_reply_error(res, 404, msg);
		return;
	}
	if (r != 0 || (r = store_server_get(a->st, name, &s)) != 0) {
		reply_store_error(res, r);
		return;
	}
	log_info("server %s %s by %s from %s", name, drain ? "draining" : "enabled",
	    who.name, req->client);
	http_reply_json(res, 200, wire_json_dump(server_json(&s, util_now_ms())));
}

/* ---- GET /api/v1/sessions, DELETE /api/v1/sessions/ID ---- */

static void
api_admin_sessions(void *ctx, const struct http_request *req, struct http_response *res)
{
	static const char *states[] = { "pending", "active", "disconnected", "lost",
	    "ended" };
	struct api_admin *a = ctx;
	struct store_session_filter f = { NULL, NULL, NULL };
	struct store_session *list = NULL;
	struct store_server srv;
	const char *user = http_arg(req, "user"), *server = http_arg(req, "server");
	const char *state = http_arg(req, "state");
	char norm[WIRE_USER_MAX] = "", msg[160];
	struct wire_json *o, *arr;
	struct who who;
	size_t n = 0, shown = 0, total = 0;
	int64_t limit;
	int r, ok = 0;

	if (admin_auth(a, req, res, &who) != 0 ||
	    arg_int(req, res, "limit", 1, SESSIONS_LIMIT_MAX, SESSIONS_LIMIT_DEF, &limit) != 0)
		return;
	if (state != NULL && state[0] != '\0') {
		for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
			ok |= strcmp(state, states[i]) == 0;
		if (!ok) {
			http_reply_error(res, 400, "'state' must be pending, active, "
			    "disconnected, lost or ended");
			return;
		}
		f.state = state;
	}
	if (user != NULL && user[0] != '\0' &&
	    placement_user_normalise(user, norm, sizeof(norm)) != 0) {
		http_reply_error(res, 400, "'user' is not a usable user name");
		return;
	}
	if (server != NULL && server[0] != '\0') {
		if (!wire_name_valid(server)) {
			http_reply_error(res, 400, "'server' is not a server name");
			return;
		}
		if ((r = store_server_get(a->st, server, &srv)) == STORE_NOT_FOUND) {
			snprintf(msg, sizeof(msg), "no server '%s'", server);
			http_reply_error(res, 404, msg);
			return;
		}
		if (r != 0) {
			reply_store_error(res, r);
			return;
		}
		f.server = server;
	}
	if ((r = store_session_list(a->st, &f, &list, &n)) != 0) {
		reply_store_error(res, r);
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

static void
api_admin_session_delete(void *ctx, const struct http_request *req,
    struct http_response *res)
{
	struct api_admin *a = ctx;
	const char *p = req->path + strlen("/api/v1/sessions/");
	struct wire_json *o;
	struct who who;
	char *end, msg[96];
	long long id;
	int r;

	if (admin_auth(a, req, res, &who) != 0)
		return;
	errno = 0;
	id = strtoll(p, &end, 10);
	if (!isdigit((unsigned char)*p) || errno != 0 || *end != '\0' || id < 1) {
		http_reply_error(res, 400, "session ids are positive integers");
		return;
	}
	if ((r = store_session_forget(a->st, id, util_now_ms())) == STORE_NOT_FOUND) {
		snprintf(msg, sizeof(msg), "no session %lld (or it has ended)", id);
		http_reply_error(res, 404, msg);
		return;
	}
	if (r != 0) {
		reply_store_error(res, r);
		return;
	}
	log_info("session %lld forgotten by %s from %s", id, who.name, req->client);
	o = wire_json_object();
	wire_json_int(o, "forgotten", id);
	http_reply_json(res, 200, wire_json_dump(o));
}

/* ---- GET /api/v1/events ---- */

static void
api_admin_events(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_admin *a = ctx;
	struct store_event *list = NULL;
	struct wire_json *o, *arr;
	struct who who;
	int64_t since, limit;
	size_t n = 0;
	int r;

	if (admin_auth(a, req, res, &who) != 0 ||
	    arg_int(req, res, "since", 0, INT64_MAX, 0, &since) != 0 ||
	    arg_int(req, res, "limit", 1, EVENTS_LIMIT_MAX, EVENTS_LIMIT_DEF, &limit) != 0)
		return;
	if ((r = store_event_list(a->st, since, (int)limit, &list, &n)) != 0) {
		reply_store_error(res, r);
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

/* ---- GET /metrics (Prometheus text format 0.0.4) ---- */

struct textbuf {
	char *s;
	size_t len, cap;
	int failed;
};

static void
tb_printf(struct textbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0,
		    fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if (b->s != NULL && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		char *ns = realloc(b->s, cap);
		if (ns == NULL) {
			b->failed = 1;
			return;
		}
		b->s = ns;
		b->cap = cap;
	}
}

static uint64_t
ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void
api_admin_metrics(void *ctx, const struct http_request *req, struct http_response *res)
{
	static const char *outcomes[] = { "redirected", "refused", "failed" };
	struct api_admin *a = ctx;
	const struct broker_metrics *m = &a->broker->m;
	struct store_server *list = NULL;
	struct textbuf b = { NULL, 0, 0, 0 };
	struct farm_summary f;
	uint64_t cum = 0;
	size_t n = 0;
	int r;

	if ((r = store_server_list(a->st, &list, &n)) != 0) {
		reply_store_error(res, r);
		return;
	}
	farm_summarise(list, n, util_now_ms(), &f);
	free(list);
	tb_printf(&b, "# HELP tsbroker_servers Terminal servers by health state.\n"
	    "# TYPE tsbroker_servers gauge\n"
	    "tsbroker_servers{state=\"up\"} %d\ntsbroker_servers{state=\"down\"} %d\n"
	    "tsbroker_servers{state=\"unknown\"} %d\n", f.up, f.down, f.unknown);
	tb_printf(&b, "# HELP tsbroker_servers_draining Servers drained by an admin.\n"
	    "# TYPE tsbroker_servers_draining gauge\ntsbroker_servers_draining %d\n"
	    "# HELP tsbroker_servers_quarantined Servers quarantined as black holes.\n"
	    "# TYPE tsbroker_servers_quarantined gauge\ntsbroker_servers_quarantined %d\n"
	    "# HELP tsbroker_servers_accepting Servers taking new users (up, enabled, "
	    "not quarantined).\n# TYPE tsbroker_servers_accepting gauge\n"
	    "tsbroker_servers_accepting %d\n", f.draining, f.quarantined, f.accepting);
	tb_printf(&b, "# HELP tsbroker_sessions Sessions by state.\n"
	    "# TYPE tsbroker_sessions gauge\n"
	    "tsbroker_sessions{state=\"active\"} %d\n"
	    "tsbroker_sessions{state=\"disconnected\"} %d\n"
	    "tsbroker_sessions{state=\"pending\"} %d\n"
	    "tsbroker_sessions{state=\"lost\"} %d\n", f.active, f.disconnected,
	    f.pending, f.lost);
	tb_printf(&b, "# HELP tsbroker_n_plus_1_headroom Free places left after the "
	    "loss of the worst up server (negative: users without a place).\n"
	    "# TYPE tsbroker_n_plus_1_headroom gauge\ntsbroker_n_plus_1_headroom %d\n"
	    "# HELP tsbroker_n_plus_1_ok 1 if the loss of any one up server is absorbed.\n"
	    "# TYPE tsbroker_n_plus_1_ok gauge\ntsbroker_n_plus_1_ok %d\n",
	    f.n1.headroom, f.n1.ok);
	tb_printf(&b, "# HELP tsbroker_redirects_total RDP connections by outcome.\n"
	    "# TYPE tsbroker_redirects_total counter\n");
	for (int i = 0; i < 3; i++)
		tb_printf(&b, "tsbroker_redirects_total{outcome=\"%s\"} %" PRIu64 "\n",
		    outcomes[i], ld(&m->redirects[i]));
	tb_printf(&b, "# HELP tsbroker_reconnects_total Redirects back to an existing "
	    "session.\n# TYPE tsbroker_reconnects_total counter\n"
	    "tsbroker_reconnects_total %" PRIu64 "\n", ld(&m->reconnects));
	tb_printf(&b, "# HELP tsbroker_redirect_seconds Broker time from accept to "
	    "the redirect or refusal.\n# TYPE tsbroker_redirect_seconds histogram\n");
	for (int i = 0; i < BROKER_BUCKETS; i++) {
		cum += ld(&m->hist[i]);
		if (i == BROKER_BUCKETS - 1)
			tb_printf(&b, "tsbroker_redirect_seconds_bucket{le=\"+Inf\"} %"
			    PRIu64 "\n", cum);
		else
			tb_printf(&b, "tsbroker_redirect_seconds_bucket{le=\"%g\"} %" PRIu64
			    "\n", (double)broker_buckets_us[i] / 1e6, cum);
	}
	tb_printf(&b, "tsbroker_redirect_seconds_sum %.6f\n"
	    "tsbroker_redirect_seconds_count %" PRIu64 "\n",
	    (double)ld(&m->hist_sum_us) / 1e6, cum);
	tb_printf(&b, "# HELP tsbroker_splices_total Connections routed by a routing "
	    "token or a trusted cookie, by outcome.\n# TYPE tsbroker_splices_total counter\n"
	    "tsbroker_splices_total{outcome=\"spliced\"} %" PRIu64 "\n"
	    "tsbroker_splices_total{outcome=\"refused\"} %" PRIu64 "\n"
	    "tsbroker_splices_total{outcome=\"failed\"} %" PRIu64 "\n"
	    "# HELP tsbroker_splices_active Spliced connections open now.\n"
	    "# TYPE tsbroker_splices_active gauge\ntsbroker_splices_active %d\n"
	    "# HELP tsbroker_splice_failovers_total Servers found unreachable when "
	    "splicing, marked down and replaced.\n"
	    "# TYPE tsbroker_splice_failovers_total counter\n"
	    "tsbroker_splice_failovers_total %" PRIu64 "\n",
	    ld(&m->splices[BROKER_SPLICED]), ld(&m->splices[BROKER_SPLICE_REFUSED]),
	    ld(&m->splices[BROKER_SPLICE_FAILED]), broker_splices_active(a->broker),
	    ld(&m->failovers));
	tb_printf(&b, "# HELP tsbroker_pem_cache_hits_total FreeRDP TLS set-up PEM reads "
	    "served from the key and certificate parsed at start (two per handshake).\n"
	    "# TYPE tsbroker_pem_cache_hits_total counter\n"
	    "tsbroker_pem_cache_hits_total %" PRIu64 "\n", pem_cache_hits());
	tb_printf(&b, "# HELP tsbroker_heartbeats_received_total Agent heartbeats "
	    "received.\n# TYPE tsbroker_heartbeats_received_total counter\n"
	    "tsbroker_heartbeats_received_total %" PRIu64 "\n"
	    "# HELP tsbroker_heartbeats_rejected_total Agent heartbeats rejected "
	    "(token, body, name).\n# TYPE tsbroker_heartbeats_rejected_total counter\n"
	    "tsbroker_heartbeats_rejected_total %" PRIu64 "\n",
	    ld(&a->agent->received), ld(&a->agent->rejected));
	tb_printf(&b, "# HELP tsbroker_admin_logins_total Status page logins by "
	    "result.\n# TYPE tsbroker_admin_logins_total counter\n"
	    "tsbroker_admin_logins_total{result=\"ok\"} %" PRIu64 "\n"
	    "tsbroker_admin_logins_total{result=\"failed\"} %" PRIu64 "\n"
	    "tsbroker_admin_logins_total{result=\"limited\"} %" PRIu64 "\n",
	    ld(&a->logins_ok), ld(&a->logins_failed), ld(&a->logins_limited));
	if (b.failed) {
		free(b.s);
		http_reply_error(res, 500, "out of memory");
		return;
	}
	res->status = 200;
	res->content_type = "text/plain; version=0.0.4; charset=utf-8";
	res->body = b.s;
	res->body_len = b.len;
}

int
api_admin_register(struct api_admin *a, struct http *h)
{
	static const struct {
		const char *method, *path;
		http_handler_fn fn;
	} routes[] = {
		{ "POST", "/api/v1/login", api_admin_login },
		{ "POST", "/api/v1/logout", api_admin_logout },
		{ "GET", "/api/v1/session", api_admin_session },
		{ "GET", "/api/v1/status", api_admin_status },
		{ "GET", "/api/v1/servers", api_admin_servers },
		{ "GET", "/api/v1/servers/", api_admin_server_get },
		{ "POST", "/api/v1/servers/", api_admin_server_post },
		{ "GET", "/api/v1/sessions", api_admin_sessions },
		{ "DELETE", "/api/v1/sessions/", api_admin_session_delete },
		{ "GET", "/api/v1/events", api_admin_events },
		{ "GET", "/metrics", api_admin_metrics },
	};

	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (http_route(h, routes[i].method, routes[i].path, routes[i].fn, a) != 0)
			return -1;
	return 0;
}
