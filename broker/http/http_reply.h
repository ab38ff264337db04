/* http_reply: building a struct http_response (http.h) in a handler. Needs
 * no libmicrohttpd, so handlers can be driven without a server (fuzzed). */
#ifndef TS_HTTP_REPLY_H
#define TS_HTTP_REPLY_H

#include "broker/http/http.h"

/* Sets a JSON response; body (malloc'd) is taken over, NULL answers 500
 * (with {"error": "out of memory"} if that can be allocated). */
void http_reply_json(struct http_response *res, int status, char *body);
/* Sets {"error": msg} with status. */
void http_reply_error(struct http_response *res, int status, const char *msg);
struct store;
/* Answers the error r of a store call on st (store.h): 503 when the disk is
 * full or the state database unavailable (worth retrying later; during an
 * outage the message says since when and why), else 500. */
void http_reply_store_error(struct http_response *res, struct store *st, int r);
/* Adds a response header (value copied; names must be static strings).
 * Beyond HTTP_MAX_HEADERS, left out. */
void http_add_header(struct http_response *res, const char *name, const char *value);

#endif
