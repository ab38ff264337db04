#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broker/core/broker.h"
#include "broker/common/log.h"
#include "broker/common/net.h"
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

/* DOOR_LOGON: decides and commits where req's user goes. */
static void
broker_place(struct broker *b, const struct door_request *req, struct door_answer *ans)
{
	struct door_redirect *out = &ans->redirect;
	struct store_place_request pr;
	struct store_place_result res;
	char user[WIRE_USER_MAX];
	int r;

	ans->verdict = DOOR_REFUSE;
	ans->refusal = DOOR_REFUSAL_DENIED;
	if (placement_user_normalise(req->user, user, sizeof(user)) != 0) {
		snprintf(ans->reason, sizeof(ans->reason), "no usable user name");
		return;
	}
	memset(&pr, 0, sizeof(pr));
	pr.user = user;
	pr.login = req->user;
	pr.domain = req->domain;
	pr.client = req->client_addr;
	pr.desk = req->client_name;	/* the desk it claims */
	pr.now = util_now_ms();
	pr.pending_ttl_ms = CONF_GET(b->c, pending_ttl) * 1000;
	pr.pending_penalty = CONF_GET(b->c, pending_penalty);
	if ((r = store_placement_commit(b->st, &pr, &res)) == STORE_REFUSED) {
		snprintf(ans->reason, sizeof(ans->reason), "%s", res.reason);
		ans->refusal = DOOR_REFUSAL_NO_SERVER;
		return;
	}
	if (r != 0) {
		snprintf(ans->reason, sizeof(ans->reason),
		    "the broker cannot record the placement (%s)", store_strerror(r));
		/* no state database: to the client, as if no server had room */
		if (r == STORE_UNAVAILABLE || r == STORE_FULL)
			ans->refusal = DOOR_REFUSAL_NO_SERVER;
		return;
	}
	util_strlcpy(out->server, res.server, sizeof(out->server));
	util_strlcpy(out->address, res.address, sizeof(out->address));
	util_strlcpy(out->fqdn, res.fqdn, sizeof(out->fqdn));
	out->port = res.port;
	out->reconnect = res.reconnect;
	out->session_id = res.session_id;
	if (res.unrecorded)
		log_warn("reconnect of %s to %s served from committed state, not recorded: "
		    "%s", user, res.server, res.reason);
	/* the placement is committed: now the token that leads back to it */
	if (b->token_mode && token_issue(&b->key, res.session_id,
	    pr.now / 1000 + CONF_GET(b->c, token_ttl), out->routing_token,
	    sizeof(out->routing_token)) != 0) {
		snprintf(ans->reason, sizeof(ans->reason), "cannot issue a routing token");
		return;
	}
	ans->verdict = DOOR_REDIRECT;
	ans->refusal = DOOR_REFUSAL_NONE;
}

/* ---- token mode and trusted cookies: route and splice --------------------- */

/* The relay, or NULL (set once, by broker_start or a reload). */
static struct splice *
relay_of(const struct broker *b)
{
	return __atomic_load_n(&b->splice, __ATOMIC_ACQUIRE);
}

static void
route_event(struct broker *b, int outcome, const char *kind, const char *server,
    const char *user, const char *client, const char *detail)
{
	__atomic_add_fetch(&b->metrics->splices[outcome], 1, __ATOMIC_RELAXED);
	/* errors logged by store */
	(void)store_event_add(b->st, kind, server, user, client, detail, 0);
}

/* Where a routed connection goes: a server of the store. */
static void
target_set(struct door_splice *t, int64_t server_id, int64_t session_id, const char *server,
    const char *address, int port)
{
	t->server_id = server_id;
	t->session_id = session_id;
	util_strlcpy(t->server, server, sizeof(t->server));
	util_strlcpy(t->address, address, sizeof(t->address));
	t->port = port;
}

/* Places t's user again (reconnect rules first, so a survivor holding one
 * of their sessions wins) and points t at the server. 0, or a STORE_* code
 * with why filled. */
static int
route_place_again(struct broker *b, struct door_splice *t, const char *client, char *why,
    size_t n)
{
	struct store_place_request pr;
	struct store_place_result res;
	int r;

	memset(&pr, 0, sizeof(pr));
	pr.user = t->user;
	pr.login = t->login[0] ? t->login : t->user;
	pr.domain = t->domain;
	pr.client = client;
	pr.desk = NULL;			/* no MCS data before a splice: unknown */
	pr.now = util_now_ms();
	pr.pending_ttl_ms = CONF_GET(b->c, pending_ttl) * 1000;
	pr.pending_penalty = CONF_GET(b->c, pending_penalty);
	if ((r = store_placement_commit(b->st, &pr, &res)) != 0) {
		snprintf(why, n, "%s", r == STORE_REFUSED ? res.reason : store_strerror(r));
		return r;
	}
	target_set(t, res.server_id, res.session_id, res.server, res.address, res.port);
	return 0;
}

/* No server for a routing token: logged, an event. */
static void
route_refused(struct broker *b, int r, const char *user, const char *client, const char *why,
    const char *from)
{
	char detail[256];

	snprintf(detail, sizeof(detail), "no server for the routing token: %.80s%.140s",
	    why, from);
	log_warn("%s from %s refused: %s", user, client, detail);
	route_event(b, r == STORE_REFUSED ? BROKER_SPLICE_REFUSED : BROKER_SPLICE_FAILED,
	    "refusal", NULL, user, client, detail);
}

/* The broker cannot reach t: it is marked down (its sessions lost, its
 * pending placements ended) so that nobody else is sent there either. */
static void
route_mark_down(struct broker *b, const struct door_splice *t, int err)
{
	char reason[128];
	int changed = 0;

	snprintf(reason, sizeof(reason), "unreachable from the broker (%.48s:%d: %.40s)",
	    t->address, t->port, strerror(err));
	if (store_server_down(b->st, t->server_id, reason, util_now_ms(), &changed) == 0 &&
	    changed)
		log_warn("server %s %s: marked down", t->server, reason);
	__atomic_add_fetch(&b->metrics->failovers, 1, __ATOMIC_RELAXED);
}

static int
route_connect(struct broker *b, const struct door_splice *t)
{
	char err[160];

	return net_connect(err, sizeof(err), t->address, t->port,
	    CONF_GET(b->c, connect_timeout) * 1000);
}

/* A connection that came back with a routing token: verify, look up the
 * session's server (placing the user again if it is gone). */
static void
route_token(struct broker *b, const struct door_request *req, struct door_answer *ans)
{
	const char *client = req->client_addr;
	struct door_splice *t = &ans->splice;
	struct store_route rt;
	char why[256];
	int64_t sid;
	int r;

	ans->verdict = DOOR_REFUSE;
	ans->refusal = DOOR_REFUSAL_DENIED;
	if ((r = token_verify(&b->key, req->x224.token, strlen(req->x224.token),
	    util_now_ms() / 1000, &sid)) != 0) {
		/* never log the token: its MAC is as good as a password for 60 s */
		log_warn("connection from %s refused: %s", client, token_strerror(r));
		route_event(b, BROKER_SPLICE_REFUSED, "token_refused", NULL, NULL, client,
		    token_strerror(r));
		snprintf(ans->reason, sizeof(ans->reason), "%s", token_strerror(r));
		return;
	}
	if ((r = store_session_route(b->st, sid, util_now_ms(), &rt)) != 0) {
		snprintf(why, sizeof(why), r == STORE_NOT_FOUND ? "routing token for an "
		    "unknown session %lld" : "routing token for session %lld: %s",
		    (long long)sid, store_strerror(r));
		log_warn("connection from %s refused: %s", client, why);
		route_event(b, r == STORE_NOT_FOUND ? BROKER_SPLICE_REFUSED :
		    BROKER_SPLICE_FAILED, "token_refused", NULL, NULL, client, why);
		snprintf(ans->reason, sizeof(ans->reason), "%s", why);
		return;
	}
	util_strlcpy(t->user, rt.user, sizeof(t->user));
	util_strlcpy(t->login, rt.login[0] ? rt.login : rt.user, sizeof(t->login));
	util_strlcpy(t->domain, rt.domain, sizeof(t->domain));
	if (rt.live)
		target_set(t, rt.server_id, rt.session_id, rt.server, rt.address, rt.port);
	else {
		/* the server went down (or the session ended) since the token
		 * was issued: place the user again */
		snprintf(t->note, sizeof(t->note), "; session %lld %s on %s (%s)",
		    (long long)sid, session_state_str(rt.session_state), rt.server,
		    server_state_str(rt.server_state));
		if ((r = route_place_again(b, t, client, why, sizeof(why))) != 0) {
			route_refused(b, r, t->login, client, why, t->note);
			snprintf(ans->reason, sizeof(ans->reason), "%s", why);
			return;
		}
	}
	ans->verdict = DOOR_SPLICE;
	ans->refusal = DOOR_REFUSAL_NONE;
}

/* Carries out route_token's answer: connect (failing over), splice with the
 * request. */
static enum door_splice_result
splice_token(struct broker *b, const struct door_request *req, const struct door_answer *ans,
    int fd)
{
	const char *client = req->client_addr;
	struct door_splice t = ans->splice;
	const char *user = t.login;
	char why[256];
	int r, sfd = -1, err = 0;

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
			return DOOR_CLOSED;
		}
		snprintf(t.note, sizeof(t.note), "; failover from %s (unreachable: %s)",
		    t.server, strerror(err));
		if ((r = route_place_again(b, &t, client, why, sizeof(why))) != 0) {
			route_refused(b, r, user, client, why, t.note);
			return DOOR_CLOSED;
		}
	}
	if (splice_start(relay_of(b), fd, sfd, req->x224.bytes, req->x224.len) != 0) {
		close(sfd);
		snprintf(why, sizeof(why), "cannot splice to %s: %d connections spliced "
		    "(splice_max) or out of resources", t.server, CONF_GET(b->c, splice_max));
		log_warn("%s from %s not spliced: %s", user, client, why);
		route_event(b, BROKER_SPLICE_FAILED, "splice_failed", t.server, user, client,
		    why);
		return DOOR_CLOSED;
	}
	snprintf(why, sizeof(why), "routing token, session %lld%s", (long long)t.session_id,
	    t.note);
	log_info("%s from %s spliced to %s (%s:%d)%s", user, client, t.server, t.address,
	    t.port, t.note);
	route_event(b, BROKER_SPLICED, "splice", t.server, user, client, why);
	return DOOR_SPLICED;
}

/* trust_cookie: "Cookie: mstshash=USER" of a user with a live session on an
 * up server goes straight there, the request still unread (the relay sends
 * it). Anything else goes on: FreeRDP handles the connection and placement
 * decides. */
static void
route_cookie(struct broker *b, const struct door_request *req, struct door_answer *ans)
{
	struct door_splice *t = &ans->splice;
	char user[WIRE_USER_MAX];
	struct store_route rt;

	ans->verdict = DOOR_GO_ON;
	if (placement_user_normalise(req->x224.cookie, user, sizeof(user)) != 0 ||
	    store_user_route(b->st, user, util_now_ms(), &rt) != 0)
		return;
	target_set(t, rt.server_id, rt.session_id, rt.server, rt.address, rt.port);
	util_strlcpy(t->user, user, sizeof(t->user));
	util_strlcpy(t->login, rt.login[0] ? rt.login : user, sizeof(t->login));
	util_strlcpy(t->domain, rt.domain, sizeof(t->domain));
	ans->verdict = DOOR_SPLICE;
}

/* Carries out route_cookie's answer; an unreachable server (then marked
 * down) or a full relay declines. */
static enum door_splice_result
splice_cookie(struct broker *b, const struct door_request *req, const struct door_answer *ans,
    int fd)
{
	const struct door_splice *t = &ans->splice;
	const char *client = req->client_addr;
	struct store_place_request pr;
	char why[160];
	int sfd;

	if ((sfd = route_connect(b, t)) < 0) {
		route_mark_down(b, t, errno);
		return DOOR_DECLINED;
	}
	if (splice_start(relay_of(b), fd, sfd, NULL, 0) != 0) {
		close(sfd);
		log_warn("cookie %s from %s not spliced (splice_max %d reached?): "
		    "placing it as usual", t->user, client, CONF_GET(b->c, splice_max));
		return DOOR_DECLINED;
	}
	memset(&pr, 0, sizeof(pr));	/* desk NULL: spliced before MCS data */
	pr.user = t->user;
	pr.client = client;
	pr.now = util_now_ms();
	pr.pending_ttl_ms = CONF_GET(b->c, pending_ttl) * 1000;
	/* errors logged by store */
	(void)store_session_reconnect(b->st, t->session_id, &pr);
	snprintf(why, sizeof(why), "cookie (trust_cookie), session %lld",
	    (long long)t->session_id);
	log_info("%s from %s spliced to %s (%s:%d) by its cookie", t->user, client, t->server,
	    t->address, t->port);
	route_event(b, BROKER_SPLICED, "splice", t->server, t->login, client, why);
	return DOOR_SPLICED;
}

static void
broker_decide(void *ctx, const struct door_request *req, struct door_answer *ans)
{
	struct broker *b = ctx;
	int token = req->x224.token_kind == X224_TOKEN_MSTS;

	memset(ans, 0, sizeof(*ans));
	if (req->stage == DOOR_LOGON) {
		broker_place(b, req, ans);
		return;
	}
	if (relay_of(b) == NULL || (token && !b->token_mode)) {
		/* nothing to splice with: a cookie goes on, a token is closed */
		ans->verdict = token ? DOOR_REFUSE : DOOR_GO_ON;
		ans->refusal = token ? DOOR_REFUSAL_DENIED : DOOR_REFUSAL_NONE;
		return;
	}
	if (token)
		route_token(b, req, ans);
	else
		route_cookie(b, req, ans);
}

static enum door_splice_result
broker_splice(void *ctx, const struct door_request *req, const struct door_answer *ans,
    int fd)
{
	struct broker *b = ctx;

	if (relay_of(b) == NULL || ans->verdict != DOOR_SPLICE)
		return DOOR_CLOSED;
	if (req->x224.token_kind == X224_TOKEN_MSTS)
		return splice_token(b, req, ans, fd);
	return splice_cookie(b, req, ans, fd);
}

static void
broker_done(void *ctx, const struct door_request *req, enum door_outcome outcome,
    const struct door_answer *ans, const char *reason, int64_t elapsed_us)
{
	static const char *kinds[] = { "placement", "refusal", "redirect_failed" };
	struct broker *b = ctx;
	const struct door_redirect *target = ans != NULL ? &ans->redirect : NULL;
	const char *kind = kinds[outcome], *server = target ? target->server : "";
	const char *user = req->user, *client = req->client_addr;
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
	if (req->limited)	/* logged by the front, once a second per address */
		return;
	/* a TLS hello the policy refused: an event, so admins see which old
	 * clients it turns away */
	if (req->tls_refused) {
		log_warn("connection from %s: %s", client, reason);
		(void)store_event_add(b->st, "tls_refused", "", "", client, reason, elapsed_us);
		return;
	}
	/* a connection that never said who it was (a port scan, a load
	 * balancer's check, garbage) counts, but is no event */
	if (outcome == DOOR_FAILED && user[0] == '\0') {
		log_debug("connection from %s failed: %s", client, reason);
		return;
	}
	if (outcome == DOOR_REDIRECTED)
		log_info("%s from %s -> %s (%s, %lld us)", user, client, server,
		    target->reconnect ? "reconnect" : "new", (long long)elapsed_us);
	else
		log_warn("%s from %s not redirected: %s", user[0] ? user : "?", client,
		    reason);
	/* errors logged by store */
	(void)store_event_add(b->st, kind, server, user, client, reason, elapsed_us);
}

/* The relay's settings from c. */
static void
splice_conf_of(struct splice_conf *sc, const struct conf *c, struct metrics_relay *m)
{
	memset(sc, 0, sizeof(*sc));
	sc->idle_timeout_ms = c->splice_idle_timeout * 1000;
	sc->max = c->splice_max;
	sc->keepalive_s = c->splice_keepalive;
	sc->user_timeout_s = c->splice_user_timeout;
	sc->m = m;
}

/* Starts the relay if the mode or trust_cookie needs one. 0 or -1. */
static int
relay_ensure(struct broker *b, const struct conf *c, char *err, size_t n)
{
	struct splice_conf sc;
	struct splice *s;

	if (b->splice != NULL || (!b->token_mode && !c->rdp.trust_cookie))
		return 0;
	splice_conf_of(&sc, c, &b->metrics->relay);
	if ((s = splice_new(&sc)) == NULL) {
		snprintf(err, n, "out of memory");
		return -1;
	}
	__atomic_store_n(&b->splice, s, __ATOMIC_RELEASE);
	return 0;
}

int
broker_start(struct broker *b, char *err, size_t n)
{
	b->token_mode = strcmp(b->c->rdp.mode, "token") == 0;
	if (b->token_mode && token_key_load(b->c->token_key, &b->key, err, n) != 0)
		return -1;
	return relay_ensure(b, b->c, err, n);
}

int
broker_reload(struct broker *b, const struct conf *next, char *err, size_t n)
{
	struct splice_conf sc;

	if (b->splice == NULL)
		return relay_ensure(b, next, err, n);
	splice_conf_of(&sc, next, &b->metrics->relay);
	splice_set_conf(b->splice, &sc);
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
	struct splice *s = relay_of(b);

	return s != NULL ? splice_active(s) : 0;
}

void
broker_door_ops(struct broker *b, struct door_ops *ops)
{
	ops->decide = broker_decide;
	ops->splice = broker_splice;
	ops->done = broker_done;
	ops->ctx = b;
}
