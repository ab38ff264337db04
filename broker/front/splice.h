/* splice: token mode's TCP relay. A client's connection is joined to a
 * terminal server's, bytes unchanged both ways, until both directions have
 * ended (an EOF is carried across as a half-close), either side fails (both
 * legs are then closed), a peer vanishes (TCP keepalive and TCP_USER_TIMEOUT
 * on both legs) or the pair makes no progress for the idle timeout.
 *
 * Event-driven: a few worker threads, each with its own epoll and its pairs,
 * non-blocking sockets, and per direction a buffer only while bytes wait for
 * a slow sink (at most RELAY_BUF: front/relay.h has the rules). At most `max`
 * pairs at once. Connecting to the server is net_connect's
 * (broker/common/net.h). */
#ifndef TS_SPLICE_H
#define TS_SPLICE_H

#include <stddef.h>

#include "broker/core/metrics.h"

struct splice_conf {
	int idle_timeout_ms;	/* no progress either way for this long: closed */
	int max;		/* pairs at once */
	int keepalive_s;	/* silent seconds before the first probe; 0 off */
	int user_timeout_s;	/* TCP_USER_TIMEOUT in seconds; 0 off */
	int threads;		/* workers; 0: one per core, at most 4 */
	struct metrics_relay *m; /* borrowed, outlives the relay: its counters
				  * (atomics); NULL: not counted */
};

struct splice;

/* NULL when out of memory or no thread can be started (errno set). */
struct splice *splice_new(const struct splice_conf *c);
/* Stops the workers, closes every pair (counted as stopped) and frees s.
 * NULL ok. */
void splice_free(struct splice *s);

/* A reload: c's idle_timeout_ms, max, keepalive_s and user_timeout_s
 * (the rest ignored). The cap and the keepalives hold for pairs started
 * from now on; the idle timeout for every pair from the next sweep. Any
 * thread. */
void splice_set_conf(struct splice *s, const struct splice_conf *c);

/* Takes over client and server (closing them when done), queues first (n
 * bytes, e.g. the client's Connection Request; copied) for the server, and
 * hands the pair to a worker. Never blocks on the network. 0, or -1 when at
 * the cap, stopping or out of memory: the fds are then NOT taken. */
int splice_start(struct splice *s, int client, int server, const void *first,
    size_t n);

/* Pairs open now (started and not yet closed). */
int splice_active(struct splice *s);
/* Worker threads. */
int splice_threads(const struct splice *s);

#endif
