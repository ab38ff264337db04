#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "broker/http/metrics.h"
#include "broker/http/http_reply.h"
#include "broker/common/util.h"
#include "broker/core/metrics.h"
#include "broker/state/farm.h"
#include "broker/state/store.h"

struct textbuf {
	char *s;
	size_t len, cap;
	int failed;
};

static void
tb_printf(struct textbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0,
		    fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if (b->s != NULL && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		char *ns = realloc(b->s, cap);
		if (ns == NULL) {
			b->failed = 1;
			return;
		}
		b->s = ns;
		b->cap = cap;
	}
}

static uint64_t
ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* The farm's servers and sessions (farm.h). */
static void
farm_gauges(struct textbuf *b, const struct farm_summary *fs)
{
	const struct farm_summary f = *fs;

	tb_printf(b, "# HELP tsbroker_servers Terminal servers by health state.\n"
	    "# TYPE tsbroker_servers gauge\n"
	    "tsbroker_servers{state=\"up\"} %d\ntsbroker_servers{state=\"down\"} %d\n"
	    "tsbroker_servers{state=\"unknown\"} %d\n", f.up, f.down, f.unknown);
	tb_printf(b, "# HELP tsbroker_servers_draining Servers drained by an admin.\n"
	    "# TYPE tsbroker_servers_draining gauge\ntsbroker_servers_draining %d\n"
	    "# HELP tsbroker_servers_quarantined Servers quarantined as black holes.\n"
	    "# TYPE tsbroker_servers_quarantined gauge\ntsbroker_servers_quarantined %d\n"
	    "# HELP tsbroker_servers_accepting Servers taking new users (up, enabled, "
	    "not quarantined).\n# TYPE tsbroker_servers_accepting gauge\n"
	    "tsbroker_servers_accepting %d\n", f.draining, f.quarantined, f.accepting);
	tb_printf(b, "# HELP tsbroker_sessions Sessions by state.\n"
	    "# TYPE tsbroker_sessions gauge\n"
	    "tsbroker_sessions{state=\"active\"} %d\n"
	    "tsbroker_sessions{state=\"disconnected\"} %d\n"
	    "tsbroker_sessions{state=\"pending\"} %d\n"
	    "tsbroker_sessions{state=\"lost\"} %d\n", f.active, f.disconnected,
	    f.pending, f.lost);
	tb_printf(b, "# HELP tsbroker_n_plus_1_headroom Free places left after the "
	    "loss of the worst up server (negative: users without a place).\n"
	    "# TYPE tsbroker_n_plus_1_headroom gauge\ntsbroker_n_plus_1_headroom %d\n"
	    "# HELP tsbroker_n_plus_1_ok 1 if the loss of any one up server is absorbed.\n"
	    "# TYPE tsbroker_n_plus_1_ok gauge\ntsbroker_n_plus_1_ok %d\n",
	    f.n1.headroom, f.n1.ok);
}

/* The oldest heartbeat of the up servers (0 s if none): an agent going
 * quiet shows here before its server goes down. Counts only: no names. */
static void
heartbeat_gauge(struct textbuf *b, const struct store_server *sv, size_t n, int64_t now)
{
	int64_t oldest = now;

	for (size_t i = 0; i < n; i++)
		if (sv[i].state == SERVER_UP && sv[i].last_heartbeat > 0 &&
		    sv[i].last_heartbeat < oldest)
			oldest = sv[i].last_heartbeat;
	tb_printf(b, "# HELP tsbroker_heartbeat_age_max_seconds Time since the "
	    "least recent heartbeat of the up servers.\n"
	    "# TYPE tsbroker_heartbeat_age_max_seconds gauge\n"
	    "tsbroker_heartbeat_age_max_seconds %.3f\n", (double)(now - oldest) / 1000.0);
}

static void
metrics_get(void *ctx, const struct http_request *req, struct http_response *res)
{
	static const char *outcomes[METRICS_OUTCOMES] = { "redirected", "refused",
	    "failed" };
	/* by enum relay_close (front/relay.h) */
	static const char *const closes[METRICS_RELAY_CLOSES] = { "done", "reset",
	    "peer_lost", "idle", "stopped" };
	static const int64_t bounds_us[METRICS_BUCKETS] = METRICS_BUCKET_BOUNDS_US;
	const struct metrics_page *p = ctx;
	const struct metrics_broker *m = &p->m->broker;
	const struct metrics_heartbeats *hb = &p->m->heartbeats;
	const struct metrics_logins *lg = &p->m->logins;
	struct store_server *list = NULL;
	struct textbuf b = { NULL, 0, 0, 0 };
	struct farm_summary f;
	uint64_t cum = 0;
	size_t n = 0;
	int64_t since = 0;
	int r, down, active = p->splices_active ? p->splices_active(p->splices_ctx) : 0;

	if ((r = store_server_list(p->st, &list, &n)) != 0 && r != STORE_UNAVAILABLE) {
		http_reply_store_error(res, p->st, r);
		return;
	}
	down = store_outage(p->st, &since, NULL, 0);
	if (r == 0) {
		int64_t now = util_now_ms();

		farm_summarise(list, n, now, &f);
		farm_gauges(&b, &f);
		heartbeat_gauge(&b, list, n, now);
	}
	free(list);
	tb_printf(&b, "# HELP tsbroker_state_database_up 1 if the state database is "
	    "reachable, 0 during an outage (the farm's gauges are left out then).\n"
	    "# TYPE tsbroker_state_database_up gauge\ntsbroker_state_database_up %d\n"
	    "# HELP tsbroker_state_database_outage_seconds How long the state database "
	    "has been unreachable (0: it is reachable).\n"
	    "# TYPE tsbroker_state_database_outage_seconds gauge\n"
	    "tsbroker_state_database_outage_seconds %.3f\n", !down,
	    down ? (double)(util_now_ms() - since) / 1000.0 : 0.0);
	tb_printf(&b, "# HELP tsbroker_redirects_total RDP connections by outcome.\n"
	    "# TYPE tsbroker_redirects_total counter\n");
	for (int i = 0; i < METRICS_OUTCOMES; i++)
		tb_printf(&b, "tsbroker_redirects_total{outcome=\"%s\"} %" PRIu64 "\n",
		    outcomes[i], ld(&m->redirects[i]));
	tb_printf(&b, "# HELP tsbroker_reconnects_total Redirects back to an existing "
	    "session.\n# TYPE tsbroker_reconnects_total counter\n"
	    "tsbroker_reconnects_total %" PRIu64 "\n", ld(&m->reconnects));
	tb_printf(&b, "# HELP tsbroker_redirect_seconds Broker time from accept to "
	    "the redirect or refusal.\n# TYPE tsbroker_redirect_seconds histogram\n");
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		cum += ld(&m->hist[i]);
		if (i == METRICS_BUCKETS - 1)
			tb_printf(&b, "tsbroker_redirect_seconds_bucket{le=\"+Inf\"} %"
			    PRIu64 "\n", cum);
		else
			tb_printf(&b, "tsbroker_redirect_seconds_bucket{le=\"%g\"} %" PRIu64
			    "\n", (double)bounds_us[i] / 1e6, cum);
	}
	tb_printf(&b, "tsbroker_redirect_seconds_sum %.6f\n"
	    "tsbroker_redirect_seconds_count %" PRIu64 "\n",
	    (double)ld(&m->hist_sum_us) / 1e6, cum);
	tb_printf(&b, "# HELP tsbroker_splices_total Connections routed by a routing "
	    "token or a trusted cookie, by outcome.\n# TYPE tsbroker_splices_total counter\n"
	    "tsbroker_splices_total{outcome=\"spliced\"} %" PRIu64 "\n"
	    "tsbroker_splices_total{outcome=\"refused\"} %" PRIu64 "\n"
	    "tsbroker_splices_total{outcome=\"failed\"} %" PRIu64 "\n"
	    "# HELP tsbroker_splices_active Spliced connections open now.\n"
	    "# TYPE tsbroker_splices_active gauge\ntsbroker_splices_active %d\n"
	    "# HELP tsbroker_splice_failovers_total Servers found unreachable when "
	    "splicing, marked down and replaced.\n"
	    "# TYPE tsbroker_splice_failovers_total counter\n"
	    "tsbroker_splice_failovers_total %" PRIu64 "\n",
	    ld(&m->splices[METRICS_SPLICED]), ld(&m->splices[METRICS_SPLICE_REFUSED]),
	    ld(&m->splices[METRICS_SPLICE_FAILED]), active,
	    ld(&m->failovers));
	tb_printf(&b, "# HELP tsbroker_splice_bytes_total Bytes relayed by the splice, "
	    "by direction.\n# TYPE tsbroker_splice_bytes_total counter\n"
	    "tsbroker_splice_bytes_total{direction=\"client_to_server\"} %" PRIu64 "\n"
	    "tsbroker_splice_bytes_total{direction=\"server_to_client\"} %" PRIu64 "\n"
	    "# HELP tsbroker_splices_closed_total Spliced connections closed, by cause "
	    "(peer_lost: keepalive or user timeout).\n"
	    "# TYPE tsbroker_splices_closed_total counter\n",
	    ld(&m->relay.bytes[0]), ld(&m->relay.bytes[1]));
	for (int i = 0; i < METRICS_RELAY_CLOSES; i++)
		tb_printf(&b, "tsbroker_splices_closed_total{cause=\"%s\"} %" PRIu64 "\n",
		    closes[i], ld(&m->relay.closed[i]));
	tb_printf(&b, "# HELP tsbroker_pem_cache_hits_total FreeRDP TLS set-up PEM reads "
	    "served from the key and certificate parsed at start (two per handshake).\n"
	    "# TYPE tsbroker_pem_cache_hits_total counter\n"
	    "tsbroker_pem_cache_hits_total %" PRIu64 "\n",
	    p->pem_cache_hits ? p->pem_cache_hits() : 0);
	tb_printf(&b, "# HELP tsbroker_front_restarts_total Front processes (the RDP "
	    "handshakes' unprivileged parsers) started again after they died.\n"
	    "# TYPE tsbroker_front_restarts_total counter\n"
	    "tsbroker_front_restarts_total %" PRIu64 "\n", ld(&p->m->front_restarts));
	tb_printf(&b, "# HELP tsbroker_heartbeats_received_total Agent heartbeats "
	    "received.\n# TYPE tsbroker_heartbeats_received_total counter\n"
	    "tsbroker_heartbeats_received_total %" PRIu64 "\n"
	    "# HELP tsbroker_heartbeats_rejected_total Agent heartbeats rejected "
	    "(token, body, name).\n# TYPE tsbroker_heartbeats_rejected_total counter\n"
	    "tsbroker_heartbeats_rejected_total %" PRIu64 "\n",
	    ld(&hb->received), ld(&hb->rejected));
	tb_printf(&b, "# HELP tsbroker_admin_logins_total Status page logins by "
	    "result.\n# TYPE tsbroker_admin_logins_total counter\n"
	    "tsbroker_admin_logins_total{result=\"ok\"} %" PRIu64 "\n"
	    "tsbroker_admin_logins_total{result=\"failed\"} %" PRIu64 "\n"
	    "tsbroker_admin_logins_total{result=\"limited\"} %" PRIu64 "\n",
	    ld(&lg->ok), ld(&lg->failed), ld(&lg->limited));
	tb_printf(&b, "# HELP tsbroker_config_reloads_total Configuration reloads (SIGHUP) by "
	    "result.\n# TYPE tsbroker_config_reloads_total counter\n"
	    "tsbroker_config_reloads_total{result=\"ok\"} %" PRIu64 "\n"
	    "tsbroker_config_reloads_total{result=\"refused\"} %" PRIu64 "\n",
	    ld(&p->m->reloads.ok), ld(&p->m->reloads.refused));
	if (b.failed) {
		free(b.s);
		http_reply_error(res, 500, "out of memory");
		return;
	}
	res->status = 200;
	res->content_type = "text/plain; version=0.0.4; charset=utf-8";
	res->body = b.s;
	res->body_len = b.len;
}

int
metrics_register(struct metrics_page *p, struct http *h)
{
	return http_route(h, "GET", "/metrics", metrics_get, p);
}
