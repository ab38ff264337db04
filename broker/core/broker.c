#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broker/core/broker.h"
#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/core/conf.h"
#include "broker/core/crypto.h"
#include "broker/state/placement.h"
#include "broker/front/splice.h"
#include "broker/state/store.h"
#include "broker/front/token.h"

/* Servers tried for one spliced connection: the token's, then survivors. */
#define BROKER_ROUTE_ATTEMPTS	3

static const int64_t broker_buckets_us[METRICS_BUCKETS] = METRICS_BUCKET_BOUNDS_US;

static int
broker_place(void *ctx, const struct rdp_request *req, struct rdp_target *out,
    char *reason, size_t n)
{
	struct broker *b = ctx;
	struct store_place_request pr;
	struct store_place_result res;
	char user[WIRE_USER_MAX];
	int r;

	if (placement_user_normalise(req->user ? req->user : "", user, sizeof(user)) != 0) {
		snprintf(reason, n, "no usable user name");
		return RDP_PLACE_REFUSED;
	}
	memset(&pr, 0, sizeof(pr));
	pr.user = user;
	pr.login = req->user;
	pr.domain = req->domain ? req->domain : "";
	pr.client = req->client_addr ? req->client_addr : "";
	pr.now = util_now_ms();
	pr.pending_ttl_ms = b->c->pending_ttl * 1000;
	pr.pending_penalty = b->c->pending_penalty;
	if ((r = store_placement_commit(b->st, &pr, &res)) == STORE_REFUSED) {
		snprintf(reason, n, "%s", res.reason);
		return RDP_PLACE_NO_SERVER;
	}
	if (r != 0) {
		snprintf(reason, n, "the broker cannot record the placement (%s)",
		    store_strerror(r));
		return RDP_PLACE_REFUSED;
	}
	memset(out, 0, sizeof(*out));
	util_strlcpy(out->server, res.server, sizeof(out->server));
	util_strlcpy(out->address, res.address, sizeof(out->address));
	util_strlcpy(out->fqdn, res.fqdn, sizeof(out->fqdn));
	out->port = res.port;
	out->reconnect = res.reconnect;
	out->session_id = res.session_id;
	if (res.unrecorded)
		log_warn("reconnect of %s to %s served from committed state, not recorded: "
		    "the disk is full", user, res.server);
	/* the placement is committed: now the token that leads back to it */
	if (b->token_mode && token_issue(&b->key, res.session_id,
	    pr.now / 1000 + b->c->token_ttl, out->routing_token,
	    sizeof(out->routing_token)) != 0) {
		snprintf(reason, n, "cannot issue a routing token");
		return RDP_PLACE_REFUSED;
	}
	return 0;
}

/* ---- token mode and trusted cookies: route and splice --------------------- */

/* Where a routed connection goes. */
struct route_target {
	int64_t server_id;
	int64_t session_id;
	char server[WIRE_NAME_MAX];
	char address[WIRE_ADDR_MAX];
	int port;
};

static void
route_event(struct broker *b, int outcome, const char *kind, const char *server,
    const char *user, const char *client, const char *detail)
{
	__atomic_add_fetch(&b->metrics->splices[outcome], 1, __ATOMIC_RELAXED);
	/* errors logged by store */
	(void)store_event_add(b->st, kind, server, user, client, detail, 0);
}

static void
target_from_route(struct route_target *t, const struct store_route *rt)
{
	memset(t, 0, sizeof(*t));
	t->server_id = rt->server_id;
	t->session_id = rt->session_id;
	util_strlcpy(t->server, rt->server, sizeof(t->server));
	util_strlcpy(t->address, rt->address, sizeof(t->address));
	t->port = rt->port;
}

/* Places rt's user again (reconnect rules first, so a survivor holding one
 * of their sessions wins). 0 with *t, or a STORE_* code with why filled. */
static int
route_place_again(struct broker *b, const struct store_route *rt, const char *client,
    struct route_target *t, char *why, size_t n)
{
	struct store_place_request pr;
	struct store_place_result res;
	int r;

	memset(&pr, 0, sizeof(pr));
	pr.user = rt->user;
	pr.login = rt->login[0] ? rt->login : rt->user;
	pr.domain = rt->domain;
	pr.client = client;
	pr.now = util_now_ms();
	pr.pending_ttl_ms = b->c->pending_ttl * 1000;
	pr.pending_penalty = b->c->pending_penalty;
	if ((r = store_placement_commit(b->st, &pr, &res)) != 0) {
		snprintf(why, n, "%s", r == STORE_REFUSED ? res.reason : store_strerror(r));
		return r;
	}
	memset(t, 0, sizeof(*t));
	t->server_id = res.server_id;
	t->session_id = res.session_id;
	util_strlcpy(t->server, res.server, sizeof(t->server));
	util_strlcpy(t->address, res.address, sizeof(t->address));
	t->port = res.port;
	return 0;
}

/* The broker cannot reach t: it is marked down (its sessions lost, its
 * pending placements ended) so that nobody else is sent there either. */
static void
route_mark_down(struct broker *b, const struct route_target *t, int err)
{
	char reason[128];

	snprintf(reason, sizeof(reason), "unreachable from the broker (%.48s:%d: %.40s)",
	    t->address, t->port, strerror(err));
	log_warn("server %s %s: marked down", t->server, reason);
	(void)store_server_down(b->st, t->server_id, reason, util_now_ms());
	__atomic_add_fetch(&b->metrics->failovers, 1, __ATOMIC_RELAXED);
}

static int
route_connect(struct broker *b, const struct route_target *t)
{
	return splice_connect(t->address, t->port, b->c->connect_timeout * 1000);
}

/* A connection that came back with a routing token: verify, look up the
 * session's server, connect (failing over), splice with the request. */
static int
route_token(struct broker *b, const struct rdp_route_request *req, int fd)
{
	const char *client = req->client_addr;
	struct store_route rt;
	struct route_target t;
	char why[256], from[160] = "";
	int64_t sid;
	int r, sfd = -1, err = 0;

	if ((r = token_verify(&b->key, req->token, strlen(req->token),
	    util_now_ms() / 1000, &sid)) != 0) {
		/* never log the token: its MAC is as good as a password for 60 s */
		log_warn("connection from %s refused: %s", client, token_strerror(r));
		route_event(b, BROKER_SPLICE_REFUSED, "token_refused", NULL, NULL, client,
		    token_strerror(r));
		return RDP_ROUTE_CLOSED;
	}
	if ((r = store_session_route(b->st, sid, util_now_ms(), &rt)) != 0) {
		snprintf(why, sizeof(why), r == STORE_NOT_FOUND ? "routing token for an "
		    "unknown session %lld" : "routing token for session %lld: %s",
		    (long long)sid, store_strerror(r));
		log_warn("connection from %s refused: %s", client, why);
		route_event(b, r == STORE_NOT_FOUND ? BROKER_SPLICE_REFUSED :
		    BROKER_SPLICE_FAILED, "token_refused", NULL, NULL, client, why);
		return RDP_ROUTE_CLOSED;
	}
	const char *user = rt.login[0] ? rt.login : rt.user;
	if (rt.live)
		target_from_route(&t, &rt);
	else {
		/* the server went down (or the session ended) since the token
		 * was issued: place the user again */
		snprintf(from, sizeof(from), "; session %lld %s on %s (%s)",
		    (long long)sid, session_state_str(rt.session_state), rt.server,
		    server_state_str(rt.server_state));
		if ((r = route_place_again(b, &rt, client, &t, why, sizeof(why))) != 0)
			goto refused;
	}
	for (int attempt = 1; ; attempt++) {
		if ((sfd = route_connect(b, &t)) >= 0)
			break;
		err = errno;
		route_mark_down(b, &t, err);
		if (attempt == BROKER_ROUTE_ATTEMPTS) {
			snprintf(why, sizeof(why), "%d servers unreachable from the broker, "
			    "the last %s (%s)", attempt, t.server, strerror(err));
			log_warn("%s from %s not spliced: %s", user, client, why);
			route_event(b, BROKER_SPLICE_FAILED, "splice_failed", t.server, user,
			    client, why);
			return RDP_ROUTE_CLOSED;
		}
		snprintf(from, sizeof(from), "; failover from %s (unreachable: %s)",
		    t.server, strerror(err));
		if ((r = route_place_again(b, &rt, client, &t, why, sizeof(why))) != 0)
			goto refused;
	}
	if (splice_start(b->splice, fd, sfd, req->request, req->request_len) != 0) {
		close(sfd);
		snprintf(why, sizeof(why), "cannot splice to %s: %d connections spliced "
		    "(splice_max) or out of resources", t.server, b->c->splice_max);
		log_warn("%s from %s not spliced: %s", user, client, why);
		route_event(b, BROKER_SPLICE_FAILED, "splice_failed", t.server, user, client,
		    why);
		return RDP_ROUTE_CLOSED;
	}
	snprintf(why, sizeof(why), "routing token, session %lld%s", (long long)t.session_id,
	    from);
	log_info("%s from %s spliced to %s (%s:%d)%s", user, client, t.server, t.address,
	    t.port, from);
	route_event(b, BROKER_SPLICED, "splice", t.server, user, client, why);
	return RDP_ROUTE_SPLICED;
 refused:
	{
		char detail[256];

		snprintf(detail, sizeof(detail), "no server for the routing token: %.80s%.140s",
		    why, from);
		log_warn("%s from %s refused: %s", user, client, detail);
		route_event(b, r == STORE_REFUSED ? BROKER_SPLICE_REFUSED :
		    BROKER_SPLICE_FAILED, "refusal", NULL, user, client, detail);
	}
	return RDP_ROUTE_CLOSED;
}

/* trust_cookie: "Cookie: mstshash=USER" of a user with a live session on an
 * up server goes straight there, the request still unread (the relay sends
 * it). Anything else, or an unreachable server (then marked down), is
 * declined: FreeRDP handles the connection and placement decides. */
static int
route_cookie(struct broker *b, const struct rdp_route_request *req, int fd)
{
	const char *client = req->client_addr;
	char user[WIRE_USER_MAX], why[160];
	struct store_route rt;
	struct route_target t;
	int sfd;

	if (placement_user_normalise(req->cookie, user, sizeof(user)) != 0 ||
	    store_user_route(b->st, user, util_now_ms(), &rt) != 0)
		return RDP_ROUTE_DECLINED;
	target_from_route(&t, &rt);
	if ((sfd = route_connect(b, &t)) < 0) {
		route_mark_down(b, &t, errno);
		return RDP_ROUTE_DECLINED;
	}
	if (splice_start(b->splice, fd, sfd, NULL, 0) != 0) {
		close(sfd);
		log_warn("cookie %s from %s not spliced (splice_max %d reached?): "
		    "placing it as usual", user, client, b->c->splice_max);
		return RDP_ROUTE_DECLINED;
	}
	snprintf(why, sizeof(why), "cookie (trust_cookie), session %lld",
	    (long long)rt.session_id);
	log_info("%s from %s spliced to %s (%s:%d) by its cookie", user, client, t.server,
	    t.address, t.port);
	route_event(b, BROKER_SPLICED, "splice", t.server, rt.login[0] ? rt.login : user,
	    client, why);
	return RDP_ROUTE_SPLICED;
}

static int
broker_route(void *ctx, const struct rdp_route_request *req, int fd)
{
	struct broker *b = ctx;

	if (b->splice == NULL)
		return req->kind == RDP_ROUTE_COOKIE ? RDP_ROUTE_DECLINED : RDP_ROUTE_CLOSED;
	if (req->kind == RDP_ROUTE_TOKEN) {
		if (!b->token_mode)
			return RDP_ROUTE_CLOSED;
		return route_token(b, req, fd);
	}
	return route_cookie(b, req, fd);
}

static void
broker_done(void *ctx, enum rdp_outcome outcome, const struct rdp_request *req,
    const struct rdp_target *target, const char *reason, int64_t elapsed_us)
{
	static const char *kinds[] = { "placement", "refusal", "redirect_failed" };
	struct broker *b = ctx;
	const char *kind = kinds[outcome], *server = target ? target->server : "";
	const char *user = req->user ? req->user : "";
	const char *client = req->client_addr ? req->client_addr : "";
	int i;

	for (i = 0; i < METRICS_BUCKETS - 1 && elapsed_us > broker_buckets_us[i]; i++)
		;
	__atomic_add_fetch(&b->metrics->hist[i], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&b->metrics->hist_sum_us, (uint64_t)elapsed_us, __ATOMIC_RELAXED);
	__atomic_add_fetch(&b->metrics->redirects[outcome], 1, __ATOMIC_RELAXED);
	if (target != NULL && target->reconnect) {
		kind = "reconnect";
		__atomic_add_fetch(&b->metrics->reconnects, 1, __ATOMIC_RELAXED);
	}
	if (reason == NULL)
		reason = "";
	/* a connection that never said who it was (a port scan, a load
	 * balancer's check, garbage) counts, but is no event: rdp.c logs it */
	if (outcome == RDP_FAILED && user[0] == '\0') {
		log_debug("connection from %s failed: %s", client, reason);
		return;
	}
	if (outcome == RDP_REDIRECTED)
		log_info("%s from %s -> %s (%s, %lld us)", user, client, server,
		    target->reconnect ? "reconnect" : "new", (long long)elapsed_us);
	else
		log_warn("%s from %s not redirected: %s", user[0] ? user : "?", client,
		    reason);
	/* errors logged by store */
	(void)store_event_add(b->st, kind, server, user, client, reason, elapsed_us);
}

int
broker_start(struct broker *b, char *err, size_t n)
{
	struct splice_conf sc;

	b->token_mode = strcmp(b->c->rdp.mode, "token") == 0;
	if (b->token_mode && token_key_load(b->c->token_key, &b->key, err, n) != 0)
		return -1;
	if (!b->token_mode && !b->c->rdp.trust_cookie)
		return 0;
	memset(&sc, 0, sizeof(sc));
	sc.idle_timeout_ms = b->c->splice_idle_timeout * 1000;
	sc.max = b->c->splice_max;
	if ((b->splice = splice_new(&sc)) == NULL) {
		snprintf(err, n, "out of memory");
		return -1;
	}
	return 0;
}

void
broker_stop(struct broker *b)
{
	splice_free(b->splice);
	b->splice = NULL;
	crypto_wipe(&b->key, sizeof(b->key));
}

int
broker_splices_active(const struct broker *b)
{
	return b->splice != NULL ? splice_active(b->splice) : 0;
}

void
broker_rdp_ops(struct broker *b, struct rdp_ops *ops)
{
	ops->place = broker_place;
	ops->done = broker_done;
	ops->route = broker_route;
	ops->ctx = b;
}
