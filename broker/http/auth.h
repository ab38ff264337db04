/* auth: who may use the admin API (docs/admin-api.md "Authentication").
 *  - a browser session: POST /api/v1/login (auth_login) with the admin
 *    password sets the cookie AUTH_COOKIE_NAME (HttpOnly, Secure,
 *    SameSite=Strict, Path=/) and answers a CSRF token that every
 *    state-changing request (not GET or HEAD) must send as X-CSRF-Token.
 *    Sessions live in the store (store_admin_session_*), so every broker
 *    sharing it knows them and a logout on one ends it on all; only the
 *    SHA-256 of the cookie is kept, and the CSRF token is derived from the
 *    cookie (HMAC), not stored. They expire after [http]
 *    admin_session_idle seconds without a request and at the latest
 *    admin_session_max seconds after the login; at most AUTH_SESSIONS are
 *    kept (the least recently used goes); expired rows are deleted by the
 *    background work (health.c).
 *  - a script: "Authorization: Bearer tsba_<64 hex>" (admin_token.h), kept
 *    as its SHA-256 in the store. No CSRF token is needed: browsers never
 *    send it by themselves.
 * Failed logins are limited per client address (three free, then a lockout
 * doubling from 1 s to 15 min, answered 429 with Retry-After, without
 * checking the password) and globally (at most a few scrypt checks a second,
 * so that logins cannot starve the agents' heartbeats). */
#ifndef TS_AUTH_H
#define TS_AUTH_H

#include <pthread.h>
#include <stdint.h>

#include "broker/common/loglimit.h"
#include "broker/common/wire.h"
#include "broker/core/crypto.h"
#include "broker/http/http.h"

#define AUTH_COOKIE_NAME	"__Host-tsbroker_session"
#define AUTH_SESSIONS		64	/* browser sessions at once; the oldest goes */
#define AUTH_LIMITS		256	/* client addresses tracked for failed logins */

struct conf;
struct metrics_logins;
struct store;

/* What a route needs before its handler runs (0, the default, is the
 * strict one). */
enum auth_need {
	AUTH_ADMIN = 0,		/* a session or a bearer token; CSRF by method */
	AUTH_NONE,		/* anyone (the login itself) */
};

enum auth_kind {
	AUTH_BY_NONE = 0,	/* an AUTH_NONE route */
	AUTH_BY_COOKIE,		/* a browser session */
	AUTH_BY_BEARER,		/* an admin token */
};

/* Who made a request, for the handler and the log. */
struct auth_who {
	enum auth_kind kind;
	char name[WIRE_NAME_MAX];	/* token name, or "admin" */
	/* AUTH_BY_COOKIE: */
	char session[CRYPTO_HASH_HEX];	/* the store's key: SHA-256 of the cookie */
	char csrf[CRYPTO_TOKEN_LEN + 1];
	int64_t created;		/* the login, unix ms */
};

struct auth_limit {
	char client[64];			/* "" = free slot */
	int failures;				/* in a row */
	int64_t last_fail, until;		/* monotonic ms */
};

struct auth {
	struct store *st;			/* borrowed */
	const struct conf *c;			/* borrowed */
	struct metrics_logins *m;		/* borrowed: its counters */
	int ready;
	pthread_mutex_t lock;			/* limits, bucket */
	struct auth_limit limits[AUTH_LIMITS];
	double bucket;				/* global login attempts allowed now */
	int64_t bucket_ms;
	struct loglimit limited_log;
};

/* Prepares a (zeroed or not); all pointers are borrowed and must outlive
 * it. 0 or -1. */
int auth_init(struct auth *a, struct store *st, const struct conf *c,
    struct metrics_logins *m);
/* Safe on a zeroed a and twice. */
void auth_cleanup(struct auth *a);

/* Authenticates req for an AUTH_ADMIN route: 0 with *who filled, or -1 with
 * the answer (401, 403, 5xx) set in res. */
int auth_check(struct auth *a, const struct http_request *req,
    struct http_response *res, struct auth_who *who);

/* POST /api/v1/login: checks the password under the rate limits and starts
 * a session (cookie and session JSON), or answers 400, 401, 415, 429. */
void auth_login(struct auth *a, const struct http_request *req,
    struct http_response *res);
/* POST /api/v1/logout: ends who's session (if a browser's) and clears the
 * cookie. */
void auth_logout(struct auth *a, const struct auth_who *who,
    const struct http_request *req, struct http_response *res);
/* The CSRF token of the session whose cookie value is cookie (a
 * CRYPTO_TOKEN_LEN hex token): HMAC(cookie, a label) in hex. 0 or -1. */
int auth_session_csrf(const char *cookie, char out[CRYPTO_TOKEN_LEN + 1]);

/* GET /api/v1/session: who is logged in (a session: with its CSRF token). */
void auth_session_get(struct auth *a, const struct auth_who *who,
    struct http_response *res);

#endif
