/* Unit tests for broker/state/store.c and broker/state/health.c on real SQLite files:
 * migrations, placement commits, heartbeat reconciliation, pending expiry,
 * black-hole quarantine, server down and return. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/core/conf.h"
#include "broker/state/health.h"
#include "broker/state/placement.h"
#include "broker/state/store.h"

#define T0 INT64_C(1700000000000)

struct fx {
	char dir[64];
	char path[96];
	struct store *st;
	struct conf c;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/tsb-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
	f->st = store_open(f->path, err, sizeof(err));
	assert_non_null(f->st);
	conf_defaults(&f->c);
	f->c.pending_ttl = 10;
	f->c.down_after = 15;
	f->c.quarantine_after = 3;
	f->c.quarantine_time = 60;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	store_close(f->st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void
add(struct fx *f, const char *name, int max)
{
	struct store_server s = { 0 };
	char hash[65];

	snprintf(s.name, sizeof(s.name), "%s", name);
	snprintf(s.address, sizeof(s.address), "10.0.0.%zu", strlen(name));
	snprintf(hash, sizeof(hash), "%064zx", (size_t)name[strlen(name) - 1]);
	s.port = 3389;
	s.weight = 100;
	s.max_sessions = max;
	assert_int_equal(store_server_add(f->st, &s, hash, T0), 0);
}

static int64_t
id_of(struct fx *f, const char *name)
{
	struct store_server s;
	assert_int_equal(store_server_get(f->st, name, &s), 0);
	return s.id;
}

/* A heartbeat of `name` with the given users (all active, ids = user). */
static void
beat(struct fx *f, const char *name, int accepting, int64_t now, const char **users,
    size_t n, int known)
{
	struct wire_heartbeat hb = { 0 };
	struct store_heartbeat_result res;
	struct wire_session s[16];

	snprintf(hb.name, sizeof(hb.name), "%s", name);
	hb.rdp_port = 3389;
	hb.rdp_accepting = accepting;
	hb.ncpu = 2;
	hb.sessions_known = known;
	for (size_t i = 0; i < n; i++) {
		memset(&s[i], 0, sizeof(s[i]));
		snprintf(s[i].user, sizeof(s[i].user), "%s", users[i]);
		snprintf(s[i].id, sizeof(s[i].id), "id-%s", users[i]);
		s[i].state = WIRE_ACTIVE;
	}
	hb.sessions = s;
	hb.nsessions = n;
	assert_int_equal(store_heartbeat_apply(f->st, id_of(f, name), &hb, now, &res), 0);
}

static int
place(struct fx *f, const char *user, int64_t now, struct store_place_result *res)
{
	struct store_place_request r = { NULL, user, "", "127.0.0.9", now, 10000, 1 };
	char norm[64];

	assert_int_equal(placement_user_normalise(user, norm, sizeof(norm)), 0);
	r.user = norm;
	return store_placement_commit(f->st, &r, res);
}

static int
count(struct fx *f, const char *server, const char *state)
{
	struct store_session_filter flt = { NULL, server, state };
	struct store_session *list = NULL;
	size_t n = 0;

	assert_int_equal(store_session_list(f->st, &flt, &list, &n), 0);
	free(list);
	return (int)n;
}

/* 1 if server name is in state st, else 0. */
static int
count_state(struct fx *f, const char *name, const char *state)
{
	struct store_server s;

	assert_int_equal(store_server_get(f->st, name, &s), 0);
	return strcmp(s.state, state) == 0;
}

static void
test_migrate_and_reopen(void **state)
{
	struct fx *f = *state;
	char err[256], cmd[256];
	struct store *st;

	add(f, "a", 10);
	store_close(f->st);
	f->st = store_open(f->path, err, sizeof(err));	/* no second migration */
	assert_non_null(f->st);
	assert_int_equal(id_of(f, "a") > 0, 1);
	store_close(f->st);
	snprintf(cmd, sizeof(cmd), "sqlite3 %s 'PRAGMA user_version = 99'", f->path);
	assert_int_equal(system(cmd), 0);
	st = store_open(f->path, err, sizeof(err));
	assert_null(st);
	assert_non_null(strstr(err, "newer than this tsbroker"));
	snprintf(cmd, sizeof(cmd), "sqlite3 %s 'PRAGMA user_version = 1'", f->path);
	assert_int_equal(system(cmd), 0);
	f->st = store_open(f->path, err, sizeof(err));
	assert_non_null(f->st);
}

static void
test_placement_pending_then_confirmed(void **state)
{
	struct fx *f = *state;
	struct store_place_result r1, r2;
	const char *alice[] = { "alice" };

	add(f, "a", 10);
	add(f, "b", 10);
	assert_int_equal(place(f, "alice", T0, &r1), STORE_REFUSED);	/* none up */
	assert_string_equal(r1.reason, "no server is available");
	beat(f, "a", 1, T0, NULL, 0, 1);
	beat(f, "b", 1, T0, NULL, 0, 1);
	assert_int_equal(place(f, "alice", T0 + 1, &r1), 0);
	assert_string_equal(r1.server, "a");
	assert_int_equal(r1.reconnect, 0);
	/* the pending placement counts as load and brings alice back */
	assert_int_equal(place(f, "bob", T0 + 2, &r2), 0);
	assert_string_equal(r2.server, "b");
	assert_int_equal(place(f, "alice", T0 + 3, &r2), 0);
	assert_string_equal(r2.server, "a");
	assert_int_equal(r2.reconnect, 1);
	assert_int_equal(r2.session_id, r1.session_id);
	assert_int_equal(count(f, "a", "pending"), 1);
	/* the agent's snapshot confirms it */
	beat(f, "a", 1, T0 + 4, alice, 1, 1);
	assert_int_equal(count(f, "a", "pending"), 0);
	assert_int_equal(count(f, "a", "active"), 1);
	assert_int_equal(place(f, "Alice", T0 + 5, &r2), 0);
	assert_int_equal(r2.session_id, r1.session_id);
}

static void
test_reconcile_and_unknown_sessions(void **state)
{
	struct fx *f = *state;
	const char *two[] = { "alice", "bob" }, *one[] = { "bob" };

	add(f, "a", 10);
	beat(f, "a", 1, T0, two, 2, 1);
	assert_int_equal(count(f, "a", "active"), 2);
	/* unknown: nothing changes */
	beat(f, "a", 1, T0 + 1, NULL, 0, 0);
	assert_int_equal(count(f, "a", "active"), 2);
	/* vanished: ended */
	beat(f, "a", 1, T0 + 2, one, 1, 1);
	assert_int_equal(count(f, "a", "active"), 1);
	assert_int_equal(count(f, "a", "ended"), 1);
	/* an empty but known list ends them all */
	beat(f, "a", 1, T0 + 3, NULL, 0, 1);
	assert_int_equal(count(f, "a", NULL), 0);
}

static void
test_down_lost_and_return(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	const char *users[] = { "alice", "bob" }, *alice[] = { "alice" };

	add(f, "a", 10);
	add(f, "b", 10);
	beat(f, "a", 1, T0, users, 2, 1);
	beat(f, "b", 1, T0, NULL, 0, 1);
	/* b keeps beating, a goes silent for longer than down_after */
	beat(f, "b", 1, T0 + 16000, NULL, 0, 1);
	assert_int_equal(health_sweep(f->st, &f->c, T0 + 16000, 0), 0);
	assert_int_equal(count(f, "a", "lost"), 2);
	assert_int_equal(place(f, "alice", T0 + 16001, &r), 0);
	assert_string_equal(r.server, "b");	/* to the survivor */
	/* a returns holding only alice's session: restored; bob's has ended */
	beat(f, "a", 1, T0 + 17000, alice, 1, 1);
	assert_int_equal(count(f, "a", "active"), 1);
	assert_int_equal(count(f, "a", "lost"), 0);
	/* an agent whose RDP port is not accepting takes its server down */
	beat(f, "a", 0, T0 + 18000, alice, 1, 1);
	assert_int_equal(count(f, "a", "lost"), 1);
}

static void
test_restart_grace(void **state)
{
	struct fx *f = *state;

	add(f, "a", 10);
	beat(f, "a", 1, T0, NULL, 0, 1);
	/* the broker was down from T0 + 1 s to T0 + 60 s: a gets down_after
	 * from the restart before it counts as down */
	assert_int_equal(health_sweep(f->st, &f->c, T0 + 61000, T0 + 60000), 0);
	assert_int_equal(count_state(f, "a", "up"), 1);
	assert_int_equal(health_sweep(f->st, &f->c, T0 + 75001, T0 + 60000), 0);
	assert_int_equal(count_state(f, "a", "up"), 0);
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

	add(f, "a", 100);
	add(f, "b", 100);
	beat(f, "a", 1, T0, NULL, 0, 1);
	beat(f, "b", 1, T0, NULL, 0, 1);
	/* 6 users: 3 to a (a black hole), 3 to b which confirms them */
	for (int i = 0; i < 6; i++) {
		snprintf(user, sizeof(user), "u%d", i);
		assert_int_equal(place(f, user, T0 + 1, &r), 0);
		if (strcmp(r.server, "b") == 0) {
			ok[on_b] = strdup(user);
			on_b++;
		}
	}
	assert_int_equal(on_b, 3);
	beat(f, "b", 1, T0 + 2000, ok, (size_t)on_b, 1);
	beat(f, "a", 1, T0 + 2000, NULL, 0, 1);
	beat(f, "a", 1, T0 + 11000, NULL, 0, 1);
	beat(f, "b", 1, T0 + 11000, ok, (size_t)on_b, 1);
	assert_int_equal(health_sweep(f->st, &f->c, T0 + 11001, 0), 0);
	assert_int_equal(count(f, "a", "pending"), 0);
	assert_int_equal(store_server_get(f->st, "a", &s), 0);
	assert_true(s.quarantined_until > T0 + 11001);
	assert_int_equal(store_server_get(f->st, "b", &s), 0);
	assert_int_equal(s.quarantined_until, 0);
	/* new users avoid the quarantined server */
	assert_int_equal(place(f, "newbie", T0 + 11002, &r), 0);
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

	add(f, "a", 10);
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

	add(f, "a", 10);
	add(f, "b", 10);
	beat(f, "a", 1, T0, NULL, 0, 1);
	beat(f, "b", 1, T0, NULL, 0, 1);
	assert_int_equal(place(f, "CORP\\Alice", T0 + 1, &res), 0);
	assert_int_equal(res.server_id, id_of(f, res.server));

	assert_int_equal(store_session_route(f->st, res.session_id, T0 + 2, &rt), 0);
	assert_int_equal(rt.session_id, res.session_id);
	assert_string_equal(rt.user, "alice");
	assert_string_equal(rt.login, "CORP\\Alice");
	assert_string_equal(rt.session_state, "pending");
	assert_string_equal(rt.server, res.server);
	assert_string_equal(rt.server_state, "up");
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
	assert_int_equal(count(f, NULL, "pending"), 1);	/* no placement for bob */
	beat(f, res.server, 1, T0 + 3, alice, 1, 1);	/* confirmed: active */
	assert_int_equal(store_user_route(f->st, "alice", T0 + 4, &rt), 0);
	assert_string_equal(rt.session_state, "active");

	/* its server goes down: the token still names it, but it is not live,
	 * and the user has no live session any more */
	assert_int_equal(store_server_down(f->st, res.server_id, "test", T0 + 5), 0);
	assert_int_equal(store_session_route(f->st, res.session_id, T0 + 6, &rt), 0);
	assert_string_equal(rt.session_state, "lost");
	assert_string_equal(rt.server_state, "down");
	assert_int_equal(rt.live, 0);
	assert_int_equal(store_user_route(f->st, "alice", T0 + 6, &rt), STORE_NOT_FOUND);
	/* placing her again goes to the survivor */
	assert_int_equal(place(f, "alice", T0 + 7, &res), 0);
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
	char err[256];

	add(f, "a", 10);
	add(f, "b", 10);
	beat(f, "a", 1, T0, NULL, 0, 1);
	beat(f, "b", 1, T0, NULL, 0, 1);
	assert_int_equal(place(f, "u1", T0 + 1, &r), 0);
	assert_string_equal(r.server, "a");
	/* b drained by another process: the cache sees its commit */
	assert_non_null(other = store_open(f->path, err, sizeof(err)));
	assert_int_equal(store_server_drain(other, "b", 1, T0 + 2), 0);
	assert_int_equal(place(f, "u2", T0 + 3, &r), 0);
	assert_string_equal(r.server, "a");
	assert_int_equal(store_server_drain(other, "b", 0, T0 + 4), 0);
	/* a's two pending placements expire (10 s): a counts 0 again, ties to a */
	assert_int_equal(place(f, "u3", T0 + 10000 + 4, &r), 0);
	assert_string_equal(r.server, "a");
	assert_int_equal(place(f, "u4", T0 + 10000 + 5, &r), 0);
	assert_string_equal(r.server, "b");
	/* a server added and brought up elsewhere, then one removed */
	snprintf(c.name, sizeof(c.name), "c");
	snprintf(c.address, sizeof(c.address), "10.0.0.3");
	c.port = 3389;
	c.weight = 1000;
	c.max_sessions = 10;
	assert_int_equal(store_server_add(other, &c, "cc", T0 + 10010), 0);
	store_close(other);
	beat(f, "c", 1, T0 + 10011, NULL, 0, 1);
	assert_int_equal(place(f, "u5", T0 + 10012, &r), 0);
	assert_string_equal(r.server, "c");
	assert_non_null(other = store_open(f->path, err, sizeof(err)));
	assert_int_equal(store_server_remove(other, "c", T0 + 10013), 0);
	store_close(other);
	for (int i = 0; i < 4; i++) {
		char u[8];

		snprintf(u, sizeof(u), "v%d", i);
		assert_int_equal(place(f, u, T0 + 10014 + i, &r), 0);
		assert_string_not_equal(r.server, "c");
	}
	/* u1..u4 and v0..v3 (the expired ones stay pending until expired) */
	assert_int_equal(count(f, "a", "pending") + count(f, "b", "pending"), 8);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_migrate_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_placement_pending_then_confirmed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconcile_and_unknown_sessions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_down_lost_and_return, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_grace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pending_expiry_and_quarantine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_and_admin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_retention, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_and_user_route, setup, teardown),
		cmocka_unit_test_setup_teardown(test_placement_cache, setup, teardown),
	};
	log_init("test_store", LOG_ERROR);
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
