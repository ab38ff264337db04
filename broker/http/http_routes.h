/* http_routes: the HTTPS door's route table and its dispatch, apart from
 * libmicrohttpd: http.c serves every request through it, and the unit
 * tests drive the handlers through the same table (tests/unit/http_fx.h).
 * Routes: exact paths, or prefixes ending in '/'; "/" alone is exact. */
#ifndef TS_HTTP_ROUTES_H
#define TS_HTTP_ROUTES_H

#include "broker/http/http.h"

#define HTTP_ROUTES_MAX 32

struct http_routes {
	struct {
		const char *method, *path;	/* borrowed: static strings */
		http_handler_fn fn;
		void *ctx;			/* borrowed */
	} r[HTTP_ROUTES_MAX];
	int n;
};

/* Adds a route. 0, or -1 when the table is full. */
int http_routes_add(struct http_routes *t, const char *method, const char *path,
    http_handler_fn fn, void *ctx);
/* Answers req into res (zeroed by the caller): its route's handler, or
 * 404 / 405 when no route has its path / its method. */
void http_routes_serve(const struct http_routes *t, const struct http_request *req,
    struct http_response *res);

#endif
