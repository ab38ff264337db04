#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "broker/common/log.h"
#include "broker/common/loglimit.h"
#include "broker/common/tlshello.h"
#include "broker/common/net.h"
#include "broker/common/util.h"
#include "broker/http/http.h"
#include "broker/http/http_reply.h"
#include "broker/http/http_routes.h"

/* The status page's files (http_static). */
static const struct http_static_file {
	const char *url, *file, *type;
} http_static_files[] = {
	{ "/", "index.html", "text/html; charset=utf-8" },
	{ "/index.html", "index.html", "text/html; charset=utf-8" },
	{ "/app.js", "app.js", "text/javascript; charset=utf-8" },
	{ "/style.css", "style.css", "text/css; charset=utf-8" },
	{ "/favicon.svg", "favicon.svg", "image/svg+xml" },
	{ "/charts.js", "charts.js", "text/javascript; charset=utf-8" },
	/* uPlot, vendored from npm (web/vendor/uPlot.LICENSE) */
	{ "/vendor/uPlot.iife.min.js", "vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8" },
	{ "/vendor/uPlot.min.css", "vendor/uPlot.min.css", "text/css; charset=utf-8" },
};
#define HTTP_STATIC_N (sizeof(http_static_files) / sizeof(http_static_files[0]))
#define HTTP_STATIC_MAX (4 << 20)

struct http_static_route {
	struct http *h;
	const struct http_static_file *f;
};

/* A daemon that a reload replaced: it accepts no more, serves its
 * connections to their end, then http_reap stops it. */
struct http_old {
	struct MHD_Daemon *d;
	char *cert, *key;
};
#define HTTP_OLD_MAX 4

struct http {
	struct MHD_Daemon *d;
	int fd;				/* the listener: ours until d takes it */
	int lfd;			/* the listener d serves (d owns it) */
	char *cert, *key;
	struct http_old old[HTTP_OLD_MAX];
	pthread_mutex_t root_lock;	/* web_root (http_reload) */
	char tls_priority[512];
	size_t body_limit;
	unsigned int max_connections;
	void (*tls_refused)(void *ctx, const char *client, const char *offered);
	void *tls_refused_ctx;
	struct loglimit tls_log;	/* the refusals' lines */
	struct http_routes routes;
	char web_root[512];
	struct http_static_route statics[HTTP_STATIC_N];
};

/* Per-request state kept by MHD between calls. */
struct upload {
	char *buf;
	size_t len;
	int too_large;
	size_t dropped;		/* bytes read past the limit */
};

/* libmicrohttpd can answer only before the body or after all of it: a body
 * that grows past the limit (chunked, no Content-Length) is read and dropped
 * up to this much more, then answered 413; beyond it the connection is
 * closed without an answer. */
#define HTTP_DROP_MAX ((size_t)16 << 20)

static void
http_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_debug("libmicrohttpd: %s", line);
}

int
http_tls_check(const char *priority, char *err, size_t errlen)
{
	gnutls_priority_t p;
	const char *where = NULL;
	int r;

	if ((r = gnutls_priority_init(&p, priority, &where)) != GNUTLS_E_SUCCESS) {
		if (r == GNUTLS_E_INVALID_REQUEST && where != NULL)
			snprintf(err, errlen, "tls_priority: not a GnuTLS priority string at "
			    "'%.60s'", where);
		else
			snprintf(err, errlen, "tls_priority: %s", gnutls_strerror(r));
		return -1;
	}
	gnutls_priority_deinit(p);
	return 0;
}

static void
key_free(char *key)
{
	if (key != NULL)
		explicit_bzero(key, strlen(key));
	free(key);
}

/* Reads c's certificate and key and checks with GnuTLS that they load and
 * belong together. 0, or -1 with the reason in err. */
static int
keys_read(const struct http_conf *c, char **cert, char **key, char *err, size_t errlen)
{
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_datum_t cd, kd;
	char *ct = NULL, *kt = NULL;
	int r;

	if (util_file_read(c->certificate, 1 << 20, &ct, NULL) != 0) {
		snprintf(err, errlen, "%s: %s", c->certificate, strerror(errno));
		goto fail;
	}
	if (util_file_read(c->private_key, 1 << 20, &kt, NULL) != 0) {
		snprintf(err, errlen, "%s: %s", c->private_key, strerror(errno));
		goto fail;
	}
	cd = (gnutls_datum_t){ (unsigned char *)ct, (unsigned int)strlen(ct) };
	kd = (gnutls_datum_t){ (unsigned char *)kt, (unsigned int)strlen(kt) };
	if ((r = gnutls_certificate_allocate_credentials(&cred)) != GNUTLS_E_SUCCESS ||
	    (r = gnutls_certificate_set_x509_key_mem(cred, &cd, &kd, GNUTLS_X509_FMT_PEM)) < 0) {
		snprintf(err, errlen, "%s, %s: %s", c->certificate, c->private_key,
		    gnutls_strerror(r));
		goto fail;
	}
	gnutls_certificate_free_credentials(cred);
	*cert = ct;
	*key = kt;
	return 0;
 fail:
	if (cred != NULL)
		gnutls_certificate_free_credentials(cred);
	free(ct);
	key_free(kt);
	return -1;
}

struct http *
http_new(const struct http_conf *c, char *err, size_t errlen)
{
	struct http *h = calloc(1, sizeof(*h));

	if (h == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->fd = h->lfd = -1;
	pthread_mutex_init(&h->root_lock, NULL);
	util_strlcpy(h->tls_priority, c->tls_priority && c->tls_priority[0] ? c->tls_priority :
	    HTTP_TLS_PRIORITY, sizeof(h->tls_priority));
	if (http_tls_check(h->tls_priority, err, errlen) != 0)
		goto fail;
	h->body_limit = c->body_limit;
	h->tls_refused = c->tls_refused;
	h->tls_refused_ctx = c->tls_refused_ctx;
	h->max_connections = c->max_connections;
	if (keys_read(c, &h->cert, &h->key, err, errlen) != 0)
		goto fail;
	if ((h->fd = net_listen(err, errlen, c->listen, 512)) < 0)
		goto fail;
	return h;
 fail:
	http_free(h);
	return NULL;
}

int
http_route(struct http *h, const char *method, const char *path, http_handler_fn fn,
    void *ctx)
{
	return http_routes_add(&h->routes, method, path, fn, ctx);
}

static enum MHD_Result
send_response(struct MHD_Connection *conn, struct http_response *res)
{
	struct MHD_Response *mr;
	size_t len = res->body ? (res->body_len ? res->body_len : strlen(res->body)) : 0;
	enum MHD_Result ret;

	mr = MHD_create_response_from_buffer_with_free_callback(len,
	    res->body ? res->body : "", res->body ? free : NULL);
	if (mr == NULL) {
		free(res->body);
		return MHD_NO;
	}
	res->body = NULL;
	if (res->content_type != NULL)
		MHD_add_response_header(mr, "Content-Type", res->content_type);
	MHD_add_response_header(mr, "Cache-Control", "no-store");
	MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
	for (int i = 0; i < res->nheaders; i++)
		MHD_add_response_header(mr, res->headers[i][0], res->headers[i][1]);
	ret = MHD_queue_response(conn, (unsigned int)res->status, mr);
	MHD_destroy_response(mr);
	return ret;
}

static void
client_addr(struct MHD_Connection *conn, char *out, size_t n)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;

	out[0] = '\0';
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
		    out, (socklen_t)n);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		    out, (socklen_t)n);
}

/* ---- the TLS policy's refusals ----
 * GnuTLS refuses a hello without a common version or suite before any
 * request, and libmicrohttpd logs that without the connection: so a
 * handshake hook (the session's pointer is its MHD_Connection) notes what
 * the hello offered and whether a ServerHello went out, in the
 * connection's socket context; a connection that closes with a hello and no
 * ServerHello was refused by the policy. */
struct http_tls_conn {
	int hello;			/* a ClientHello arrived */
	int answered;			/* a ServerHello went out */
	char offered[200];		/* its versions; suites */
};

/* GnuTLS's name of a suite, or its number. */
static void
suite_name(uint16_t id, char *out, size_t n)
{
	unsigned char cs[2];
	const char *name;

	for (size_t i = 0; (name = gnutls_cipher_suite_info(i, cs, NULL, NULL, NULL, NULL)) !=
	    NULL; i++)
		if ((uint16_t)(cs[0] << 8 | cs[1]) == id) {
			snprintf(out, n, "%s", name);
			return;
		}
	snprintf(out, n, "0x%04x", id);
}

static void
hello_describe(const struct tlshello *th, char *out, size_t n)
{
	char name[80];
	size_t len = 0;
	int i;

	out[0] = '\0';
	for (i = 0; i < th->nversions && len + 1 < n; i++)
		len += (size_t)snprintf(out + len, n - len, "%s%s", i ? "," : "",
		    tlshello_version_name(th->versions[i]) ? tlshello_version_name(th->versions[i]) :
		    "?");
	for (i = 0; i < th->nsuites && len + 1 < n; i++) {
		suite_name(th->suites[i], name, sizeof(name));
		len += (size_t)snprintf(out + len, n - len, "%s%s", i ? "," : "; ", name);
	}
}

static int
http_tls_hook(gnutls_session_t s, unsigned int htype, unsigned when, unsigned int incoming,
    const gnutls_datum_t *msg)
{
	struct MHD_Connection *conn = gnutls_session_get_ptr(s);
	const union MHD_ConnectionInfo *ci = conn ? MHD_get_connection_info(conn,
	    MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
	struct http_tls_conn *tc = ci ? ci->socket_context : NULL;
	struct tlshello th;

	if (tc == NULL)
		return 0;
	if (htype == GNUTLS_HANDSHAKE_CLIENT_HELLO && incoming && when == GNUTLS_HOOK_PRE &&
	    !tc->hello && tlshello_parse(msg->data, msg->size, &th) == 0) {
		tc->hello = 1;
		hello_describe(&th, tc->offered, sizeof(tc->offered));
	} else if (htype == GNUTLS_HANDSHAKE_SERVER_HELLO && !incoming)
		tc->answered = 1;
	return 0;
}

static void client_addr(struct MHD_Connection *conn, char *out, size_t n);

static void
http_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	struct http *h = cls;
	struct http_tls_conn *tc = *socket_context;
	const union MHD_ConnectionInfo *ci;
	char client[64];
	uint64_t quiet;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
		if (ci == NULL || ci->tls_session == NULL ||
		    (tc = calloc(1, sizeof(*tc))) == NULL)
			return;
		*socket_context = tc;
		gnutls_handshake_set_hook_function(ci->tls_session, GNUTLS_HANDSHAKE_ANY,
		    GNUTLS_HOOK_BOTH, http_tls_hook);
		return;
	}
	if (tc == NULL)
		return;
	if (tc->hello && !tc->answered) {
		client_addr(conn, client, sizeof(client));
		if (loglimit_pass(&h->tls_log, util_mono_ms(), &quiet))
			log_warn("TLS refused by the policy (tls_priority): %s offered %s "
			    "(%llu more refusals since the last line)", client, tc->offered,
			    (unsigned long long)quiet);
		if (h->tls_refused != NULL)
			h->tls_refused(h->tls_refused_ctx, client, tc->offered);
	}
	free(tc);
	*socket_context = NULL;
}

static enum MHD_Result
http_access(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct http *h = cls;
	size_t limit = __atomic_load_n(&h->body_limit, __ATOMIC_RELAXED);
	struct upload *up = *con_cls;
	struct http_response res;
	struct http_request req;
	const char *cl;

	if (up == NULL) {
		if ((up = calloc(1, sizeof(*up))) == NULL)
			return MHD_NO;
		*con_cls = up;
		/* refuse an announced oversized body before reading it */
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		    MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl != NULL && strtoull(cl, NULL, 10) > limit)
			up->too_large = 1;
		else
			return MHD_YES;
	}
	if (*upload_data_size != 0) {
		if (!up->too_large && up->len + *upload_data_size <= limit) {
			char *nb = realloc(up->buf, up->len + *upload_data_size + 1);
			if (nb == NULL)
				return MHD_NO;
			up->buf = nb;
			memcpy(up->buf + up->len, upload_data, *upload_data_size);
			up->len += *upload_data_size;
			up->buf[up->len] = '\0';
		} else {
			up->too_large = 1;
			up->dropped += *upload_data_size;
			if (up->dropped > HTTP_DROP_MAX)
				return MHD_NO;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	memset(&res, 0, sizeof(res));
	if (up->too_large) {
		char msg[64];
		snprintf(msg, sizeof(msg), "body larger than %zu bytes", limit);
		http_reply_error(&res, 413, msg);
		return send_response(conn, &res);
	}
	memset(&req, 0, sizeof(req));
	req.method = method;
	req.path = url;
	req.body = up->buf ? up->buf : "";
	req.body_len = up->len;
	req.priv = conn;
	client_addr(conn, req.client, sizeof(req.client));
	http_routes_serve(&h->routes, &req, &res);
	return send_response(conn, &res);
}

static void
http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct upload *up = *con_cls;

	if (up != NULL) {
		free(up->buf);
		free(up);
		*con_cls = NULL;
	}
}

/* A daemon serving fd with cert, key and h's settings, or NULL. */
static struct MHD_Daemon *
daemon_start(struct http *h, int fd, const char *cert, const char *key)
{
	/* ITC: MHD_quiesce_daemon needs it with internal threads */
	return MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_TLS |
	    MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL, NULL, http_access, h,
	    MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, h,
	    MHD_OPTION_LISTEN_SOCKET, fd,
	    MHD_OPTION_HTTPS_MEM_CERT, cert,
	    MHD_OPTION_HTTPS_MEM_KEY, key,
	    MHD_OPTION_HTTPS_PRIORITIES, h->tls_priority,
	    /* heartbeats wait in the store's group commit: threads enough
	     * for many to share one commit */
	    MHD_OPTION_THREAD_POOL_SIZE, 32,
	    MHD_OPTION_CONNECTION_LIMIT, h->max_connections,
	    MHD_OPTION_CONNECTION_TIMEOUT, 30,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
	    MHD_OPTION_NOTIFY_COMPLETED, http_completed, h,
	    MHD_OPTION_NOTIFY_CONNECTION, http_notify, h,
	    MHD_OPTION_END);
}

int
http_start(struct http *h, char *err, size_t errlen)
{
	if ((h->d = daemon_start(h, h->fd, h->cert, h->key)) == NULL) {
		snprintf(err, errlen, "cannot start the HTTPS server (certificate or key "
		    "unusable?)");
		return -1;
	}
	h->lfd = h->fd;
	h->fd = -1;	/* MHD owns it now */
	return 0;
}

static void
old_stop(struct http_old *o)
{
	MHD_stop_daemon(o->d);
	free(o->cert);
	key_free(o->key);
	memset(o, 0, sizeof(*o));
}

int
http_reap(struct http *h)
{
	const union MHD_DaemonInfo *di;
	int left = 0;

	for (int i = 0; i < HTTP_OLD_MAX; i++) {
		if (h->old[i].d == NULL)
			continue;
		di = MHD_get_daemon_info(h->old[i].d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
		if (di != NULL && di->num_connections == 0)
			old_stop(&h->old[i]);
		else
			left++;
	}
	return left;
}

int
http_reload(struct http *h, const struct http_conf *c, char *err, size_t errlen)
{
	char prio[sizeof(h->tls_priority)], keep[sizeof(h->tls_priority)];
	unsigned int maxc = h->max_connections;
	char *cert = NULL, *key = NULL;
	struct MHD_Daemon *d;
	int i;

	util_strlcpy(prio, c->tls_priority && c->tls_priority[0] ? c->tls_priority :
	    HTTP_TLS_PRIORITY, sizeof(prio));
	if (http_tls_check(prio, err, errlen) != 0 ||
	    keys_read(c, &cert, &key, err, errlen) != 0)
		return -1;
	(void)http_reap(h);
	for (i = 0; i < HTTP_OLD_MAX && h->old[i].d != NULL; i++)
		;
	if (i == HTTP_OLD_MAX) {
		log_warn("https: %d replaced servers still have connections: closing the "
		    "oldest's", HTTP_OLD_MAX);
		old_stop(&h->old[0]);
		memmove(&h->old[0], &h->old[1], sizeof(h->old[0]) * (HTTP_OLD_MAX - 1));
		memset(&h->old[HTTP_OLD_MAX - 1], 0, sizeof(h->old[0]));
		i = HTTP_OLD_MAX - 1;
	}
	/* the new daemon shares the listener, then the old one lets go of it */
	memcpy(keep, h->tls_priority, sizeof(keep));
	memcpy(h->tls_priority, prio, sizeof(prio));
	h->max_connections = c->max_connections;
	if ((d = daemon_start(h, h->lfd, cert, key)) == NULL) {
		snprintf(err, errlen, "cannot start the HTTPS server again (certificate or key "
		    "unusable?)");
		memcpy(h->tls_priority, keep, sizeof(keep));
		h->max_connections = maxc;
		free(cert);
		key_free(key);
		return -1;
	}
	if (MHD_quiesce_daemon(h->d) == MHD_INVALID_SOCKET)
		log_warn("https: the replaced server cannot stop accepting: both serve until "
		    "it has no connection");
	h->old[i] = (struct http_old){ h->d, h->cert, h->key };
	h->d = d;
	h->cert = cert;
	h->key = key;
	__atomic_store_n(&h->body_limit, c->body_limit, __ATOMIC_RELAXED);
	return 0;
}

int
http_set_web_root(struct http *h, const char *web_root)
{
	int r;

	pthread_mutex_lock(&h->root_lock);
	r = util_strlcpy(h->web_root, web_root, sizeof(h->web_root));
	pthread_mutex_unlock(&h->root_lock);
	return r;
}

void
http_free(struct http *h)
{
	if (h == NULL)
		return;
	for (int i = 0; i < HTTP_OLD_MAX; i++)
		if (h->old[i].d != NULL)
			old_stop(&h->old[i]);
	if (h->d != NULL)
		MHD_stop_daemon(h->d);
	if (h->fd >= 0)
		close(h->fd);
	key_free(h->key);
	free(h->cert);
	pthread_mutex_destroy(&h->root_lock);
	free(h);
}

const char *
http_header(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->priv, MHD_HEADER_KIND, name);
}

const char *
http_arg(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->priv, MHD_GET_ARGUMENT_KIND, name);
}

/* ---- the status page's static files ---- */

static void
http_static_serve(void *ctx, const struct http_request *req, struct http_response *res)
{
	const struct http_static_route *sr = ctx;
	char path[600];
	struct stat st;
	char *buf = NULL;
	ssize_t got;
	size_t len = 0;
	int fd;

	pthread_mutex_lock(&sr->h->root_lock);
	snprintf(path, sizeof(path), "%s/%s", sr->h->web_root, sr->f->file);
	pthread_mutex_unlock(&sr->h->root_lock);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0 ||
	    fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > HTTP_STATIC_MAX ||
	    (buf = malloc((size_t)st.st_size + 1)) == NULL) {
		log_debug("%s: %s", path, fd < 0 ? strerror(errno) : "not a readable file");
		if (fd >= 0)
			close(fd);
		http_reply_error(res, 404, "no such resource");
		return;
	}
	while (len < (size_t)st.st_size &&
	    (got = read(fd, buf + len, (size_t)st.st_size - len)) > 0)
		len += (size_t)got;
	close(fd);
	buf[len] = '\0';
	res->status = 200;
	res->content_type = sr->f->type;
	res->body = buf;
	res->body_len = len;
	if (len == 0) {		/* an empty body means strlen: give one byte */
		free(buf);
		res->body = NULL;
	}
	http_add_header(res, "Content-Security-Policy", "default-src 'self'; "
	    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
	http_add_header(res, "Referrer-Policy", "no-referrer");
	http_add_header(res, "X-Frame-Options", "DENY");
}

int
http_static(struct http *h, const char *web_root)
{
	char path[600];

	(void)http_set_web_root(h, web_root);
	snprintf(path, sizeof(path), "%s/index.html", web_root);
	if (access(path, R_OK) != 0)
		log_warn("the status page is not served: %s: %s (set [http] web_root)",
		    path, strerror(errno));
	for (size_t i = 0; i < HTTP_STATIC_N; i++) {
		h->statics[i].h = h;
		h->statics[i].f = &http_static_files[i];
		if (http_route(h, "GET", http_static_files[i].url, http_static_serve,
		    &h->statics[i]) != 0)
			return -1;
	}
	return 0;
}
