/* broker: the decisions behind the RDP endpoint. Implements the front door
 * (broker/front/door.h):
 * a user's placement is decided and committed by the store before the
 * redirect is sent; each connection's outcome becomes an event and counts
 * in the redirect metrics. In token mode it issues the routing token with
 * the placement, and routes the connections that come back with one: the
 * token is verified, the session's server looked up in the store (never
 * taken from the token), connected to (failing over to another server when
 * it is unreachable) and spliced. With trust_cookie it splices a user hint
 * to the user's live session. docs/token-mode.md. */
#ifndef TS_BROKER_H
#define TS_BROKER_H

#include <stdint.h>

#include "broker/core/metrics.h"
#include "broker/front/door.h"
#include "broker/front/token.h"

struct conf;
struct store;
struct splice;

/* Route outcomes of a spliced connection, counted in metrics->splices. */
#define BROKER_SPLICED		METRICS_SPLICED
#define BROKER_SPLICE_REFUSED	METRICS_SPLICE_REFUSED
#define BROKER_SPLICE_FAILED	METRICS_SPLICE_FAILED

struct broker {
	struct store *st;		/* borrowed */
	const struct conf *c;		/* borrowed */
	struct metrics_broker *metrics;	/* borrowed: its counters, atomics */
	int token_mode;			/* set by broker_start */
	struct token_key key;		/* token mode: the routing-token key */
	struct splice *splice;		/* token mode or trust_cookie: the relay
					 * (set once, by start or a reload) */
};

/* After st and c are set: loads (or creates) the token key in token mode
 * and starts the relay when token mode or trust_cookie needs it. 0, or -1
 * with the reason in err. */
int broker_start(struct broker *b, char *err, size_t n);
/* A reload: next's splice settings for splices from now on (splice.h
 * says which); trust_cookie turned on starts the relay if none runs. The
 * rest of next is read from b->c once conf_take_live has copied it. 0, or
 * -1 with the reason in err. Main thread. */
int broker_reload(struct broker *b, const struct conf *next, char *err, size_t n);
/* Closes every spliced connection, frees the relay, wipes the key. Call
 * after rdp_free (no splice in progress). */
void broker_stop(struct broker *b);
/* Fills ops to call into b. */
void broker_door_ops(struct broker *b, struct door_ops *ops);
/* Spliced connections open now (0 without a relay). */
int broker_splices_active(const struct broker *b);

#endif
