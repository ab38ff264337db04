/* Unit tests for broker/state/reconcile.c: what a heartbeat changes, as
 * thorough as placement's: every transition, every way a reported session
 * matches a stored row (or does not), and a randomised run against the
 * invariants of a plan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/state/reconcile.h"

#define MAXN 32

/* A beat under construction and its plan. */
struct beat {
	struct wire_heartbeat hb;
	struct wire_session ws[MAXN];
	struct rc_row rows[MAXN];
	size_t nrows;
	unsigned char seen[MAXN];
	struct rc_change ch[2 * MAXN];
	struct rc_plan plan;
};

static void
beat_init(struct beat *b, int accepting, int known)
{
	memset(b, 0, sizeof(*b));
	b->hb.rdp_accepting = accepting;
	b->hb.sessions_known = known;
	b->hb.sessions = b->ws;
}

static void
reported(struct beat *b, const char *user, const char *id, int disconnected)
{
	struct wire_session *w = &b->ws[b->hb.nsessions++];

	snprintf(w->user, sizeof(w->user), "%s", user);
	snprintf(w->id, sizeof(w->id), "%s", id);
	w->state = disconnected ? WIRE_DISCONNECTED : WIRE_ACTIVE;
}

static void
stored(struct beat *b, int64_t id, const char *user, const char *rid,
    enum session_state s)
{
	struct rc_row *w = &b->rows[b->nrows++];

	w->id = id;
	snprintf(w->user, sizeof(w->user), "%s", user);
	snprintf(w->remote_id, sizeof(w->remote_id), "%s", rid);
	w->state = s;
}

static void
plan(struct beat *b, enum server_state state)
{
	assert_int_equal(reconcile_heartbeat(state, &b->hb, b->rows, b->nrows, b->seen,
	    b->ch, 2 * MAXN, &b->plan), 0);
	assert_ptr_equal(b->plan.changes, b->ch);
}

/* The change about stored row id, or NULL. */
static const struct rc_change *
about_row(const struct beat *b, int64_t id)
{
	for (size_t i = 0; i < b->plan.nchanges; i++)
		if (b->ch[i].op != RC_INSERT && b->ch[i].row_id == id)
			return &b->ch[i];
	return NULL;
}

/* The change about reported session i, or NULL. */
static const struct rc_change *
about_session(const struct beat *b, size_t i)
{
	for (size_t k = 0; k < b->plan.nchanges; k++)
		if (b->ch[k].op != RC_END && b->ch[k].session == i)
			return &b->ch[k];
	return NULL;
}

static void
expect_update(const struct beat *b, int64_t row, size_t session, enum session_state s)
{
	const struct rc_change *c = about_row(b, row);

	assert_non_null(c);
	assert_int_equal(c->op, RC_UPDATE);
	assert_int_equal(c->session, session);
	assert_int_equal(c->state, s);
}

static void
expect_op(const struct beat *b, int64_t row, enum rc_op op)
{
	const struct rc_change *c = about_row(b, row);

	assert_non_null(c);
	assert_int_equal(c->op, op);
}

static void
test_transitions(void **state)
{
	static const struct { enum server_state from; int accepting; enum rc_transition t; }
	    cases[] = {
		{ SERVER_UNKNOWN, 1, RC_UP }, { SERVER_UP, 1, RC_STAY },
		{ SERVER_DOWN, 1, RC_UP }, { SERVER_UNKNOWN, 0, RC_DOWN },
		{ SERVER_UP, 0, RC_DOWN }, { SERVER_DOWN, 0, RC_STAY },
	};
	struct beat b;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int known = 0; known <= 1; known++) {
			beat_init(&b, cases[i].accepting, known);
			plan(&b, cases[i].from);
			assert_int_equal(b.plan.transition, cases[i].t);
			assert_int_equal(b.plan.nchanges, 0);
			assert_int_equal(b.plan.confirmed, 0);
		}
	}
}

/* The agent could not read its sessions: the stored ones stay. */
static void
test_unknown_sessions_keep_rows(void **state)
{
	struct beat b;

	beat_init(&b, 1, 0);
	stored(&b, 1, "alice", "1", SESSION_ACTIVE);
	stored(&b, 2, "bob", "", SESSION_PENDING);
	reported(&b, "carol", "3", 0);		/* ignored with sessions_known 0 */
	plan(&b, SERVER_UP);
	assert_int_equal(b.plan.nchanges, 0);
	assert_int_equal(b.plan.confirmed, 0);
}

static void
test_new_sessions_inserted_normalised(void **state)
{
	struct beat b;
	const struct rc_change *c;

	beat_init(&b, 1, 1);
	reported(&b, "CORP\\Alice", "1", 0);
	reported(&b, "bob@corp.example", "2", 1);
	reported(&b, "CORP\\", "3", 0);		/* nobody to place: skipped */
	reported(&b, "", "4", 0);
	plan(&b, SERVER_UP);
	assert_int_equal(b.plan.nchanges, 2);
	assert_non_null(c = about_session(&b, 0));
	assert_int_equal(c->op, RC_INSERT);
	assert_string_equal(c->user, "alice");
	assert_int_equal(c->state, SESSION_ACTIVE);
	assert_non_null(c = about_session(&b, 1));
	assert_string_equal(c->user, "bob");
	assert_int_equal(c->state, SESSION_DISCONNECTED);
	assert_null(about_session(&b, 2));
	assert_null(about_session(&b, 3));
}

static void
test_same_id_unchanged_or_updated(void **state)
{
	struct beat b;

	beat_init(&b, 1, 1);
	stored(&b, 1, "alice", "1", SESSION_ACTIVE);
	stored(&b, 2, "bob", "2", SESSION_ACTIVE);
	reported(&b, "alice", "1", 0);		/* the same: no write */
	reported(&b, "Bob", "2", 1);		/* disconnected now */
	plan(&b, SERVER_UP);
	assert_int_equal(b.plan.nchanges, 1);
	assert_null(about_row(&b, 1));
	expect_update(&b, 2, 1, SESSION_DISCONNECTED);
}

/* The agent's id first, then the user's pending placement, then a row
 * without an id (or any row when the agent gives none). */
static void
test_match_order(void **state)
{
	struct beat b;

	beat_init(&b, 1, 1);
	stored(&b, 1, "alice", "", SESSION_DISCONNECTED);
	stored(&b, 2, "alice", "", SESSION_PENDING);
	stored(&b, 3, "alice", "9", SESSION_ACTIVE);
	reported(&b, "alice", "9", 0);		/* by id: row 3 */
	reported(&b, "alice", "5", 0);		/* the pending placement: row 2 */
	reported(&b, "alice", "6", 0);		/* the row without an id: row 1 */
	plan(&b, SERVER_UP);
	assert_null(about_row(&b, 3));		/* unchanged */
	expect_update(&b, 2, 1, SESSION_ACTIVE);
	expect_update(&b, 1, 2, SESSION_ACTIVE);
	assert_int_equal(b.plan.confirmed, 1);
	assert_int_equal(b.plan.nchanges, 2);
}

/* Another id of the same user is another session: inserted, and the old
 * one ends. A reported session without an id takes any row of the user. */
static void
test_other_id_and_no_id(void **state)
{
	struct beat b;
	const struct rc_change *c;

	beat_init(&b, 1, 1);
	stored(&b, 1, "alice", "1", SESSION_ACTIVE);
	stored(&b, 2, "bob", "7", SESSION_DISCONNECTED);
	reported(&b, "alice", "2", 0);
	reported(&b, "bob", "", 0);
	plan(&b, SERVER_UP);
	assert_non_null(c = about_session(&b, 0));
	assert_int_equal(c->op, RC_INSERT);
	expect_op(&b, 1, RC_END);
	expect_update(&b, 2, 1, SESSION_ACTIVE);
	assert_int_equal(b.plan.nchanges, 3);
}

/* What the agent no longer reports ends; a pending placement waits for
 * its expiry; a lost session not reported ends too. */
static void
test_vanished_end_pending_waits(void **state)
{
	struct beat b;

	beat_init(&b, 1, 1);
	stored(&b, 1, "alice", "1", SESSION_ACTIVE);
	stored(&b, 2, "bob", "", SESSION_PENDING);
	stored(&b, 3, "carol", "3", SESSION_LOST);
	stored(&b, 4, "dave", "4", SESSION_DISCONNECTED);
	plan(&b, SERVER_UP);
	expect_op(&b, 1, RC_END);
	assert_null(about_row(&b, 2));
	expect_op(&b, 3, RC_END);
	expect_op(&b, 4, RC_END);
	assert_int_equal(b.plan.nchanges, 3);
}

/* A beat that takes the server down: its live sessions are lost by the
 * transition and the pending placements end with it, so none is
 * confirmed; what is reported is lost. */
static void
test_down_beat(void **state)
{
	struct beat b;
	const struct rc_change *c;

	beat_init(&b, 0, 1);
	stored(&b, 1, "alice", "1", SESSION_ACTIVE);
	stored(&b, 2, "bob", "", SESSION_PENDING);
	stored(&b, 3, "carol", "3", SESSION_DISCONNECTED);
	reported(&b, "alice", "1", 0);		/* lost already by the transition */
	reported(&b, "bob", "2", 0);		/* his placement ended: new, lost */
	plan(&b, SERVER_UP);
	assert_int_equal(b.plan.transition, RC_DOWN);
	assert_int_equal(b.plan.confirmed, 0);
	assert_null(about_row(&b, 1));
	assert_null(about_row(&b, 2));
	assert_non_null(c = about_session(&b, 1));
	assert_int_equal(c->op, RC_INSERT);
	assert_int_equal(c->state, SESSION_LOST);
	expect_op(&b, 3, RC_END);
	assert_int_equal(b.plan.nchanges, 2);
}

/* Down already and still not accepting: lost stays lost (no write). */
static void
test_down_stays_down(void **state)
{
	struct beat b;

	beat_init(&b, 0, 1);
	stored(&b, 1, "alice", "1", SESSION_LOST);
	reported(&b, "alice", "1", 1);
	plan(&b, SERVER_DOWN);
	assert_int_equal(b.plan.transition, RC_STAY);
	assert_int_equal(b.plan.nchanges, 0);
}

/* The server returns holding some of its lost sessions: restored. */
static void
test_return_restores(void **state)
{
	struct beat b;

	beat_init(&b, 1, 1);
	stored(&b, 1, "alice", "1", SESSION_LOST);
	stored(&b, 2, "bob", "2", SESSION_LOST);
	reported(&b, "alice", "1", 1);
	plan(&b, SERVER_DOWN);
	assert_int_equal(b.plan.transition, RC_UP);
	expect_update(&b, 1, 0, SESSION_DISCONNECTED);
	expect_op(&b, 2, RC_END);
	assert_int_equal(b.plan.nchanges, 2);
}

/* Two sessions of one user match two rows, never one row twice. */
static void
test_one_row_once(void **state)
{
	struct beat b;
	const struct rc_change *c;

	beat_init(&b, 1, 1);
	stored(&b, 1, "alice", "", SESSION_PENDING);
	reported(&b, "alice", "1", 0);
	reported(&b, "alice", "2", 1);
	plan(&b, SERVER_UP);
	expect_update(&b, 1, 0, SESSION_ACTIVE);
	assert_non_null(c = about_session(&b, 1));
	assert_int_equal(c->op, RC_INSERT);
	assert_int_equal(b.plan.confirmed, 1);
}

static void
test_too_many(void **state)
{
	struct beat b;

	beat_init(&b, 1, 1);
	stored(&b, 1, "alice", "1", SESSION_ACTIVE);
	reported(&b, "bob", "2", 0);
	assert_int_equal(RECONCILE_CHANGES_MAX(1, 1), 2);
	assert_int_equal(reconcile_heartbeat(SERVER_UP, &b.hb, b.rows, b.nrows, b.seen,
	    b.ch, 1, &b.plan), RECONCILE_TOO_MANY);
	assert_int_equal(reconcile_heartbeat(SERVER_UP, &b.hb, b.rows, b.nrows, b.seen,
	    b.ch, 2, &b.plan), 0);
	assert_int_equal(b.plan.nchanges, 2);
}

/* Random rows and snapshots over a few users and ids: a plan never names a
 * row twice, inserts only what matched nothing, ends exactly the rows that
 * nothing matched (but pending ones), and confirms only pending rows. */
static void
test_random_invariants(void **state)
{
	static const char *users[] = { "u0", "u1", "u2", "CORP\\u1" };
	static const char *ids[] = { "", "1", "2", "3" };
	struct beat b;
	unsigned seed = 12345;

	for (int round = 0; round < 20000; round++) {
		int accepting = rand_r(&seed) % 4 != 0;
		enum server_state from = (enum server_state)(rand_r(&seed) % 3);
		size_t nr = (size_t)rand_r(&seed) % 6, ns = (size_t)rand_r(&seed) % 6;
		int pending_rows = 0, live_down = from != SERVER_DOWN && !accepting;
		unsigned char named[MAXN] = { 0 };

		beat_init(&b, accepting, 1);
		for (size_t i = 0; i < nr; i++)
			stored(&b, (int64_t)i + 1, users[rand_r(&seed) % 3],
			    ids[rand_r(&seed) % 4],
			    (enum session_state)(rand_r(&seed) % 4));	/* not ended */
		for (size_t i = 0; i < ns; i++)
			reported(&b, users[rand_r(&seed) % 4], ids[rand_r(&seed) % 4],
			    rand_r(&seed) % 2);
		plan(&b, from);
		for (size_t i = 0; i < b.plan.nchanges; i++) {
			const struct rc_change *c = &b.ch[i];

			if (c->op == RC_INSERT) {
				assert_true(c->session < ns);
				continue;
			}
			assert_true(c->row_id >= 1 && (size_t)c->row_id <= nr);
			assert_false(named[c->row_id]);	/* once */
			named[c->row_id] = 1;
			if (c->op == RC_UPDATE)
				assert_int_equal(c->state, !accepting ? SESSION_LOST :
				    b.ws[c->session].state == WIRE_ACTIVE ?
				    SESSION_ACTIVE : SESSION_DISCONNECTED);
		}
		for (size_t i = 0; i < nr; i++) {
			int pend = b.rows[i].state == SESSION_PENDING && !live_down;

			pending_rows += pend;
			/* a row ends iff nothing matched it and it is not pending
			 * (waiting, or ended by the down transition) */
			if (!b.seen[i] && b.rows[i].state != SESSION_PENDING)
				expect_op(&b, (int64_t)i + 1, RC_END);
			if (b.seen[i] && about_row(&b, (int64_t)i + 1) != NULL)
				assert_int_equal(about_row(&b, (int64_t)i + 1)->op, RC_UPDATE);
		}
		assert_true(b.plan.confirmed <= pending_rows);
		assert_true(b.plan.nchanges <= RECONCILE_CHANGES_MAX(ns, nr));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transitions),
		cmocka_unit_test(test_unknown_sessions_keep_rows),
		cmocka_unit_test(test_new_sessions_inserted_normalised),
		cmocka_unit_test(test_same_id_unchanged_or_updated),
		cmocka_unit_test(test_match_order),
		cmocka_unit_test(test_other_id_and_no_id),
		cmocka_unit_test(test_vanished_end_pending_waits),
		cmocka_unit_test(test_down_beat),
		cmocka_unit_test(test_down_stays_down),
		cmocka_unit_test(test_return_restores),
		cmocka_unit_test(test_one_row_once),
		cmocka_unit_test(test_too_many),
		cmocka_unit_test(test_random_invariants),
	};
	return cmocka_run_group_tests_name("reconcile", tests, NULL, NULL);
}
