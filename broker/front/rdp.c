/* rdp: the RDP endpoint. See rdp.h. Per connection, in an admission
 * worker, once its whole Connection Request is in:
 *
 *   parse the X.224 Connection Request (peeked by the admission engine)
 *   refuse a routing token other than "Cookie: msts=" (FreeRDP 2.11 fails
 *     on it) with an RDP_NEG_FAILURE
 *   token mode, "Cookie: msts=": read the request, ask the core
 *     (DOOR_CONNECT), which splices or refuses; never FreeRDP
 *   trust_cookie, "Cookie: mstshash=": ask the core with the request
 *     unread; spliced, or on
 *   refuse a client that does not offer TLS with an RDP_NEG_FAILURE
 *   the engine ([rdp] engine): TLS, Client Info, DOOR_LOGON, the redirect
 *     (lean.c, which keeps the connection, ADMIT_KEPT, and ends it from its
 *     loops through conn_end; or FreeRDP's peer in rdp_freerdp.c, in the
 *     worker).
 *
 * While the core splices, the watchdog leaves the socket alone (handoff):
 * the core bounds its own time, and a socket it splices lives on in its own
 * descriptor after the admission engine closes ours. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/front/addrlimit.h"
#include "broker/front/admit.h"
#include "broker/front/door.h"
#include "broker/front/fronts.h"
#include "broker/front/lean.h"
#include "broker/front/rdp.h"
#include "broker/front/rdp_freerdp.h"
#include "broker/front/x224.h"

#define RDP_REFUSE_DRAIN_MS	1000	/* wait for the client to close after an X.224 refusal */

struct rdp {
	struct rdp_conf conf;
	struct door_ops ops;		/* the core's */
	struct door_ops front;		/* the engines': ops with the per-address limits */
	int token_mode;			/* conf.mode is "token" */
	struct admit *admit;
	struct fr_engine *engine;	/* one of these three */
	struct lean_engine *lean;
	struct fronts *fronts;		/* the lean engine in front processes */
	void (*ended)(void *ctx, struct door_conn *dc);	/* in a front process */
	int conn_fd;			/* rdp_admit's, for a reload */
	int (*accept)(void *, int, char *, size_t, uint64_t *);
};

/* Answers the request with an X.224 Connection Confirm carrying an
 * RDP_NEG_FAILURE, then lets the client close. */
static void
conn_refuse_x224(struct admit_conn *ac, size_t request_len, uint32_t failure_code)
{
	uint8_t buf[X224_PACKET_MAX];
	int fd = admit_conn_fd(ac), n;

	/* consume the request we peeked: it is in the socket buffer already */
	if (recv(fd, buf, request_len, MSG_DONTWAIT) != (ssize_t)request_len)
		return;
	if ((n = x224_build_neg_failure(buf, sizeof(buf), failure_code)) < 0)
		return;
	if (send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
		return;
	shutdown(fd, SHUT_WR);
	admit_conn_drain(ac, RDP_REFUSE_DRAIN_MS);
}

/* Asks the core at DOOR_CONNECT, a routing token (consume: the request is
 * read here first, exactly its length, and passed on) or a cookie (the
 * request stays unread). 1 if the core answered it (spliced or closed: the
 * core has recorded it), 0 to go on with the engine. */
static int
conn_ask(struct rdp *r, struct door_conn *dc, int consume)
{
	struct admit_conn *ac = dc->ac;
	struct door_answer ans;
	uint8_t sink[X224_PACKET_MAX];
	size_t len = dc->req.x224.len;
	enum door_splice_result rc;
	int fd;

	if (consume) {
		/* it is in the socket buffer already, and what follows it stays
		 * there for the relay */
		if (recv(admit_conn_fd(ac), sink, len, MSG_DONTWAIT) != (ssize_t)len) {
			door_report(dc, DOOR_FAILED, NULL, "cannot read the Connection Request");
			return 1;
		}
		dc->req.x224.consumed = 1;
	}
	if ((fd = fcntl(admit_conn_fd(ac), F_DUPFD_CLOEXEC, 0)) < 0) {
		door_report(dc, DOOR_FAILED, NULL, "out of file descriptors");
		return 1;
	}
	admit_conn_set_handoff(ac, 1);
	memset(&ans, 0, sizeof(ans));
	r->ops.decide(r->ops.ctx, &dc->req, &ans);
	if (ans.verdict == DOOR_SPLICE)
		rc = r->ops.splice(r->ops.ctx, &dc->req, &ans, fd);
	else
		rc = ans.verdict == DOOR_GO_ON ? DOOR_DECLINED : DOOR_CLOSED;
	admit_conn_set_handoff(ac, 0);
	if (rc == DOOR_SPLICED) {
		dc->reported = 1;	/* the core recorded it */
		return 1;
	}
	close(fd);
	if (rc == DOOR_DECLINED && !consume)
		return 0;
	dc->reported = 1;
	return 1;
}

/* The X.224 stage. 0 to go on with the engine, -1 when the connection was
 * answered here. */
static int
conn_check_request(struct rdp *r, struct door_conn *dc)
{
	const struct door_x224 *x = &dc->req.x224;
	struct x224_request req;
	const uint8_t *buf;
	char why[160];
	size_t len;
	int rc;

	buf = admit_conn_request(dc->ac, &len);
	if ((rc = x224_parse_request(buf, len, &req)) != 0) {
		snprintf(why, sizeof(why), "malformed Connection Request: %s", x224_strerror(rc));
		door_report(dc, DOOR_FAILED, NULL, why);
		return -1;
	}
	door_request_set_x224(&dc->req, buf, len, &req);
	if (x->token_kind == X224_TOKEN_OTHER) {
		/* FreeRDP 2.11's server fails on anything but "Cookie: msts=" */
		door_report(dc, DOOR_FAILED, NULL, "unsupported routing token (not Cookie: msts=)");
		conn_refuse_x224(dc->ac, len, X224_FAILURE_INCONSISTENT_FLAGS);
		return -1;
	}
	/* before the TLS check: a spliced client talks to its server, NLA included */
	if (x->token_kind == X224_TOKEN_MSTS && r->token_mode)
		return conn_ask(r, dc, 1) ? -1 : 0;
	if (x->token_kind == X224_TOKEN_NONE && x->cookie[0] != '\0' &&
	    __atomic_load_n(&r->conf.trust_cookie, __ATOMIC_RELAXED) &&
	    conn_ask(r, dc, 0))
		return -1;
	if (!x->has_neg_req || !(x->requested_protocols & X224_PROTOCOL_SSL)) {
		door_report(dc, DOOR_FAILED, NULL, x->has_neg_req ?
		    "client does not offer TLS (NLA only?)" :
		    "client offers standard RDP security only");
		conn_refuse_x224(dc->ac, len, X224_FAILURE_SSL_REQUIRED_BY_SERVER);
		return -1;
	}
	return 0;
}

/* The engines' DOOR_LOGON: a new placement takes one of the client
 * address's placements_per_address_minute first (given back if the answer
 * was a reconnect or no redirect). So an address at its limit is refused
 * its logons, reconnects too, until its minute slides on. */
static int
front_limited(struct rdp *r, const struct door_request *req, struct door_answer *ans,
    int *counted)
{
	*counted = 0;
	if (req->stage != DOOR_LOGON ||
	    admit_placement_take(r->admit, req->client_addr, counted) == 0)
		return 0;
	/* the engine reports the refusal with this request: say so */
	((struct door_request *)req)->limited = 1;
	memset(ans, 0, sizeof(*ans));
	ans->verdict = DOOR_REFUSE;
	ans->refusal = DOOR_REFUSAL_DENIED;
	snprintf(ans->reason, sizeof(ans->reason), "%d new placements in the last minute "
	    "from %s (placements_per_address_minute)",
	    __atomic_load_n(&r->conf.placements_per_address_minute, __ATOMIC_RELAXED),
	    req->client_addr);
	return 1;
}

/* The placement counted for req given back unless ans placed anew. */
static void
front_placed(struct rdp *r, const struct door_request *req, const struct door_answer *ans)
{
	if (ans->verdict != DOOR_REDIRECT || ans->redirect.reconnect)
		admit_placement_return(r->admit, req->client_addr);
}

static void
front_decide(void *ctx, const struct door_request *req, struct door_answer *ans)
{
	struct rdp *r = ctx;
	int counted;

	if (front_limited(r, req, ans, &counted))
		return;
	r->ops.decide(r->ops.ctx, req, ans);
	if (counted)
		front_placed(r, req, ans);
}

/* An asynchronous decision that counted a placement. */
struct front_ask {
	struct rdp *r;
	const struct door_request *req;
	struct door_answer *ans;
	void (*complete)(void *arg);
	void *arg;
};

static void
front_decided(void *arg)
{
	struct front_ask a = *(struct front_ask *)arg;

	free(arg);
	front_placed(a.r, a.req, a.ans);
	a.complete(a.arg);
}

/* front_decide without waiting (the core's decide_async, e.g. a front's). */
static void
front_decide_async(void *ctx, const struct door_request *req, struct door_answer *ans,
    void (*complete)(void *arg), void *arg)
{
	struct rdp *r = ctx;
	struct front_ask *a;
	int counted;

	if (front_limited(r, req, ans, &counted)) {
		complete(arg);
		return;
	}
	if (!counted) {
		r->ops.decide_async(r->ops.ctx, req, ans, complete, arg);
		return;
	}
	if ((a = malloc(sizeof(*a))) == NULL) {
		admit_placement_return(r->admit, req->client_addr);
		memset(ans, 0, sizeof(*ans));
		ans->verdict = DOOR_REFUSE;
		ans->refusal = DOOR_REFUSAL_DENIED;
		snprintf(ans->reason, sizeof(ans->reason), "out of memory");
		complete(arg);
		return;
	}
	*a = (struct front_ask){ r, req, ans, complete, arg };
	r->ops.decide_async(r->ops.ctx, req, ans, front_decided, a);
}

static enum door_splice_result
front_splice(void *ctx, const struct door_request *req, const struct door_answer *ans, int fd)
{
	struct rdp *r = ctx;

	return r->ops.splice(r->ops.ctx, req, ans, fd);
}

static void
front_done(void *ctx, const struct door_request *req, enum door_outcome outcome,
    const struct door_answer *ans, const char *reason, int64_t elapsed_us)
{
	struct rdp *r = ctx;

	r->ops.done(r->ops.ctx, req, outcome, ans, reason, elapsed_us);
}

/* The lean engine's end of a connection it kept. */
static void
conn_end(void *ctx, struct door_conn *dc)
{
	struct rdp *r = ctx;

	if (r->ended != NULL)
		r->ended(r->ops.ctx, dc);
	admit_conn_release(dc->ac);
}

static int
rdp_handle(void *ctx, struct admit_conn *ac)
{
	struct rdp *r = ctx;
	struct door_conn dc;

	if (r->fronts != NULL)
		return fronts_pass(r->fronts, ac);
	door_conn_init(&dc, &r->front, ac);
	if (admit_conn_stopping(ac))
		door_report(&dc, DOOR_FAILED, NULL, "broker stopping");
	else if (conn_check_request(r, &dc) == 0) {
		if (r->lean != NULL && lean_run(r->lean, &dc, conn_end, r) == ADMIT_KEPT)
			return ADMIT_KEPT;	/* conn_end ends it */
		if (r->lean == NULL)
			rdp_freerdp_run(r->engine, &dc);
	}
	if (r->ended != NULL)
		r->ended(r->ops.ctx, &dc);
	return 0;
}

static void
rdp_dropped(void *ctx, struct admit_conn *ac, const char *why)
{
	struct rdp *r = ctx;
	struct door_conn dc;

	door_conn_init(&dc, &r->front, ac);
	door_report(&dc, DOOR_FAILED, NULL, why);
	if (r->ended != NULL)
		r->ended(r->ops.ctx, &dc);
}

int
rdp_conf_check(const struct rdp_conf *conf, char *err, size_t errlen)
{
	struct lean_tls tls = { conf->tls_ciphers, conf->tls_ciphersuites,
	    conf->tls_min_version };
	struct addrlimit_conf lc;

	if (addrlimit_exempt_parse(&lc, conf->limits_exempt, err, errlen) != 0)
		return -1;
	return lean_tls_check(&tls, err, errlen);
}

/* The checks and set-up rdp_new and rdp_front_new share. NULL with the
 * reason in err. */
static struct rdp *
rdp_alloc(const struct rdp_conf *conf, const struct door_ops *ops, char *err, size_t errlen)
{
	struct rdp *r;

	if (conf == NULL || ops == NULL || ops->decide == NULL || ops->done == NULL) {
		snprintf(err, errlen, "invalid arguments");
		return NULL;
	}
	if (conf->engine[0] != '\0' && strcmp(conf->engine, "lean") != 0 &&
	    strcmp(conf->engine, "freerdp") != 0) {
		snprintf(err, errlen, "engine '%s' is not 'lean' or 'freerdp'", conf->engine);
		return NULL;
	}
	if (strcmp(conf->mode, "address") != 0 && strcmp(conf->mode, "token") != 0) {
		snprintf(err, errlen, "mode '%s' is not 'address' or 'token'", conf->mode);
		return NULL;
	}
	if ((strcmp(conf->mode, "token") == 0 || conf->trust_cookie) && ops->splice == NULL) {
		snprintf(err, errlen, "token mode and trust_cookie need a splice entry point");
		return NULL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->conf = *conf;
	r->conf.listen[sizeof(r->conf.listen) - 1] = '\0';
	r->conf.certificate[sizeof(r->conf.certificate) - 1] = '\0';
	r->conf.private_key[sizeof(r->conf.private_key) - 1] = '\0';
	r->ops = *ops;
	r->front = (struct door_ops){ .decide = front_decide, .done = front_done, .ctx = r,
	    .decide_async = ops->decide_async != NULL ? front_decide_async : NULL };
	r->token_mode = strcmp(r->conf.mode, "token") == 0;
	return r;
}

/* The admission limits of conf for r: on conf.listen, or (in a front) on
 * conn_fd through accept, where the core keeps the per-address limits. */
static void
rdp_admit_conf(struct admit_conf *ac, const struct rdp *r, const struct rdp_conf *conf,
    int conn_fd, int (*accept)(void *, int, char *, size_t, uint64_t *))
{
	memset(ac, 0, sizeof(*ac));
	ac->listen = conf->listen;
	ac->handshake_timeout = conf->handshake_timeout;
	ac->max_handshakes = conf->max_handshakes;
	ac->max_connections = conf->max_connections;
	ac->limits_exempt = conf->limits_exempt;
	if (accept != NULL) {
		ac->accept = accept;
		ac->accept_ctx = r->ops.ctx;
		ac->listen_fd = conn_fd;
	} else {
		ac->max_handshakes_per_address = conf->max_handshakes_per_address;
		ac->placements_per_address_minute = conf->placements_per_address_minute;
	}
}

/* The admission engine on r->conf (rdp_admit_conf). 0 or -1 with the reason. */
static int
rdp_admit(struct rdp *r, int conn_fd, int (*accept)(void *, int, char *, size_t, uint64_t *),
    char *err, size_t errlen)
{
	struct admit_handler h = { rdp_handle, rdp_dropped, r };
	struct admit_conf ac;

	r->conn_fd = conn_fd;
	r->accept = accept;
	rdp_admit_conf(&ac, r, &r->conf, conn_fd, accept);
	return (r->admit = admit_new(&ac, &h, err, errlen)) != NULL ? 0 : -1;
}

/* The lean engine on pem with r's TLS policy. 0 or -1 with the reason. */
static int
rdp_lean(struct rdp *r, const struct lean_pem *pem, char *err, size_t errlen)
{
	struct lean_tls tls = { r->conf.tls_ciphers, r->conf.tls_ciphersuites,
	    r->conf.tls_min_version };

	if ((r->lean = lean_new(pem, r->token_mode, admit_stop_fd(r->admit), err,
	    errlen)) == NULL)
		return -1;
	return lean_set_tls(r->lean, &tls, err, errlen);
}

struct rdp *
rdp_new(const struct rdp_conf *conf, const struct door_ops *ops, uint64_t *front_restarts,
    char *err, size_t errlen)
{
	struct lean_pem pem = { 0 };
	struct rdp *r;
	int rc = -1;

	if ((r = rdp_alloc(conf, ops, err, errlen)) == NULL)
		return NULL;
	if (r->conf.fronts < 0) {	/* one per CPU */
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		r->conf.fronts = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus;
	}
	if (rdp_admit(r, -1, NULL, err, errlen) != 0)
		goto out;
	if (strcmp(r->conf.engine, "freerdp") == 0) {
		if (conf->fronts > 0)
			log_warn("[rdp] fronts = %d ignored: the freerdp engine runs in the "
			    "broker's process (privilege separation is the lean engine's)",
			    r->conf.fronts);
		if ((r->engine = rdp_freerdp_new(r->conf.certificate, r->conf.private_key,
		    r->token_mode, admit_stop_fd(r->admit), err, errlen)) == NULL)
			goto out;
		rdp_freerdp_set_tls(r->engine, r->conf.tls_ciphers, r->conf.tls_min_version);
		rc = 0;
		goto out;
	}
	if (lean_pem_read(&pem, r->conf.certificate, r->conf.private_key, err, errlen) != 0)
		goto out;
	if (r->conf.fronts > 0) {
		struct door_ops fops = r->front;

		/* a front's DOOR_CONNECT is carried out here, splice and all */
		fops.splice = r->ops.splice != NULL ? front_splice : NULL;
		/* checks the policy and the key here, where -t and errors are */
		if (lean_tls_check(&(struct lean_tls){ r->conf.tls_ciphers,
		    r->conf.tls_ciphersuites, r->conf.tls_min_version }, err, errlen) != 0 ||
		    (r->fronts = fronts_new(&r->conf, &pem, &fops, front_restarts, err,
		    errlen)) == NULL)
			goto out;
	} else if (rdp_lean(r, &pem, err, errlen) != 0)
		goto out;
	rc = 0;
 out:
	lean_pem_free(&pem);
	if (rc != 0) {
		rdp_free(r);
		return NULL;
	}
	return r;
}

struct rdp *
rdp_front_new(const struct rdp_conf *conf, const struct lean_pem *pem, int conn_fd,
    int (*accept)(void *, int, char *, size_t, uint64_t *), const struct door_ops *ops,
    void (*ended)(void *ctx, struct door_conn *dc), char *err, size_t errlen)
{
	struct rdp *r;

	if ((r = rdp_alloc(conf, ops, err, errlen)) == NULL)
		return NULL;
	r->ended = ended;
	if (rdp_admit(r, conn_fd, accept, err, errlen) != 0 || rdp_lean(r, pem, err, errlen) != 0) {
		rdp_free(r);
		return NULL;
	}
	return r;
}

/* The reload's part after the TLS holders took it: the limits, and the
 * keys read on connections (atomically). */
static int
rdp_take_limits(struct rdp *r, const struct rdp_conf *conf, char *err, size_t errlen)
{
	struct admit_conf ac;

	rdp_admit_conf(&ac, r, conf, r->conn_fd, r->accept);
	if (admit_set_limits(r->admit, &ac, err, errlen) != 0)
		return -1;	/* checked by rdp_conf_check: not reached */
	util_strlcpy(r->conf.certificate, conf->certificate, sizeof(r->conf.certificate));
	util_strlcpy(r->conf.private_key, conf->private_key, sizeof(r->conf.private_key));
	__atomic_store_n(&r->conf.trust_cookie, conf->trust_cookie, __ATOMIC_RELAXED);
	__atomic_store_n(&r->conf.placements_per_address_minute,
	    conf->placements_per_address_minute, __ATOMIC_RELAXED);
	return 0;
}

int
rdp_reload(struct rdp *r, const struct rdp_conf *conf, char *err, size_t errlen)
{
	struct lean_tls tls = { conf->tls_ciphers, conf->tls_ciphersuites,
	    conf->tls_min_version };
	struct lean_pem pem;
	int rc;

	/* what can fail first: a refusal changes nothing */
	if (rdp_conf_check(conf, err, errlen) != 0)
		return -1;
	if (r->engine != NULL) {
		if (rdp_freerdp_reload(r->engine, conf->certificate, conf->private_key, err,
		    errlen) != 0)
			return -1;
		rdp_freerdp_set_tls(r->engine, conf->tls_ciphers, conf->tls_min_version);
		return rdp_take_limits(r, conf, err, errlen);
	}
	if (lean_pem_read(&pem, conf->certificate, conf->private_key, err, errlen) != 0)
		return -1;
	rc = r->fronts != NULL ? fronts_reload(r->fronts, conf, &pem, err, errlen) :
	    lean_configure(r->lean, &pem, &tls, err, errlen);
	lean_pem_free(&pem);
	return rc != 0 ? -1 : rdp_take_limits(r, conf, err, errlen);
}

int
rdp_front_reload(struct rdp *r, const struct rdp_conf *conf, const struct lean_pem *pem,
    char *err, size_t errlen)
{
	struct lean_tls tls = { conf->tls_ciphers, conf->tls_ciphersuites,
	    conf->tls_min_version };

	if (lean_configure(r->lean, pem, &tls, err, errlen) != 0)
		return -1;
	return rdp_take_limits(r, conf, err, errlen);
}

int
rdp_start(struct rdp *r)
{
	const struct admit_conf *c;

	if (r == NULL || (r->fronts != NULL && fronts_start(r->fronts) != 0) ||
	    admit_start(r->admit) != 0)
		return -1;
	c = admit_conf(r->admit);
	log_info("listening on %s (%s mode%s, %s engine, TLS, handshake_timeout %d s, "
	    "max_handshakes %d, max_connections %d)", r->conf.listen, r->conf.mode,
	    r->conf.trust_cookie ? ", trust_cookie" : "", r->engine ? "freerdp" : r->fronts ?
	    "lean in front processes" : "lean",
	    c->handshake_timeout,
	    c->max_handshakes, c->max_connections);
	return 0;
}

void
rdp_free(struct rdp *r)
{
	if (r == NULL)
		return;
	fronts_stop(r->fronts);		/* gives the connections in fronts back */
	if (admit_free(r->admit) != 0)
		return;		/* a handler is stuck: leave r to it */
	fronts_free(r->fronts);
	rdp_freerdp_free(r->engine);
	lean_free(r->lean);
	free(r);
}
