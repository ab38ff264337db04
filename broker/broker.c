#include <stdio.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/conf.h"
#include "broker/placement.h"
#include "broker/store.h"

const int64_t broker_buckets_us[BROKER_BUCKETS] = {
	250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000,
	INT64_MAX
};

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
	return 0;
}

static void
broker_done(void *ctx, enum rdp_outcome outcome, const struct rdp_request *req,
    const struct rdp_target *target, const char *reason, int64_t elapsed_us)
{
	static const char *kinds[] = { "placement", "refusal", "redirect_failed" };
	struct broker *b = ctx;
	struct store_event ev;
	int i;

	for (i = 0; i < BROKER_BUCKETS - 1 && elapsed_us > broker_buckets_us[i]; i++)
		;
	__atomic_add_fetch(&b->m.hist[i], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&b->m.hist_sum_us, (uint64_t)elapsed_us, __ATOMIC_RELAXED);
	__atomic_add_fetch(&b->m.redirects[outcome], 1, __ATOMIC_RELAXED);
	memset(&ev, 0, sizeof(ev));
	ev.ts = util_now_ms();
	util_strlcpy(ev.kind, kinds[outcome], sizeof(ev.kind));
	if (target != NULL && target->reconnect) {
		util_strlcpy(ev.kind, "reconnect", sizeof(ev.kind));
		__atomic_add_fetch(&b->m.reconnects, 1, __ATOMIC_RELAXED);
	}
	if (target != NULL)
		util_strlcpy(ev.server, target->server, sizeof(ev.server));
	util_strlcpy(ev.user, req->user ? req->user : "", sizeof(ev.user));
	util_strlcpy(ev.client, req->client_addr ? req->client_addr : "", sizeof(ev.client));
	util_strlcpy(ev.detail, reason ? reason : "", sizeof(ev.detail));
	ev.duration_us = elapsed_us;
	/* a connection that never said who it was (a port scan, a load
	 * balancer's check, garbage) counts, but is no event: rdp.c logs it */
	if (outcome == RDP_FAILED && ev.user[0] == '\0') {
		log_debug("connection from %s failed: %s", ev.client, ev.detail);
		return;
	}
	if (outcome == RDP_REDIRECTED)
		log_info("%s from %s -> %s (%s, %lld us)", ev.user, ev.client, ev.server,
		    target->reconnect ? "reconnect" : "new", (long long)elapsed_us);
	else
		log_warn("%s from %s not redirected: %s", ev.user[0] ? ev.user : "?",
		    ev.client, ev.detail);
	(void)store_event_add(b->st, &ev);	/* errors logged by store */
}

void
broker_rdp_ops(struct broker *b, struct rdp_ops *ops)
{
	ops->place = broker_place;
	ops->done = broker_done;
	ops->ctx = b;
}
