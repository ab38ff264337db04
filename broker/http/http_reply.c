#include <stdlib.h>

#include "broker/common/util.h"
#include "broker/common/wire.h"
#include "broker/http/http_reply.h"
#include "broker/state/store.h"

void
http_reply_json(struct http_response *res, int status, char *body)
{
	free(res->body);
	res->body = body;
	res->status = body ? status : 500;
	res->content_type = "application/json";
}

void
http_reply_error(struct http_response *res, int status, const char *msg)
{
	http_reply_json(res, status, wire_error_encode(msg));
}

void
http_reply_store_error(struct http_response *res, int r)
{
	http_reply_error(res, r == STORE_FULL || r == STORE_UNAVAILABLE ? 503 : 500,
	    store_strerror(r));
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
