#include <string.h>

#include "broker/http/http_reply.h"
#include "broker/http/http_routes.h"

int
http_routes_add(struct http_routes *t, const char *method, const char *path,
    http_handler_fn fn, void *ctx)
{
	if (t->n == HTTP_ROUTES_MAX)
		return -1;
	t->r[t->n].method = method;
	t->r[t->n].path = path;
	t->r[t->n].fn = fn;
	t->r[t->n++].ctx = ctx;
	return 0;
}

void
http_routes_serve(const struct http_routes *t, const struct http_request *req,
    struct http_response *res)
{
	int known = 0;

	for (int i = 0; i < t->n; i++) {
		size_t n = strlen(t->r[i].path);
		int match = n > 1 && t->r[i].path[n - 1] == '/' ?
		    strncmp(req->path, t->r[i].path, n) == 0 : strcmp(req->path, t->r[i].path) == 0;

		if (!match)
			continue;
		known = 1;
		if (strcmp(req->method, t->r[i].method) == 0) {
			res->status = 500;
			t->r[i].fn(t->r[i].ctx, req, res);
			return;
		}
	}
	http_reply_error(res, known ? 405 : 404, known ? "method not allowed" :
	    "no such resource");
}
