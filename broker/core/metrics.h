/* metrics: the broker's counters and histograms, types and constants only
 * (no behaviour: any module may include it). main.c owns one struct metrics
 * for the life of the daemon and hands each producer a pointer to its own
 * part; a producer increments its counters with __atomic_add_fetch (relaxed)
 * and nobody else writes them. broker/http/metrics.c renders them, with
 * the farm's gauges, as GET /metrics. */
#ifndef TS_METRICS_H
#define TS_METRICS_H

#include <stdint.h>

/* RDP connections by outcome: the index is an enum rdp_outcome (front/rdp.h:
 * redirected, refused, failed). */
#define METRICS_OUTCOMES	3

/* Buckets of the handling-time histogram, and their upper bounds in
 * microseconds (the last is +Inf): an initialiser for a table of
 * METRICS_BUCKETS int64_t. */
#define METRICS_BUCKETS		15
#define METRICS_BUCKET_BOUNDS_US { 250, 500, 1000, 2500, 5000, 10000, 25000, \
	50000, 100000, 250000, 1000000, 2500000, 5000000, 10000000, INT64_MAX }

/* Connections routed by a routing token or a trusted cookie, by outcome. */
enum metrics_splice {
	METRICS_SPLICED = 0,		/* spliced to a server */
	METRICS_SPLICE_REFUSED,		/* bad token, no server left */
	METRICS_SPLICE_FAILED,		/* unreachable, splice_max, database */
	METRICS_SPLICE_OUTCOMES
};

/* Spliced bytes by direction, and pairs closed by cause: front/splice.c's
 * (the index of closed is an enum relay_close, front/relay.h). */
#define METRICS_RELAY_CLOSES	5
struct metrics_relay {
	uint64_t bytes[2];			/* 0 client->server, 1 back */
	uint64_t closed[METRICS_RELAY_CLOSES];
};

/* broker/core/broker.c's: redirects and splices. */
struct metrics_broker {
	uint64_t redirects[METRICS_OUTCOMES];	/* by enum rdp_outcome */
	uint64_t reconnects;			/* of redirects[RDP_REDIRECTED] */
	uint64_t hist[METRICS_BUCKETS];		/* handling time, not cumulative */
	uint64_t hist_sum_us;
	uint64_t splices[METRICS_SPLICE_OUTCOMES];
	uint64_t failovers;			/* servers replaced at splice time */
	struct metrics_relay relay;		/* handed to the relay by broker.c */
};

/* broker/http/api_agent.c's: agent heartbeats. */
struct metrics_heartbeats {
	uint64_t received;
	uint64_t rejected;			/* token, body, name */
};

/* broker/http/auth.c's: status page logins by result. */
struct metrics_logins {
	uint64_t ok;
	uint64_t failed;			/* wrong password */
	uint64_t limited;			/* refused unchecked (rate limits) */
};

/* broker/core/reload.c's: configuration reloads (SIGHUP) by result. */
struct metrics_reloads {
	uint64_t ok;
	uint64_t refused;			/* bad file, value or certificate */
};

struct metrics {
	struct metrics_broker broker;
	struct metrics_heartbeats heartbeats;
	struct metrics_logins logins;
	struct metrics_reloads reloads;
	uint64_t front_restarts;		/* core/fronts.c's: crashed fronts started again */
};

#endif
