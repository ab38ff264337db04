/* splice: token mode's TCP relay. A client's connection is joined to a
 * terminal server's, bytes unchanged both ways, until either side has closed
 * both directions or the pair is idle for too long. Each pair runs in its own
 * thread; at most `max` pairs at once. Connecting to the server is
 * net_connect's (broker/common/net.h). */
#ifndef TS_SPLICE_H
#define TS_SPLICE_H

#include <stddef.h>

struct splice_conf {
	int idle_timeout_ms;	/* no byte either way for this long: closed */
	int max;		/* pairs at once */
};

struct splice;

struct splice *splice_new(const struct splice_conf *c);
/* Stops every pair (closing their sockets) and frees s. NULL ok. */
void splice_free(struct splice *s);

/* Takes over client and server (closing them when done), sends first (n
 * bytes, e.g. the client's Connection Request) to server, then relays.
 * 0, or -1 when at the cap or out of resources: the fds are then NOT taken. */
int splice_start(struct splice *s, int client, int server, const void *first,
    size_t n);

/* Pairs running now. */
int splice_active(struct splice *s);

#endif
