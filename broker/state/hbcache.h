/* hbcache: what a heartbeat reads of its server (store_engine.h
 * heartbeat_read: state, admin state, name, the sessions not ended) and
 * which server a token is, as of the database's last commit, so that a
 * beat whose sessions did not change reads and writes nothing but its
 * load (store.c). Pure: no I/O, no locks (the store's lock guards it).
 *
 * Exact, never approximate: the cache reflects one generation of the
 * engine (store_engine.h generation). A transaction that begins at another
 * generation (a commit the cache did not see: another process, another
 * broker, this store's other operations) empties it; one that ends without
 * a commit, or whose commit's generation is unknown, empties it too, so
 * that it never claims a state that is not on disk. Within a transaction
 * the entries follow what its beats wrote (hbcache_apply); a change it
 * cannot follow (a new session row, a down transition) drops the entry. */
#ifndef TS_HBCACHE_H
#define TS_HBCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "broker/common/wire.h"
#include "broker/state/reconcile.h"
#include "broker/state/states.h"

#define HBCACHE_TOKEN_MAX	72	/* a token's SHA-256 in hex, incl. NUL */

struct hbcache_entry {
	int64_t id;
	char token[HBCACHE_TOKEN_MAX];	/* "" when known only by id */
	char name[WIRE_NAME_MAX];
	enum server_state state;
	enum admin_state admin;
	int rows_known;			/* rows below are the server's */
	int no_commands;		/* none queued for it (command_queued) */
	struct rc_row *rows;		/* owned; ordered by state text, id */
	size_t nrows;
};

struct hbcache;

/* A cache holding at most max_rows session rows in all (its memory:
 * about 210 bytes a row); NULL if out of memory. */
struct hbcache *hbcache_new(size_t max_rows);
void hbcache_free(struct hbcache *c);

/* A write transaction began at generation gen (0: unknown): the cache is
 * emptied unless it reflects gen. */
void hbcache_begin(struct hbcache *c, uint64_t gen);
/* That transaction ended: committed at generation gen (0: unknown), or
 * not (committed 0). Unless committed at a known gen, it is emptied. */
void hbcache_end(struct hbcache *c, int committed, uint64_t gen);

/* A transaction that began at from and changed nothing the cache holds
 * committed at to: a cache of from reflects to. */
void hbcache_follow(struct hbcache *c, uint64_t from, uint64_t to);
/* Does it hold anything (of a generation)? c may be NULL. */
int hbcache_holds(const struct hbcache *c);

/* The entry of the server with token (its hash) or id, or NULL. Valid
 * until the next call that changes the cache. */
struct hbcache_entry *hbcache_token(struct hbcache *c, const char *token);
struct hbcache_entry *hbcache_id(struct hbcache *c, int64_t id);

/* Keeps what a transaction read of server id (rows NULL: its sessions not
 * read), replacing its entry. Not kept (0 still: a cache may forget) when
 * it does not fit or memory runs out. Returns the entry or NULL. */
struct hbcache_entry *hbcache_put(struct hbcache *c, int64_t id, const char *token,
    const char *name, enum server_state state, enum admin_state admin,
    const struct rc_row *rows, size_t nrows);

/* Forgets server id. */
void hbcache_drop(struct hbcache *c, int64_t id);

/* Server id's heartbeat hb was written with plan (reconcile.h): its entry
 * follows (a transition up, updated and ended rows) or is dropped (a down
 * transition, an inserted row). */
void hbcache_apply(struct hbcache *c, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_plan *plan);

/* Entries kept now; lookups that found one and that did not, so far. */
size_t hbcache_count(const struct hbcache *c);
void hbcache_stats(const struct hbcache *c, uint64_t *hits, uint64_t *misses);

#endif
