#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "broker/common/util.h"
#include "broker/http/http_routes.h"
#include "tests/unit/http_fx.h"

#define FX_FIELDS	16
#define FX_TARGET_MAX	1024

struct fx_req {
	const char *const *headers;
	char target[FX_TARGET_MAX];
	const char *anames[FX_FIELDS], *avalues[FX_FIELDS];
	int nargs;
};

static struct http_routes routes;

void
http_fx_reset(void)
{
	memset(&routes, 0, sizeof(routes));
}

int
http_route(struct http *h, const char *method, const char *path, http_handler_fn fn,
    void *ctx)
{
	return http_routes_add(&routes, method, path, fn, ctx);
}

const char *
http_header(const struct http_request *req, const char *name)
{
	const struct fx_req *f = req->priv;
	size_t n = strlen(name);

	for (const char *const *h = f->headers; h != NULL && *h != NULL; h++)
		if (strncasecmp(*h, name, n) == 0 && (*h)[n] == ':')
			return *h + n + 1 + strspn(*h + n + 1, " ");
	return NULL;
}

const char *
http_arg(const struct http_request *req, const char *name)
{
	const struct fx_req *f = req->priv;

	for (int i = 0; i < f->nargs; i++)
		if (strcmp(f->anames[i], name) == 0)
			return f->avalues[i];
	return NULL;
}

void
http_fx_call(const char *method, const char *target, const char *const *headers,
    const char *body, struct http_response *res)
{
	http_fx_call_n(method, target, headers, body, body ? strlen(body) : 0, res);
}

void
http_fx_call_n(const char *method, const char *target, const char *const *headers,
    const char *body, size_t body_len, struct http_response *res)
{
	struct fx_req f = { .headers = headers };
	struct http_request req;
	char *q, *pair, *save = NULL, *eq;

	util_strlcpy(f.target, target, sizeof(f.target));
	if ((q = strchr(f.target, '?')) != NULL) {
		*q++ = '\0';
		for (pair = strtok_r(q, "&", &save); pair != NULL && f.nargs < FX_FIELDS;
		    pair = strtok_r(NULL, "&", &save)) {
			if ((eq = strchr(pair, '=')) != NULL)
				*eq++ = '\0';
			f.anames[f.nargs] = pair;
			f.avalues[f.nargs++] = eq ? eq : "";
		}
	}
	memset(&req, 0, sizeof(req));
	req.method = method;
	req.path = f.target;
	req.body = body ? body : "";
	req.body_len = body ? body_len : 0;
	req.priv = &f;
	snprintf(req.client, sizeof(req.client), "192.0.2.1");
	memset(res, 0, sizeof(*res));
	http_routes_serve(&routes, &req, res);
}
