/* http: the broker's HTTPS server (libmicrohttpd, included here only).
 * Handlers see a complete request (body read up to the configured limit; a
 * larger one is answered 413 without calling them) and fill a response.
 * Routes: exact paths, or prefixes ending in '/' (e.g. "/api/v1/servers/");
 * "/" alone is exact. */
#ifndef TS_HTTP_H
#define TS_HTTP_H

#include <stddef.h>

struct http;

struct http_request {
	const char *method;
	const char *path;
	const char *body;		/* NUL-terminated; "" when none */
	size_t body_len;
	char client[64];		/* the peer's address */
	void *priv;			/* http.c's own */
};

#define HTTP_MAX_HEADERS 8
struct http_response {
	int status;
	const char *content_type;	/* static string */
	char *body;			/* malloc'd, freed by http.c; NULL = empty */
	size_t body_len;		/* 0 = strlen(body) */
	const char *headers[HTTP_MAX_HEADERS][2];	/* name, value; copied */
	char header_buf[HTTP_MAX_HEADERS][512];		/* storage for values */
	int nheaders;
};

typedef void (*http_handler_fn)(void *ctx, const struct http_request *req,
    struct http_response *res);

/* The HTTPS door's default TLS policy (GnuTLS priority string): TLS 1.3
 * and 1.2, ECDHE with AES-GCM or ChaCha20-Poly1305 only, in the server's
 * order. */
#define HTTP_TLS_PRIORITY	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:" \
				"+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:-MAC-ALL:+AEAD:" \
				"-KX-ALL:+ECDHE-RSA:+ECDHE-ECDSA:%SERVER_PRECEDENCE"

struct http_conf {
	const char *listen;		/* host:port */
	const char *certificate;	/* PEM files */
	const char *private_key;
	size_t body_limit;
	unsigned int max_connections;
	const char *tls_priority;	/* GnuTLS priority string, NULL: HTTP_TLS_PRIORITY */
	/* A hello the policy refused (no common version or suite): the
	 * client's numeric address and what it offered ("TLSv1.0; suites"),
	 * both valid during the call; from MHD's threads. NULL: logged only. */
	void (*tls_refused)(void *ctx, const char *client, const char *offered);
	void *tls_refused_ctx;
};

/* Checks a GnuTLS priority string (for -t): 0, or -1 with the reason
 * (where it goes wrong) in err. */
int http_tls_check(const char *priority, char *err, size_t errlen);
/* Binds the socket and loads the certificate; serving starts with
 * http_start. NULL with the reason in err. */
struct http *http_new(const struct http_conf *c, char *err, size_t errlen);
/* Adds a route before http_start. 0 or -1 (table full). */
int http_route(struct http *h, const char *method, const char *path,
    http_handler_fn fn, void *ctx);
int http_start(struct http *h, char *err, size_t errlen);
/* Serves the status page: a fixed set of files (index.html at "/", app.js,
 * style.css, favicon.svg) read from web_root at each request, with their
 * content types and a Content-Security-Policy of 'self' only. No other path
 * of web_root is reachable. Before http_start; 0 or -1 (table full). Warns
 * once if web_root/index.html cannot be read. */
int http_static(struct http *h, const char *web_root);
/* A reload, after http_start: c's certificate and key (read again, checked
 * with GnuTLS), tls_priority, max_connections and body_limit (listen and
 * the callbacks ignored). A new daemon takes over the listening socket; the
 * replaced one accepts no more and serves its connections (keep-alive ones
 * too) to their end. 0, or -1 with the reason in err and nothing changed.
 * Main thread, as http_reap. */
int http_reload(struct http *h, const struct http_conf *c, char *err, size_t errlen);
/* Stops the replaced daemons that have no connection left: how many are
 * left. Call now and then (a second) after a reload. */
int http_reap(struct http *h);
/* The status page's directory from now on. 0, or -1 (too long, cut). */
int http_set_web_root(struct http *h, const char *web_root);
/* Stops every daemon (replaced ones too, dropping their connections). */
void http_free(struct http *h);

/* A request header or query argument, NULL if absent. */
const char *http_header(const struct http_request *req, const char *name);
const char *http_arg(const struct http_request *req, const char *name);

/* Responses are built with http_reply.h. */

#endif
