#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "broker/http/auth.h"
#include "broker/http/http_reply.h"
#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/core/admin_token.h"
#include "broker/core/conf.h"
#include "broker/core/metrics.h"
#include "broker/state/store.h"

#define LOGIN_FREE_FAILURES	3		/* failures before a lockout */
#define LOGIN_LOCK_MAX_MS	(15 * 60 * 1000)
#define LOGIN_FORGET_MS		(15 * 60 * 1000)	/* failures older are forgiven */
#define LOGIN_BUCKET_SIZE	8.0		/* scrypt checks in a burst, any client */
#define LOGIN_BUCKET_RATE	4.0		/* ... and per second after it */

int
auth_init(struct auth *a, struct store *st, const struct conf *c,
    struct metrics_logins *m)
{
	memset(a, 0, sizeof(*a));
	a->st = st;
	a->c = c;
	a->m = m;
	a->bucket = LOGIN_BUCKET_SIZE;
	a->bucket_ms = util_mono_ms();
	if (pthread_mutex_init(&a->lock, NULL) != 0)
		return -1;
	a->ready = 1;
	return 0;
}

void
auth_cleanup(struct auth *a)
{
	if (a == NULL || !a->ready)
		return;
	pthread_mutex_destroy(&a->lock);
	a->ready = 0;
}

static int
method_changes_state(const char *m)
{
	return strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0;
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

/* ---- sessions (browser logins) ---- */

static struct store_session_limits
limits(const struct auth *a)
{
	struct store_session_limits l = { (int64_t)CONF_GET(a->c, admin_session_idle) * 1000,
	    (int64_t)CONF_GET(a->c, admin_session_max) * 1000 };

	return l;
}

/* HMAC of the cookie, so no store keeps it and every broker derives the
 * same. */
int
auth_session_csrf(const char *id, char out[CRYPTO_TOKEN_LEN + 1])
{
	static const char label[] = "tsbroker admin session csrf";
	uint8_t mac[32];
	int r;

	r = crypto_hmac_sha256((const uint8_t *)id, strlen(id), label, sizeof(label) - 1, mac);
	if (r == 0)
		util_hex(mac, sizeof(mac), out);
	crypto_wipe(mac, sizeof(mac));
	return r == 0 ? 0 : -1;
}

/* A bearer token's request: 0 with who->name, or -1 with 401/5xx answered. */
static int
check_bearer(struct auth *a, const struct http_request *req, struct http_response *res,
    const char *auth, struct auth_who *who)
{
	char hash[CRYPTO_HASH_HEX];
	int r;

	if (strncasecmp(auth, "Bearer ", 7) != 0) {
		http_add_header(res, "WWW-Authenticate", "Bearer realm=\"tsbroker\"");
		http_reply_error(res, 401, "expected 'Authorization: Bearer TOKEN'");
		return -1;
	}
	if ((r = admin_token_hash(auth + 7, hash)) == CRYPTO_ERR) {	/* out of memory */
		http_reply_error(res, 500, "cannot check the token now");
		return -1;
	}
	if (r != 0 || (r = store_admin_token_auth(a->st, hash, util_now_ms(), who->name,
	    sizeof(who->name))) == STORE_NOT_FOUND) {
		log_warn("admin API request from %s refused: invalid bearer token",
		    req->client);
		http_add_header(res, "WWW-Authenticate", "Bearer realm=\"tsbroker\"");
		http_reply_error(res, 401, "invalid token");
		return -1;
	}
	if (r != 0) {
		http_reply_store_error(res, a->st, r);
		return -1;
	}
	who->kind = AUTH_BY_BEARER;
	return 0;
}

int
auth_check(struct auth *a, const struct http_request *req, struct http_response *res,
    struct auth_who *who)
{
	const char *auth = http_header(req, "Authorization"), *csrf;
	const struct store_session_limits lim = limits(a);
	struct store_admin_session s;
	char id[CRYPTO_TOKEN_LEN + 2];
	int r = -1;

	memset(who, 0, sizeof(*who));
	if (auth != NULL)
		return check_bearer(a, req, res, auth, who);
	if (cookie_get(req, AUTH_COOKIE_NAME, id, sizeof(id)) != 0) {
		http_reply_error(res, 401, "login required");
		goto out;
	}
	if (crypto_token_valid(id) && crypto_sha256_hex(id, CRYPTO_TOKEN_LEN,
	    who->session) != 0) {		/* out of memory */
		http_reply_error(res, 500, "cannot check the session now");
		goto out;
	}
	if (!crypto_token_valid(id) || (r = store_admin_session_use(a->st, who->session,
	    util_now_ms(), &lim, &s)) == STORE_NOT_FOUND) {
		http_reply_error(res, 401, "login required (the session has ended)");
		r = -1;
		goto out;
	}
	if (r != 0 || auth_session_csrf(id, who->csrf) != 0) {
		http_reply_store_error(res, a->st, r ? r : STORE_ERR);
		r = -1;
		goto out;
	}
	if (method_changes_state(req->method)) {
		csrf = http_header(req, "X-CSRF-Token");
		if (csrf == NULL || strlen(csrf) != CRYPTO_TOKEN_LEN ||
		    !crypto_equal(csrf, who->csrf, CRYPTO_TOKEN_LEN)) {
			log_warn("admin %s %s from %s refused: missing or wrong CSRF token",
			    req->method, req->path, req->client);
			http_reply_error(res, 403, "missing or wrong X-CSRF-Token");
			r = -1;
			goto out;
		}
	}
	who->kind = AUTH_BY_COOKIE;
	who->created = s.created;
	util_strlcpy(who->name, "admin", sizeof(who->name));
 out:
	if (r != 0)
		crypto_wipe(who, sizeof(*who));
	crypto_wipe(id, sizeof(id));
	return r;
}

/* ---- login rate limits ---- */

/* The limiter slot of client, made if needed (the stalest goes). Lock held. */
static struct auth_limit *
limit_slot(struct auth *a, const char *client, int64_t now)
{
	struct auth_limit *free_slot = NULL, *oldest = NULL;

	for (int i = 0; i < AUTH_LIMITS; i++) {
		struct auth_limit *l = &a->limits[i];
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
login_allowed(struct auth *a, const char *client)
{
	int64_t now = util_mono_ms(), wait = 0;
	struct auth_limit *l;

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
login_failed(struct auth *a, const char *client)
{
	int64_t now = util_mono_ms();
	struct auth_limit *l;
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
log_limited(struct auth *a, const char *client, int64_t wait)
{
	uint64_t quiet;

	if (!loglimit_pass(&a->limited_log, util_mono_ms(), &quiet))
		return;
	log_warn("admin login from %s refused without checking: too many failed "
	    "logins, retry in %lld s (and %" PRIu64 " more such refusals since the "
	    "last line)", client, (long long)wait, quiet);
}

/* ---- POST /api/v1/login, POST /api/v1/logout, GET /api/v1/session ---- */

/* created: the login (unix ms) */
static char *
session_json(struct auth *a, const char *csrf, int64_t created)
{
	struct wire_json *o = wire_json_object();

	wire_json_str(o, "user", "admin");
	wire_json_str(o, "csrf_token", csrf);
	wire_json_int(o, "expires", created +
	    (int64_t)CONF_GET(a->c, admin_session_max) * 1000);
	wire_json_int(o, "idle_timeout", CONF_GET(a->c, admin_session_idle));
	return wire_json_dump(o);
}

static void
set_cookie(struct http_response *res, const char *value, int max_age)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "%s=%s; Path=/; Max-Age=%d; HttpOnly; Secure; "
	    "SameSite=Strict", AUTH_COOKIE_NAME, value, max_age);
	http_add_header(res, "Set-Cookie", buf);
}

/* A login of client succeeded: its failures are forgiven. */
static void
limit_forget(struct auth *a, const char *client)
{
	pthread_mutex_lock(&a->lock);
	for (int i = 0; i < AUTH_LIMITS; i++)
		if (strcmp(a->limits[i].client, client) == 0)
			memset(&a->limits[i], 0, sizeof(a->limits[i]));
	pthread_mutex_unlock(&a->lock);
}

void
auth_login(struct auth *a, const struct http_request *req, struct http_response *res)
{
	const char *ct = http_header(req, "Content-Type");
	char pw[256], hash[CRYPTO_PWHASH_MAX], err[128], id[CRYPTO_TOKEN_LEN + 1], buf[24];
	char csrf[CRYPTO_TOKEN_LEN + 1];
	struct store_admin_session s;
	int64_t wait;
	int r, failures;

	if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0) {
		http_reply_error(res, 415, "Content-Type must be application/json");
		return;
	}
	if ((wait = login_allowed(a, req->client)) > 0) {
		__atomic_add_fetch(&a->m->limited, 1, __ATOMIC_RELAXED);
		log_limited(a, req->client, wait);
		snprintf(buf, sizeof(buf), "%lld", (long long)wait);
		http_add_header(res, "Retry-After", buf);
		http_reply_error(res, 429, "too many failed logins: try again later");
		return;
	}
	if ((r = wire_login_decode(req->body, req->body_len, pw, sizeof(pw), err,
	    sizeof(err))) != 0) {
		http_reply_error(res, r == WIRE_NOMEM ? 500 : 400, err);
		goto out;
	}
	if ((r = store_admin_password_get(a->st, hash, sizeof(hash))) != 0) {
		http_reply_store_error(res, a->st, r);
		goto out;
	}
	if ((r = crypto_password_verify(pw, hash)) == CRYPTO_ERR) {
		http_reply_error(res, 500, "cannot check the password now");
		goto out;
	}
	if (r != 0) {
		if (r == CRYPTO_MALFORMED)
			log_error("the stored admin password hash is malformed: set a new "
			    "one with 'tsbroker admin password'");
		failures = login_failed(a, req->client);
		__atomic_add_fetch(&a->m->failed, 1, __ATOMIC_RELAXED);
		log_warn("admin login from %s failed: wrong password (%d in a row)",
		    req->client, failures);
		(void)store_event_add(a->st, "admin_login_failed", NULL, NULL, req->client,
		    "wrong password", 0);
		http_reply_error(res, 401, "wrong password");
		goto out;
	}
	memset(&s, 0, sizeof(s));
	if (crypto_token_new(id, sizeof(id)) != 0 ||
	    crypto_sha256_hex(id, CRYPTO_TOKEN_LEN, s.id_hash) != 0 ||
	    auth_session_csrf(id, csrf) != 0) {
		http_reply_error(res, 500, "cannot make a session");
		goto out;
	}
	s.created = s.last_used = util_now_ms();
	util_strlcpy(s.client, req->client, sizeof(s.client));
	if ((r = store_admin_session_add(a->st, &s, AUTH_SESSIONS)) != 0) {
		http_reply_store_error(res, a->st, r);
		goto out;
	}
	/* no login without its event: the session goes again (its cookie was
	 * never sent, so it could not be used anyway) */
	if ((r = store_event_add(a->st, "admin_login", NULL, NULL, req->client,
	    "status page login", 0)) != 0) {
		(void)store_admin_session_remove(a->st, s.id_hash);
		http_reply_store_error(res, a->st, r);
		goto out;
	}
	limit_forget(a, req->client);
	__atomic_add_fetch(&a->m->ok, 1, __ATOMIC_RELAXED);
	log_info("admin logged in from %s", req->client);
	set_cookie(res, id, CONF_GET(a->c, admin_session_max));
	http_reply_json(res, 200, session_json(a, csrf, s.created));
 out:
	crypto_wipe(csrf, sizeof(csrf));
	crypto_wipe(id, sizeof(id));
	crypto_wipe(pw, sizeof(pw));
}

void
auth_logout(struct auth *a, const struct auth_who *who, const struct http_request *req,
    struct http_response *res)
{
	int r;

	if (who->kind == AUTH_BY_COOKIE) {
		/* NOT_FOUND: ended meanwhile (another tab, another broker) */
		if ((r = store_admin_session_remove(a->st, who->session)) != 0 &&
		    r != STORE_NOT_FOUND) {
			http_reply_store_error(res, a->st, r);
			return;
		}
		log_info("admin logged out from %s", req->client);
	}
	set_cookie(res, "", 0);
	http_reply_json(res, 200, strdup("{\"logged_out\":true}"));
}

void
auth_session_get(struct auth *a, const struct auth_who *who, struct http_response *res)
{
	struct wire_json *o;

	if (who->kind == AUTH_BY_BEARER) {
		o = wire_json_object();
		wire_json_str(o, "user", who->name);
		wire_json_str(o, "auth", "bearer");
		http_reply_json(res, 200, wire_json_dump(o));
		return;
	}
	http_reply_json(res, 200, session_json(a, who->csrf, who->created));
}
