/* What only the SQLite engine (broker/state/sqlite_db.c) has: its file
 * and schema versions (migrations, a newer database refused, an upgrade of
 * a database made by the release d80947e), and commits made outside the
 * store (the sqlite3 shell) seen through PRAGMA data_version (by the
 * placement cache and the heartbeat cache). The store
 * contract for every engine is test_store.c. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/state/sqlite_db.h"
#include "broker/state/store.h"
#include "tests/unit/store_fx.h"

/* Runs sql on f's file with the sqlite3 shell (another connection). */
static void
shell(struct fx *f, const char *sql)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd), "sqlite3 %s \"%s\"", f->path, sql);
	assert_int_equal(system(cmd), 0);
}

static void
test_migrate_and_reopen(void **state)
{
	struct fx *f = *state;
	char err[256];
	struct store *st;

	fx_add(f, "a", 10);
	store_close(f->st);
	f->st = store_open(f->path, err, sizeof(err));	/* no second migration */
	assert_non_null(f->st);
	assert_int_equal(fx_id(f, "a") > 0, 1);
	store_close(f->st);
	shell(f, "PRAGMA user_version = 99");
	st = store_open(f->path, err, sizeof(err));
	assert_null(st);
	assert_non_null(strstr(err, "newer than this tsbroker"));
	shell(f, "PRAGMA user_version = 1");
	f->st = store_open(f->path, err, sizeof(err));
	assert_non_null(f->st);
}

/* A database made by the release d80947e (tests/unit/fixtures/), opened by
 * this store: every row reads back, with its states as the enums. */
static void
test_upgrade_from_release(void **state)
{
	struct fx *f = *state;
	struct store_server *sv = NULL;
	struct store_session *ss = NULL;
	struct store_event *ev = NULL;
	struct store_admin_token *tk = NULL;
	struct store_session_filter all = { NULL, NULL, NULL, NULL };
	struct store_place_result pr;
	struct store_route rt;
	char cmd[1200], hash[200], name[WIRE_NAME_MAX], err[256];
	const enum session_state ended = SESSION_ENDED;
	size_t n = 0;
	int64_t id;

	store_close(f->st);
	snprintf(cmd, sizeof(cmd), "rm -f %s && sqlite3 %s < tests/unit/fixtures/"
	    "release-d80947e.sql", f->path, f->path);
	assert_int_equal(system(cmd), 0);
	f->st = store_open(f->path, err, sizeof(err));
	assert_non_null(f->st);

	assert_int_equal(store_server_list(f->st, &sv, &n), 0);
	assert_int_equal(n, 4);
	assert_string_equal(sv[0].name, "ts1");
	assert_int_equal(sv[0].state, SERVER_UP);
	assert_int_equal(sv[0].admin_state, ADMIN_ENABLED);
	assert_int_equal(sv[0].active, 1);
	assert_int_equal(sv[0].disconnected, 1);
	assert_int_equal(sv[0].pending, 1);
	assert_int_equal(sv[0].ncpu, 4);
	assert_int_equal(sv[0].mem_total_kb, 8000000);
	assert_int_equal(sv[1].state, SERVER_UP);
	assert_int_equal(sv[1].admin_state, ADMIN_DRAINING);
	assert_int_equal(sv[2].state, SERVER_DOWN);
	assert_string_equal(sv[2].state_reason, "no heartbeat for 16 s");
	assert_int_equal(sv[2].quarantined_until, T0 + 90000);
	assert_int_equal(sv[2].lost, 1);
	assert_int_equal(sv[3].state, SERVER_UNKNOWN);
	assert_int_equal(sv[3].max_sessions, 7);
	free(sv);

	assert_int_equal(store_session_list(f->st, &all, &ss, &n), 0);
	assert_int_equal(n, 4);		/* pending, active, disconnected, lost */
	assert_string_equal(ss[0].user, "erin");	/* the newest first */
	assert_int_equal(ss[0].state, SESSION_PENDING);
	assert_string_equal(ss[0].login, "CORP\\Erin");
	assert_string_equal(ss[0].client, "192.0.2.7");
	assert_int_equal(ss[0].expires, T0 + 22000 + 120000);
	assert_int_equal(ss[1].state, SESSION_LOST);
	assert_string_equal(ss[1].user, "dave");
	free(ss);
	all.state = &ended;
	assert_int_equal(store_session_list(f->st, &all, &ss, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ss[0].user, "carol");
	free(ss);
	assert_int_equal(fx_count(f, "ts1", "active"), 1);
	assert_int_equal(fx_count(f, "ts1", "disconnected"), 1);

	assert_int_equal(store_session_route(f->st, 5, T0 + 23000, &rt), 0);
	assert_int_equal(rt.session_state, SESSION_PENDING);
	assert_int_equal(rt.server_state, SERVER_UP);
	assert_int_equal(rt.live, 1);
	assert_int_equal(store_event_list(f->st, 0, 100, &ev, &n), 0);
	assert_int_equal(n, 13);
	assert_string_equal(ev[0].kind, "test");
	assert_int_equal(ev[0].duration_us, 1234);
	free(ev);
	assert_int_equal(store_admin_password_get(f->st, hash, sizeof(hash)), 0);
	assert_string_equal(hash, "$scrypt$ln=15,r=8,p=1$c2FsdA$aGFzaA");
	assert_int_equal(store_admin_token_list(f->st, &tk, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(tk[0].name, "ci");
	free(tk);
	assert_int_equal(store_server_auth(f->st, "2222222222222222222222222222222222222222"
	    "222222222222222222222222", &id, name, sizeof(name)), 0);
	assert_string_equal(name, "ts2");
	/* and it works on: alice reconnects (disconnected bob first on ts1) */
	assert_int_equal(fx_place(f, "bob", T0 + 30000, &pr), 0);
	assert_int_equal(pr.reconnect, 1);
	assert_string_equal(pr.server, "ts1");
}

/* A commit by another connection (the sqlite3 shell, not a store) is seen
 * by the load cache through PRAGMA data_version; this store's own commits
 * keep the cache (the generation counts them too). */
static void
test_outside_commit_seen(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;

	fx_farm(f, 2, 10);
	assert_int_equal(fx_place(f, "u1", T0 + 1, &r), 0);
	assert_string_equal(r.server, "a");
	assert_int_equal(fx_place(f, "u2", T0 + 2, &r), 0);
	assert_string_equal(r.server, "b");
	shell(f, "UPDATE servers SET admin_state = 'draining' WHERE name = 'a'");
	for (int i = 0; i < 3; i++) {
		char u[8];

		snprintf(u, sizeof(u), "v%d", i);
		assert_int_equal(fx_place(f, u, T0 + 3 + i, &r), 0);
		assert_string_equal(r.server, "b");
	}
	shell(f, "UPDATE servers SET admin_state = 'enabled' WHERE name = 'a'");
	assert_int_equal(fx_place(f, "w", T0 + 10, &r), 0);
	assert_string_equal(r.server, "a");
}

/* A session ended by the sqlite3 shell: the next beat that reports it is
 * not taken as unchanged (the heartbeat cache sees the commit). */
static void
test_outside_commit_heartbeat(void **state)
{
	struct fx *f = *state;
	const char *users[] = { "alice", "bob" };

	fx_farm(f, 1, 10);
	for (int i = 0; i < 3; i++)
		fx_beat(f, "a", 1, T0 + 1 + i, users, 2, 1);
	assert_int_equal(fx_count(f, "a", "active"), 2);
	shell(f, "UPDATE sessions SET state = 'ended' WHERE user = 'alice'");
	assert_int_equal(fx_count(f, "a", "active"), 1);
	fx_beat(f, "a", 1, T0 + 5, users, 2, 1);
	assert_int_equal(fx_count(f, "a", "active"), 2);
}

/* The shell's one-number answer to sql on f's file. */
static long
shell_count(struct fx *f, const char *sql)
{
	char cmd[2048], out[64] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd), "sqlite3 %s \"%s\"", f->path, sql);
	assert_non_null(p = popen(cmd, "r"));
	assert_non_null(fgets(out, sizeof(out), p));
	assert_int_equal(pclose(p), 0);
	return atol(out);
}

/* The WAL's writes gathered by sqlite_db.c's VFS: two stores on one file
 * committing in turn, with refused and failed operations between, each
 * commit seen by another process (the shell) as soon as it returns; after
 * close, the file is whole and holds every placement and its trail row
 * with the server it was placed on. */
static void
test_wal_gathered(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	struct store *other = fx_open(f);
	struct store_server dup = { .port = 3389, .weight = 100, .max_sessions = 10 };
	char u[32], sql[256];

	fx_farm(f, 4, 1000);
	util_strlcpy(dup.name, "a", sizeof(dup.name));
	util_strlcpy(dup.address, "10.0.9.9", sizeof(dup.address));
	for (int i = 0; i < 120; i++) {
		struct store_place_request q = { u, u, "", "127.0.0.8", T0 + 1 + i, 10000, 1,
		    NULL };

		snprintf(u, sizeof(u), "w%d", i);
		if (i % 2)
			assert_int_equal(store_placement_commit(other, &q, &r), 0);
		else
			assert_int_equal(fx_place(f, u, T0 + 1 + i, &r), 0);
		if (i % 7 == 3)	/* rolled back: the name is taken */
			assert_int_equal(store_server_add(i % 2 ? other : f->st, &dup,
			    "ffff", T0 + 1 + i), STORE_EXISTS);
		if (i % 20 == 0) {
			snprintf(sql, sizeof(sql), "SELECT count(*) FROM sessions s JOIN "
			    "servers v ON v.id = s.server_id WHERE s.user = '%s' AND v.name = "
			    "'%s'", u, r.server);
			assert_int_equal(shell_count(f, sql), 1);
		}
	}
	store_close(other);
	store_close(f->st);
	f->st = NULL;
	assert_int_equal(shell_count(f, "SELECT count(*) FROM sessions WHERE user LIKE 'w%'"),
	    120);
	assert_int_equal(shell_count(f, "SELECT count(*) FROM desk_trail t JOIN sessions s ON "
	    "s.id = t.session_id JOIN servers v ON v.id = s.server_id WHERE t.server = v.name "
	    "AND t.user = s.user AND t.login = s.login AND t.reconnect = 0"), 120);
	assert_int_equal(shell_count(f, "SELECT count(*) FROM pragma_integrity_check WHERE "
	    "integrity_check = 'ok'"), 1);
	f->st = fx_open(f);
}

/* Events commit without a sync of their own (STORE_TX_LAZY: a redirect's
 * event would double its fsyncs); the next placement syncs again, so the
 * level is back to FULL after them. */
static void
test_event_commit_lazy(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;
	uint64_t before;

	fx_farm(f, 2, 10);
	before = sqldb_syncs();
	for (int i = 0; i < 5; i++)
		assert_int_equal(store_event_add(f->st, "test", "a", "u", "", "", 0), 0);
	assert_int_equal(sqldb_syncs(), before);
	assert_int_equal(fx_place(f, "u", T0 + 1, &r), 0);
	assert_true(sqldb_syncs() > before);
	/* and a write after them syncs its own commit */
	before = sqldb_syncs();
	fx_add(f, "z", 10);
	assert_true(sqldb_syncs() > before);
}

/* Placements waiting together share one sync (group commit), and none
 * returns before a sync covering it: the first sync is held until all
 * eight placements have committed (seen from another connection). */
#define GROUP_USERS 8
struct group_fx {
	struct fx *f;
	int first_seen;			/* the first sync's hook ran */
	int returned_then;		/* placements returned when it ran */
	int returned;			/* atomic */
	int rc[GROUP_USERS];
};
static struct group_fx group;

static void
group_hold(void *arg)
{
	struct group_fx *g = arg;
	char cmd[700], out[32] = "";

	if (g->first_seen++)
		return;
	snprintf(cmd, sizeof(cmd), "sqlite3 %s 'SELECT count(*) FROM sessions'", g->f->path);
	for (int i = 0; i < 500 && atoi(out) < GROUP_USERS; i++) {
		FILE *p = popen(cmd, "r");

		if (p == NULL || fgets(out, sizeof(out), p) == NULL)
			out[0] = '\0';
		if (p != NULL)
			pclose(p);
	}
	g->returned_then = __atomic_load_n(&g->returned, __ATOMIC_ACQUIRE);
}

static void *
group_place(void *arg)
{
	int i = (int)(intptr_t)arg;
	char user[16];
	struct store_place_result r;

	snprintf(user, sizeof(user), "g%d", i);
	group.rc[i] = fx_place(group.f, user, T0 + 1, &r);
	__atomic_add_fetch(&group.returned, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void
test_placements_share_a_sync(void **state)
{
	struct fx *f = *state;
	pthread_t th[GROUP_USERS];
	uint64_t before;

	fx_farm(f, 2, 100);
	memset(&group, 0, sizeof(group));
	group.f = f;
	sqldb_test_sync_hook(group_hold, &group);
	before = sqldb_syncs();
	for (int i = 0; i < GROUP_USERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, group_place, (void *)(intptr_t)i), 0);
	for (int i = 0; i < GROUP_USERS; i++)
		pthread_join(th[i], NULL);
	sqldb_test_sync_hook(NULL, NULL);
	for (int i = 0; i < GROUP_USERS; i++)
		assert_int_equal(group.rc[i], 0);
	assert_int_equal(fx_count(f, NULL, "pending"), GROUP_USERS);
	assert_int_equal(group.returned_then, 0);
	/* the held one, then one for the seven behind it */
	assert_int_equal(sqldb_syncs() - before, 2);
}

/* A placement whose sync fails is not told (STORE_FULL); a reconnect's is
 * still served, unrecorded; the next sync serves again. */
static void
test_placement_sync_failure(void **state)
{
	struct fx *f = *state;
	struct store_place_result r;

	fx_farm(f, 2, 10);
	assert_int_equal(fx_place(f, "u", T0 + 1, &r), 0);
	assert_int_equal(r.unrecorded, 0);
	sqldb_test_sync_fail(1);
	assert_int_equal(fx_place(f, "v", T0 + 2, &r), STORE_FULL);
	sqldb_test_sync_fail(1);
	assert_int_equal(fx_place(f, "u", T0 + 3, &r), 0);
	assert_int_equal(r.reconnect, 1);
	assert_int_equal(r.unrecorded, 1);
	assert_int_equal(fx_place(f, "w", T0 + 4, &r), 0);
	assert_int_equal(r.unrecorded, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_migrate_and_reopen),
		FX_TEST(test_placements_share_a_sync),
		FX_TEST(test_placement_sync_failure),
		FX_TEST(test_upgrade_from_release),
		FX_TEST(test_outside_commit_seen),
		FX_TEST(test_outside_commit_heartbeat),
		FX_TEST(test_wal_gathered),
		FX_TEST(test_event_commit_lazy),
	};
	log_init("test_store_sqlite", LOG_ERROR);
	return cmocka_run_group_tests_name("store_sqlite", tests, NULL, NULL);
}
