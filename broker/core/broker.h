/* broker: the decisions behind the RDP endpoint. Implements the front door
 * (broker/front/door.h):
 * a user's placement is decided and committed by the store before the
 * redirect is sent; each connection's outcome becomes an event and counts
 * in the redirect metrics. In token mode it issues the routing token with
 * the placement, and routes the connections that come back with one: the
 * token is verified, the session's server looked up in the store (never
 * taken from the token), connected to (failing over to another server when
 * it is unreachable) and spliced. With trust_cookie it splices a user hint
 * to the user's live session. README "Token mode". */
#ifndef TS_BROKER_H
#define TS_BROKER_H

#include <stdint.h>

#include "broker/front/door.h"
#include "broker/front/token.h"

struct conf;
struct store;
struct splice;

#define BROKER_BUCKETS 15

struct broker_metrics {
	uint64_t redirects[3];			/* by enum door_outcome */
	uint64_t reconnects;			/* of redirects[RDP_REDIRECTED] */
	uint64_t hist[BROKER_BUCKETS];		/* handling time, cumulative later */
	uint64_t hist_sum_us;
	uint64_t splices[3];			/* by BROKER_SPLICE_* */
	uint64_t failovers;			/* servers replaced at splice time */
};

#define BROKER_SPLICED		0	/* spliced to a server */
#define BROKER_SPLICE_REFUSED	1	/* bad token, no server left */
#define BROKER_SPLICE_FAILED	2	/* unreachable, splice_max, database */

/* Upper bounds of the handling-time histogram buckets, in microseconds
 * (the last is +Inf). */
extern const int64_t broker_buckets_us[BROKER_BUCKETS];

struct broker {
	struct store *st;		/* borrowed */
	const struct conf *c;		/* borrowed */
	struct broker_metrics m;	/* updated atomically */
	int token_mode;			/* set by broker_start */
	struct token_key key;		/* token mode: the routing-token key */
	struct splice *splice;		/* token mode or trust_cookie: the relay */
};

/* After st and c are set: loads (or creates) the token key in token mode
 * and starts the relay when token mode or trust_cookie needs it. 0, or -1
 * with the reason in err. */
int broker_start(struct broker *b, char *err, size_t n);
/* Closes every spliced connection, frees the relay, wipes the key. Call
 * after rdp_free (no splice in progress). */
void broker_stop(struct broker *b);
/* Fills ops to call into b. */
void broker_door_ops(struct broker *b, struct door_ops *ops);
/* Spliced connections open now (0 without a relay). */
int broker_splices_active(const struct broker *b);

#endif
