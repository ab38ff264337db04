/* api_admin: the admin JSON API behind the status page, its login, and the
 * Prometheus /metrics endpoint (docs/admin-api.md describes every endpoint).
 *
 * Authentication, per request:
 *  - a browser session: POST /api/v1/login with the admin password sets the
 *    cookie API_ADMIN_COOKIE (HttpOnly, Secure, SameSite=Strict, Path=/) and
 *    answers a CSRF token that every state-changing request (POST, DELETE)
 *    must send as X-CSRF-Token. Sessions live in memory only (a restart logs
 *    everyone out); only the SHA-256 of their ids is kept. They expire after
 *    [http] admin_session_idle seconds without a request and at the latest
 *    admin_session_max seconds after the login.
 *  - a script: "Authorization: Bearer tsba_<64 hex>", a token made by
 *    `tsbroker admin token add NAME` and kept as its SHA-256 in the store.
 *    No CSRF token is needed: browsers never send it by themselves.
 * Failed logins are limited per client address (three free, then a lockout
 * doubling from 1 s to 15 min, answered 429 with Retry-After, without
 * checking the password) and globally (at most a few scrypt checks a second,
 * so that logins cannot starve the agents' heartbeats).
 * GET /metrics needs no login: it holds counts only (no names, addresses or
 * users). */
#ifndef TS_API_ADMIN_H
#define TS_API_ADMIN_H

#include <pthread.h>
#include <stdint.h>

#include "broker/core/crypto.h"
#include "broker/http/http.h"

#define API_ADMIN_TOKEN_PREFIX	"tsba_"			/* admin bearer tokens */
#define API_ADMIN_COOKIE	"__Host-tsbroker_session"
#define API_ADMIN_SESSIONS	64	/* browser sessions at once; the oldest goes */
#define API_ADMIN_LIMITS	256	/* client addresses tracked for failed logins */

struct api_agent;
struct broker;
struct conf;
struct store;

struct api_admin_session {
	int used;
	char id_hash[CRYPTO_HASH_HEX];		/* SHA-256 of the cookie's value */
	char csrf[CRYPTO_TOKEN_LEN + 1];
	int64_t created, last;			/* monotonic ms */
	char client[64];
};

struct api_admin_limit {
	char client[64];			/* "" = free slot */
	int failures;				/* in a row */
	int64_t last_fail, until;		/* monotonic ms */
};

struct api_admin {
	struct store *st;			/* borrowed */
	const struct conf *c;			/* borrowed */
	const struct broker *broker;		/* borrowed: redirect metrics */
	const struct api_agent *agent;		/* borrowed: heartbeat counters */
	int ready;
	pthread_mutex_t lock;			/* sessions, limits, bucket */
	struct api_admin_session sessions[API_ADMIN_SESSIONS];
	struct api_admin_limit limits[API_ADMIN_LIMITS];
	double bucket;				/* global login attempts allowed now */
	int64_t bucket_ms;
	uint64_t logins_ok, logins_failed, logins_limited;	/* atomics */
	int64_t limited_log_ms;
	uint64_t limited_quiet;
};

/* Prepares a (zeroed or not) a; all pointers are borrowed and must outlive
 * it. 0 or -1. */
int api_admin_init(struct api_admin *a, struct store *st, const struct conf *c,
    const struct broker *broker, const struct api_agent *agent);
/* Registers every admin route and /metrics on h (before http_start). 0 or -1. */
int api_admin_register(struct api_admin *a, struct http *h);
/* Forgets the sessions (wiped). Safe on a zeroed a and twice. */
void api_admin_cleanup(struct api_admin *a);

#endif
