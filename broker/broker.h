/* broker: the decisions behind the RDP endpoint. Implements struct rdp_ops:
 * a user's placement is decided and committed by the store before the
 * redirect is sent; each connection's outcome becomes an event and counts
 * in the redirect metrics. */
#ifndef TS_BROKER_H
#define TS_BROKER_H

#include <stdint.h>

#include "broker/rdp.h"

struct conf;
struct store;

#define BROKER_BUCKETS 12

struct broker_metrics {
	uint64_t redirects[3];			/* by enum rdp_outcome */
	uint64_t reconnects;			/* of redirects[RDP_REDIRECTED] */
	uint64_t hist[BROKER_BUCKETS];		/* handling time, cumulative later */
	uint64_t hist_sum_us;
};

/* Upper bounds of the handling-time histogram buckets, in microseconds
 * (the last is +Inf). */
extern const int64_t broker_buckets_us[BROKER_BUCKETS];

struct broker {
	struct store *st;		/* borrowed */
	const struct conf *c;		/* borrowed */
	struct broker_metrics m;	/* updated atomically */
};

/* Fills ops to call into b. */
void broker_rdp_ops(struct broker *b, struct rdp_ops *ops);

#endif
