/* hbcache: what heartbeats read of their servers, as of the last commit.
 * The rows are checked against a naive reference of the table that
 * applies each plan as the engine's SQL does (store_sql.c change_apply). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/common/util.h"
#include "broker/state/hbcache.h"
#include "broker/state/reconcile.h"

#define MAXROWS 64

/* The reference: one server's session rows, ended ones included. */
struct table {
	struct rc_row r[MAXROWS * 4];
	size_t n;
	int64_t next_id;
};

static void
row(struct rc_row *w, int64_t id, const char *user, const char *rid, enum session_state s)
{
	memset(w, 0, sizeof(*w));
	w->id = id;
	util_strlcpy(w->user, user, sizeof(w->user));
	util_strlcpy(w->remote_id, rid, sizeof(w->remote_id));
	w->state = s;
}

/* What heartbeat_read gives: rows not ended, by state text then id. */
static size_t
table_read(const struct table *t, struct rc_row *out)
{
	size_t n = 0;

	for (size_t i = 0; i < t->n; i++)
		if (t->r[i].state != SESSION_ENDED)
			out[n++] = t->r[i];
	for (size_t i = 1; i < n; i++)	/* insertion sort: the reference */
		for (size_t j = i; j > 0; j--) {
			int d = strcmp(session_state_str(out[j - 1].state),
			    session_state_str(out[j].state));

			if (d < 0 || (d == 0 && out[j - 1].id < out[j].id))
				break;
			struct rc_row x = out[j];
			out[j] = out[j - 1];
			out[j - 1] = x;
		}
	return n;
}

static struct rc_row *
table_find(struct table *t, int64_t id)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->r[i].id == id)
			return &t->r[i];
	return NULL;
}

/* The plan as the SQL applies it (a down transition first). */
static void
table_apply(struct table *t, const struct wire_heartbeat *hb, const struct rc_plan *p)
{
	if (p->transition == RC_DOWN)
		for (size_t i = 0; i < t->n; i++) {
			if (t->r[i].state == SESSION_PENDING)
				t->r[i].state = SESSION_ENDED;
			else if (t->r[i].state == SESSION_ACTIVE ||
			    t->r[i].state == SESSION_DISCONNECTED)
				t->r[i].state = SESSION_LOST;
		}
	for (size_t i = 0; i < p->nchanges; i++) {
		const struct rc_change *c = &p->changes[i];
		struct rc_row *w;

		switch (c->op) {
		case RC_INSERT:
			row(&t->r[t->n++], t->next_id++, c->user, hb->sessions[c->session].id,
			    c->state);
			break;
		case RC_UPDATE:
			w = table_find(t, c->row_id);
			assert_non_null(w);
			w->state = c->state;
			util_strlcpy(w->remote_id, hb->sessions[c->session].id,
			    sizeof(w->remote_id));
			break;
		case RC_END:
			w = table_find(t, c->row_id);
			assert_non_null(w);
			w->state = SESSION_ENDED;
			break;
		}
	}
}

static void
beat(struct wire_heartbeat *hb, struct wire_session *s, size_t n, int accepting)
{
	memset(hb, 0, sizeof(*hb));
	util_strlcpy(hb->name, "ts1", sizeof(hb->name));
	hb->rdp_accepting = accepting;
	hb->sessions_known = 1;
	hb->sessions = s;
	hb->nsessions = n;
}

static void
session(struct wire_session *s, const char *user, const char *id, int active)
{
	memset(s, 0, sizeof(*s));
	util_strlcpy(s->user, user, sizeof(s->user));
	util_strlcpy(s->id, id, sizeof(s->id));
	s->state = active ? WIRE_ACTIVE : WIRE_DISCONNECTED;
}

/* The cache's rows of server 7 are the table's. */
static void
assert_same(struct hbcache *c, const struct table *t)
{
	struct rc_row want[MAXROWS * 4];
	struct hbcache_entry *e = hbcache_id(c, 7);
	size_t n = table_read(t, want);

	assert_non_null(e);
	assert_int_equal(e->rows_known, 1);
	assert_int_equal(e->nrows, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(e->rows[i].id, want[i].id);
		assert_string_equal(e->rows[i].user, want[i].user);
		assert_string_equal(e->rows[i].remote_id, want[i].remote_id);
		assert_int_equal(e->rows[i].state, want[i].state);
	}
}

/* One beat as store.c runs it: read (cache, else the table and kept),
 * reconcile, write the table, the cache follows. 1 if it was a hit. */
static int
run_beat(struct hbcache *c, struct table *t, enum server_state *state,
    const struct wire_heartbeat *hb)
{
	struct rc_row rows[MAXROWS * 4];
	struct rc_change changes[MAXROWS * 8];
	unsigned char seen[MAXROWS * 4];
	struct rc_plan p;
	struct hbcache_entry *e = hbcache_token(c, "tok7");
	const struct rc_row *use;
	size_t n;
	int hit = e != NULL;

	if (e == NULL) {
		n = table_read(t, rows);
		e = hbcache_put(c, 7, "tok7", "ts1", *state, ADMIN_ENABLED, rows, n);
		assert_non_null(e);
	}
	use = e->rows;
	n = e->nrows;
	assert_int_equal(e->state, *state);
	assert_int_equal(reconcile_heartbeat(*state, hb, use, n, seen, changes,
	    sizeof(changes) / sizeof(changes[0]), &p), 0);
	table_apply(t, hb, &p);
	if (p.transition != RC_STAY)
		*state = p.transition == RC_UP ? SERVER_UP : SERVER_DOWN;
	hbcache_apply(c, 7, hb, &p);
	return hit;
}

/* Unchanged sessions: the second beat reads nothing from the table. */
static void
test_unchanged(void **st)
{
	struct hbcache *c = hbcache_new(1000);
	struct table t = { .next_id = 1 };
	struct wire_session s[3];
	struct wire_heartbeat hb;
	enum server_state state = SERVER_UNKNOWN;
	uint64_t hits, misses;

	(void)st;
	session(&s[0], "alice", "1", 1);
	session(&s[1], "bob", "2", 0);
	session(&s[2], "carol", "3", 1);
	beat(&hb, s, 3, 1);
	hbcache_begin(c, 5);
	assert_int_equal(run_beat(c, &t, &state, &hb), 0);	/* inserts: dropped */
	assert_null(hbcache_id(c, 7));
	assert_int_equal(run_beat(c, &t, &state, &hb), 0);	/* read again, kept */
	hbcache_end(c, 1, 6);
	for (int i = 0; i < 3; i++) {
		hbcache_begin(c, 6 + (uint64_t)i);
		assert_int_equal(run_beat(c, &t, &state, &hb), 1);
		assert_same(c, &t);
		hbcache_end(c, 1, 7 + (uint64_t)i);
	}
	hbcache_stats(c, &hits, &misses);
	assert_true(hits >= 3);
	assert_int_equal(hbcache_count(c), 1);
	hbcache_free(c);
}

/* A session changes state, ends, one comes back under another id: the
 * cache follows, or drops the entry, and is never unlike the table. */
static void
test_changed(void **st)
{
	struct hbcache *c = hbcache_new(1000);
	struct table t = { .next_id = 1 };
	struct wire_session s[3];
	struct wire_heartbeat hb;
	enum server_state state = SERVER_UNKNOWN;

	(void)st;
	session(&s[0], "alice", "1", 1);
	session(&s[1], "bob", "2", 1);
	session(&s[2], "carol", "3", 1);
	beat(&hb, s, 3, 1);
	hbcache_begin(c, 1);
	run_beat(c, &t, &state, &hb);
	run_beat(c, &t, &state, &hb);
	s[1].state = WIRE_DISCONNECTED;				/* bob disconnects */
	assert_int_equal(run_beat(c, &t, &state, &hb), 1);
	assert_same(c, &t);
	beat(&hb, s, 2, 1);					/* carol logs off */
	assert_int_equal(run_beat(c, &t, &state, &hb), 1);
	assert_same(c, &t);
	util_strlcpy(s[0].id, "9", sizeof(s[0].id));		/* alice's is new */
	assert_int_equal(run_beat(c, &t, &state, &hb), 1);
	assert_null(hbcache_id(c, 7));				/* inserted: dropped */
	assert_int_equal(run_beat(c, &t, &state, &hb), 0);
	assert_same(c, &t);
	beat(&hb, s, 2, 0);					/* RDP not accepting */
	run_beat(c, &t, &state, &hb);
	assert_null(hbcache_id(c, 7));				/* down: dropped */
	run_beat(c, &t, &state, &hb);
	assert_same(c, &t);
	beat(&hb, s, 2, 1);					/* back up: restored */
	assert_int_equal(run_beat(c, &t, &state, &hb), 1);
	assert_same(c, &t);
	assert_int_equal(hbcache_id(c, 7)->state, SERVER_UP);
	hbcache_end(c, 1, 2);
	hbcache_free(c);
}

/* The agent's server restarted: every session is new (new ids); the old
 * rows end, the new are inserted, the entry is read again. */
static void
test_restarted(void **st)
{
	struct hbcache *c = hbcache_new(1000);
	struct table t = { .next_id = 1 };
	struct wire_session s[2];
	struct wire_heartbeat hb;
	enum server_state state = SERVER_UNKNOWN;

	(void)st;
	session(&s[0], "alice", "1", 1);
	session(&s[1], "bob", "2", 1);
	beat(&hb, s, 2, 1);
	hbcache_begin(c, 1);
	run_beat(c, &t, &state, &hb);
	run_beat(c, &t, &state, &hb);
	hbcache_end(c, 1, 2);
	hbcache_begin(c, 2);
	beat(&hb, s, 0, 1);			/* restarting: no sessions */
	assert_int_equal(run_beat(c, &t, &state, &hb), 1);
	assert_same(c, &t);
	session(&s[0], "alice", "11", 1);
	session(&s[1], "bob", "12", 1);
	beat(&hb, s, 2, 1);			/* up again, new ids */
	assert_int_equal(run_beat(c, &t, &state, &hb), 1);
	assert_null(hbcache_id(c, 7));
	assert_int_equal(run_beat(c, &t, &state, &hb), 0);
	assert_same(c, &t);
	hbcache_end(c, 1, 3);
	hbcache_free(c);
}

/* A transaction that does not commit, or commits at an unknown
 * generation, leaves nothing; one that begins at a generation the cache
 * does not reflect (a commit it did not see) empties it. */
static void
test_invalidation(void **st)
{
	struct hbcache *c = hbcache_new(1000);
	struct rc_row r[1];

	(void)st;
	row(&r[0], 1, "alice", "1", SESSION_ACTIVE);
	hbcache_begin(c, 10);
	assert_non_null(hbcache_put(c, 7, "tok7", "ts1", SERVER_UP, ADMIN_ENABLED, r, 1));
	hbcache_end(c, 0, 11);				/* the commit failed */
	assert_int_equal(hbcache_count(c), 0);
	assert_null(hbcache_token(c, "tok7"));
	hbcache_begin(c, 11);
	assert_non_null(hbcache_put(c, 7, "tok7", "ts1", SERVER_UP, ADMIN_ENABLED, r, 1));
	hbcache_end(c, 1, 0);				/* committed, generation unknown */
	assert_int_equal(hbcache_count(c), 0);
	hbcache_begin(c, 12);
	assert_non_null(hbcache_put(c, 7, "tok7", "ts1", SERVER_UP, ADMIN_ENABLED, r, 1));
	hbcache_end(c, 1, 13);
	hbcache_begin(c, 13);				/* nothing else committed */
	assert_non_null(hbcache_token(c, "tok7"));
	assert_non_null(hbcache_id(c, 7));
	hbcache_end(c, 1, 14);
	hbcache_begin(c, 15);				/* another commit came */
	assert_null(hbcache_token(c, "tok7"));
	assert_int_equal(hbcache_count(c), 0);
	hbcache_begin(c, 0);
	hbcache_end(c, 1, 16);
	hbcache_free(c);
	hbcache_free(NULL);
}

/* Many servers (the indexes grow), a token moving to another server, the
 * row bound, sessions not known. */
static void
test_many(void **st)
{
	struct hbcache *c = hbcache_new(150);
	struct rc_row r[2];
	char tok[32];

	(void)st;
	row(&r[0], 1, "alice", "1", SESSION_ACTIVE);
	row(&r[1], 2, "bob", "2", SESSION_DISCONNECTED);
	hbcache_begin(c, 1);
	for (int i = 1; i <= 300; i++) {
		snprintf(tok, sizeof(tok), "t%d", i);
		hbcache_put(c, i, tok, "ts", SERVER_UP, ADMIN_ENABLED, i <= 75 ? r : NULL,
		    2);
	}
	assert_int_equal(hbcache_count(c), 300);
	for (int i = 1; i <= 300; i++) {
		struct hbcache_entry *e;

		snprintf(tok, sizeof(tok), "t%d", i);
		assert_non_null(e = hbcache_token(c, tok));
		assert_int_equal(e->id, i);
		assert_int_equal(e->rows_known, i <= 75);
	}
	/* full: 150 rows kept; a server's more are not */
	assert_null(hbcache_put(c, 301, "t301", "ts", SERVER_UP, ADMIN_ENABLED, r, 2));
	assert_non_null(hbcache_put(c, 301, "t301", "ts", SERVER_UP, ADMIN_ENABLED, NULL, 0));
	hbcache_drop(c, 1);
	assert_non_null(hbcache_put(c, 302, "t1", "ts", SERVER_UP, ADMIN_ENABLED, r, 2));
	assert_int_equal(hbcache_token(c, "t1")->id, 302);
	assert_null(hbcache_id(c, 1));
	assert_non_null(hbcache_put(c, 1, "t1x", "ts", SERVER_UP, ADMIN_ENABLED, NULL, 0));
	assert_int_equal(hbcache_token(c, "t1x")->id, 1);
	hbcache_free(c);
}

/* Random beats against the reference: after each, the cache is the table
 * (when it kept the entry). */
static void
test_random(void **st)
{
	struct hbcache *c = hbcache_new(100000);
	struct table t = { .next_id = 1 };
	struct wire_session s[MAXROWS];
	struct wire_heartbeat hb;
	enum server_state state = SERVER_UNKNOWN;
	unsigned int seed = 12345;
	char user[16], id[16];
	size_t n = 0;
	int hits = 0;

	(void)st;
	hbcache_begin(c, 1);
	for (int i = 0; i < 3000 && t.n < MAXROWS * 3; i++) {
		unsigned int k = (unsigned int)rand_r(&seed) % 16;

		if (k == 0 && n < 8) {			/* a logon */
			snprintf(user, sizeof(user), "u%d", rand_r(&seed) % 6);
			snprintf(id, sizeof(id), "%d", rand_r(&seed) % 10);
			if (rand_r(&seed) % 4 == 0)
				id[0] = '\0';
			session(&s[n++], user, id, 1);
		} else if (k == 1 && n > 0) {		/* a logoff */
			size_t j = (size_t)rand_r(&seed) % n;

			s[j] = s[--n];
		}
		else if (k < 5 && n > 0) {		/* a state changes */
			struct wire_session *w = &s[(size_t)rand_r(&seed) % n];

			w->state = w->state == WIRE_ACTIVE ? WIRE_DISCONNECTED : WIRE_ACTIVE;
		} else if (k == 5) {			/* a placement */
			snprintf(user, sizeof(user), "u%d", rand_r(&seed) % 6);
			row(&t.r[t.n++], t.next_id++, user, "", SESSION_PENDING);
			hbcache_drop(c, 7);	/* another operation: its commit empties it */
		}
		beat(&hb, s, n, rand_r(&seed) % 20 != 0);
		hits += run_beat(c, &t, &state, &hb);
		if (hbcache_id(c, 7) != NULL)
			assert_same(c, &t);
	}
	assert_true(hits > 100);
	hbcache_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unchanged),
		cmocka_unit_test(test_changed),
		cmocka_unit_test(test_restarted),
		cmocka_unit_test(test_invalidation),
		cmocka_unit_test(test_many),
		cmocka_unit_test(test_random),
	};
	return cmocka_run_group_tests_name("hbcache", tests, NULL, NULL);
}
