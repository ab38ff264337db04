#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/common/util.h"
#include "broker/common/wire.h"
#include "broker/http/http_reply.h"
#include "broker/state/store.h"

void
http_reply_json(struct http_response *res, int status, char *body)
{
	free(res->body);
	/* no body: memory ran out building it; say so if memory allows now */
	res->body = body ? body : strdup("{\"error\": \"out of memory\"}");
	res->status = body ? status : 500;
	res->content_type = "application/json";
}

void
http_reply_error(struct http_response *res, int status, const char *msg)
{
	http_reply_json(res, status, wire_error_encode(msg));
}

void
http_reply_store_error(struct http_response *res, struct store *st, int r)
{
	char why[160], when[32], msg[320];
	int64_t since;
	time_t t;
	struct tm tm;

	if (r != STORE_UNAVAILABLE || !store_outage(st, &since, why, sizeof(why))) {
		http_reply_error(res, r == STORE_FULL || r == STORE_UNAVAILABLE ? 503 : 500,
		    store_strerror(r));
		return;
	}
	t = (time_t)(since / 1000);
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
	snprintf(msg, sizeof(msg), "state database unreachable since %s (%s): known users "
	    "are sent back to their sessions, new users are refused", when, why);
	http_reply_error(res, 503, msg);
}

void
http_add_header(struct http_response *res, const char *name, const char *value)
{
	if (res->nheaders == HTTP_MAX_HEADERS)
		return;
	util_strlcpy(res->header_buf[res->nheaders], value, sizeof(res->header_buf[0]));
	res->headers[res->nheaders][0] = name;
	res->headers[res->nheaders][1] = res->header_buf[res->nheaders];
	res->nheaders++;
}
