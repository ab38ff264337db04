/* http_fx: broker/http/http.c's stand-in for the unit tests (no
 * libmicrohttpd, no socket): http_route adds to one table
 * (broker/http/http_routes.h, the dispatch http.c serves with), and
 * http_header / http_arg read the headers and the query of the request
 * given to http_fx_call. Not thread-safe. */
#ifndef TS_TEST_HTTP_FX_H
#define TS_TEST_HTTP_FX_H

#include <stddef.h>

#include "broker/http/http.h"

/* Forgets every route (before registering them again). */
void http_fx_reset(void);
/* One request: target is "PATH[?a=1&b=2]" (no %-decoding), headers a
 * NULL-terminated list of "Name: value" (or NULL), body NULL for none,
 * from client 192.0.2.1. res is zeroed and filled; the caller frees
 * res->body. */
void http_fx_call(const char *method, const char *target, const char *const *headers,
    const char *body, struct http_response *res);
/* The same with a body of body_len bytes (it may hold NULs: a fuzzer's). */
void http_fx_call_n(const char *method, const char *target, const char *const *headers,
    const char *body, size_t body_len, struct http_response *res);

#endif
