/* The store contract: drives only store.h (and health.c on top of it), so
 * that it runs unchanged on every engine: placement commits, heartbeat
 * reconciliation, pending expiry, black-hole quarantine, server down and
 * return, the load cache against another store's commits, routes, events,
 * admin credentials. What only SQLite has is in test_store_sqlite.c.
 *
 * The engine: TSB_STORE_ENGINE (default sqlite) at TSB_STORE_LOCATION; by
 * default a fresh SQLite file per test in a new temporary directory. A
 * location given must be empty at each test's start (the runner of that
 * engine resets it) and is opened twice for the tests of another store's
 * commits. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/core/conf.h"
#include "broker/state/health.h"
#include "broker/state/placement.h"
#include "broker/state/store.h"
#include "tests/unit/store_fx.h"

static void
test_placement_pending_then_confirmed(void **state)
{
	struct fx *f = *state;
	struct store_place_result r1, r2;
	const char *alice[] = { "alice" };

	fx_add(f, "a", 10);
	fx_add(f, "b", 10);
	assert_int_equal(fx_place(f, "alice", T0, &r1), STORE_REFUSED);	/* none up */
	assert_string_equal(r1.reason, "no server is available");
	fx_beat(f, "a", 1, T0, NULL, 0, 1);
	fx_beat(f, "b", 1, T0, NULL, 0, 1);
	assert_int_equal(fx_place(f, "alice", T0 + 1, &r1), 0);
	assert_string_equal(r1.server, "a");
	assert_int_equal(r1.reconnect, 0);
	/* the pending placement counts as load and brings alice back */
	assert_int_equal(fx_place(f, "bob", T0 + 2, &r2), 0);
	assert_string_equal(r2.server, "b");
	assert_int_equal(fx_place(f, "alice", T0 + 3, &r2), 0);
	assert_string_equal(r2.server, "a");
	assert_int_equal(r2.reconnect, 1);
	assert_int_equal(r2.session_id, r1.session_id);
	assert_int_equal(fx_count(f, "a", "pending"), 1);
	/* the agent's snapshot confirms it */
	fx_beat(f, "a", 1, T0 + 4, alice, 1, 1);
	assert_int_equal(fx_count(f, "a", "pending"), 0);
	assert_int_equal(fx_count(f, "a", "active"), 1);
	assert_int_equal(fx_place(f, "Alice", T0 + 5, &r2), 0);
	assert_int_equal(r2.session_id, r1.session_id);
}

static void
test_reconcile_and_unknown_sessions(void **state)
{
	struct fx *f = *state;
	const char *two[] = { "alice", "bob" }, *one[] = { "bob" };

	fx_add(f, "a", 10);
	fx_beat(f, "a", 1, T0, two, 2, 1);
	assert_int_equal(fx_count(f, "a", "active"), 2);
	/* unknown: nothing changes */
	fx_beat(f, "a", 1, T0 + 1, NULL, 0, 0);
	assert_int_equal(fx_count(f, "a", "active"), 2);
	/* vanished: ended */
	fx_beat(f, "a", 1, T0 + 2, one, 1, 1);
	assert_int_equal(fx_count(f, "a", "active"), 1);
	assert_int_equal(fx_count(f, "a", "ended"), 1);
	/* an empty but known list ends them all */
	fx_beat(f, "a", 1, T0 + 3, NULL, 0, 1);
	assert_int_equal(fx_count(f, "a", NULL), 0);
}

static void
test_down_lost_and_return(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	const char *users[] = { "alice", "bob" }, *alice[] = { "alice" };

	fx_add(f, "a", 10);
	fx_add(f, "b", 10);
	fx_beat(f, "a", 1, T0, users, 2, 1);
	fx_beat(f, "b", 1, T0, NULL, 0, 1);
	/* b keeps beating, a goes silent for longer than down_after */
	fx_beat(f, "b", 1, T0 + 16000, NULL, 0, 1);
	assert_int_equal(health_sweep(f->st, &f->c, T0 + 16000, 0), 0);
	assert_int_equal(fx_count(f, "a", "lost"), 2);
	assert_int_equal(fx_place(f, "alice", T0 + 16001, &r), 0);
	assert_string_equal(r.server, "b");	/* to the survivor */
	/* a returns holding only alice's session: restored; bob's has ended */
	fx_beat(f, "a", 1, T0 + 17000, alice, 1, 1);
	assert_int_equal(fx_count(f, "a", "active"), 1);
	assert_int_equal(fx_count(f, "a", "lost"), 0);
	/* an agent whose RDP port is not accepting takes its server down */
	fx_beat(f, "a", 0, T0 + 18000, alice, 1, 1);
	assert_int_equal(fx_count(f, "a", "lost"), 1);
}

static void
test_restart_grace(void **state)
{
	struct fx *f = *state;

	fx_add(f, "a", 10);
	fx_beat(f, "a", 1, T0, NULL, 0, 1);
	/* the broker was down from T0 + 1 s to T0 + 60 s: a gets down_after
	 * from the restart before it counts as down */
	assert_int_equal(health_sweep(f->st, &f->c, T0 + 61000, T0 + 60000), 0);
	assert_int_equal(fx_server_in(f, "a", "up"), 1);
	assert_int_equal(health_sweep(f->st, &f->c, T0 + 75001, T0 + 60000), 0);
	assert_int_equal(fx_server_in(f, "a", "up"), 0);
}

static void
test_pending_expiry_and_quarantine(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	struct store_server s;
	char user[16];
	const char *ok[8];
	int on_b = 0;

	fx_add(f, "a", 100);
	fx_add(f, "b", 100);
	fx_beat(f, "a", 1, T0, NULL, 0, 1);
	fx_beat(f, "b", 1, T0, NULL, 0, 1);
	/* 6 users: 3 to a (a black hole), 3 to b which confirms them */
	for (int i = 0; i < 6; i++) {
		snprintf(user, sizeof(user), "u%d", i);
		assert_int_equal(fx_place(f, user, T0 + 1, &r), 0);
		if (strcmp(r.server, "b") == 0) {
			ok[on_b] = strdup(user);
			on_b++;
		}
	}
	assert_int_equal(on_b, 3);
	fx_beat(f, "b", 1, T0 + 2000, ok, (size_t)on_b, 1);
	fx_beat(f, "a", 1, T0 + 2000, NULL, 0, 1);
	fx_beat(f, "a", 1, T0 + 11000, NULL, 0, 1);
	fx_beat(f, "b", 1, T0 + 11000, ok, (size_t)on_b, 1);
	assert_int_equal(health_sweep(f->st, &f->c, T0 + 11001, 0), 0);
	assert_int_equal(fx_count(f, "a", "pending"), 0);
	assert_int_equal(store_server_get(f->st, "a", &s), 0);
	assert_true(s.quarantined_until > T0 + 11001);
	assert_int_equal(store_server_get(f->st, "b", &s), 0);
	assert_int_equal(s.quarantined_until, 0);
	/* new users avoid the quarantined server */
	assert_int_equal(fx_place(f, "newbie", T0 + 11002, &r), 0);
	assert_string_equal(r.server, "b");
	for (int i = 0; i < on_b; i++)
		free((char *)ok[i]);
}

static void
test_names_and_admin(void **state)
{
	struct fx *f = *state;
	char hash[200];
	int64_t id;
	char name[64];

	fx_add(f, "a", 10);
	assert_int_equal(store_server_drain(f->st, "nope", 1, T0), STORE_NOT_FOUND);
	assert_int_equal(store_server_remove(f->st, "nope", T0), STORE_NOT_FOUND);
	assert_int_equal(store_session_forget(f->st, 12345, T0), STORE_NOT_FOUND);
	assert_int_equal(store_admin_password_get(f->st, hash, sizeof(hash)),
	    STORE_NOT_FOUND);
	assert_int_equal(store_admin_password_set(f->st, "scrypt$x", T0), 0);
	assert_int_equal(store_admin_password_get(f->st, hash, sizeof(hash)), 0);
	assert_string_equal(hash, "scrypt$x");
	assert_int_equal(store_server_auth(f->st, "nope", &id, name, sizeof(name)),
	    STORE_NOT_FOUND);
	/* a name is unique */
	struct store_server s = { 0 };
	snprintf(s.name, sizeof(s.name), "a");
	snprintf(s.address, sizeof(s.address), "x");
	s.port = 1;
	s.weight = 1;
	s.max_sessions = 1;
	assert_int_equal(store_server_add(f->st, &s, "otherhash", T0), STORE_EXISTS);
}

/* Routing tokens and trusted cookies: a session id leads to its user and
 * server whatever their states; a user leads to a live session only. */
static void
test_session_and_user_route(void **state)
{
	struct fx *f = *state;
	struct store_place_result res;
	struct store_route rt;
	const char *alice[] = { "alice" };

	fx_farm(f, 2, 10);
	assert_int_equal(fx_place(f, "CORP\\Alice", T0 + 1, &res), 0);
	assert_int_equal(res.server_id, fx_id(f, res.server));

	assert_int_equal(store_session_route(f->st, res.session_id, T0 + 2, &rt), 0);
	assert_int_equal(rt.session_id, res.session_id);
	assert_string_equal(rt.user, "alice");
	assert_string_equal(rt.login, "CORP\\Alice");
	assert_string_equal(session_state_str(rt.session_state), "pending");
	assert_string_equal(rt.server, res.server);
	assert_string_equal(server_state_str(rt.server_state), "up");
	assert_int_equal(rt.server_id, res.server_id);
	assert_int_equal(rt.port, 3389);
	assert_int_equal(rt.live, 1);
	/* a pending placement past its expiry is not live */
	assert_int_equal(store_session_route(f->st, res.session_id, T0 + 20000, &rt), 0);
	assert_int_equal(rt.live, 0);
	assert_int_equal(store_session_route(f->st, 9999, T0 + 2, &rt), STORE_NOT_FOUND);

	/* the user's live session, by the reconnect rules, nothing committed */
	memset(&rt, 0, sizeof(rt));
	assert_int_equal(store_user_route(f->st, "alice", T0 + 2, &rt), 0);
	assert_int_equal(rt.session_id, res.session_id);
	assert_int_equal(store_user_route(f->st, "bob", T0 + 2, &rt), STORE_NOT_FOUND);
	assert_int_equal(fx_count(f, NULL, "pending"), 1);	/* no placement for bob */
	fx_beat(f, res.server, 1, T0 + 3, alice, 1, 1);	/* confirmed: active */
	assert_int_equal(store_user_route(f->st, "alice", T0 + 4, &rt), 0);
	assert_string_equal(session_state_str(rt.session_state), "active");

	/* its server goes down: the token still names it, but it is not live,
	 * and the user has no live session any more */
	assert_int_equal(store_server_down(f->st, res.server_id, "test", T0 + 5, NULL), 0);
	assert_int_equal(store_session_route(f->st, res.session_id, T0 + 6, &rt), 0);
	assert_string_equal(session_state_str(rt.session_state), "lost");
	assert_string_equal(server_state_str(rt.server_state), "down");
	assert_int_equal(rt.live, 0);
	assert_int_equal(store_user_route(f->st, "alice", T0 + 6, &rt), STORE_NOT_FOUND);
	/* placing her again goes to the survivor */
	assert_int_equal(fx_place(f, "alice", T0 + 7, &res), 0);
	assert_string_not_equal(res.server, rt.server);
	assert_int_equal(store_user_route(f->st, "alice", T0 + 8, &rt), 0);
	assert_string_equal(rt.server, res.server);
}

static void
test_event_retention(void **state)
{
	struct fx *f = *state;
	struct store_event *list = NULL;
	char detail[16];
	size_t n = 0;

	for (int i = 0; i < 20; i++) {
		snprintf(detail, sizeof(detail), "%d", i);
		assert_int_equal(store_event_add(f->st, "test", NULL, NULL, NULL, detail,
		    0), 0);
	}
	/* none is older than a minute, and at most 10 stay */
	assert_int_equal(store_event_prune(f->st, util_now_ms() - 60000, 10), 0);
	assert_int_equal(store_event_list(f->st, 0, 100, &list, &n), 0);
	assert_int_equal(n, 10);
	assert_string_equal(list[0].detail, "19");	/* newest first */
	assert_string_equal(list[9].detail, "10");
	free(list);
	/* all older than now + 1 ms go */
	assert_int_equal(store_event_prune(f->st, util_now_ms() + 1, 10), 0);
	assert_int_equal(store_event_list(f->st, 0, 100, &list, &n), 0);
	assert_int_equal(n, 0);
	free(list);
}

/* An event's commit is lazy (STORE_TX_LAZY: durable with the next
 * commit), but a kill of the broker right after it loses nothing: a child
 * process adds one and SIGKILLs itself. The parent closes its store first:
 * a child forked while the store's checkpoint thread held one of SQLite's
 * locks (its allocator's) would wait on it for ever. */
static void
test_event_survives_kill(void **state)
{
	struct fx *f = *state;
	struct store_event *list = NULL;
	size_t n = 0;
	int status;
	pid_t pid;

	store_close(f->st);
	f->st = NULL;
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		char err[256];
		struct store *st = store_open_engine(f->engine, f->path, err, sizeof(err));

		if (st == NULL || store_event_add(st, "test", NULL, "u", NULL, "before the kill",
		    0) != 0)
			_exit(2);
		raise(SIGKILL);
		_exit(3);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	f->st = fx_open(f);
	assert_int_equal(store_event_list(f->st, 0, 10, &list, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].detail, "before the kill");
	free(list);
}

/* The placement load cache (store.c): changes committed by another
 * connection (an admin command), pending placements expiring without
 * store_pending_expire, servers added and removed elsewhere. */
static void
test_placement_cache(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	struct store_server c = { 0 };
	struct store *other;

	fx_farm(f, 2, 10);
	assert_int_equal(fx_place(f, "u1", T0 + 1, &r), 0);
	assert_string_equal(r.server, "a");
	/* b drained by another process: the cache sees its commit */
	other = fx_open(f);
	assert_int_equal(store_server_drain(other, "b", 1, T0 + 2), 0);
	assert_int_equal(fx_place(f, "u2", T0 + 3, &r), 0);
	assert_string_equal(r.server, "a");
	assert_int_equal(store_server_drain(other, "b", 0, T0 + 4), 0);
	/* a's two pending placements expire (10 s): a counts 0 again, ties to a */
	assert_int_equal(fx_place(f, "u3", T0 + 10000 + 4, &r), 0);
	assert_string_equal(r.server, "a");
	assert_int_equal(fx_place(f, "u4", T0 + 10000 + 5, &r), 0);
	assert_string_equal(r.server, "b");
	/* a server added and brought up elsewhere, then one removed */
	snprintf(c.name, sizeof(c.name), "c");
	snprintf(c.address, sizeof(c.address), "10.0.0.3");
	c.port = 3389;
	c.weight = 1000;
	c.max_sessions = 10;
	assert_int_equal(store_server_add(other, &c, "cc", T0 + 10010), 0);
	store_close(other);
	fx_beat(f, "c", 1, T0 + 10011, NULL, 0, 1);
	assert_int_equal(fx_place(f, "u5", T0 + 10012, &r), 0);
	assert_string_equal(r.server, "c");
	other = fx_open(f);
	assert_int_equal(store_server_remove(other, "c", T0 + 10013), 0);
	store_close(other);
	for (int i = 0; i < 4; i++) {
		char u[8];

		snprintf(u, sizeof(u), "v%d", i);
		assert_int_equal(fx_place(f, u, T0 + 10014 + i, &r), 0);
		assert_string_not_equal(r.server, "c");
	}
	/* u1..u4 and v0..v3 (the expired ones stay pending until expired) */
	assert_int_equal(fx_count(f, "a", "pending") + fx_count(f, "b", "pending"), 8);
}

/* The heartbeat cache (hbcache.h) never answers from a state that is not
 * the database's: unchanged beats, a session gone and back, this store's
 * own placement, another store's (broker's) drain and beats. */
static void
test_heartbeat_cache(void **state)
{
	struct fx *f = *state;
	const char *abc[] = { "alice", "bob", "carol" };
	struct store_place_result r;
	struct store *other;

	fx_farm(f, 1, 10);
	for (int i = 0; i < 3; i++)
		assert_int_equal(fx_beat_on(f, f->st, "a", 1, T0 + 1 + i, abc, 2, 1), 0);
	assert_int_equal(fx_count(f, "a", "active"), 2);
	assert_int_equal(fx_beat_on(f, f->st, "a", 1, T0 + 4, abc + 1, 1, 1), 0);	/* alice gone */
	assert_int_equal(fx_count(f, "a", "active"), 1);
	assert_int_equal(fx_beat_on(f, f->st, "a", 1, T0 + 5, abc, 2, 1), 0);		/* and back */
	assert_int_equal(fx_count(f, "a", "active"), 2);
	/* carol placed here (this store's commit), then confirmed by a beat */
	assert_int_equal(fx_place(f, "carol", T0 + 6, &r), 0);
	assert_int_equal(fx_count(f, "a", "pending"), 1);
	assert_int_equal(fx_beat_on(f, f->st, "a", 1, T0 + 7, abc, 3, 1), 0);
	assert_int_equal(fx_count(f, "a", "pending"), 0);
	assert_int_equal(fx_count(f, "a", "active"), 3);
	/* another broker drains a and takes a beat where alice and carol left */
	other = fx_open(f);
	assert_int_equal(store_server_drain(other, "a", 1, T0 + 8), 0);
	assert_int_equal(fx_beat_on(f, f->st, "a", 1, T0 + 9, abc, 3, 1), 1);
	assert_int_equal(fx_beat_on(f, other, "a", 1, T0 + 10, abc + 1, 1, 1), 1);
	assert_int_equal(fx_count(f, "a", "active"), 1);
	store_close(other);
	/* this store's next beat with all three is not "unchanged" */
	assert_int_equal(fx_beat_on(f, f->st, "a", 1, T0 + 11, abc, 3, 1), 1);
	assert_int_equal(fx_count(f, "a", "active"), 3);
}

/* The engine's generation hook: this store's own placements and heartbeats
 * keep its cache (no whole reload), another store's commit forces one and
 * the next placement sees it. */
static void
test_generation_own_and_other(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	struct store *other;
	const char *users[] = { "w0" };
	char u[16];
	uint64_t loads;

	fx_farm(f, 3, 100);
	assert_int_equal(fx_place(f, "u0", T0 + 1, &r), 0);
	loads = store_cache_loads(f->st);
	assert_int_equal(loads >= 1, 1);
	for (int i = 1; i < 30; i++) {
		snprintf(u, sizeof(u), "u%d", i);
		assert_int_equal(fx_place(f, u, T0 + 1 + i, &r), 0);
		if (i % 10 == 0)
			fx_beat(f, "c", 1, T0 + 1 + i, users, 1, 1);
	}
	assert_int_equal(store_cache_loads(f->st), loads);
	/* another broker drains b and adds a session on a: seen at once */
	other = fx_open(f);
	assert_int_equal(store_server_drain(other, "b", 1, T0 + 40), 0);
	for (int i = 0; i < 6; i++) {
		snprintf(u, sizeof(u), "x%d", i);
		assert_int_equal(fx_place(f, u, T0 + 41 + i, &r), 0);
		assert_string_not_equal(r.server, "b");
	}
	assert_int_equal(store_cache_loads(f->st), loads + 1);
	store_close(other);
}

/* The ordered candidates (plindex) of this store stay right while another
 * store changes the farm (its commits reach this one through the engine's
 * generation hook): its placements, a drain and its end, a server down and
 * back up (quarantine: test_pending_expiry_and_quarantine, and plindex's
 * own in test_placement.c). Each placement goes where placement_pick over
 * the servers as they are would put it: the least loaded open one (ties
 * by CPU, then name). */
static void
test_candidates_follow_other_store(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	struct store *other;
	struct store_server s;
	char u[16];

	fx_farm(f, 3, 100);
	assert_int_equal(fx_place(f, "u0", T0 + 1, &r), 0);	/* the cache loaded */
	assert_string_equal(r.server, "a");
	other = fx_open(f);
	/* the other store loads a and b: c is the least loaded */
	for (int i = 0; i < 4; i++) {
		struct store_place_request q = { u, u, "", "127.0.0.8", T0 + 2 + i, 10000, 1,
		    NULL };

		snprintf(u, sizeof(u), "o%d", i);
		assert_int_equal(store_placement_commit(other, &q, &r), 0);
	}
	/* a 2, b 2, c 1 */
	assert_int_equal(fx_place(f, "u1", T0 + 10, &r), 0);
	assert_string_equal(r.server, "c");
	/* drained by the other: never chosen, until the drain ends */
	assert_int_equal(store_server_drain(other, "a", 1, T0 + 11), 0);
	for (int i = 0; i < 4; i++) {
		snprintf(u, sizeof(u), "d%d", i);
		assert_int_equal(fx_place(f, u, T0 + 12 + i, &r), 0);
		assert_string_not_equal(r.server, "a");
	}
	/* a 2, b 4, c 4 */
	assert_int_equal(store_server_drain(other, "a", 0, T0 + 20), 0);
	assert_int_equal(fx_place(f, "e0", T0 + 21, &r), 0);
	assert_string_equal(r.server, "a");
	/* b down by the other: its pending placements end, it is not chosen */
	assert_int_equal(store_server_get(f->st, "b", &s), 0);
	assert_int_equal(store_server_down(other, s.id, "test", T0 + 22, NULL), 0);
	for (int i = 0; i < 4; i++) {
		snprintf(u, sizeof(u), "g%d", i);
		assert_int_equal(fx_place(f, u, T0 + 23 + i, &r), 0);
		assert_string_not_equal(r.server, "b");
	}
	/* back up (its heartbeat, here through this store): empty, so chosen */
	fx_beat(f, "b", 1, T0 + 30, NULL, 0, 1);
	assert_int_equal(fx_place(f, "h0", T0 + 31, &r), 0);
	assert_string_equal(r.server, "b");
	store_close(other);
}

/* Session fields the engine's batched statements must carry intact. */
static void
test_heartbeat_odd_names(void **state)
{
	struct fx *f = *state;
	const char *users[] = { "o\"brien", "back\\slash", "comma,{brace}", "x" };
	struct store_session_filter flt = { NULL, "a", NULL, NULL };
	struct store_session *list = NULL;
	size_t n = 0;

	fx_farm(f, 1, 10);
	fx_beat(f, "a", 1, T0 + 1, users, 4, 1);
	assert_int_equal(store_session_list(f->st, &flt, &list, &n), 0);
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++) {
		int found = 0;

		for (size_t k = 0; k < 4; k++)
			found |= strcmp(list[i].login, users[k]) == 0;
		assert_int_equal(found, 1);
	}
	free(list);
	/* two vanish (ended), the others stay */
	fx_beat(f, "a", 1, T0 + 2, users, 2, 1);
	assert_int_equal(fx_count(f, "a", "active"), 2);
}

/* What a beat reports back: the transitions it caused, the placements it
 * confirmed, the admin state to tell the agent. */
static void
test_heartbeat_result(void **state)
{
	struct fx *f = *state;
	struct store_heartbeat_result res;
	struct store_place_result pr;
	struct wire_heartbeat hb = { 0 };
	struct wire_session ws[2];
	int64_t id;

	fx_add(f, "a", 10);
	id = fx_id(f, "a");
	memset(ws, 0, sizeof(ws));
	snprintf(ws[0].user, sizeof(ws[0].user), "CORP\\Alice");
	snprintf(ws[0].id, sizeof(ws[0].id), "7");
	ws[0].state = WIRE_DISCONNECTED;
	snprintf(ws[1].user, sizeof(ws[1].user), "bob@corp");
	ws[1].state = WIRE_ACTIVE;
	hb.rdp_accepting = 1;
	hb.sessions_known = 1;
	hb.sessions = ws;
	hb.nsessions = 1;		/* alice only */
	assert_true(fx_server_in(f, "a", "unknown"));
	assert_int_equal(store_heartbeat_apply(f->st, id, &hb, T0, &res), 0);
	assert_int_equal(res.went_up, 1);
	assert_int_equal(res.went_down, 0);
	assert_int_equal(res.draining, 0);
	assert_int_equal(fx_place(f, "alice", T0 + 1, &pr), 0);
	assert_int_equal(pr.reconnect, 1);
	assert_int_equal(fx_place(f, "bob", T0 + 2, &pr), 0);
	assert_int_equal(pr.reconnect, 0);
	assert_int_equal(store_server_drain(f->st, "a", 1, T0 + 3), 0);
	/* both reported now: bob's pending placement is confirmed, alice's
	 * row (the same agent id) is unchanged */
	hb.nsessions = 2;
	assert_int_equal(store_heartbeat_apply(f->st, id, &hb, T0 + 4, &res), 0);
	assert_int_equal(res.went_up, 0);
	assert_int_equal(res.confirmed, 1);
	assert_int_equal(res.draining, 1);
	assert_int_equal(fx_count(f, "a", "disconnected"), 1);
	assert_int_equal(fx_count(f, "a", "active"), 1);
	assert_int_equal(fx_count(f, "a", "pending"), 0);
	/* not accepting: down once, the sessions lost with it */
	hb.rdp_accepting = 0;
	assert_int_equal(store_heartbeat_apply(f->st, id, &hb, T0 + 5, &res), 0);
	assert_int_equal(res.went_down, 1);
	assert_int_equal(fx_count(f, "a", "lost"), 2);
	assert_int_equal(store_heartbeat_apply(f->st, id, &hb, T0 + 6, &res), 0);
	assert_int_equal(res.went_down, 0);
	assert_true(fx_server_in(f, "a", "down"));
	/* back: restored with their states */
	hb.rdp_accepting = 1;
	assert_int_equal(store_heartbeat_apply(f->st, id, &hb, T0 + 7, &res), 0);
	assert_int_equal(res.went_up, 1);
	assert_int_equal(fx_count(f, "a", "disconnected"), 1);
	assert_int_equal(fx_count(f, "a", "active"), 1);
	assert_int_equal(store_heartbeat_apply(f->st, 999, &hb, T0 + 8, &res),
	    STORE_NOT_FOUND);
}

/* Servers read back with their typed states; sessions listed by state. */
static void
test_server_and_session_states(void **state)
{
	struct fx *f = *state;
	struct store_server *list = NULL, s;
	struct store_session *ss = NULL;
	struct store_session_filter flt = { "ALICE", NULL, NULL, NULL };
	struct store_place_result pr;
	const char *alice[] = { "alice" };
	size_t n = 0;

	fx_add(f, "b", 10);
	fx_add(f, "a", 10);
	fx_beat(f, "a", 1, T0, alice, 1, 1);
	assert_int_equal(store_server_drain(f->st, "b", 1, T0 + 1), 0);
	assert_int_equal(store_server_list(f->st, &list, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].name, "a");		/* by name */
	assert_int_equal(list[0].state, SERVER_UP);
	assert_int_equal(list[0].admin_state, ADMIN_ENABLED);
	assert_int_equal(list[0].active, 1);
	assert_int_equal(list[0].ncpu, 2);
	assert_int_equal(list[1].state, SERVER_UNKNOWN);
	assert_int_equal(list[1].admin_state, ADMIN_DRAINING);
	free(list);
	assert_int_equal(store_server_drain(f->st, "b", 0, T0 + 2), 0);
	assert_int_equal(store_server_get(f->st, "b", &s), 0);
	assert_int_equal(s.admin_state, ADMIN_ENABLED);
	/* the user filter normalises */
	assert_int_equal(store_session_list(f->st, &flt, &ss, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ss[0].state, SESSION_ACTIVE);
	assert_string_equal(ss[0].server, "a");
	assert_string_equal(ss[0].remote_id, "id-alice");
	assert_int_equal(store_session_forget(f->st, ss[0].id, T0 + 3), 0);
	assert_int_equal(store_session_forget(f->st, ss[0].id, T0 + 4), STORE_NOT_FOUND);
	free(ss);
	assert_int_equal(fx_count(f, NULL, NULL), 0);	/* ended: hidden */
	assert_int_equal(fx_count(f, NULL, "ended"), 1);
	/* a full server refuses with the reason */
	for (int i = 0; i < 10; i++) {
		char u[8];

		snprintf(u, sizeof(u), "u%d", i);
		assert_int_equal(fx_place(f, u, T0 + 10 + i, &pr), 0);
		assert_string_equal(pr.server, "a");	/* b is not up */
	}
	assert_int_equal(fx_place(f, "late", T0 + 30, &pr), STORE_REFUSED);
	assert_string_equal(pr.reason, "all servers are full");
	assert_int_equal(store_server_remove(f->st, "a", T0 + 31), 0);
	assert_int_equal(store_server_get(f->st, "a", &s), STORE_NOT_FOUND);
	assert_int_equal(fx_count(f, NULL, "pending"), 0);	/* gone with it */
}

static void
test_admin_tokens(void **state)
{
	struct fx *f = *state;
	struct store_admin_token *list = NULL;
	char name[WIRE_NAME_MAX];
	size_t n = 0;

	assert_int_equal(store_admin_token_add(f->st, "ci", "h1", T0), 0);
	assert_int_equal(store_admin_token_add(f->st, "ci", "h2", T0), STORE_EXISTS);
	assert_int_equal(store_admin_token_add(f->st, "backup", "h2", T0), 0);
	assert_int_equal(store_admin_token_auth(f->st, "h1", T0 + 1, name, sizeof(name)), 0);
	assert_string_equal(name, "ci");
	assert_int_equal(store_admin_token_auth(f->st, "nope", T0 + 1, name, sizeof(name)),
	    STORE_NOT_FOUND);
	/* the use is recorded at most once a minute */
	assert_int_equal(store_admin_token_auth(f->st, "h1", T0 + 2, name, sizeof(name)), 0);
	assert_int_equal(store_admin_token_list(f->st, &list, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].name, "backup");
	assert_int_equal(list[0].last_used, 0);
	assert_string_equal(list[1].name, "ci");
	assert_int_equal(list[1].last_used, T0 + 1);
	free(list);
	assert_int_equal(store_admin_token_remove(f->st, "ci", T0 + 3), 0);
	assert_int_equal(store_admin_token_remove(f->st, "ci", T0 + 3), STORE_NOT_FOUND);
	assert_int_equal(store_admin_token_auth(f->st, "h1", T0 + 4, name, sizeof(name)),
	    STORE_NOT_FOUND);
}

/* A login session made with another store (a second broker) from T0. */
static struct store_admin_session
session_at(const char *hash, int64_t t)
{
	struct store_admin_session s = { "", "127.0.0.5", t, t };

	snprintf(s.id_hash, sizeof(s.id_hash), "%s", hash);
	return s;
}

/* Admin browser sessions, shared by the stores on one location: a login on
 * one is used on the other, logged out there, and gone for the first;
 * idle and absolute expiry; the least recently used go beyond the bound;
 * the prune of two stores deletes each expired row once. */
static void
test_admin_sessions(void **state)
{
	struct fx *f = *state;
	const struct store_session_limits lim = { 10000, 60000 };
	struct store_admin_session s, out;
	struct store *other = fx_open(f);
	int n1 = -1, n2 = -1;

	s = session_at("h1", T0);
	assert_int_equal(store_admin_session_add(f->st, &s, 4), 0);
	assert_int_equal(store_admin_session_use(other, "h1", T0 + 500, &lim, &out), 0);
	assert_string_equal(out.client, "127.0.0.5");
	assert_int_equal(out.created, T0);
	assert_int_equal(store_admin_session_use(f->st, "nope", T0 + 500, &lim, &out),
	    STORE_NOT_FOUND);
	/* used at most once a second is written: T0 + 500 was not */
	assert_int_equal(store_admin_session_use(f->st, "h1", T0 + 1200, &lim, &out), 0);
	assert_int_equal(out.last_used, T0);
	assert_int_equal(store_admin_session_use(f->st, "h1", T0 + 1300, &lim, &out), 0);
	assert_int_equal(out.last_used, T0 + 1200);
	/* logout on the other */
	assert_int_equal(store_admin_session_remove(other, "h1"), 0);
	assert_int_equal(store_admin_session_remove(other, "h1"), STORE_NOT_FOUND);
	assert_int_equal(store_admin_session_use(f->st, "h1", T0 + 1400, &lim, &out),
	    STORE_NOT_FOUND);
	/* idle: 10 s unused */
	s = session_at("h2", T0);
	assert_int_equal(store_admin_session_add(f->st, &s, 4), 0);
	assert_int_equal(store_admin_session_use(f->st, "h2", T0 + 9999, &lim, &out), 0);
	assert_int_equal(store_admin_session_use(f->st, "h2", T0 + 9999 + 10000, &lim, &out),
	    STORE_NOT_FOUND);
	/* absolute: 60 s after the login, however used */
	s = session_at("h3", T0);
	assert_int_equal(store_admin_session_add(f->st, &s, 4), 0);
	for (int64_t t = T0 + 5000; t < T0 + 60000; t += 5000)
		assert_int_equal(store_admin_session_use(other, "h3", t, &lim, &out), 0);
	assert_int_equal(store_admin_session_use(other, "h3", T0 + 60000, &lim, &out),
	    STORE_NOT_FOUND);
	/* the prune: h2 and h3 (expired, still stored) once, by one store;
	 * the live one stays */
	s = session_at("live", T0 + 60000);
	assert_int_equal(store_admin_session_add(f->st, &s, 4), 0);
	assert_int_equal(store_admin_session_prune(f->st, T0 + 60001, &lim, &n1), 0);
	assert_int_equal(store_admin_session_prune(other, T0 + 60001, &lim, &n2), 0);
	assert_int_equal(n1, 2);
	assert_int_equal(n2, 0);
	assert_int_equal(store_admin_session_use(other, "live", T0 + 60002, &lim, &out), 0);
	/* bounded: of 4 kept, the least recently used goes */
	for (int i = 0; i < 4; i++) {
		char h[8];

		snprintf(h, sizeof(h), "b%d", i);
		s = session_at(h, T0 + 70000 + i);
		assert_int_equal(store_admin_session_add(i % 2 ? other : f->st, &s, 4), 0);
	}
	assert_int_equal(store_admin_session_use(f->st, "b0", T0 + 72000, &lim, &out), 0);
	s = session_at("b4", T0 + 73000);
	assert_int_equal(store_admin_session_add(f->st, &s, 4), 0);
	assert_int_equal(store_admin_session_use(f->st, "b1", T0 + 73001, &lim, &out),
	    STORE_NOT_FOUND);
	assert_int_equal(store_admin_session_use(f->st, "b0", T0 + 73001, &lim, &out), 0);
	assert_int_equal(store_admin_session_use(other, "b2", T0 + 80000, &lim, &out), 0);
	store_close(other);
}

/* Settings the brokers agree on: the first claim records, later ones (with
 * another value) get the recorded one; a set replaces it. */
static void
test_settings(void **state)
{
	struct fx *f = *state;
	struct store *other = fx_open(f);
	char v[STORE_SETTING_MAX];
	int first = -1;

	assert_int_equal(store_setting_get(f->st, STORE_SETTING_TOKEN_KEY, v, sizeof(v)),
	    STORE_NOT_FOUND);
	assert_int_equal(store_setting_claim(f->st, STORE_SETTING_TOKEN_KEY, "aa", T0, v,
	    sizeof(v), &first), 0);
	assert_int_equal(first, 1);
	assert_string_equal(v, "aa");
	assert_int_equal(store_setting_claim(other, STORE_SETTING_TOKEN_KEY, "bb", T0 + 1, v,
	    sizeof(v), &first), 0);
	assert_int_equal(first, 0);
	assert_string_equal(v, "aa");
	assert_int_equal(store_setting_set(other, STORE_SETTING_TOKEN_KEY, "bb", T0 + 2), 0);
	assert_int_equal(store_setting_get(f->st, STORE_SETTING_TOKEN_KEY, v, sizeof(v)), 0);
	assert_string_equal(v, "bb");
	store_close(other);
}

/* A logon storm through the store: each committed placement counts at once
 * in the cache, another store's placements too. */
static void
test_storm_spreads(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	struct store *other = NULL;
	struct store_server s;
	const char *names[] = { "a", "b", "c" };
	char u[16];

	fx_farm(f, 3, 100);
	other = fx_open(f);
	for (int i = 0; i < 30; i++) {
		struct store_place_request q = { u, u, "", "127.0.0.8", T0 + 1 + i,
		    10000, 1, NULL };

		snprintf(u, sizeof(u), "s%d", i);
		if (i % 3 == 2)	/* one in three by the other broker */
			assert_int_equal(store_placement_commit(other, &q, &r), 0);
		else
			assert_int_equal(fx_place(f, u, T0 + 1 + i, &r), 0);
	}
	store_close(other);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(store_server_get(f->st, names[i], &s), 0);
		assert_int_equal(s.pending, 10);
	}
}

static void
test_unknown_engine(void **state)
{
	char err[256] = "";

	assert_int_equal(store_engine_known("sqlite"), 1);
	assert_int_equal(store_engine_known("nope"), 0);
	assert_null(store_open_engine("nope", "/nonexistent", err, sizeof(err)));
	assert_string_equal(err, "unknown store engine 'nope'");
}

/* History: a sample counts the events of its time and every server's
 * sessions; of two stores taking the same time one records it; old
 * samples are merged into 15-minute ones, then deleted in batches. */
static void
test_history(void **state)
{
	struct fx *f = *state;
	struct store *other = fx_open(f);
	const char *ab[] = { "alice", "bob" }, *c[] = { "carol" };
	struct store_sample *sa = NULL;
	struct store_sample_server *sv = NULL;
	const int64_t m15 = STORE_HISTORY_MERGE_MS;
	int64_t now = util_now_ms(), ts = now - 10000, old;
	size_t n = 0, m = 0;
	int t1 = -1, t2 = -1, merged, deleted;

	fx_add(f, "a", 10);
	fx_add(f, "b", 10);
	fx_beat(f, "a", 1, T0, ab, 2, 1);
	fx_beat(f, "b", 1, T0, c, 1, 1);
	for (int i = 1; i <= 3; i++)
		assert_int_equal(store_event_add(f->st, "placement", "a", "u", "", "", i * 1000), 0);
	assert_int_equal(store_event_add(f->st, "reconnect", "a", "u", "", "", 4000), 0);
	assert_int_equal(store_event_add(f->st, "refusal", "", "u", "", "full", 500), 0);
	assert_int_equal(store_history_take(f->st, ts, 60000, 7, &t1), 0);
	assert_int_equal(store_history_take(other, ts, 60000, 7, &t2), 0);
	assert_int_equal(t1 + t2, 1);
	assert_int_equal(store_history_list(other, ts, 10, &sa, &n, &sv, &m), 0);
	assert_int_equal(n, 1);
	assert_int_equal(sa[0].ts, ts);
	assert_int_equal(sa[0].span, 60000);
	assert_int_equal(sa[0].logons, 3);
	assert_int_equal(sa[0].reconnects, 1);
	assert_int_equal(sa[0].refusals, 1);
	assert_int_equal(sa[0].redirect_p50_us, 2000);	/* of 1000 2000 3000 4000 */
	assert_int_equal(sa[0].redirect_p99_us, 4000);
	assert_int_equal(sa[0].headroom, 7);
	assert_int_equal(m, 2);
	assert_string_equal(sv[0].server, "a");
	assert_int_equal(sv[0].active, 2);
	assert_string_equal(sv[1].server, "b");
	assert_int_equal(sv[1].active, 1);
	free(sa);
	free(sv);

	/* two days ago: 15 one-minute samples in one bucket, headroom 14 .. 0 */
	old = now - 2 * 86400000LL;
	old -= old % m15;
	for (int k = 0; k < 15; k++)
		assert_int_equal(store_history_take(f->st, old + k * 60000, 60000, 14 - k, &t1), 0);
	assert_int_equal(store_history_prune(other, now, now - 3 * 86400000LL, 100, 50,
	    &merged, &deleted), 0);
	assert_int_equal(merged, 1);
	assert_int_equal(deleted, 0);
	assert_int_equal(store_history_list(f->st, old, 100, &sa, &n, &sv, &m), 0);
	assert_int_equal(n, 2);
	assert_int_equal(sa[0].ts, old);
	assert_int_equal(sa[0].span, m15);
	assert_int_equal(sa[0].headroom, 0);		/* the least */
	assert_int_equal(m, 4);				/* a and b of both samples */
	assert_int_equal(sv[0].span, m15);
	assert_int_equal(sv[0].active, 2);
	free(sa);
	free(sv);
	/* kept one day: the merged sample goes, in batches of one */
	assert_int_equal(store_history_prune(f->st, now, now - 86400000LL, 1, 50, &merged,
	    &deleted), 0);
	assert_int_equal(merged, 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(store_history_list(f->st, 0, 100, &sa, &n, &sv, &m), 0);
	assert_int_equal(n, 1);
	assert_int_equal(sa[0].ts, ts);
	free(sa);
	free(sv);
	store_close(other);
}

/* The id of user's (normalised) one session not ended. */
static int64_t
session_of(struct fx *f, const char *user)
{
	struct store_session_filter flt = { user, NULL, NULL, NULL };
	struct store_session *list = NULL;
	size_t n = 0;
	int64_t id;

	assert_int_equal(store_session_list(f->st, &flt, &list, &n), 0);
	assert_int_equal(n, 1);
	id = list[0].id;
	free(list);
	return id;
}

/* A beat of server "a" (alice and bob active) carrying results, on st. */
static void
beat_results(struct fx *f, struct store *st, int64_t now, const struct wire_result *w,
    size_t nw, struct store_heartbeat_result *res)
{
	struct wire_heartbeat hb;
	struct wire_session s[2];

	memset(&hb, 0, sizeof(hb));
	memset(s, 0, sizeof(s));
	snprintf(s[0].user, sizeof(s[0].user), "alice");
	snprintf(s[0].id, sizeof(s[0].id), "id-alice");
	snprintf(s[1].user, sizeof(s[1].user), "bob");
	snprintf(s[1].id, sizeof(s[1].id), "id-bob");
	hb.rdp_accepting = 1;
	hb.sessions_known = 1;
	hb.sessions = s;
	hb.nsessions = 2;
	for (size_t i = 0; i < nw; i++)
		hb.results[i] = w[i];
	hb.nresults = nw;
	assert_int_equal(store_heartbeat_apply(st, fx_id(f, "a"), &hb, now, res), 0);
}

/* 1 if the newest events hold one of kind whose detail has text. */
static int
event_has(struct fx *f, const char *kind, const char *text)
{
	struct store_event *ev = NULL;
	size_t n = 0;
	int found = 0;

	assert_int_equal(store_event_list(f->st, 0, 50, &ev, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (strcmp(ev[i].kind, kind) == 0 && strstr(ev[i].detail, text) != NULL)
			found = 1;
	free(ev);
	return found;
}

/* The command queue: queued, refused at once with the reason, claimed by
 * one heartbeat (whichever store takes it), finished by the results with
 * an event naming who asked, failed when its deadline passes. */
static void
test_commands(void **state)
{
	struct fx *f = *state;
	struct store_heartbeat_result res;
	struct store_place_result pr;
	struct store_command c, c2;
	struct wire_result w;
	struct store *other;
	const char *users[] = { "alice", "bob" };
	char reason[256];
	int64_t alice, bob;
	int failed;

	fx_add(f, "a", 10);
	fx_beat(f, "a", 1, T0, users, 2, 1);
	alice = session_of(f, "alice");
	bob = session_of(f, "bob");
	assert_int_equal(store_command_add(f->st, 9999, WIRE_LOGOFF, "t", T0, 1000, &c,
	    reason, sizeof(reason)), STORE_NOT_FOUND);
	assert_int_equal(store_command_add(f->st, alice, WIRE_LOGOFF,
	    "token ci from 127.0.0.1", T0 + 1, 30000, &c, reason, sizeof(reason)), 0);
	assert_int_equal(c.state, COMMAND_QUEUED);
	assert_string_equal(c.remote_id, "id-alice");
	assert_string_equal(c.user, "alice");
	assert_string_equal(c.server, "a");
	assert_int_equal(c.deadline, T0 + 30001);
	assert_true(event_has(f, "command_queued", "token ci from 127.0.0.1"));
	/* one at a time per session */
	assert_int_equal(store_command_add(f->st, alice, WIRE_DISCONNECT, "t", T0 + 1, 1000,
	    &c2, reason, sizeof(reason)), STORE_REFUSED);
	assert_non_null(strstr(reason, "under way"));
	/* claimed by the beat another store takes, then never again */
	assert_non_null(other = fx_open(f));
	beat_results(f, other, T0 + 2, NULL, 0, &res);
	assert_int_equal(res.ncommands, 1);
	assert_int_equal(res.commands[0].id, c.id);
	assert_int_equal(res.commands[0].kind, WIRE_LOGOFF);
	assert_string_equal(res.commands[0].session, "id-alice");
	assert_int_equal(res.commands[0].deadline_ms, 29999);
	beat_results(f, f->st, T0 + 3, NULL, 0, &res);
	assert_int_equal(res.ncommands, 0);
	assert_int_equal(store_command_get(f->st, c.id, &c2), 0);
	assert_int_equal(c2.state, COMMAND_SENT);
	/* the outcome, to whichever store: done, with its event, once */
	memset(&w, 0, sizeof(w));
	w.id = c.id;
	w.ok = 1;
	snprintf(w.detail, sizeof(w.detail), "session 7 logged off");
	beat_results(f, f->st, T0 + 4, &w, 1, &res);
	assert_int_equal(res.results, 1);
	beat_results(f, other, T0 + 5, &w, 1, &res);
	assert_int_equal(res.results, 0);
	assert_int_equal(store_command_get(other, c.id, &c2), 0);
	assert_int_equal(c2.state, COMMAND_DONE);
	assert_string_equal(c2.outcome, "session 7 logged off");
	assert_true(event_has(f, "command_done", "asked by token ci from 127.0.0.1"));
	store_close(other);

	/* never delivered by its deadline: failed with an event, not claimed */
	assert_int_equal(store_command_add(f->st, bob, WIRE_DISCONNECT, "login admin from x",
	    T0 + 10, 1000, &c, reason, sizeof(reason)), 0);
	assert_int_equal(store_command_expire(f->st, T0 + 1009, &failed), 0);
	assert_int_equal(failed, 0);
	assert_int_equal(store_command_expire(f->st, T0 + 1010, &failed), 0);
	assert_int_equal(failed, 1);
	assert_int_equal(store_command_get(f->st, c.id, &c2), 0);
	assert_int_equal(c2.state, COMMAND_FAILED);
	assert_non_null(strstr(c2.outcome, "deadline passed"));
	assert_true(event_has(f, "command_failed", "login admin from x"));
	beat_results(f, f->st, T0 + 1011, NULL, 0, &res);
	assert_int_equal(res.ncommands, 0);
	/* sent, no outcome: failed only after the grace */
	assert_int_equal(store_command_add(f->st, bob, WIRE_LOGOFF, "t", T0 + 2000, 1000, &c,
	    reason, sizeof(reason)), 0);
	beat_results(f, f->st, T0 + 2001, NULL, 0, &res);
	assert_int_equal(res.ncommands, 1);
	assert_int_equal(store_command_expire(f->st, T0 + 3001, &failed), 0);
	assert_int_equal(failed, 0);
	assert_int_equal(store_command_expire(f->st, T0 + 3000 + STORE_COMMAND_GRACE_MS,
	    &failed), 0);
	assert_int_equal(failed, 1);
	/* the agent judged it late: expired, and a late result changes nothing */
	assert_int_equal(store_command_add(f->st, bob, WIRE_LOGOFF, "t", T0 + 40000, 1000, &c,
	    reason, sizeof(reason)), 0);
	beat_results(f, f->st, T0 + 40001, NULL, 0, &res);
	w.id = c.id;
	w.ok = 0;
	w.expired = 1;
	beat_results(f, f->st, T0 + 40002, &w, 1, &res);
	assert_int_equal(store_command_get(f->st, c.id, &c2), 0);
	assert_int_equal(c2.state, COMMAND_EXPIRED);

	/* refused at once: pending, lost */
	assert_int_equal(fx_place(f, "carol", T0 + 50000, &pr), 0);
	assert_int_equal(store_command_add(f->st, pr.session_id, WIRE_LOGOFF, "t", T0 + 50001,
	    1000, &c, reason, sizeof(reason)), STORE_REFUSED);
	assert_string_equal(reason, "the session is pending");
	fx_beat(f, "a", 0, T0 + 50002, users, 2, 1);	/* RDP not accepting: down */
	assert_int_equal(store_command_add(f->st, alice, WIRE_LOGOFF, "t", T0 + 50003, 1000,
	    &c, reason, sizeof(reason)), STORE_REFUSED);
	assert_string_equal(reason, "the session is lost");
}

/* ---- the desk trail ---- */

/* alice placed (or back) from desk (NULL: unknown) at client, at now. */
static void
desk_place(struct fx *f, const char *desk, const char *client, int64_t now,
    struct store_place_result *res)
{
	struct store_place_request q = { "alice", "CORP\\alice", "CORP", client, now,
	    10000, 1, desk };

	assert_int_equal(store_placement_commit(f->st, &q, res), 0);
}

/* alice's one live session, its desk in *s. */
static void
desk_session(struct fx *f, const char *desk_filter, size_t want, struct store_session *s)
{
	struct store_session_filter flt = { "alice", NULL, NULL, desk_filter };
	struct store_session *list = NULL;
	size_t n = 0;

	assert_int_equal(store_session_list(f->st, &flt, &list, &n), 0);
	assert_int_equal(n, want);
	if (n > 0)
		*s = list[0];
	free(list);
}

/* Each placement and reconnect is a row of the user's trail (desk, address,
 * server, new or reconnect), newest first; the session shows the latest
 * desk and is found by it; odd names are stored as they came. */
static void
test_desk_trail(void **state)
{
	static const char odd[] = "x'); DROP TABLE desk_trail;--";
	struct fx *f = *state;
	struct store_place_result r1, r2;
	struct store_trail *t = NULL;
	struct store_session s;
	size_t n = 0;

	fx_farm(f, 2, 10);
	desk_place(f, "DESK-7", "127.0.0.9", T0 + 1, &r1);
	desk_session(f, NULL, 1, &s);
	assert_string_equal(s.desk, "DESK-7");
	assert_int_equal(s.desk_known, 1);
	desk_place(f, "laptop-\xc3\xa9", "127.0.0.10", T0 + 2, &r2);
	assert_int_equal(r2.reconnect, 1);
	assert_int_equal(store_trail_list(f->st, "alice", 10, &t, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(t[0].desk, "laptop-\xc3\xa9");
	assert_int_equal(t[0].reconnect, 1);
	assert_string_equal(t[0].client, "127.0.0.10");
	assert_int_equal(t[0].ts, T0 + 2);
	assert_string_equal(t[1].desk, "DESK-7");
	assert_int_equal(t[1].reconnect, 0);
	assert_string_equal(t[1].client, "127.0.0.9");
	assert_string_equal(t[1].server, r1.server);
	assert_string_equal(t[1].login, "CORP\\alice");
	assert_int_equal(t[1].session_id, r1.session_id);
	free(t);
	t = NULL;
	/* the session has its latest desk; found by it, case aside */
	desk_session(f, NULL, 1, &s);
	assert_string_equal(s.desk, "laptop-\xc3\xa9");
	assert_string_equal(s.client, "127.0.0.10");
	desk_session(f, "LAPTOP-\xc3\xa9", 1, &s);
	desk_session(f, "DESK-7", 0, &s);
	/* empty and odd names: stored as they came (prepared statements) */
	desk_place(f, "", "127.0.0.9", T0 + 3, &r2);
	desk_session(f, NULL, 1, &s);
	assert_string_equal(s.desk, "");
	assert_int_equal(s.desk_known, 1);
	desk_place(f, odd, "127.0.0.9", T0 + 4, &r2);
	desk_session(f, odd, 1, &s);
	/* a splice before MCS data: the desk unknown */
	struct store_place_request q = { "alice", NULL, NULL, "127.0.0.11", T0 + 5, 10000, 1,
	    NULL };
	assert_int_equal(store_session_reconnect(f->st, r1.session_id, &q), 0);
	desk_session(f, NULL, 1, &s);
	assert_int_equal(s.desk_known, 0);
	assert_string_equal(s.client, "127.0.0.11");
	assert_int_equal(store_trail_list(f->st, "alice", 2, &t, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(t[0].desk_known, 0);
	assert_int_equal(t[0].reconnect, 1);
	assert_string_equal(t[1].desk, odd);
	free(t);
	t = NULL;
	assert_int_equal(store_trail_list(f->st, "bob", 10, &t, &n), 0);
	assert_int_equal(n, 0);
	free(t);
	assert_int_equal(store_session_reconnect(f->st, 999999, &q), 0);	/* no row */
}

struct prune_arg {
	struct store *st;
	int64_t before;
	int pruned, r;
};

static void *
prune_main(void *arg)
{
	struct prune_arg *a = arg;

	a->r = store_trail_prune(a->st, a->before, &a->pruned);
	return NULL;
}

/* The trail past its age goes in batches; two stores pruning at once delete
 * each row once (their counts add up), and younger rows stay. */
static void
test_desk_trail_prune(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	struct store_trail *t = NULL;
	struct prune_arg a[2];
	pthread_t th[2];
	size_t n = 0;
	int old = 1234, young = 7;

	fx_farm(f, 1, 10);
	desk_place(f, "DESK-1", "127.0.0.9", T0, &r);
	for (int i = 1; i < old + young; i++) {
		struct store_place_request q = { "alice", "alice", "", "127.0.0.9",
		    T0 + i, 10000, 1, "DESK-2" };
		assert_int_equal(store_session_reconnect(f->st, r.session_id, &q), 0);
	}
	a[0].st = f->st;
	assert_non_null(a[1].st = fx_open(f));
	for (int i = 0; i < 2; i++) {
		a[i].before = T0 + old;
		a[i].pruned = -1;
		assert_int_equal(pthread_create(&th[i], NULL, prune_main, &a[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(a[i].r, 0);
	}
	assert_int_equal(a[0].pruned + a[1].pruned, old);
	store_close(a[1].st);
	assert_int_equal(store_trail_list(f->st, "alice", 10000, &t, &n), 0);
	assert_int_equal(n, young);
	assert_int_equal(t[n - 1].ts, T0 + old);
	free(t);
	assert_int_equal(store_trail_prune(f->st, T0 + old, &a[0].pruned), 0);
	assert_int_equal(a[0].pruned, 0);
}

/* Group commit: beats of several threads at once share transactions; each
 * returns once its own is committed (what it reported is in the store when
 * it returns), and a beat that fails (a token of no server, a token under
 * another server's name) fails alone, the others of its group committed. */
#define GROUP_THREADS	6
#define GROUP_BEATS	40
struct beater {
	pthread_t th;
	struct fx *f;
	int64_t id;		/* 0: beats of an unknown token, of a stolen one */
	char name[16];
	int ok, notfound, refused, wrong;
};

static void *
beater_main(void *arg)
{
	struct beater *b = arg;
	struct wire_session ws[3];
	char users[3][16], hash[65], found[WIRE_NAME_MAX];

	for (int i = 0; i < GROUP_BEATS; i++) {
		struct wire_heartbeat hb = { 0 };
		struct store_heartbeat_result res;
		struct store_session_filter flt = { NULL, b->name, NULL, NULL };
		struct store_session *list = NULL;
		size_t n = 0, want = (size_t)(i % 3) + 1;
		int r;

		memset(ws, 0, sizeof(ws));
		for (size_t k = 0; k < want; k++) {
			snprintf(users[k], sizeof(users[k]), "u%zu", k);
			snprintf(ws[k].user, sizeof(ws[k].user), "%s", users[k]);
			snprintf(ws[k].id, sizeof(ws[k].id), "%zu", k);
			ws[k].state = WIRE_ACTIVE;
		}
		hb.rdp_accepting = 1;
		hb.sessions_known = 1;
		hb.sessions = ws;
		hb.nsessions = want;
		if (b->id == 0) {
			/* g0's token (fx_add: its name's last character) under
			 * another name, or a token of no server */
			snprintf(hash, sizeof(hash), "%064zx", (size_t)(i % 2 ? '0' : 'z'));
			snprintf(hb.name, sizeof(hb.name), "imposter");
			r = store_heartbeat_token(b->f->st, hash, &hb, T0 + i, &res, found,
			    sizeof(found));
			if (r == STORE_REFUSED && strcmp(found, "g0") == 0)
				b->refused++;
			else if (r == STORE_NOT_FOUND && i % 2 == 0)
				b->notfound++;
			else
				b->wrong++;
			continue;
		}
		if (i % 2) {		/* by token, as the agent API does */
			snprintf(hash, sizeof(hash), "%064zx",
			    (size_t)b->name[strlen(b->name) - 1]);
			snprintf(hb.name, sizeof(hb.name), "%s", b->name);
			r = store_heartbeat_token(b->f->st, hash, &hb, T0 + i, &res, found,
			    sizeof(found));
			if (r == 0 && strcmp(found, b->name) != 0)
				b->wrong++;
		} else
			r = store_heartbeat_apply(b->f->st, b->id, &hb, T0 + i, &res);
		if (r != 0)
			b->wrong++;
		else {
			b->ok++;
			/* answered: committed, so read back as reported */
			if (store_session_list(b->f->st, &flt, &list, &n) != 0 || n != want)
				b->wrong++;
			free(list);
		}
	}
	return NULL;
}

static void
test_heartbeat_group_commit(void **state)
{
	struct fx *f = *state;
	struct beater b[GROUP_THREADS + 1];
	uint64_t g0, n0, groups, beats;
	int ok = 0, notfound = 0, refused = 0;

	memset(b, 0, sizeof(b));
	for (int i = 0; i < GROUP_THREADS; i++) {
		snprintf(b[i].name, sizeof(b[i].name), "g%d", i);
		fx_add(f, b[i].name, 10);
		b[i].id = fx_id(f, b[i].name);
	}
	store_heartbeat_groups(f->st, &g0, &n0);
	for (int i = 0; i <= GROUP_THREADS; i++) {
		b[i].f = f;
		assert_int_equal(pthread_create(&b[i].th, NULL, beater_main, &b[i]), 0);
	}
	for (int i = 0; i <= GROUP_THREADS; i++) {
		pthread_join(b[i].th, NULL);
		assert_int_equal(b[i].wrong, 0);
		ok += b[i].ok;
		notfound += b[i].notfound;
		refused += b[i].refused;
	}
	assert_int_equal(ok, GROUP_THREADS * GROUP_BEATS);
	assert_int_equal(notfound, GROUP_BEATS / 2);	/* each alone */
	assert_int_equal(refused, GROUP_BEATS / 2);
	store_heartbeat_groups(f->st, &groups, &beats);
	groups -= g0;
	beats -= n0;
	print_message("group commit: %llu beats in %llu transactions\n",
	    (unsigned long long)beats, (unsigned long long)groups);
	assert_true(beats == (uint64_t)(GROUP_THREADS + 1) * GROUP_BEATS);
	assert_true(groups < beats);		/* some were shared */
	for (int i = 0; i < GROUP_THREADS; i++) {
		/* the last beat of each (40th: 1 session) is the state */
		assert_int_equal(fx_count(f, b[i].name, "active"), (GROUP_BEATS - 1) % 3 + 1);
		assert_true(fx_server_in(f, b[i].name, "up"));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_heartbeat_group_commit),
		FX_TEST(test_placement_pending_then_confirmed),
		FX_TEST(test_reconcile_and_unknown_sessions),
		FX_TEST(test_down_lost_and_return),
		FX_TEST(test_restart_grace),
		FX_TEST(test_pending_expiry_and_quarantine),
		FX_TEST(test_names_and_admin),
		FX_TEST(test_event_retention),
		FX_TEST(test_event_survives_kill),
		FX_TEST(test_session_and_user_route),
		FX_TEST(test_placement_cache),
		FX_TEST(test_heartbeat_result),
		FX_TEST(test_heartbeat_cache),
		FX_TEST(test_generation_own_and_other),
		FX_TEST(test_candidates_follow_other_store),
		FX_TEST(test_heartbeat_odd_names),
		FX_TEST(test_server_and_session_states),
		FX_TEST(test_admin_tokens),
		FX_TEST(test_admin_sessions),
		FX_TEST(test_settings),
		FX_TEST(test_history),
		FX_TEST(test_storm_spreads),
		FX_TEST(test_commands),
		FX_TEST(test_desk_trail),
		FX_TEST(test_desk_trail_prune),
		cmocka_unit_test(test_unknown_engine),
	};
	log_init("test_store", LOG_ERROR);
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
