/* store.c: the engine-independent layer of store.h. Chooses the engine
 * (store_engine.h), serialises calls and brackets each operation in one of
 * the engine's transactions, keeps the placement load cache, and leaves
 * the rules to placement.c (where a user goes) and reconcile.c (what a
 * heartbeat changes). */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <time.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/state/hbcache.h"
#include "broker/state/lastseen.h"
#include "broker/state/placement.h"
#include "broker/state/plindex.h"
#include "broker/state/reconcile.h"
#include "broker/state/store.h"
#include "broker/state/store_engine.h"

static const struct store_engine *const engines[] = { &store_engine_sqlite,
	&store_engine_postgresql };

/* The servers' placement inputs, kept in memory so that a decision does not
 * load every server and count its sessions (placement at 10,000 servers).
 * Exact, not approximate: loaded whole when a commit this store did not make
 * changed the engine's generation, a server is re-read when this store
 * wrote something about it (dirty) or when one of its counted pending
 * placements reaches its expiry (min_expires), and a committed placement
 * adds its pending placement. A decision reads only what changed (the
 * dirty list, the expiries once the earliest is due, the quarantined) and
 * the candidates kept in order (plindex.h), not every server. Guarded by
 * store.lock. */
struct load_cache {
	int valid;			/* 0: load everything before the next use */
	uint64_t gen;			/* the engine's generation it reflects */
	struct pl_server *sv;		/* sorted by id; names owned */
	int64_t *q_until;		/* quarantined_until */
	int64_t *min_expires;		/* earliest expiry of a counted pending, or INT64_MAX */
	unsigned char *dirty;		/* LC_DIRTY, LC_QUARANTINE */
	size_t *dlist, ndirty;		/* the slots marked dirty */
	size_t *qlist, nq;		/* the slots ever quarantined (q_until > 0) */
	int64_t next_expiry;		/* <= every min_expires */
	struct plindex *ix;		/* the candidates of sv, in order */
	size_t n, cap;
	int64_t now;			/* of the load under way */
	uint64_t loads;			/* whole loads so far (store_cache_loads) */
};

/* A heartbeat waiting for its group's commit (on its caller's stack). */
struct hb_wait {
	int64_t id;			/* 0: the server of token_hash */
	const char *token_hash;
	char *name;			/* token_hash's server's name, n bytes */
	size_t n;
	const struct wire_heartbeat *hb;
	int64_t now;
	struct store_heartbeat_result *res;
	int r;				/* its outcome (of the last run; once done) */
	int out;			/* failed alone: not run again */
	int done;
	int lead;			/* it leads the next group */
	pthread_cond_t cond;		/* done or lead: its thread alone is woken */
	struct hb_wait *next;
};
#define STORE_GROUP_MAX	64	/* heartbeats in one transaction at most */

struct store {
	const struct store_engine *e;
	struct store_db *db;
	pthread_mutex_t lock;
	struct load_cache lc;
	int write;			/* the transaction open is a write */
	int have_gen;			/* gen was read in this transaction */
	uint64_t gen;
	int lc_current;			/* lc reflects this transaction's start: its
					 * own commit keeps it current */
	int again;			/* the next begin runs the operation again,
					 * the lock still held */
	int attempt;			/* of the operation under way */
	int64_t down_since;		/* ms: no database reachable since; 0 */
	char down_why[160];
	struct lastseen *seen;		/* the users' last live sessions read */
	struct {			/* heartbeats waiting for a group commit */
		pthread_mutex_t lock;	/* alone or inside store.lock, never around it */
		struct hb_wait *head, **tail;
		int leader;		/* a group is under way, or its head leads next */
	} gq;
	uint64_t hb_groups, hb_beats;	/* group commits, the beats in them */
	struct {			/* lazy placements made durable (durable_wait) */
		pthread_mutex_t lock;	/* alone, never around store.lock */
		pthread_cond_t cond;
		uint64_t committed;	/* lazy commits waited for, so far (atomic) */
		uint64_t synced;	/* up to here durable */
		uint64_t failed;	/* up to here a sync failed: never durable */
		uint64_t syncs;		/* syncs run */
		int syncing;
	} ds;
	struct hbcache *hbc;		/* what the beats read, as of the last
					 * commit (hbcache.h); NULL: none */
	uint64_t end_gen;		/* the generation the last end_tx committed, or 0 */
	uint64_t hbc_keep;		/* this transaction leaves what heartbeats read
					 * alone (hbc_keep): its start's generation */
};
/* The rows the heartbeat cache keeps at most (about 210 bytes each). */
#define STORE_HBCACHE_ROWS	(256 * 1024)

/* end_locked: run the operation again (internal, never returned). */
#define STORE_AGAIN	-64
/* A serialization failure or deadlock runs an operation again at most this
 * often, after 1..2^attempt ms (jittered); a lost connection likewise. */
#define RETRY_MAX	6

/* ---- transactions: lock, the engine's begin .. end ---- */

/* The engine's fault handling of store_engine.h, or NULL. */
static enum store_fault
fault_of(struct store *st)
{
	return st->e->faults != NULL ? st->e->faults->classify(st->db) : STORE_FAULT_FINAL;
}

/* No database reachable: logged once, at the start of the outage; the
 * requests fail fast until store_recover finds one. Lock held. */
static void
outage_start(struct store *st, const char *why)
{
	if (st->down_since != 0)
		return;
	st->down_since = util_now_ms();
	util_strlcpy(st->down_why, why, sizeof(st->down_why));
	st->lc.valid = 0;
	log_error("state database unreachable (%s): requests fail fast, known users are "
	    "sent back to their sessions unrecorded, until it is back", why);
}

/* Begins an operation's transaction, taking the lock (kept when it runs
 * again: st->again). Known down: STORE_UNAVAILABLE at once. */
static int
begin(struct store *st, int write)
{
	uint64_t g;
	int r;

	if (st->again)
		st->again = 0;
	else {
		pthread_mutex_lock(&st->lock);
		st->attempt = 0;
	}
	if (st->down_since != 0) {
		pthread_mutex_unlock(&st->lock);
		return STORE_UNAVAILABLE;
	}
	if ((r = st->e->begin(st->db, write)) != 0) {
		if (fault_of(st) == STORE_FAULT_DOWN) {
			outage_start(st, "no primary answers");
			r = STORE_UNAVAILABLE;
		}
		pthread_mutex_unlock(&st->lock);
		return r;
	}
	st->write = write;
	st->lc_current = 0;
	st->hbc_keep = 0;
	st->have_gen = write && (st->lc.valid || hbcache_holds(st->hbc)) &&
	    st->e->generation(st->db, &g) == 0;
	if (st->have_gen) {
		st->gen = g;
		st->lc_current = st->lc.valid && g == st->lc.gen;
	}
	return 0;
}

/* The operation runs again (lock held): STORE_AGAIN, or r when it may not
 * or ran RETRY_MAX times. */
static int
again(struct store *st, int r, int may, int wait)
{
	unsigned int jitter = 0;

	if (!may || st->attempt >= RETRY_MAX)
		return r;
	if (wait) {
		struct timespec ts;

		(void)util_random(&jitter, sizeof(jitter));
		jitter = 1 + jitter % (2u << st->attempt);	/* ms */
		ts.tv_sec = 0;
		ts.tv_nsec = (long)jitter * 1000000L;
		nanosleep(&ts, NULL);
	}
	st->attempt++;
	st->again = 1;
	st->lc.valid = 0;	/* what it read was rolled back with it */
	return STORE_AGAIN;
}

/* Ends the transaction (commit if r is 0); the lock stays held. A commit
 * of a store whose cache was current keeps it current: what it changed is
 * marked dirty already. Faults (store_engine.h): with may_again,
 * STORE_AGAIN when the whole operation is to run again (st->again set: the
 * caller goes back to its begin); an in-doubt COMMIT resolved by the
 * engine's re-read; no database: STORE_UNAVAILABLE, the outage begins. */
static int
end_tx(struct store *st, int r, int may_again)
{
	uint64_t g = 0;

	r = st->e->end(st->db, r, &g);
	st->lc_current = (r == 0 && st->lc_current);
	if (r != 0 && r != STORE_REFUSED && r != STORE_NOT_FOUND && r != STORE_EXISTS) {
		switch (fault_of(st)) {
		case STORE_FAULT_RETRY:
			r = again(st, r, may_again, 1);
			break;
		case STORE_FAULT_IN_DOUBT:
			switch (st->e->faults->resolve(st->db)) {
			case STORE_OUTCOME_COMMITTED:
				r = 0;		/* its generation unknown: g 0 */
				st->lc_current = 0;
				break;
			case STORE_OUTCOME_ABORTED:
				r = again(st, STORE_UNAVAILABLE, may_again, 0);
				break;
			default:
				r = STORE_UNAVAILABLE;
			}
			if (fault_of(st) == STORE_FAULT_DOWN)
				outage_start(st, "the connection was lost in a COMMIT");
			break;
		case STORE_FAULT_DOWN:
			outage_start(st, "no primary answers");
			r = STORE_UNAVAILABLE;
			break;
		default:
			break;
		}
	}
	if (r == 0 && st->lc_current && g != 0)
		st->lc.gen = g;
	st->lc_current = 0;
	st->end_gen = r == 0 ? g : 0;
	if (r == 0 && st->hbc_keep != 0 && g != 0)
		hbcache_follow(st->hbc, st->hbc_keep, g);
	st->hbc_keep = 0;
	return r;
}

/* end_tx that may answer STORE_AGAIN: the caller must then go back to its
 * begin (the lock still held). Every operation is a loop ( retry: begin ..
 * end_again == STORE_AGAIN: goto retry), or ONE/ONE_LIST. */
static int
end_locked(struct store *st, int r)
{
	return end_tx(st, r, 1);
}

/* Ends the transaction and releases the lock, unless the operation is to
 * run again (STORE_AGAIN: the caller goes back to begin, which takes the
 * lock over). */
static int
end_again(struct store *st, int r)
{
	if ((r = end_tx(st, r, 1)) != STORE_AGAIN)
		pthread_mutex_unlock(&st->lock);
	return r;
}

/* An event of this operation, in its transaction, when r is 0. */
static int
event(struct store *st, int r, int64_t now, const char *kind, const char *server,
    const char *detail)
{
	return r != 0 ? r : st->e->event_add(st->db, now, kind, server, NULL, NULL, detail, 0);
}

/* This write transaction changes nothing a heartbeat reads (hbcache.h:
 * servers, sessions, commands): the heartbeat cache, if it reflected the
 * transaction's start, reflects its commit too. Lock held, in it. */
static void
hbc_keep(struct store *st)
{
	if (st->hbc != NULL && st->have_gen)
		st->hbc_keep = st->gen;
}

/* One engine operation in a transaction of its own, run again while its
 * end says so: its result. */
#define ONE(st, write, op, ...) ({ int r_; \
    while ((r_ = begin(st, write)) == 0 && \
        (r_ = end_again(st, (st)->e->op((st)->db, __VA_ARGS__))) == STORE_AGAIN) \
	; \
    r_; })
/* ONE of a write that leaves what heartbeats read alone (hbc_keep). */
#define ONE_KEEP(st, op, ...) ONE_KEEP_AS(st, STORE_TX_WRITE, op, __VA_ARGS__)
#define ONE_KEEP_AS(st, write, op, ...) ({ int r_; \
    while ((r_ = begin(st, write)) == 0 && (hbc_keep(st), \
        (r_ = end_again(st, (st)->e->op((st)->db, __VA_ARGS__)))) == STORE_AGAIN) \
	; \
    r_; })
/* The same for an operation returning a list in *out, freed before a run
 * again (and on error, as list_done). */
#define ONE_LIST(st, op, out, ...) ({ int r_; \
    while ((r_ = begin(st, 0)) == 0 && \
        (r_ = end_again(st, (st)->e->op((st)->db, __VA_ARGS__))) == STORE_AGAIN) { \
	free(*(out)); \
	*(out) = NULL; \
    } \
    list_done(r_, out); })

/* ---- the load cache (struct load_cache); lock held ---- */

#define LC_DIRTY	1	/* re-read before the next decision */
#define LC_QUARANTINE	2	/* in qlist */

static void
lc_clear(struct load_cache *lc)
{
	uint64_t loads;

	for (size_t i = 0; i < lc->n; i++)
		free((char *)lc->sv[i].name);
	free(lc->sv);
	free(lc->q_until);
	free(lc->min_expires);
	free(lc->dirty);
	free(lc->dlist);
	free(lc->qlist);
	plindex_free(lc->ix);
	loads = lc->loads;
	memset(lc, 0, sizeof(*lc));
	lc->loads = loads;
}

/* Slot i from a loaded row at lc->now. */
static int
lc_set(struct load_cache *lc, size_t i, const struct store_load *w)
{
	struct pl_server p = { .id = w->id, .state = w->state, .admin = w->admin,
	    .quarantined = w->quarantined_until > lc->now, .weight = w->weight,
	    .max_sessions = w->max_sessions, .sessions = w->sessions,
	    .pending = w->pending, .cpu_percent = w->cpu_percent };

	if ((p.name = strdup(w->name)) == NULL)
		return STORE_ERR;
	free((char *)lc->sv[i].name);
	lc->sv[i] = p;
	lc->q_until[i] = w->quarantined_until;
	lc->min_expires[i] = w->min_expires;
	if (w->min_expires < lc->next_expiry)
		lc->next_expiry = w->min_expires;
	lc->dirty[i] &= (unsigned char)~LC_DIRTY;
	if (w->quarantined_until > 0 && !(lc->dirty[i] & LC_QUARANTINE)) {
		lc->dirty[i] |= LC_QUARANTINE;
		lc->qlist[lc->nq++] = i;
	}
	plindex_update(lc->ix, lc->sv, i);	/* (no-op while loading) */
	return 0;
}

/* A row of a whole load (engine's load, in id order): appended. */
static int
lc_append(void *ctx, const struct store_load *w)
{
	struct load_cache *lc = ctx;

	if (lc->n == lc->cap) {
		size_t cap = lc->cap ? lc->cap * 2 : 64;
		void *a = realloc(lc->sv, cap * sizeof(*lc->sv));

		if (a != NULL)
			lc->sv = a;
		if (a == NULL || (a = realloc(lc->q_until, cap * sizeof(int64_t))) == NULL)
			return STORE_ERR;
		lc->q_until = a;
		if ((a = realloc(lc->min_expires, cap * sizeof(int64_t))) == NULL)
			return STORE_ERR;
		lc->min_expires = a;
		if ((a = realloc(lc->dirty, cap)) == NULL)
			return STORE_ERR;
		lc->dirty = a;
		if ((a = realloc(lc->dlist, cap * sizeof(size_t))) == NULL)
			return STORE_ERR;
		lc->dlist = a;
		if ((a = realloc(lc->qlist, cap * sizeof(size_t))) == NULL)
			return STORE_ERR;
		lc->qlist = a;
		lc->cap = cap;
	}
	lc->sv[lc->n].name = NULL;
	lc->dirty[lc->n] = 0;
	if (lc_set(lc, lc->n, w) != 0)
		return STORE_ERR;
	lc->n++;
	return 0;
}

/* Slot *(size_t *)ctx re-read. */
struct lc_slot {
	struct load_cache *lc;
	size_t i;
};

static int
lc_replace(void *ctx, const struct store_load *w)
{
	struct lc_slot *s = ctx;

	return lc_set(s->lc, s->i, w);
}

/* Index of server id, or -1. */
static ssize_t
lc_find(const struct load_cache *lc, int64_t id)
{
	return plindex_find(lc->sv, lc->n, id);
}

/* Slot i is re-read before the next decision. */
static void
lc_mark(struct load_cache *lc, size_t i)
{
	if (lc->dirty[i] & LC_DIRTY)
		return;
	lc->dirty[i] |= LC_DIRTY;
	lc->dlist[lc->ndirty++] = i;
}

/* This store changed something about server id (or, id 0, about servers
 * in general): it is re-read before the next decision. */
static void
lc_touch(struct store *st, int64_t id)
{
	ssize_t i;

	if (!st->lc.valid)
		return;
	if (id == 0 || (i = lc_find(&st->lc, id)) < 0)
		st->lc.valid = 0;
	else
		lc_mark(&st->lc, (size_t)i);
}

/* Loads every server and its counts at now. */
static int
lc_load(struct store *st, uint64_t gen, int64_t now)
{
	struct load_cache *lc = &st->lc;
	int r;

	lc_clear(lc);
	lc->now = now;
	lc->next_expiry = INT64_MAX;
	if ((r = st->e->load(st->db, 0, now, lc_append, lc)) != 0 ||
	    (lc->ix = plindex_new()) == NULL ||
	    plindex_build(lc->ix, lc->sv, lc->n, 1) != 0) {
		lc_clear(lc);
		return r != 0 ? r : STORE_ERR;
	}
	lc->valid = 1;
	lc->gen = gen;
	lc->loads++;
	return 0;
}

/* Slot i re-read at now: STORE_NOT_FOUND (removed) invalidates. */
static int
lc_reread(struct store *st, size_t i, int64_t now)
{
	struct lc_slot slot = { &st->lc, i };
	int r;

	st->lc.now = now;
	r = st->e->load(st->db, st->lc.sv[i].id, now, lc_replace, &slot);
	if (r == STORE_NOT_FOUND)
		st->lc.valid = 0;	/* removed meanwhile: reload */
	return r == STORE_NOT_FOUND ? 0 : r;
}

/* Brings the cache up to date at now (inside a transaction, lock held):
 * reloaded whole if a commit it does not know of came since, else the
 * servers this store changed and those whose counted pending placements
 * expire by now are re-read; quarantine is decided at now (of every
 * server if all, else of those ever quarantined: the others are not). */
static int
lc_update(struct store *st, int64_t now, int all)
{
	struct load_cache *lc = &st->lc;
	uint64_t gen;
	int r;

	if (st->have_gen)
		gen = st->gen;		/* read at begin, in this transaction */
	else if ((r = st->e->generation(st->db, &gen)) != 0)
		return r;
	if (lc->valid && gen != lc->gen)
		lc->valid = 0;
	for (int pass = 0; pass < 2; pass++) {
		if (!lc->valid && (r = lc_load(st, gen, now)) != 0)
			return r;
		for (size_t j = 0; j < lc->ndirty && lc->valid; j++)
			if ((lc->dirty[lc->dlist[j]] & LC_DIRTY) &&
			    (r = lc_reread(st, lc->dlist[j], now)) != 0)
				return r;
		lc->ndirty = 0;
		if (lc->valid && lc->next_expiry <= now) {
			int64_t next = INT64_MAX;

			for (size_t i = 0; i < lc->n && lc->valid; i++) {
				if (lc->min_expires[i] <= now &&
				    (r = lc_reread(st, i, now)) != 0)
					return r;
				if (lc->min_expires[i] < next)
					next = lc->min_expires[i];
			}
			lc->next_expiry = next;
		}
		for (size_t j = 0; j < (all ? lc->n : lc->nq) && lc->valid; j++) {
			size_t i = all ? j : lc->qlist[j];

			lc->sv[i].quarantined = lc->q_until[i] > now;
		}
		if (lc->valid) {
			st->lc_current = st->write;
			return 0;
		}
		/* a server vanished while being re-read: load once more, whole */
	}
	return STORE_ERR;
}

/* The servers with their load (the cache's array: borrowed, valid while the
 * lock is held; quarantine decided for all of them if all, see lc_update)
 * and the user's live sessions (the caller frees *sess). */
static int
place_load(struct store *st, const char *user, int64_t now, int all,
    const struct pl_server **servers, size_t *nservers, struct pl_session **sess,
    size_t *nsess)
{
	int r;

	*sess = NULL;
	*nsess = 0;
	if ((r = lc_update(st, now, all)) != 0) {
		st->lc.valid = 0;
		return r;
	}
	*servers = st->lc.sv;
	*nservers = st->lc.n;
	return st->e->user_sessions(st->db, user, now, sess, nsess);
}

/* ---- open ---- */

int
store_engine_known(const char *engine)
{
	for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++)
		if (engine != NULL && strcmp(engine, engines[i]->name) == 0)
			return 1;
	return 0;
}

struct store *
store_open_engine(const char *engine, const char *location, char *err, size_t errlen)
{
	const struct store_engine *e = engines[0];
	struct store *st;

	for (size_t i = 0; engine != NULL && i < sizeof(engines) / sizeof(engines[0]); i++)
		if (strcmp(engine, engines[i]->name) == 0)
			e = engines[i];
	if (engine != NULL && strcmp(engine, e->name) != 0) {
		snprintf(err, errlen, "unknown store engine '%s'", engine);
		return NULL;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	st->e = e;
	if ((st->db = e->open(location, err, errlen)) == NULL) {
		free(st);
		return NULL;
	}
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->gq.lock, NULL);
	pthread_mutex_init(&st->ds.lock, NULL);
	pthread_cond_init(&st->ds.cond, NULL);
	st->gq.tail = &st->gq.head;
	st->hbc = hbcache_new(STORE_HBCACHE_ROWS);	/* NULL: beats read it all */
	return st;
}

struct store *
store_open(const char *path, char *err, size_t errlen)
{
	return store_open_engine(NULL, path, err, errlen);
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	if (st->hb_groups > 0)
		log_info("heartbeats: %llu in %llu group commits (%.1f a commit)",
		    (unsigned long long)st->hb_beats, (unsigned long long)st->hb_groups,
		    (double)st->hb_beats / (double)st->hb_groups);
	if (st->ds.syncs > 0)
		log_info("placements: %llu made durable by %llu syncs (%.1f a sync)",
		    (unsigned long long)st->ds.committed, (unsigned long long)st->ds.syncs,
		    (double)st->ds.committed / (double)st->ds.syncs);
	if (st->hbc != NULL && st->hb_groups > 0) {
		uint64_t hits, misses;

		hbcache_stats(st->hbc, &hits, &misses);
		log_info("heartbeat cache: %llu reads from it, %llu from the database",
		    (unsigned long long)hits, (unsigned long long)misses);
	}
	hbcache_free(st->hbc);
	lc_clear(&st->lc);
	lastseen_free(st->seen);
	st->e->close(st->db);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->gq.lock);
	pthread_mutex_destroy(&st->ds.lock);
	pthread_cond_destroy(&st->ds.cond);
	free(st);
}

uint64_t
store_cache_loads(struct store *st)
{
	uint64_t n;

	pthread_mutex_lock(&st->lock);
	n = st->lc.loads;
	pthread_mutex_unlock(&st->lock);
	return n;
}

void
store_heartbeat_groups(struct store *st, uint64_t *groups, uint64_t *beats)
{
	pthread_mutex_lock(&st->lock);
	*groups = st->hb_groups;
	*beats = st->hb_beats;
	pthread_mutex_unlock(&st->lock);
}

/* ---- outages ---- */

int
store_outage(struct store *st, int64_t *since, char *why, size_t n)
{
	int down;

	pthread_mutex_lock(&st->lock);
	down = st->down_since != 0;
	if (down && since != NULL)
		*since = st->down_since;
	if (down && why != NULL)
		util_strlcpy(why, st->down_why, n);
	pthread_mutex_unlock(&st->lock);
	return down;
}

int
store_recover(struct store *st)
{
	const struct store_faults *f = st->e->faults;
	int64_t since;
	void *conn;

	if (!store_outage(st, &since, NULL, 0))
		return 0;
	/* off the lock: requests keep failing fast meanwhile */
	if (f == NULL || f->connect == NULL || (conn = f->connect(st->db)) == NULL)
		return STORE_UNAVAILABLE;
	pthread_mutex_lock(&st->lock);
	f->install(st->db, conn);
	st->down_since = 0;
	st->lc.valid = 0;
	pthread_mutex_unlock(&st->lock);
	log_info("state database reachable again after an outage of %.1f s",
	    (double)(util_now_ms() - since) / 1000.0);
	return 1;
}

void
store_commit_timeout(struct store *st, int ms)
{
	if (st->e->faults != NULL && st->e->faults->commit_timeout != NULL)
		st->e->faults->commit_timeout(st->db, ms);
}

const char *
store_strerror(int r)
{
	switch (r) {
	case 0: return "ok";
	case STORE_NOT_FOUND: return "not found";
	case STORE_EXISTS: return "already exists";
	case STORE_FULL: return "the disk is full";
	case STORE_REFUSED: return "refused";
	case STORE_TOO_NEW: return "database is newer than this tsbroker";
	case STORE_UNAVAILABLE: return "the state database is unavailable";
	default: return "database error";
	}
}

/* ---- servers ---- */

int
store_server_add(struct store *st, const struct store_server *spec,
    const char *token_hash, int64_t now)
{
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	r = st->e->server_add(st->db, spec, token_hash, now);
	r = event(st, r, now, "server_added", spec->name, spec->address);
	lc_touch(st, 0);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}

int
store_server_remove(struct store *st, const char *name, int64_t now)
{
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	r = event(st, st->e->server_remove(st->db, name), now, "server_removed", name, NULL);
	lc_touch(st, 0);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}

int
store_server_drain(struct store *st, const char *name, int draining, int64_t now)
{
	int64_t id = 0;
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	r = st->e->server_admin(st->db, name, draining ? ADMIN_DRAINING : ADMIN_ENABLED, &id);
	r = event(st, r, now, draining ? "drain" : "enable", name, NULL);
	if (id != 0)
		lc_touch(st, id);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}

/* A list's array is freed on error: *out is NULL then. */
static int
list_done(int r, void *out)
{
	if (r != 0) {
		free(*(void **)out);
		*(void **)out = NULL;
	}
	return r;
}

int
store_server_list(struct store *st, struct store_server **out, size_t *n)
{
	return ONE_LIST(st, server_list, out, out, n);
}

int
store_server_get(struct store *st, const char *name, struct store_server *out)
{
	return ONE(st, 0, server_get, name, out);
}

int
store_server_auth(struct store *st, const char *token_hash, int64_t *id, char *name,
    size_t namelen)
{
	return ONE(st, 0, server_auth, token_hash, id, name, namelen);
}

int
store_server_down(struct store *st, int64_t id, const char *reason, int64_t now,
    int *changed_out)
{
	char name[WIRE_NAME_MAX];
	int r, changed;

 retry:
	changed = 0;
	if ((r = begin(st, 1)) != 0)
		return r;
	lc_touch(st, id);
	r = st->e->server_down(st->db, id, reason, now, name, &changed);
	if (r == 0 && changed)
		r = event(st, r, now, "server_down", name, reason);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	if (changed_out != NULL)
		*changed_out = r == 0 && changed;
	return r;
}

int
store_server_quarantine(struct store *st, int64_t id, int64_t until,
    const char *reason, int64_t now, int *changed_out)
{
	char name[WIRE_NAME_MAX];
	int r, changed;

 retry:
	changed = 0;
	if ((r = begin(st, 1)) != 0)
		return r;
	r = st->e->server_quarantine(st->db, id, until, name, &changed);
	if (changed)	/* else another store did: its event */
		r = event(st, r, now, "quarantine", name, reason);
	lc_touch(st, id);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	if (r == 0 && changed_out != NULL)
		*changed_out = changed;
	return r;
}

/* ---- commands to agents ---- */

/* The event of command c ending in state to, with detail. */
static int
command_event(struct store *st, const struct store_command *c, enum command_state to,
    const char *detail, int64_t now)
{
	char text[512];

	snprintf(text, sizeof(text), "%s of session %lld (%s, asked by %s): %s%s%s",
	    wire_command_kind_str(c->kind), (long long)c->session_id, c->remote_id,
	    c->actor, command_state_str(to), detail[0] ? ": " : "", detail);
	return st->e->event_add(st->db, now, to == COMMAND_DONE ? "command_done" :
	    "command_failed", c->server, c->user, NULL, text, 0);
}

/* A heartbeat's part (in its transaction): its results finish server id's
 * sent commands, then its queued ones are claimed into res. */
static int
commands_beat(struct store *st, int64_t id, const struct wire_heartbeat *hb,
    int64_t now, struct store_heartbeat_result *res, struct hbcache_entry *ce)
{
	struct store_command c, *q = NULL;
	size_t n = 0;
	int r = 0, changed;

	if (hb->nresults == 0 && ce != NULL && ce->no_commands)
		return 0;	/* none queued as of the last commit */

	for (size_t i = 0; i < hb->nresults && r == 0; i++) {
		const struct wire_result *w = &hb->results[i];
		enum command_state to = w->ok ? COMMAND_DONE : w->expired ?
		    COMMAND_EXPIRED : COMMAND_FAILED;

		if ((r = st->e->command_get(st->db, w->id, &c)) == STORE_NOT_FOUND ||
		    (r == 0 && c.server_id != id)) {
			log_warn("a result for command %lld, not one of this server's",
			    (long long)w->id);
			r = 0;
			continue;
		}
		if (r == 0)
			r = st->e->command_finish(st->db, w->id, id, COMMAND_SENT, to,
			    w->detail, now, &changed);
		if (r == 0 && changed) {
			r = command_event(st, &c, to, w->detail, now);
			res->results++;
		}
	}
	if (r == 0)
		r = st->e->command_queued(st->db, id, now, WIRE_COMMANDS_MAX, &q, &n);
	for (size_t i = 0; i < n && r == 0; i++) {
		struct wire_command *w = &res->commands[res->ncommands];

		if ((r = st->e->command_finish(st->db, q[i].id, id, COMMAND_QUEUED,
		    COMMAND_SENT, "", now, &changed)) != 0 || !changed)
			continue;
		w->id = q[i].id;
		w->kind = q[i].kind;
		util_strlcpy(w->session, q[i].remote_id, sizeof(w->session));
		util_strlcpy(w->user, q[i].user, sizeof(w->user));
		w->deadline_ms = q[i].deadline - now;
		res->ncommands++;
	}
	if (r == 0 && n == 0 && ce != NULL)
		ce->no_commands = 1;
	free(q);
	return r;
}

int
store_command_add(struct store *st, int64_t session_id, enum wire_command_kind kind,
    const char *actor, int64_t now, int timeout_ms, struct store_command *out,
    char *reason, size_t n)
{
	struct store_command c;
	struct store_route rt;
	char detail[256];
	int64_t expires, other;
	int r;

 retry:
	reason[0] = '\0';
	if ((r = begin(st, 1)) != 0)
		return r;
	memset(&rt, 0, sizeof(rt));
	if ((r = st->e->session_route(st->db, session_id, &expires, &rt)) != 0)
		goto out;
	r = STORE_REFUSED;
	if (rt.session_state == SESSION_PENDING || rt.session_state == SESSION_LOST ||
	    rt.session_state == SESSION_ENDED)
		snprintf(reason, n, "the session is %s", session_state_str(rt.session_state));
	else if (rt.server_state != SERVER_UP)
		snprintf(reason, n, "its server %s is %s", rt.server,
		    server_state_str(rt.server_state));
	else if (kind == WIRE_DISCONNECT && rt.session_state == SESSION_DISCONNECTED)
		snprintf(reason, n, "the session is disconnected already");
	else if ((r = st->e->command_pending(st->db, session_id, &other)) == 0) {
		snprintf(reason, n, "command %lld for this session is under way",
		    (long long)other);
		r = STORE_REFUSED;
	} else if (r == STORE_NOT_FOUND)
		r = 0;
	if (r != 0)
		goto out;
	memset(&c, 0, sizeof(c));
	c.session_id = session_id;
	c.server_id = rt.server_id;
	c.kind = kind;
	util_strlcpy(c.remote_id, rt.remote_id, sizeof(c.remote_id));
	util_strlcpy(c.user, rt.login[0] ? rt.login : rt.user, sizeof(c.user));
	util_strlcpy(c.actor, actor, sizeof(c.actor));
	c.created = now;
	c.deadline = now + timeout_ms;
	if ((r = st->e->command_insert(st->db, &c, &c.id)) != 0 ||
	    (r = st->e->command_get(st->db, c.id, &c)) != 0)
		goto out;
	snprintf(detail, sizeof(detail), "%s of session %lld queued by %s (deadline %d s)",
	    wire_command_kind_str(kind), (long long)session_id, actor, timeout_ms / 1000);
	r = st->e->event_add(st->db, now, "command_queued", c.server, c.user, NULL, detail, 0);
 out:
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	if (r == 0)
		*out = c;
	return r;
}

int
store_command_get(struct store *st, int64_t id, struct store_command *out)
{
	return ONE(st, 0, command_get, id, out);
}

int
store_command_expire(struct store *st, int64_t now, int *failed)
{
	struct store_command *list = NULL;
	size_t n = 0;
	int r, changed;

	*failed = 0;
	/* a read first: the sweep takes no write lock while none is overdue */
	r = ONE_LIST(st, command_overdue, &list, now, STORE_COMMAND_GRACE_MS, &list, &n);
	if (r != 0 || n == 0) {
		free(list);
		return r;
	}
 retry:
	*failed = 0;
	free(list);
	list = NULL;
	if ((r = begin(st, 1)) != 0)
		return r;
	r = st->e->command_overdue(st->db, now, STORE_COMMAND_GRACE_MS, &list, &n);
	for (size_t i = 0; i < n && r == 0; i++) {
		const char *why = list[i].state == COMMAND_QUEUED ?
		    "deadline passed before its server's agent took it (no heartbeat)" :
		    "deadline passed without an outcome from the agent";

		if ((r = st->e->command_finish(st->db, list[i].id, 0, list[i].state,
		    COMMAND_FAILED, why, now, &changed)) == 0 && changed) {
			r = command_event(st, &list[i], COMMAND_FAILED, why, now);
			(*failed)++;
		}
	}
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	free(list);
	return r;
}

/* ---- heartbeats: group commit ---- */

/* What beat w reads of its server (its id, health, admin state, name, and
 * its sessions if the beat has them): from the heartbeat cache if it has
 * it, else from the engine and then kept there. *ce: the cache's entry,
 * or NULL; *rows: what the caller frees. */
static int
beat_read(struct store *st, struct hb_wait *w, int64_t *id, enum server_state *state,
    enum admin_state *admin, char *name, const struct rc_row **use, struct rc_row **rows,
    size_t *n, struct hbcache_entry **ce)
{
	const struct wire_heartbeat *hb = w->hb;
	struct hbcache_entry *e = NULL;
	int r;

	if (st->hbc != NULL)
		e = w->token_hash != NULL ? hbcache_token(st->hbc, w->token_hash) :
		    hbcache_id(st->hbc, *id);
	if (e != NULL && hb->sessions_known && !e->rows_known)
		e = NULL;
	if (w->token_hash != NULL && e != NULL) {
		*id = e->id;
		util_strlcpy(w->name, e->name, w->n);
	} else if (w->token_hash != NULL &&
	    (r = st->e->server_auth(st->db, w->token_hash, id, w->name, w->n)) != 0)
		return r;
	if (w->token_hash != NULL && strcmp(w->name, hb->name) != 0)
		return STORE_REFUSED;
	if ((*ce = e) != NULL) {
		*state = e->state;
		*admin = e->admin;
		util_strlcpy(name, e->name, WIRE_NAME_MAX);
		*use = e->rows;
		*n = hb->sessions_known ? e->nrows : 0;
		return 0;
	}
	if ((r = st->e->heartbeat_read(st->db, *id, state, admin, name,
	    hb->sessions_known ? rows : NULL, n)) != 0)
		return r;
	*use = *rows;
	if (st->hbc != NULL)
		*ce = hbcache_put(st->hbc, *id, w->token_hash, name, *state, *admin,
		    hb->sessions_known ? *rows : NULL, *n);
	return 0;
}

/* One heartbeat's part of a group's transaction: its server found (by
 * token), read, reconciled, applied with its events and commands, into
 * w->res (reset first), the heartbeat cache following what it wrote.
 * *clean: it failed before writing anything. */
static int
beat_apply(struct store *st, struct hb_wait *w, int *clean)
{
	const struct wire_heartbeat *hb = w->hb;
	struct store_heartbeat_result *res = w->res;
	int64_t id = w->id, now = w->now;
	struct rc_row *rows = NULL;
	const struct rc_row *use = NULL;
	struct rc_change *changes = NULL;
	struct hbcache_entry *ce = NULL;
	unsigned char *seen = NULL;
	struct rc_plan plan;
	enum server_state state;
	enum admin_state admin;
	char name[WIRE_NAME_MAX];
	size_t n = 0, cap;
	int r;

	/* the commands past ncommands are not read: not cleared */
	memset(res, 0, offsetof(struct store_heartbeat_result, commands));
	res->results = 0;
	*clean = 1;
	if ((r = beat_read(st, w, &id, &state, &admin, name, &use, &rows, &n, &ce)) != 0)
		goto out;
	res->draining = admin == ADMIN_DRAINING;
	lc_touch(st, id);		/* load, health and sessions */
	cap = hb->sessions_known ? RECONCILE_CHANGES_MAX(hb->nsessions, n) : 0;
	if ((changes = calloc(cap + 1, sizeof(*changes))) == NULL ||
	    (seen = calloc(n + 1, 1)) == NULL) {
		log_error("out of memory");
		r = STORE_ERR;
		goto out;
	}
	if (reconcile_heartbeat(state, hb, use, n, seen, changes, cap, &plan) != 0) {
		r = STORE_ERR;
		goto out;
	}
	*clean = 0;
	if ((r = st->e->heartbeat_apply(st->db, id, hb, &plan, plan.transition == RC_UP ?
	    "heartbeat" : "RDP port not accepting", now)) != 0)
		goto out;
	if (plan.transition == RC_UP)
		r = event(st, r, now, "server_up", name, "heartbeat with RDP accepting");
	else if (plan.transition == RC_DOWN)
		r = event(st, r, now, "server_down", name, "RDP port not accepting");
	if (r != 0 || (r = commands_beat(st, id, hb, now, res, ce)) != 0)
		goto out;
	if (ce != NULL)
		hbcache_apply(st->hbc, id, hb, &plan);
	res->went_up = plan.transition == RC_UP;
	res->went_down = plan.transition == RC_DOWN;
	res->confirmed = plan.confirmed;
 out:
	free(rows);
	free(changes);
	free(seen);
	return r;
}

/* Sorts a group by server (its token's hash, else its id): stores sharing
 * an engine lock the servers' rows in one order, not into a deadlock. */
static int
beat_cmp(const void *a, const void *b)
{
	const struct hb_wait *x = *(struct hb_wait *const *)a, *y = *(struct hb_wait *const *)b;

	if (x->token_hash != NULL && y->token_hash != NULL)
		return strcmp(x->token_hash, y->token_hash);
	if ((x->token_hash != NULL) != (y->token_hash != NULL))
		return x->token_hash != NULL ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* The heartbeat cache at a group's begin (lock held, r: begin's): kept
 * if it reflects the generation this transaction began at. */
static void
hbc_begin(struct store *st, int r)
{
	uint64_t g = 0;

	if (st->hbc == NULL || r != 0)
		return;
	if (st->have_gen)
		g = st->gen;
	else if (st->e->generation(st->db, &g) != 0)
		g = 0;
	hbcache_begin(st->hbc, g);
}

/* ... and at its end (r: end_locked's): kept only past a commit of a known
 * generation, which it then reflects. */
static void
hbc_end(struct store *st, int r)
{
	if (st->hbc != NULL)
		hbcache_end(st->hbc, r == 0, r == 0 ? st->end_gen : 0);
}

/* The leader's work (lock not held): the beats waiting, at most
 * STORE_GROUP_MAX, in one transaction and one commit, each answered with
 * its outcome once that commit is durable. A beat that fails before it
 * writes (an unknown token) is answered so, the group goes on; one that
 * fails later (a final error) is rolled back with the transaction and
 * answered with its error, the others run again without it. */
static void
group_run(struct store *st)
{
	struct hb_wait *g[STORE_GROUP_MAX];
	size_t n = 0, left;
	int r, failed, locked, clean;

	r = begin(st, 1);
	locked = r == 0;
	hbc_begin(st, r);
	/* taken after begin: what arrived while it waited joins */
	pthread_mutex_lock(&st->gq.lock);
	while (st->gq.head != NULL && n < STORE_GROUP_MAX) {
		g[n] = st->gq.head;
		st->gq.head = g[n++]->next;
	}
	if (st->gq.head == NULL)
		st->gq.tail = &st->gq.head;
	pthread_mutex_unlock(&st->gq.lock);
	if (locked) {
		qsort(g, n, sizeof(g[0]), beat_cmp);
		st->hb_groups++;
		st->hb_beats += n;
	}
	while (locked) {
		failed = -1;
		r = 0;
		for (size_t i = 0; i < n; i++) {
			if (g[i]->out || (g[i]->r = beat_apply(st, g[i], &clean)) == 0 ||
			    (clean && fault_of(st) == STORE_FAULT_FINAL))
				continue;
			r = g[i]->r;
			failed = (int)i;
			break;
		}
		if (failed >= 0 && fault_of(st) != STORE_FAULT_FINAL)
			failed = -1;	/* the group's fault, not the beat's */
		hbc_end(st, r = end_locked(st, r));
		if (r == STORE_AGAIN) {
			locked = (r = begin(st, 1)) == 0;
			hbc_begin(st, r);
			continue;
		}
		if (failed < 0)
			break;
		g[failed]->r = r;	/* its own error; the others again */
		g[failed]->out = 1;
		for (size_t i = left = 0; i < n; i++)
			left += !g[i]->out;
		if (left == 0)
			break;
		st->again = 1;
		locked = (r = begin(st, 1)) == 0;
		hbc_begin(st, r);
	}
	if (locked)
		pthread_mutex_unlock(&st->lock);
	pthread_mutex_lock(&st->gq.lock);
	for (size_t i = 0; i < n; i++) {
		if (!g[i]->out && r != 0)
			g[i]->r = r;	/* not committed */
		g[i]->done = 1;
		pthread_cond_signal(&g[i]->cond);
	}
	if (st->gq.head != NULL) {	/* the first of those waiting leads next */
		st->gq.head->lead = 1;
		pthread_cond_signal(&st->gq.head->cond);
	} else
		st->gq.leader = 0;
	pthread_mutex_unlock(&st->gq.lock);
}

/* Group commit: a beat joins the queue; one that finds no group under way
 * leads the next, and a group's leader hands that on to the first beat
 * still waiting. Each sleeps on its own condition until its group is
 * durable or it leads: a commit wakes its beats and one leader, not every
 * thread waiting. */
static int
beat_wait(struct store *st, struct hb_wait *w)
{
	pthread_cond_init(&w->cond, NULL);
	pthread_mutex_lock(&st->gq.lock);
	*st->gq.tail = w;
	st->gq.tail = &w->next;
	if (!st->gq.leader)
		st->gq.leader = w->lead = 1;
	for (;;) {
		while (!w->done && !w->lead)
			pthread_cond_wait(&w->cond, &st->gq.lock);
		if (w->done)
			break;
		w->lead = 0;
		pthread_mutex_unlock(&st->gq.lock);
		group_run(st);
		pthread_mutex_lock(&st->gq.lock);
	}
	pthread_mutex_unlock(&st->gq.lock);
	pthread_cond_destroy(&w->cond);
	if (w->r != 0)
		memset(w->res, 0, sizeof(*w->res));
	return w->r;
}

int
store_heartbeat_apply(struct store *st, int64_t id, const struct wire_heartbeat *hb,
    int64_t now, struct store_heartbeat_result *res)
{
	struct hb_wait w = { .id = id, .hb = hb, .now = now, .res = res };

	return beat_wait(st, &w);
}

int
store_heartbeat_token(struct store *st, const char *token_hash,
    const struct wire_heartbeat *hb, int64_t now, struct store_heartbeat_result *res,
    char *name, size_t n)
{
	char found[WIRE_NAME_MAX] = "";
	struct hb_wait w = { .token_hash = token_hash, .name = found, .n = sizeof(found),
	    .hb = hb, .now = now, .res = res };
	int r;

	r = beat_wait(st, &w);
	if (r == 0 || r == STORE_REFUSED)
		util_strlcpy(name, found, n);
	return r;
}

/* ---- placement ---- */

/* The lazy commit numbered seq (of st->ds.committed) made durable by the
 * engine's sync, which one waiting thread at a time runs, outside the
 * lock, for every lazy commit before it began: commits that wait together
 * share one sync (group commit, while the next placements go on). 0, or
 * the sync's error (for every commit it was to cover). */
static int
durable_wait(struct store *st, uint64_t seq)
{
	int r = 0;

	pthread_mutex_lock(&st->ds.lock);
	while (st->ds.synced < seq) {
		uint64_t upto;

		if (st->ds.failed >= seq) {
			r = STORE_FULL;
			break;
		}
		if (st->ds.syncing) {
			pthread_cond_wait(&st->ds.cond, &st->ds.lock);
			continue;
		}
		st->ds.syncing = 1;
		upto = __atomic_load_n(&st->ds.committed, __ATOMIC_ACQUIRE);
		pthread_mutex_unlock(&st->ds.lock);
		r = st->e->sync(st->db);
		pthread_mutex_lock(&st->ds.lock);
		st->ds.syncing = 0;
		st->ds.syncs++;
		if (r == 0)
			st->ds.synced = upto;
		else if (upto > st->ds.failed)
			st->ds.failed = upto;
		pthread_cond_broadcast(&st->ds.cond);
	}
	pthread_mutex_unlock(&st->ds.lock);
	return r;
}

/* A live session as read (a placement's result, a route), for the outage
 * (lastseen.h) of an engine that can have one; fqdn "" keeps the one a
 * placement saw. Lock held; out of memory: not kept. */
static void
seen_put(struct store *st, const struct store_route *rt, const char *fqdn)
{
	struct lastseen_entry e;

	if (st->e->faults == NULL ||
	    (st->seen == NULL && (st->seen = lastseen_new()) == NULL))
		return;
	memset(&e, 0, sizeof(e));
	e.r = *rt;
	util_strlcpy(e.fqdn, fqdn, sizeof(e.fqdn));
	e.seen = util_now_ms();
	(void)lastseen_put(st->seen, &e);
}

/* While the database is unavailable: user's last live session read, as an
 * unrecorded reconnect. 0, or -1 if none. Lock held. */
static int
seen_answer(struct store *st, const char *user, struct store_place_result *out)
{
	struct lastseen_entry e;

	if (st->seen == NULL || lastseen_get(st->seen, user, &e) != 0)
		return -1;
	memset(out, 0, sizeof(*out));
	out->reconnect = 1;
	out->unrecorded = 1;
	out->session_id = e.r.session_id;
	out->server_id = e.r.server_id;
	util_strlcpy(out->server, e.r.server, sizeof(out->server));
	util_strlcpy(out->address, e.r.address, sizeof(out->address));
	util_strlcpy(out->fqdn, e.fqdn, sizeof(out->fqdn));
	out->port = e.r.port;
	util_strlcpy(out->reason, "the state database is unavailable", sizeof(out->reason));
	return 0;
}

#define PLACE_ROUNDS 16	/* servers locked by one placement at most */

/* The servers another store held locked when this one tried (placing
 * there, most likely): each counted one placement more in this decision
 * (re-read before the next). */
static void
busy_count(struct store *st, const int64_t *busy, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		ssize_t i = lc_find(&st->lc, busy[j]);

		if (i < 0)
			continue;
		st->lc.sv[i].pending++;
		plindex_update(st->lc.ix, st->lc.sv, (size_t)i);
		lc_mark(&st->lc, (size_t)i);
	}
}

int
store_placement_commit(struct store *st, const struct store_place_request *req,
    struct store_place_result *out)
{
	const struct pl_server *sv;
	struct pl_session *ss;
	struct pl_decision d;
	struct store_place_result res;
	size_t ns, nu, nbusy;
	int r, pr, full, decided;
	int64_t placed_on, locked, busy[PLACE_ROUNDS];
	/* committed lazily, told once durable (durable_wait) */
	int tx = st->e->sync != NULL ? STORE_TX_LAZY : STORE_TX_WRITE;
	uint64_t seq = 0;

 retry:
	memset(&res, 0, sizeof(res));
	sv = NULL;
	ss = NULL;
	ns = nu = 0;
	locked = 0;
	nbusy = 0;
	full = decided = 0;
	placed_on = 0;
	if ((r = begin(st, tx)) == STORE_UNAVAILABLE) {
		/* known down: the user's last live session, unrecorded */
		pthread_mutex_lock(&st->lock);
		if (seen_answer(st, req->user, &res) == 0) {
			*out = res;
			r = 0;
		}
		pthread_mutex_unlock(&st->lock);
		return r;
	}
	if (r != 0)
		return r;
	if (st->e->user_lock != NULL) {
		/* other stores commit meanwhile: the generation is read after */
		if ((r = st->e->user_lock(st->db, req->user)) != 0)
			goto out;
		st->have_gen = 0;
	}
	for (int tries = 0;; tries++) {
		int64_t id;
		int wait = 0;

		free(ss);
		if ((r = place_load(st, req->user, req->now, 0, &sv, &ns, &ss, &nu)) != 0)
			goto out;
		busy_count(st, busy, nbusy);
		struct pl_input in = { sv, ns, ss, nu, req->pending_penalty };
		if ((pr = plindex_pick(st->lc.ix, &in, &d)) != 0) {
			util_strlcpy(out->reason, placement_strerror(pr), sizeof(out->reason));
			r = STORE_REFUSED;
			goto out;
		}
		if (d.reconnect || st->e->server_lock == NULL || (id = sv[d.server].id) == locked)
			break;
		/* another store may be placing on it: lock it, recount, pick
		 * again (the same server: done). One held by another store is
		 * not waited for but counted one more (busy_count): two stores
		 * on equal servers take different ones instead of queueing on
		 * each other's choice; waited for only if it is still the best.
		 * Servers not locked may be stale by others' commits since the
		 * cache was read: after a few rounds it is read whole (then only
		 * placements still in flight elsewhere are unseen, one per
		 * other store). Out of rounds: the server locked last, its count
		 * exact, if it still has room. */
		if (tries >= PLACE_ROUNDS && locked != 0) {
			ssize_t k = lc_find(&st->lc, locked);

			if (k >= 0 && !sv[k].quarantined && placement_open(&sv[k])) {
				d.server = (size_t)k;
				break;
			}
		}
		if (tries == 2 * PLACE_ROUNDS) {
			log_error("no stable choice for %s after %d rounds", req->user,
			    2 * PLACE_ROUNDS);
			r = STORE_ERR;
			goto out;
		}
		for (size_t j = 0; j < nbusy; j++)
			wait |= busy[j] == id;
		if (tries >= PLACE_ROUNDS || nbusy == PLACE_ROUNDS)
			wait = 1;
		if ((r = st->e->server_lock(st->db, id, wait)) == STORE_LOCK_HELD) {
			busy[nbusy++] = id;
			r = 0;
			continue;
		}
		if (r != 0)
			goto out;
		for (size_t j = 0; j < nbusy; j++)
			if (busy[j] == id)
				busy[j] = busy[--nbusy];	/* its count exact now */
		locked = id;
		lc_touch(st, locked);
		if (tries == PLACE_ROUNDS / 4)
			st->lc.valid = 0;
	}
	res.reconnect = d.reconnect;
	decided = 1;
	if (d.reconnect) {
		res.session_id = ss[d.session].id;
		r = st->e->placement_refresh(st->db, res.session_id, req);
		if (r == STORE_FULL) {	/* still answered: see below */
			full = 1;
			r = 0;
		}
	} else {
		r = st->e->placement_insert(st->db, sv[d.server].id, req, &res.session_id);
		placed_on = sv[d.server].id;
	}
	/* a new session's trail from what it was inserted with (a server's
	 * name never changes, nor is its id given to another while it is
	 * cached: the insert's foreign key holds it) */
	if (r == 0 && !full)
		r = st->e->trail_add(st->db, res.session_id, d.reconnect,
		    d.reconnect ? NULL : sv[d.server].name, req);
	if (r != 0)
		goto out;
	res.server_id = sv[d.server].id;
	r = st->e->placement_target(st->db, sv[d.server].id, &res);
 out:
	free(ss);
	if (full && r == 0)
		r = STORE_FULL;
	if ((r = end_locked(st, r)) == STORE_AGAIN)
		goto retry;
	if (r == 0 && tx == STORE_TX_LAZY)
		seq = __atomic_add_fetch(&st->ds.committed, 1, __ATOMIC_RELEASE);
	if ((r == STORE_FULL || r == STORE_UNAVAILABLE) && res.reconnect &&
	    res.server[0] != '\0') {
		/* the disk is full or the database gone (at the refresh or the
		 * commit): the session the reconnect follows is committed
		 * already, so it is served */
		res.unrecorded = 1;
		util_strlcpy(res.reason, store_strerror(r), sizeof(res.reason));
		r = 0;
	} else if (r == STORE_UNAVAILABLE && !decided)
		r = seen_answer(st, req->user, &res) == 0 ? 0 : r;
	/* (a new placement not known durable is never told) */
	if (r == 0) {
		*out = res;
		if (!res.unrecorded) {
			struct store_route rt = { .session_id = res.session_id,
			    .server_id = res.server_id, .port = res.port };

			util_strlcpy(rt.user, req->user, sizeof(rt.user));
			util_strlcpy(rt.login, req->login ? req->login : "", sizeof(rt.login));
			util_strlcpy(rt.domain, req->domain ? req->domain : "", sizeof(rt.domain));
			util_strlcpy(rt.server, res.server, sizeof(rt.server));
			util_strlcpy(rt.address, res.address, sizeof(rt.address));
			seen_put(st, &rt, res.fqdn);
		}
		if (placed_on != 0 && st->lc.valid && (size_t)d.server < st->lc.n) {
			/* the new pending placement counts at once */
			int64_t exp = req->now + req->pending_ttl_ms;

			st->lc.sv[d.server].pending++;
			if (exp < st->lc.min_expires[d.server])
				st->lc.min_expires[d.server] = exp;
			if (exp < st->lc.next_expiry)
				st->lc.next_expiry = exp;
			plindex_update(st->lc.ix, st->lc.sv, d.server);
		}
	} else
		st->lc.valid = 0;
	pthread_mutex_unlock(&st->lock);
	if (seq != 0 && (r = durable_wait(st, seq)) != 0 && res.reconnect) {
		/* the session it follows is durable: served, its refresh not */
		out->unrecorded = 1;
		util_strlcpy(out->reason, store_strerror(r), sizeof(out->reason));
		r = 0;
	}
	return r;
}

int
store_pending_expire(struct store *st, int64_t now, int *expired)
{
	int r;

	*expired = 0;
 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	if ((r = st->e->pending_expire(st->db, now, expired)) == 0 && *expired == 0)
		hbc_keep(st);		/* nothing written: the sweep's every second */
	/* what ended here expired by now: only servers with such a counted
	 * placement (min_expires <= now) can have lost one */
	for (size_t i = 0; *expired > 0 && st->lc.valid && i < st->lc.n; i++)
		if (st->lc.min_expires[i] <= now)
			lc_mark(&st->lc, i);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}

/* ---- routing ---- */

/* While the database is unavailable: the last live route read of user (or,
 * user NULL, of session_id), live on an up server as it was then.
 * STORE_UNAVAILABLE if none. Takes the lock. */
static int
seen_route(struct store *st, const char *user, int64_t session_id, struct store_route *out)
{
	struct lastseen_entry e;
	int r = STORE_UNAVAILABLE;

	pthread_mutex_lock(&st->lock);
	if (st->seen != NULL && (user != NULL ? lastseen_get(st->seen, user, &e) :
	    lastseen_session(st->seen, session_id, &e)) == 0) {
		*out = e.r;
		out->session_state = SESSION_ACTIVE;
		out->server_state = SERVER_UP;
		out->live = 1;
		log_warn("session %lld of %s on %s from memory (the state database is "
		    "unavailable): not recorded", (long long)e.r.session_id, e.r.user,
		    e.r.server);
		r = 0;
	}
	pthread_mutex_unlock(&st->lock);
	return r;
}

/* The route of session_id with live decided at now. Lock held. */
static int
route_get(struct store *st, int64_t session_id, int64_t now, struct store_route *out)
{
	int64_t expires = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = st->e->session_route(st->db, session_id, &expires, out)) == 0)
		out->live = out->server_state == SERVER_UP &&
		    (states_session_live(out->session_state) ||
		    (out->session_state == SESSION_PENDING && expires > now));
	return r;
}

int
store_session_route(struct store *st, int64_t session_id, int64_t now,
    struct store_route *out)
{
	struct store_route res;
	int r;

 retry:
	if ((r = begin(st, 0)) == STORE_UNAVAILABLE)
		return seen_route(st, NULL, session_id, out);
	if (r != 0)
		return r;
	if ((r = end_locked(st, route_get(st, session_id, now, &res))) == STORE_AGAIN)
		goto retry;
	if (r == 0 && res.live)
		seen_put(st, &res, "");
	pthread_mutex_unlock(&st->lock);
	if (r == STORE_UNAVAILABLE)
		return seen_route(st, NULL, session_id, out);
	if (r == 0)
		*out = res;
	return r;
}

int
store_user_route(struct store *st, const char *user, int64_t now,
    struct store_route *out)
{
	struct store_route res;
	const struct pl_server *sv;
	struct pl_session *ss;
	struct pl_decision d;
	size_t ns, nu;
	int r, e;

 retry:
	ss = NULL;
	ns = nu = 0;
	if ((r = begin(st, 0)) == STORE_UNAVAILABLE)
		return seen_route(st, user, 0, out);
	if (r != 0)
		return r;
	if ((r = place_load(st, user, now, 1, &sv, &ns, &ss, &nu)) != 0)
		goto out;
	struct pl_input in = { sv, ns, ss, nu, 0 };
	if (nu == 0 || placement_pick(&in, &d) != 0 || !d.reconnect) {
		r = STORE_NOT_FOUND;
		goto out;
	}
	r = route_get(st, ss[d.session].id, now, &res);
 out:
	free(ss);
	/* read only: ends the snapshot (a fault runs it again) */
	if ((e = end_locked(st, r == STORE_NOT_FOUND ? 0 : r)) == STORE_AGAIN)
		goto retry;
	if (r != STORE_NOT_FOUND)
		r = e;
	if (r == 0 && res.live)
		seen_put(st, &res, "");
	pthread_mutex_unlock(&st->lock);
	if (r == STORE_UNAVAILABLE)
		return seen_route(st, user, 0, out);
	if (r == 0)
		*out = res;
	return r;
}

/* ---- sessions ---- */

int
store_session_list(struct store *st, const struct store_session_filter *f,
    struct store_session **out, size_t *n)
{
	struct store_session_filter nf = *f;
	char user[WIRE_USER_MAX] = "";

	if (f->user && f->user[0] && placement_user_normalise(f->user, user,
	    sizeof(user)) != 0)
		user[0] = '\0';
	nf.user = user;
	return ONE_LIST(st, session_list, out, &nf, out, n);
}

int
store_session_forget(struct store *st, int64_t id, int64_t now)
{
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	r = st->e->session_forget(st->db, id, now);
	lc_touch(st, 0);		/* rare: reload rather than look the server up */
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}

int
store_session_reconnect(struct store *st, int64_t session_id,
    const struct store_place_request *req)
{
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	if ((r = st->e->placement_refresh(st->db, session_id, req)) == 0)
		r = st->e->trail_add(st->db, session_id, 1, NULL, req);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}

/* ---- the desk trail ---- */

/* Rows deleted by one transaction of store_trail_prune, and its transactions
 * per call at most (the rest waits for the next call). */
#define TRAIL_PRUNE_BATCH	500
#define TRAIL_PRUNE_ROUNDS	200

int
store_trail_list(struct store *st, const char *user, int limit, struct store_trail **out,
    size_t *n)
{
	return ONE_LIST(st, trail_list, out, user, limit, out, n);
}

int
store_trail_prune(struct store *st, int64_t before_ms, int *pruned)
{
	int r = 0, k;

	*pruned = 0;
	for (int round = 0; round < TRAIL_PRUNE_ROUNDS; round++) {
		k = 0;
		if ((r = ONE_KEEP(st, trail_prune, before_ms, TRAIL_PRUNE_BATCH, &k)) != 0)
			break;
		*pruned += k;
		if (k < TRAIL_PRUNE_BATCH)
			break;
	}
	return r;
}

/* ---- events ---- */

int
store_event_add(struct store *st, const char *kind, const char *server,
    const char *user, const char *client, const char *detail, int64_t duration_us)
{
	/* its own fsync would double a redirect's: durable with the next commit */
	return ONE_KEEP_AS(st, STORE_TX_LAZY, event_add, util_now_ms(), kind, server, user,
	    client, detail, duration_us);
}

int
store_event_list(struct store *st, int64_t since_id, int limit,
    struct store_event **out, size_t *n)
{
	return ONE_LIST(st, event_list, out, since_id, limit, out, n);
}

int
store_event_prune(struct store *st, int64_t before_ms, int keep)
{
	return ONE_KEEP(st, event_prune, before_ms, keep);
}

/* ---- history ---- */

/* The p-th percentile (nearest rank) of n ascending values; 0 if none. */
static int64_t
percentile(const int64_t *v, size_t n, int p)
{
	size_t rank = (n * (size_t)p + 99) / 100;

	return n == 0 ? 0 : v[rank > 0 ? rank - 1 : 0];
}

int
store_history_take(struct store *st, int64_t ts, int64_t span, int headroom, int *taken)
{
	int64_t *dur = NULL;
	size_t nd = 0;
	int r, claimed;

 retry:
	claimed = 0;
	if ((r = begin(st, 1)) != 0)
		return r;
	hbc_keep(st);		/* the history tables only */
	r = st->e->history_claim(st->db, ts, span, headroom, &claimed);
	if (r == 0 && claimed > 0)
		r = st->e->history_durations(st->db, ts, span, &dur, &nd);
	if (r == 0 && claimed > 0)
		r = st->e->history_fill(st->db, ts, span, percentile(dur, nd, 50),
		    percentile(dur, nd, 99));
	free(dur);
	dur = NULL;
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	if (r == 0)
		*taken = claimed > 0;
	return r;
}

int
store_history_list(struct store *st, int64_t since, int limit, struct store_sample **samples,
    size_t *n, struct store_sample_server **servers, size_t *m)
{
	int r;

 retry:
	*samples = NULL;
	*servers = NULL;
	*n = *m = 0;
	if ((r = begin(st, 0)) != 0)
		return r;
	r = st->e->history_list(st->db, since, limit, samples, n);
	if (r == 0 && *n > 0)
		r = st->e->history_servers(st->db, (*samples)[0].ts, (*samples)[*n - 1].ts,
		    servers, m);
	if ((r = end_again(st, r)) == STORE_AGAIN) {
		free(*samples);
		free(*servers);
		goto retry;
	}
	return r;
}

int
store_history_prune(struct store *st, int64_t now, int64_t keep_before, int batch,
    int steps, int *merged, int *deleted)
{
	const int64_t span = STORE_HISTORY_MERGE_MS;
	int64_t oldest = 0;
	int r = 0, more = 1, gone;

	*merged = *deleted = 0;
	/* a bucket merged a step: each its own short write transaction */
	while (steps > 0 && more) {
		r = ONE(st, 0, history_oldest_raw, now - STORE_HISTORY_RAW_MS, span, &oldest);
		if (r == STORE_NOT_FOUND || (oldest - oldest % span) + span >
		    now - STORE_HISTORY_RAW_MS) {
			more = 0;
			r = 0;
			break;
		}
		if (r != 0 || (r = ONE_KEEP(st, history_merge, oldest - oldest % span, span)) != 0)
			return r;
		(*merged)++;
		steps--;
	}
	while (steps > 0) {
		gone = 0;
		if ((r = ONE_KEEP(st, history_delete, keep_before, batch, &gone)) != 0)
			return r;
		*deleted += gone;
		steps--;
		if (gone < batch)
			break;
	}
	return r;
}

/* ---- admin ---- */

int
store_admin_password_set(struct store *st, const char *hash, int64_t now)
{
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	r = st->e->admin_password_set(st->db, hash, now);
	r = event(st, r, now, "admin_password", NULL, "admin password set");
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}

int
store_admin_password_get(struct store *st, char *hash, size_t n)
{
	return ONE(st, 0, admin_password_get, hash, n);
}

int
store_admin_token_add(struct store *st, const char *name, const char *token_hash,
    int64_t now)
{
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	r = st->e->admin_token_add(st->db, name, token_hash, now);
	r = event(st, r, now, "admin_token_added", NULL, name);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}

int
store_admin_token_auth(struct store *st, const char *token_hash, int64_t now,
    char *name, size_t namelen)
{
	return ONE_KEEP(st, admin_token_auth, token_hash, now, name, namelen);
}

int
store_admin_token_list(struct store *st, struct store_admin_token **out, size_t *n)
{
	return ONE_LIST(st, admin_token_list, out, out, n);
}

int
store_admin_token_remove(struct store *st, const char *name, int64_t now)
{
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	r = st->e->admin_token_remove(st->db, name);
	r = event(st, r, now, "admin_token_removed", NULL, name);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}

/* ---- admin browser sessions ---- */

int
store_admin_session_add(struct store *st, const struct store_admin_session *s, int keep)
{
	return ONE_KEEP(st, admin_session_add, s, keep < 1 ? 1 : keep);
}

/* The rule of expiry (the prune's SQL says the same). */
static int
admin_session_live(const struct store_admin_session *s, int64_t now,
    const struct store_session_limits *lim)
{
	return now - s->last_used < lim->idle_ms && now - s->created < lim->max_ms;
}

int
store_admin_session_use(struct store *st, const char *id_hash, int64_t now,
    const struct store_session_limits *lim, struct store_admin_session *out)
{
	struct store_admin_session s;
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	if ((r = st->e->admin_session_get(st->db, id_hash, &s)) == 0 &&
	    !admin_session_live(&s, now, lim))
		r = STORE_NOT_FOUND;
	if (r == 0 && now - s.last_used >= 1000)
		r = st->e->admin_session_touch(st->db, id_hash, now);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	if (r == 0)
		*out = s;
	return r;
}

int
store_admin_session_remove(struct store *st, const char *id_hash)
{
	return ONE_KEEP(st, admin_session_remove, id_hash);
}

int
store_admin_session_prune(struct store *st, int64_t now,
    const struct store_session_limits *lim, int *pruned)
{
	int n = 0, r;

	r = ONE_KEEP(st, admin_session_prune, now - lim->idle_ms, now - lim->max_ms, &n);
	*pruned = r == 0 ? n : 0;
	return r;
}

/* ---- settings ---- */

int
store_setting_get(struct store *st, const char *key, char *value, size_t n)
{
	return ONE(st, 0, setting_get, key, value, n);
}

int
store_setting_claim(struct store *st, const char *key, const char *value, int64_t now,
    char *current, size_t n, int *first)
{
	int r, added;

 retry:
	added = 0;
	if ((r = begin(st, 1)) != 0)
		return r;
	if ((r = st->e->setting_add(st->db, key, value, now, &added)) == 0)
		r = st->e->setting_get(st->db, key, current, n);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	if (r == 0)
		*first = added > 0;
	return r;
}

int
store_setting_set(struct store *st, const char *key, const char *value, int64_t now)
{
	int r;

 retry:
	if ((r = begin(st, 1)) != 0)
		return r;
	r = st->e->setting_set(st->db, key, value, now);
	r = event(st, r, now, "setting", NULL, key);
	if ((r = end_again(st, r)) == STORE_AGAIN)
		goto retry;
	return r;
}
