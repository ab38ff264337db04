/* Unit tests for broker/state/placement.c: the placement rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/state/placement.h"
#include "broker/state/plindex.h"

static struct pl_server
srv(int64_t id, const char *name, int weight)
{
	struct pl_server s = { .id = id, .name = name, .state = SERVER_UP, .weight = weight,
	    .max_sessions = 1000 };
	return s;
}

static int
pick(struct pl_server *servers, size_t n, struct pl_session *sess, size_t ns,
    struct pl_decision *d)
{
	struct pl_input in = { servers, n, sess, ns, 1 };
	return placement_pick(&in, d);
}

/* Places `users` new users one after another, each counting as pending. */
static void
storm(struct pl_server *servers, size_t n, int users)
{
	struct pl_decision d;

	for (int i = 0; i < users; i++) {
		assert_int_equal(pick(servers, n, NULL, 0, &d), 0);
		assert_int_equal(d.reconnect, 0);
		servers[d.server].pending++;
	}
}

static void
test_new_user_least_loaded(void **state)
{
	struct pl_server s[3] = { srv(1, "a", 100), srv(2, "b", 100), srv(3, "c", 100) };
	struct pl_decision d;

	s[0].sessions = 5;
	s[1].sessions = 2;
	s[2].sessions = 3;
	assert_int_equal(pick(s, 3, NULL, 0, &d), 0);
	assert_string_equal(s[d.server].name, "b");
	/* pending counts as load: b with 2 pending is now above c */
	s[1].pending = 2;
	assert_int_equal(pick(s, 3, NULL, 0, &d), 0);
	assert_string_equal(s[d.server].name, "c");
}

static void
test_reconnect_disconnected_active_pending(void **state)
{
	struct pl_server s[3] = { srv(1, "a", 100), srv(2, "b", 100), srv(3, "c", 100) };
	struct pl_session disc = { 10, 3, SESSION_DISCONNECTED, 100 };
	struct pl_session act = { 11, 1, SESSION_ACTIVE, 100 };
	struct pl_session pend = { 12, 2, SESSION_PENDING, 100 };
	struct pl_decision d;

	s[2].sessions = 50;	/* c is the busiest: reconnect still wins */
	s[0].sessions = 50;
	s[1].sessions = 50;
	assert_int_equal(pick(s, 3, &disc, 1, &d), 0);
	assert_int_equal(d.reconnect, 1);
	assert_string_equal(s[d.server].name, "c");
	assert_int_equal(pick(s, 3, &act, 1, &d), 0);
	assert_int_equal(d.reconnect, 1);
	assert_string_equal(s[d.server].name, "a");
	assert_int_equal(pick(s, 3, &pend, 1, &d), 0);
	assert_int_equal(d.reconnect, 1);
	assert_string_equal(s[d.server].name, "b");
}

static void
test_reconnect_prefers_disconnected_then_recent(void **state)
{
	struct pl_server s[3] = { srv(1, "a", 100), srv(2, "b", 100), srv(3, "c", 100) };
	struct pl_session sess[3] = {
		{ 10, 1, SESSION_ACTIVE, 300 },
		{ 11, 2, SESSION_DISCONNECTED, 100 },
		{ 12, 3, SESSION_DISCONNECTED, 200 },
	};
	struct pl_decision d;

	assert_int_equal(pick(s, 3, sess, 3, &d), 0);
	assert_int_equal(d.session, 2);
	assert_string_equal(s[d.server].name, "c");
	sess[2].state = SESSION_ACTIVE;	/* now one disconnected: b */
	assert_int_equal(pick(s, 3, sess, 3, &d), 0);
	assert_string_equal(s[d.server].name, "b");
	sess[1].state = SESSION_ACTIVE;	/* all active: the most recent, a */
	assert_int_equal(pick(s, 3, sess, 3, &d), 0);
	assert_string_equal(s[d.server].name, "a");
}

static void
test_draining_keeps_reconnects_no_new_users(void **state)
{
	struct pl_server s[2] = { srv(1, "a", 100), srv(2, "b", 100) };
	struct pl_session sess = { 10, 1, SESSION_DISCONNECTED, 1 };
	struct pl_decision d;

	s[0].admin = ADMIN_DRAINING;
	s[1].sessions = 100;	/* a would win on load, but drains */
	assert_int_equal(pick(s, 2, &sess, 1, &d), 0);
	assert_int_equal(d.reconnect, 1);
	assert_string_equal(s[d.server].name, "a");
	assert_int_equal(pick(s, 2, NULL, 0, &d), 0);
	assert_int_equal(d.reconnect, 0);
	assert_string_equal(s[d.server].name, "b");
	s[1].admin = ADMIN_DRAINING;
	assert_int_equal(pick(s, 2, NULL, 0, &d), PLACEMENT_NO_SERVER);
}

static void
test_max_sessions(void **state)
{
	struct pl_server s[2] = { srv(1, "a", 100), srv(2, "b", 100) };
	struct pl_session sess = { 10, 1, SESSION_ACTIVE, 1 };
	struct pl_decision d;

	s[0].max_sessions = 3;
	s[1].max_sessions = 3;
	s[0].sessions = 3;
	s[1].sessions = 2;
	assert_int_equal(pick(s, 2, NULL, 0, &d), 0);
	assert_string_equal(s[d.server].name, "b");
	s[1].pending = 1;
	assert_int_equal(pick(s, 2, NULL, 0, &d), PLACEMENT_NO_CAPACITY);
	/* a full server still takes back its own users */
	assert_int_equal(pick(s, 2, &sess, 1, &d), 0);
	assert_string_equal(s[d.server].name, "a");
}

static void
test_down_and_quarantined_excluded(void **state)
{
	struct pl_server s[3] = { srv(1, "a", 100), srv(2, "b", 100), srv(3, "c", 100) };
	struct pl_session on_down = { 10, 1, SESSION_DISCONNECTED, 1 };
	struct pl_session pend_q = { 11, 2, SESSION_PENDING, 1 };
	struct pl_session act_q = { 12, 2, SESSION_ACTIVE, 1 };
	struct pl_decision d;

	s[0].state = SERVER_DOWN;
	s[1].quarantined = 1;
	s[2].sessions = 10;
	assert_int_equal(pick(s, 3, NULL, 0, &d), 0);
	assert_string_equal(s[d.server].name, "c");
	/* a session on a down server is not a reconnect target */
	assert_int_equal(pick(s, 3, &on_down, 1, &d), 0);
	assert_int_equal(d.reconnect, 0);
	assert_string_equal(s[d.server].name, "c");
	/* an unconfirmed placement on a black hole is not either ... */
	assert_int_equal(pick(s, 3, &pend_q, 1, &d), 0);
	assert_int_equal(d.reconnect, 0);
	/* ... but a real session there is */
	assert_int_equal(pick(s, 3, &act_q, 1, &d), 0);
	assert_int_equal(d.reconnect, 1);
	assert_string_equal(s[d.server].name, "b");
	s[2].state = SERVER_DOWN;
	assert_int_equal(pick(s, 3, NULL, 0, &d), PLACEMENT_NO_SERVER);
}

static void
test_weights_split(void **state)
{
	struct pl_server s[3] = { srv(1, "a", 200), srv(2, "b", 100), srv(3, "c", 50) };

	storm(s, 3, 280);
	assert_in_range(s[0].pending, 159, 161);
	assert_in_range(s[1].pending, 79, 81);
	assert_in_range(s[2].pending, 39, 41);
	assert_int_equal(s[0].pending + s[1].pending + s[2].pending, 280);
}

static void
test_burst_even_spread(void **state)
{
	struct pl_server s[4] = { srv(1, "a", 100), srv(2, "b", 100), srv(3, "c", 100),
	    srv(4, "d", 100) };

	storm(s, 4, 100);
	for (int i = 0; i < 4; i++)
		assert_int_equal(s[i].pending, 25);
}

static void
test_deterministic_ties(void **state)
{
	struct pl_server s[3] = { srv(1, "zeta", 100), srv(2, "alpha", 100), srv(3, "mid", 100) };
	struct pl_decision d;

	/* equal load, equal cpu: by name */
	assert_int_equal(pick(s, 3, NULL, 0, &d), 0);
	assert_string_equal(s[d.server].name, "alpha");
	/* equal load: lower cpu wins over name */
	s[1].cpu_percent = 50;
	s[0].cpu_percent = 10;
	s[2].cpu_percent = 20;
	assert_int_equal(pick(s, 3, NULL, 0, &d), 0);
	assert_string_equal(s[d.server].name, "zeta");
	for (int i = 0; i < 10; i++) {
		assert_int_equal(pick(s, 3, NULL, 0, &d), 0);
		assert_string_equal(s[d.server].name, "zeta");
	}
}

static void
test_user_normalise(void **state)
{
	char out[16];

	assert_int_equal(placement_user_normalise("Alice", out, sizeof(out)), 0);
	assert_string_equal(out, "alice");
	assert_int_equal(placement_user_normalise("CORP\\ALICE", out, sizeof(out)), 0);
	assert_string_equal(out, "alice");
	assert_int_equal(placement_user_normalise("alice@corp.example", out, sizeof(out)), 0);
	assert_string_equal(out, "alice");
	assert_int_equal(placement_user_normalise("", out, sizeof(out)), -1);
	assert_int_equal(placement_user_normalise("CORP\\", out, sizeof(out)), -1);
	assert_int_equal(placement_user_normalise("@corp", out, sizeof(out)), -1);
	assert_int_equal(placement_user_normalise("averyveryverylongusername", out,
	    sizeof(out)), -1);
}

/* ---- a naive reference of the rules, for the randomised test ---- */

/* The new user's server by docs/placement.md's words: among the servers
 * that take new users and are below max_sessions, the lowest (sessions +
 * pending x penalty) / weight, then the lower CPU, then the name. */
static int
naive_new(const struct pl_input *in, size_t *out)
{
	int found = 0, candidates = 0;
	double best = 0;

	for (size_t i = 0; i < in->nservers; i++) {
		const struct pl_server *s = &in->servers[i];
		double load = ((double)s->sessions + (double)s->pending * in->pending_penalty) /
		    s->weight;
		const struct pl_server *b = found ? &in->servers[*out] : NULL;

		if (s->state != SERVER_UP || s->admin != ADMIN_ENABLED || s->quarantined)
			continue;
		candidates++;
		if (s->sessions + s->pending >= s->max_sessions)
			continue;
		if (!found || load < best || (load == best && (s->cpu_percent < b->cpu_percent ||
		    (s->cpu_percent == b->cpu_percent && strcmp(s->name, b->name) < 0)))) {
			found = 1;
			best = load;
			*out = i;
		}
	}
	return found ? 0 : candidates ? PLACEMENT_NO_CAPACITY : PLACEMENT_NO_SERVER;
}

/* The user's session to go back to: on an up server (a pending one not on
 * a quarantined server), disconnected before active or pending, then the
 * most recent, then the first listed. -1 if none. */
static ssize_t
naive_reconnect(const struct pl_input *in, size_t *server)
{
	ssize_t best = -1;

	for (size_t i = 0; i < in->nsessions; i++) {
		const struct pl_session *e = &in->sessions[i], *b;
		size_t k;

		for (k = 0; k < in->nservers && in->servers[k].id != e->server_id; k++)
			;
		if (k == in->nservers || in->servers[k].state != SERVER_UP ||
		    (e->state == SESSION_PENDING && in->servers[k].quarantined))
			continue;
		b = best >= 0 ? &in->sessions[best] : NULL;
		if (b == NULL || (e->state == SESSION_DISCONNECTED) > (b->state ==
		    SESSION_DISCONNECTED) || ((e->state == SESSION_DISCONNECTED) ==
		    (b->state == SESSION_DISCONNECTED) && e->updated > b->updated)) {
			best = (ssize_t)i;
			*server = k;
		}
	}
	return best;
}

/* Random farms (weights, caps, pending_penalty above 1, states, ties of
 * load and CPU) and random sessions of the user: placement_pick decides as
 * the reference does, through a logon storm that adds each placement as
 * pending. */
static void
test_random_against_reference(void **state)
{
	static const char *names[] = { "a", "b", "c", "d", "e", "f", "g", "h" };
	struct pl_server sv[8];
	struct pl_session ss[4];
	struct pl_decision d;
	unsigned seed = 4242;

	for (int round = 0; round < 20000; round++) {
		size_t ns = 1 + (size_t)rand_r(&seed) % 8, nu = (size_t)rand_r(&seed) % 4;
		struct pl_input in = { sv, ns, ss, nu, 1 + rand_r(&seed) % 4 };

		for (size_t i = 0; i < ns; i++) {
			sv[i] = srv((int64_t)i + 1, names[(i + (size_t)round) % 8],
			    rand_r(&seed) % 3 ? 1 + rand_r(&seed) % 4 : 100);
			sv[i].state = rand_r(&seed) % 5 ? SERVER_UP :
			    (enum server_state)(rand_r(&seed) % 3);
			sv[i].admin = rand_r(&seed) % 5 ? ADMIN_ENABLED : ADMIN_DRAINING;
			sv[i].quarantined = rand_r(&seed) % 7 == 0;
			sv[i].max_sessions = 1 + rand_r(&seed) % 12;
			sv[i].sessions = rand_r(&seed) % (sv[i].max_sessions + 1);
			sv[i].pending = rand_r(&seed) % 3;
			sv[i].cpu_percent = (double)(rand_r(&seed) % 3) * 12.5;
		}
		for (size_t i = 0; i < nu; i++) {
			ss[i].id = 100 + (int64_t)i;
			ss[i].server_id = 1 + rand_r(&seed) % 9;	/* 9: no such server */
			ss[i].state = (enum session_state)(rand_r(&seed) % 3);
			ss[i].updated = rand_r(&seed) % 4;
		}
		for (int step = 0; step < 4; step++) {
			size_t want_server = 0;
			ssize_t want_sess = naive_reconnect(&in, &want_server);
			int want = want_sess >= 0 ? 0 : naive_new(&in, &want_server);
			int r = placement_pick(&in, &d);

			if (r != want)
				fail_msg("round %d step %d: %d, the reference %d", round, step, r,
				    want);
			if (r != 0)
				break;
			assert_int_equal(d.reconnect, want_sess >= 0);
			assert_int_equal(d.server, want_server);
			if (d.reconnect) {
				assert_int_equal(d.session, (size_t)want_sess);
				break;
			}
			sv[d.server].pending++;		/* the storm goes on */
		}
	}
}

/* plindex (the ordered candidates the store decides with) chooses as
 * placement_pick on random farms, through a long run of changes to one
 * server at a time (placements, load, state, quarantine, capacity), each
 * followed by plindex_update, with random users' sessions. */
static void
test_plindex_equals_pick(void **state)
{
	enum { N = 300 };
	static struct pl_server sv[N];
	static char names[N][16];
	unsigned int seed = 20261202;

	for (int round = 0; round < 20; round++) {
		struct plindex *ix = plindex_new();
		size_t n = 1 + (size_t)rand_r(&seed) % N;
		int penalty = 1 + rand_r(&seed) % 3;

		assert_non_null(ix);
		for (size_t i = 0; i < n; i++) {
			/* names unique, not in id order; few distinct loads: many ties */
			snprintf(names[i], sizeof(names[i]), "s%03d", (int)((i * 7919) % 1000));
			sv[i] = srv((int64_t)(i + 1) * 3, names[i], 1 + rand_r(&seed) % 3);
			sv[i].max_sessions = 1 + rand_r(&seed) % 40;
			sv[i].sessions = rand_r(&seed) % (sv[i].max_sessions + 1);
			sv[i].state = rand_r(&seed) % 6 ? SERVER_UP : SERVER_DOWN;
			sv[i].admin = rand_r(&seed) % 8 ? ADMIN_ENABLED : ADMIN_DRAINING;
			sv[i].quarantined = rand_r(&seed) % 10 == 0;
			sv[i].cpu_percent = (double)(rand_r(&seed) % 3) * 25.0;
		}
		assert_int_equal(plindex_build(ix, sv, n, penalty), 0);
		for (int step = 0; step < 3000; step++) {
			struct pl_session ss[4];
			size_t nu = rand_r(&seed) % 5 == 0 ? 1 + (size_t)rand_r(&seed) % 4 : 0;
			struct pl_decision want, got;
			size_t i = (size_t)rand_r(&seed) % n;
			int rw, rg;

			for (size_t k = 0; k < nu; k++) {
				ss[k] = (struct pl_session){ .id = (int64_t)k + 1,
				    /* ids of servers, and some of none */
				    .server_id = 1 + rand_r(&seed) % (int)(3 * n + 2),
				    .state = (enum session_state)(rand_r(&seed) % 3),
				    .updated = rand_r(&seed) % 4 };
			}
			struct pl_input in = { sv, n, ss, nu, penalty };
			memset(&want, 0xa5, sizeof(want));
			memset(&got, 0x5a, sizeof(got));
			rw = placement_pick(&in, &want);
			rg = plindex_pick(ix, &in, &got);
			if (rw != rg)
				fail_msg("round %d step %d: %d, placement_pick %d", round, step, rg, rw);
			if (rw == 0) {
				assert_int_equal(got.reconnect, want.reconnect);
				assert_int_equal(got.server, want.server);
				if (want.reconnect)
					assert_int_equal(got.session, want.session);
				else {
					sv[want.server].pending++;	/* as the store does */
					plindex_update(ix, sv, want.server);
				}
			}
			/* one server changes */
			switch (rand_r(&seed) % 7) {
			case 0: sv[i].sessions = rand_r(&seed) % (sv[i].max_sessions + 2); break;
			case 1: sv[i].pending = rand_r(&seed) % 3; break;
			case 2: sv[i].state = rand_r(&seed) % 4 ? SERVER_UP : SERVER_DOWN; break;
			case 3: sv[i].admin = rand_r(&seed) % 4 ? ADMIN_ENABLED : ADMIN_DRAINING;
				break;
			case 4: sv[i].quarantined = rand_r(&seed) % 4 == 0; break;
			case 5: sv[i].cpu_percent = (double)(rand_r(&seed) % 3) * 25.0; break;
			default: sv[i].max_sessions = 1 + rand_r(&seed) % 40; break;
			}
			plindex_update(ix, sv, i);
			if (step % 500 == 0) {	/* everything full now and then */
				for (size_t k = 0; k < n; k++) {
					sv[k].sessions = sv[k].max_sessions;
					plindex_update(ix, sv, k);
				}
			}
		}
		/* another penalty rebuilds by itself */
		struct pl_input in2 = { sv, n, NULL, 0, penalty + 1 };
		struct pl_decision a, b;
		assert_int_equal(plindex_pick(ix, &in2, &b), placement_pick(&in2, &a));
		plindex_free(ix);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_user_least_loaded),
		cmocka_unit_test(test_reconnect_disconnected_active_pending),
		cmocka_unit_test(test_reconnect_prefers_disconnected_then_recent),
		cmocka_unit_test(test_draining_keeps_reconnects_no_new_users),
		cmocka_unit_test(test_max_sessions),
		cmocka_unit_test(test_down_and_quarantined_excluded),
		cmocka_unit_test(test_weights_split),
		cmocka_unit_test(test_burst_even_spread),
		cmocka_unit_test(test_deterministic_ties),
		cmocka_unit_test(test_user_normalise),
		cmocka_unit_test(test_random_against_reference),
		cmocka_unit_test(test_plindex_equals_pick),
	};
	return cmocka_run_group_tests_name("placement", tests, NULL, NULL);
}
