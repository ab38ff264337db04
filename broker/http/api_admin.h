/* api_admin: the admin JSON API behind the status page and its login
 * (docs/admin-api.md describes every endpoint). One route table says what
 * each route needs: auth.h checks a session or a bearer token (and the CSRF
 * token of a browser's state-changing request) before any handler runs;
 * only the login itself is open. GET /metrics is broker/http/metrics.h's. */
#ifndef TS_API_ADMIN_H
#define TS_API_ADMIN_H

#include "broker/http/auth.h"
#include "broker/http/http.h"

#define API_ADMIN_ROUTES	17

struct conf;
struct metrics_logins;
struct store;
struct api_admin_route;
struct api_admin;

/* The context http.c hands back for one route. */
struct api_admin_binding {
	struct api_admin *a;
	const struct api_admin_route *route;
};

struct api_admin {
	struct store *st;			/* borrowed */
	const struct conf *c;			/* borrowed */
	struct auth auth;			/* sessions, tokens, login limits */
	struct api_admin_binding bound[API_ADMIN_ROUTES];
};

/* Prepares a (zeroed or not); all pointers are borrowed and must outlive
 * it; logins counts the logins. 0 or -1. */
int api_admin_init(struct api_admin *a, struct store *st, const struct conf *c,
    struct metrics_logins *logins);
/* Registers every admin route on h (before http_start). 0 or -1. */
int api_admin_register(struct api_admin *a, struct http *h);
/* Forgets the sessions (wiped). Safe on a zeroed a and twice. */
void api_admin_cleanup(struct api_admin *a);

#endif
