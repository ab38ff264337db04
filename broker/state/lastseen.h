/* lastseen: the live session the store last read for each user, kept in
 * memory so that a user can still be sent back to it while the state
 * database is unreachable (store.c's fallback: unrecorded, logged).
 * Bounded: two generations of LASTSEEN_USERS users each; when the newer
 * fills, the older is dropped, so the most recent LASTSEEN_USERS to twice
 * that are kept. Not thread-safe: store.c calls it under its lock.
 * Entries are copied in and out; nothing returned points into the map.
 * Memory: about 400 bytes a user (the servers' addresses are kept once
 * each), allocated as users come. */
#ifndef TS_LASTSEEN_H
#define TS_LASTSEEN_H

#include <stddef.h>
#include <stdint.h>

#include "broker/common/wire.h"
#include "broker/state/store.h"	/* struct store_route */

#define LASTSEEN_USERS	16384

struct lastseen_entry {
	struct store_route r;		/* r.user (normalised) is the key; kept:
					 * user, login, domain, session_id,
					 * server_id, server, address, port */
	char fqdn[WIRE_ADDR_MAX];	/* the server's, as a placement read it */
	int64_t seen;			/* ms: when it was read */
};

struct lastseen;

/* NULL when out of memory. lastseen_free(NULL) is a no-op. */
struct lastseen *lastseen_new(void);
void lastseen_free(struct lastseen *ls);
/* Records e (replacing e->user's entry). 0, or -1 when out of memory. */
int lastseen_put(struct lastseen *ls, const struct lastseen_entry *e);
/* 0 with user's entry in *out, or -1 if none. */
int lastseen_get(const struct lastseen *ls, const char *user, struct lastseen_entry *out);
/* 0 with the entry of session_id in *out (a linear search: for outages
 * only), or -1 if none. */
int lastseen_session(const struct lastseen *ls, int64_t session_id,
    struct lastseen_entry *out);
/* Entries kept now (a user seen in both generations counts twice). */
size_t lastseen_count(const struct lastseen *ls);

#endif
