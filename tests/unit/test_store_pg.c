/* Several brokers at once on one store (run on PostgreSQL by
 * tests/pg/unit-pg.sh; on SQLite by default, whose write lock serialises
 * the same): two stores on the same location place a storm of users from
 * two threads, each user by both at once. Every user gets exactly one
 * session, the servers' shares differ by at most one and none goes over
 * max_sessions, and each store's load cache sees the other's commits;
 * two stores placing their own users on equal servers never fail one;
 * background sweeps by both land once; a killed backend is survived. The
 * fault handling (PostgreSQL only, on the throwaway cluster, with a second
 * connection by psql and pg_db.c's test hook): a real deadlock retried
 * whole, a COMMIT lost both ways (never committed: run again; committed:
 * done, not twice), a commit waiting for a missing synchronous standby
 * (cancelled past commit_timeout, or its backend terminated: not durable,
 * STORE_UNAVAILABLE), and an outage (no connection allowed): fail fast, a
 * known user still answered, recovered by store_recover. Those run on
 * engine postgresql only; a helper variable missing there fails them
 * under TSBROKER_NO_SKIP=1. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "broker/common/log.h"
#include "broker/state/store.h"
#include "broker/common/util.h"
#include "broker/state/pg_db.h"
#include "tests/unit/store_fx.h"

#define USERS 120

struct broker {
	struct store *st;
	int errors;
};

static void *
storm(void *arg)
{
	struct broker *b = arg;

	for (int i = 0; i < USERS; i++) {
		struct store_place_result res;
		char u[16];
		struct store_place_request q = { u, u, "", "127.0.0.7", T0 + 1 + i, 600000,
		    1, NULL };

		snprintf(u, sizeof(u), "u%d", i);
		if (store_placement_commit(b->st, &q, &res) != 0)
			b->errors++;
	}
	return NULL;
}

/* Two brokers place the same 120 users at once on 4 servers of 30 and 31
 * seats: one session each, 30 on every server. */
static void
test_two_brokers_storm(void **state)
{
	struct fx *f = *state;
	struct broker b[2] = { { fx_open(f), 0 }, { fx_open(f), 0 } };
	const char *names[] = { "a", "b", "c", "d" };
	pthread_t t[2];
	char u[16];

	fx_farm(f, 4, 31);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, storm, &b[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(b[0].errors + b[1].errors, 0);
	for (int i = 0; i < USERS; i++) {
		struct store_session_filter flt = { u, NULL, NULL, NULL };
		struct store_session *list = NULL;
		size_t n = 0;

		snprintf(u, sizeof(u), "u%d", i);
		assert_int_equal(store_session_list(f->st, &flt, &list, &n), 0);
		free(list);
		assert_int_equal(n, 1);
	}
	for (int i = 0; i < 4; i++) {
		int c = fx_count(f, names[i], "pending");

		assert_true(c >= USERS / 4 - 1 && c <= USERS / 4 + 1);
	}
	/* full now but one seat each: the next four go one to each server,
	 * whichever store places them (the caches follow each other) */
	for (int i = 0; i < 4; i++) {
		struct store_place_result res;
		struct store_place_request q = { u, u, "", "127.0.0.7", T0 + 500, 600000, 1,
		    NULL };

		snprintf(u, sizeof(u), "late%d", i);
		assert_int_equal(store_placement_commit(b[i % 2].st, &q, &res), 0);
	}
	for (int i = 0; i < 4; i++)
		assert_true(fx_count(f, names[i], "pending") <= 31);
	{
		struct store_place_result res;
		struct store_place_request q = { "x", "x", "", "127.0.0.7", T0 + 600, 600000,
		    1, NULL };

		assert_int_equal(store_placement_commit(b[1].st, &q, &res), STORE_REFUSED);
	}
	store_close(b[0].st);
	store_close(b[1].st);
}

/* Each broker its own users (prefix), placed as fast as it can. */
struct placer {
	struct store *st;
	char prefix;
	int errors;
};

#define EQ_SERVERS	20
#define EQ_USERS	200	/* per broker */

static void *
place_own(void *arg)
{
	struct placer *p = arg;

	for (int i = 0; i < EQ_USERS; i++) {
		struct store_place_result res;
		char u[16];
		struct store_place_request q = { u, u, "", "127.0.0.7", T0 + 1 + i, 600000,
		    1, NULL };

		snprintf(u, sizeof(u), "%c%d", p->prefix, i);
		if (store_placement_commit(p->st, &q, &res) != 0)
			p->errors++;
	}
	return NULL;
}

/* Two brokers place different users at once on a farm where every server
 * is equally loaded (the case where both kept locking different servers
 * and gave up: "no stable choice"): no placement fails, and the servers'
 * shares differ by at most two (each decision sees every commit but the
 * other broker's one in flight). */
static void
test_two_brokers_equal_farm(void **state)
{
	struct fx *f = *state;
	struct placer p[2] = { { fx_open(f), 'x', 0 }, { fx_open(f), 'y', 0 } };
	pthread_t t[2];
	int lo = 1 << 30, hi = 0, sum = 0;

	fx_farm(f, EQ_SERVERS, 1000);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, place_own, &p[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(p[0].errors, 0);
	assert_int_equal(p[1].errors, 0);
	for (int i = 0; i < EQ_SERVERS; i++) {
		char name[2] = { (char)('a' + i), '\0' };
		int c = fx_count(f, name, "pending");

		lo = c < lo ? c : lo;
		hi = c > hi ? c : hi;
		sum += c;
	}
	print_message("two brokers, %d equal servers: %d placed, %d..%d a server\n",
	    EQ_SERVERS, sum, lo, hi);
	assert_int_equal(sum, 2 * EQ_USERS);
	assert_true(hi - lo <= 2);
	store_close(p[0].st);
	store_close(p[1].st);
}

struct sweep {
	struct store *st;
	int64_t now;
	int expired, r;
};

static void *
expire(void *arg)
{
	struct sweep *w = arg;

	w->r = store_pending_expire(w->st, w->now, &w->expired);
	return NULL;
}

static int
events_of(struct fx *f, const char *kind)
{
	struct store_event *ev = NULL;
	size_t n = 0;
	int c = 0;

	assert_int_equal(store_event_list(f->st, 0, 100000, &ev, &n), 0);
	for (size_t i = 0; i < n; i++)
		c += strcmp(ev[i].kind, kind) == 0;
	free(ev);
	return c;
}

/* Two brokers' sweeps at once: each expired placement is ended, counted
 * unconfirmed and reported once; a quarantine by both is one. */
static void
test_background_once(void **state)
{
	struct fx *f = *state;
	struct sweep w[2] = { { fx_open(f), T0 + 60000, 0, 0 },
		{ fx_open(f), T0 + 60000, 0, 0 } };
	struct store_place_result res;
	struct store_server s;
	pthread_t t[2];
	int changed[2] = { -1, -1 };
	char u[16];

	fx_farm(f, 2, 100);
	for (int i = 0; i < 40; i++) {
		snprintf(u, sizeof(u), "p%d", i);
		assert_int_equal(fx_place(f, u, T0 + 1, &res), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, expire, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(w[0].r, 0);
	assert_int_equal(w[1].r, 0);
	assert_int_equal(w[0].expired + w[1].expired, 40);
	assert_int_equal(events_of(f, "pending_expired"), 40);
	assert_int_equal(store_server_get(f->st, "a", &s), 0);
	assert_int_equal(s.unconfirmed, 20);
	assert_int_equal(s.pending, 0);
	assert_int_equal(store_server_quarantine(w[0].st, s.id, T0 + 120000, "test",
	    T0 + 60001, &changed[0]), 0);
	assert_int_equal(store_server_quarantine(w[1].st, s.id, T0 + 120001, "test",
	    T0 + 60002, &changed[1]), 0);
	assert_int_equal(events_of(f, "quarantine"), 1);
	assert_int_equal(changed[0] + changed[1], 1);	/* one of them logs it */
	store_close(w[0].st);
	store_close(w[1].st);
}

/* The PostgreSQL-only cases run on engine postgresql alone (main); there
 * var (one of tests/pg/unit-pg.sh's helpers) missing skips the case, and
 * fails it under TSBROKER_NO_SKIP=1 (CI). */
static void
pg_need(const char *var)
{
	const char *v = getenv(var), *strict = getenv("TSBROKER_NO_SKIP");

	if (v != NULL && v[0] != '\0')
		return;
	if (strict != NULL && strcmp(strict, "1") == 0)
		fail_msg("%s is not set (tests/pg/unit-pg.sh sets it) and "
		    "TSBROKER_NO_SKIP=1 makes a skip fail", var);
	skip();
}

/* PostgreSQL only (TSB_PG_KILL: a command ending every other backend of
 * the test database, pg_terminate_backend): the store's connection dies
 * between two operations; the next one reconnects (nothing was sent yet)
 * and works, and the data is whole. */
static void
test_backend_killed(void **state)
{
	struct fx *f = *state;
	struct store_place_result res;

	pg_need("TSB_PG_KILL");
	fx_farm(f, 2, 10);
	assert_int_equal(fx_place(f, "before", T0 + 1, &res), 0);
	assert_int_equal(system(getenv("TSB_PG_KILL")), 0);
	assert_int_equal(fx_place(f, "after", T0 + 2, &res), 0);
	assert_int_equal(fx_count(f, NULL, "pending"), 2);
	assert_int_equal(fx_place(f, "after", T0 + 3, &res), 0);
	assert_true(res.reconnect);
	assert_int_equal(fx_count(f, NULL, "pending"), 2);
	/* a write op and a read op too */
	assert_int_equal(system(getenv("TSB_PG_KILL")), 0);
	assert_int_equal(store_server_drain(f->st, "a", 1, T0 + 4), 0);
	assert_int_equal(fx_server_in(f, "a", "up"), 1);
	assert_int_equal(fx_count(f, NULL, "pending"), 2);
}

/* ---- faults: a second connection (psql) and pg_db.c's test hook ---- */

/* The first line psql prints for sql on db (TSB_PG_PSQL), into out. */
static void
psql(const char *db, const char *sql, char *out, size_t n)
{
	char cmd[2048];
	FILE *p;

	snprintf(cmd, sizeof(cmd), "%s -d %s -c \"%s\"", getenv("TSB_PG_PSQL"), db, sql);
	assert_non_null(p = popen(cmd, "r"));
	if (out != NULL) {
		out[0] = '\0';
		if (fgets(out, (int)n, p) != NULL)
			out[strcspn(out, "\n")] = '\0';
	}
	while (fgetc(p) != EOF)
		;
	assert_int_equal(pclose(p), 0);
}

/* Polls sql on db until it prints want (10 s at most). */
static void
psql_on_until(const char *db, const char *sql, const char *want)
{
	char v[256];

	for (int i = 0; i < 1000; i++) {
		psql(db, sql, v, sizeof(v));
		if (strcmp(v, want) == 0)
			return;
		usleep(10000);
	}
	fail_msg("'%s' never printed '%s' (last '%s')", sql, want, v);
}

#define psql_until(sql, want) psql_on_until("postgres", sql, want)


/* PostgreSQL only (TSB_PG_PSQL: psql on the test database): a transaction
 * that was running when the store read its generation and commits after
 * it (another broker enabling a drained server, held open by psql while a later transaction
 * commits first, and let go by a file appearing: no transaction). The
 * snapshot's xmax alone does not move then; the store's next placement
 * must still see b enabled (a server made less attractive is re-read
 * under its lock anyway; one made more attractive only through the
 * generation). */
static void
test_commit_in_flight(void **state)
{
	struct fx *f = *state;
	struct store_place_result res;
	struct store *other;
	char cmd[1024], go[64];
	FILE *fp;

	pg_need("TSB_PG_PSQL");
	fx_farm(f, 2, 100);
	assert_int_equal(store_server_drain(f->st, "b", 1, T0), 0);
	snprintf(go, sizeof(go), "/tmp/tsb-go-%d", (int)getpid());
	(void)unlink(go);
	/* the enable: its xid assigned, then it waits for the file go (the
	 * server reads it: /tmp) */
	snprintf(cmd, sizeof(cmd), "%s -d tsb -c \"BEGIN; UPDATE servers SET admin_state = "
	    "'enabled' WHERE name = 'b'; DO \\$\\$ BEGIN WHILE (pg_stat_file('%s', true))."
	    "size IS NULL LOOP PERFORM pg_sleep(0.01); END LOOP; END \\$\\$; COMMIT;\" "
	    ">/dev/null &", getenv("TSB_PG_PSQL"), go);
	assert_int_equal(system(cmd), 0);
	psql_until("SELECT count(*) FROM pg_stat_activity WHERE datname = 'tsb' "
	    "AND backend_xid IS NOT NULL AND query LIKE '%pg_stat_file%'", "1");
	/* a later transaction commits: xmax passes the drain's xid */
	other = fx_open(f);
	assert_int_equal(store_event_add(other, "test", NULL, NULL, NULL, NULL, 0), 0);
	store_close(other);
	assert_int_equal(fx_place(f, "u0", T0 + 1, &res), 0);	/* cache loaded */
	assert_non_null(fp = fopen(go, "w"));
	fclose(fp);
	psql_on_until("tsb", "SELECT admin_state FROM servers WHERE name = 'b'", "enabled");
	assert_int_equal(fx_place(f, "u1", T0 + 2, &res), 0);
	assert_string_equal(res.server, "b");
	(void)unlink(go);
}

/* What the hook does, at its first call at its point (then counts). */
enum hook_act {
	HOOK_NONE,
	HOOK_TERMINATE,		/* pg_terminate_backend, the backend gone */
	HOOK_DROP_COMMITTED,	/* once the COMMIT is done server-side, our end
				 * of the socket replaced: the answer lost */
	HOOK_TERMINATE_SYNCREP,	/* once it waits for the synchronous standby */
};
static struct {
	enum hook_act act;
	enum pgdb_hook_point at;
	int calls[2];		/* by point */
} hk;

void
pgdb_test_hook(enum pgdb_hook_point where, int fd, int pid)
{
	char q[256];

	if (hk.act == HOOK_NONE || hk.calls[where]++ != 0 || where != hk.at)
		return;
	switch (hk.act) {
	case HOOK_TERMINATE:
		snprintf(q, sizeof(q), "SELECT pg_terminate_backend(%d)", pid);
		psql("postgres", q, NULL, 0);
		snprintf(q, sizeof(q), "SELECT count(*) FROM pg_stat_activity WHERE pid = %d",
		    pid);
		psql_until(q, "0");
		break;
	case HOOK_DROP_COMMITTED:
		snprintf(q, sizeof(q), "SELECT state FROM pg_stat_activity WHERE pid = %d", pid);
		psql_until(q, "idle");
		/* the socket, its answer unread, replaced by an unconnected one */
		int s = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(s >= 0 && dup2(s, fd) == fd);
		close(s);
		break;
	case HOOK_TERMINATE_SYNCREP:
		snprintf(q, sizeof(q), "SELECT wait_event FROM pg_stat_activity WHERE pid = %d",
		    pid);
		psql_until(q, "SyncRep");
		snprintf(q, sizeof(q), "SELECT pg_terminate_backend(%d)", pid);
		psql("postgres", q, NULL, 0);
		break;
	default:
		break;
	}
}

static void
hook_set(enum hook_act act, enum pgdb_hook_point at)
{
	memset(&hk, 0, sizeof(hk));
	hk.act = act;
	hk.at = at;
}

/* A real deadlock: a second connection holds server a's row and then asks
 * for the user's placement lock, which the store holds while it waits for
 * a's row. PostgreSQL ends the store's transaction (40P01: the other
 * waits longer before it checks); the store runs the whole placement again
 * and places the user once. */
static void
test_deadlock_retried(void **state)
{
	struct fx *f = *state;
	struct store_place_result res;
	char cmd[1024], v[64];
	int st;

	pg_need("TSB_PG_PSQL");
	fx_farm(f, 1, 10);
	snprintf(cmd, sizeof(cmd), "%s -d tsb -c \"BEGIN; SET LOCAL deadlock_timeout = '20s'; "
	    "SELECT id FROM servers WHERE name = 'a' FOR UPDATE; SELECT pg_sleep(0.6), 'x-sleeps'; "
	    "SELECT pg_advisory_xact_lock(1, hashtext('dl')); COMMIT\" >/dev/null",
	    getenv("TSB_PG_PSQL"));
	FILE *x = popen(cmd, "r");
	assert_non_null(x);
	psql_until("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%x-sleeps%' AND "
	    "state = 'active' AND pid <> pg_backend_pid()", "1");
	assert_int_equal(fx_place(f, "dl", T0 + 1, &res), 0);
	st = pclose(x);
	assert_int_equal(st, 0);	/* the other was not the victim */
	assert_int_equal(fx_count(f, NULL, "pending"), 1);
	/* PostgreSQL counts the deadlock it broke */
	for (int i = 0; i < 500; i++) {
		psql("postgres", "SELECT deadlocks FROM pg_stat_database WHERE datname = 'tsb'",
		    v, sizeof(v));
		if (atoi(v) >= 1)
			break;
		usleep(20000);
	}
	assert_true(atoi(v) >= 1);
}

/* The backend dies between the statements and COMMIT: the COMMIT is in
 * doubt, pg_xact_status says aborted, the placement runs again: one
 * session. */
static void
test_commit_lost_never_committed(void **state)
{
	struct fx *f = *state;
	struct store_place_result res;

	pg_need("TSB_PG_PSQL");
	fx_farm(f, 2, 10);
	hook_set(HOOK_TERMINATE, PGDB_HOOK_BEFORE_COMMIT);
	assert_int_equal(fx_place(f, "doubt", T0 + 1, &res), 0);
	hook_set(HOOK_NONE, 0);
	assert_false(res.reconnect);
	assert_int_equal(fx_count(f, NULL, "pending"), 1);
	assert_int_equal(fx_place(f, "doubt", T0 + 2, &res), 0);
	assert_true(res.reconnect);
}

/* The COMMIT is done on the server but its answer is lost: the store
 * reconnects, finds it committed (same server), and answers it once: not
 * placed again. */
static void
test_commit_lost_committed(void **state)
{
	struct fx *f = *state;
	struct store_place_result res;

	pg_need("TSB_PG_PSQL");
	fx_farm(f, 2, 10);
	hook_set(HOOK_DROP_COMMITTED, PGDB_HOOK_COMMIT_SENT);
	assert_int_equal(fx_place(f, "done", T0 + 1, &res), 0);
	assert_int_equal(hk.calls[PGDB_HOOK_BEFORE_COMMIT], 2);	/* it, the barrier */
	hook_set(HOOK_NONE, 0);
	assert_false(res.reconnect);
	assert_int_equal(fx_count(f, NULL, "pending"), 1);
	assert_int_equal(fx_place(f, "done", T0 + 2, &res), 0);
	assert_true(res.reconnect);
}

/* The primary waits for a synchronous standby that is not there. */
static void
sync_standby(const char *names)
{
	char q[128];

	snprintf(q, sizeof(q), "ALTER SYSTEM SET synchronous_standby_names = '%s'", names);
	psql("postgres", q, NULL, 0);
	psql("postgres", "SELECT pg_reload_conf()", NULL, 0);
	snprintf(q, sizeof(q), "SELECT current_setting('synchronous_standby_names') = '%s'",
	    names);
	psql_until(q, "t");
}

/* With the synchronous standby missing, a COMMIT waits: past
 * commit_timeout the store cancels the wait and the commit, made on the
 * primary only, is not durable: STORE_UNAVAILABLE, not told (a placement
 * and a heartbeat), and the store lock is free again. A backend terminated
 * in that wait likewise. */
static void
test_sync_wait_bounded(void **state)
{
	struct fx *f = *state;
	struct store_place_result res;
	struct store_heartbeat_result hr;
	struct wire_heartbeat hb;
	int64_t t;

	pg_need("TSB_PG_PSQL");
	fx_farm(f, 2, 10);
	store_commit_timeout(f->st, 300);
	sync_standby("FIRST 1 (nosuch)");
	t = util_mono_ms();
	int r = fx_place(f, "local", T0 + 1, &res);
	t = util_mono_ms() - t;
	print_message("a placement with the synchronous standby missing: %d after %lld ms\n",
	    r, (long long)t);
	assert_int_equal(r, STORE_UNAVAILABLE);
	assert_true(t >= 300 && t < 10000);
	memset(&hb, 0, sizeof(hb));
	util_strlcpy(hb.name, "a", sizeof(hb.name));
	hb.rdp_accepting = 1;
	assert_int_equal(store_heartbeat_apply(f->st, fx_id(f, "a"), &hb, T0 + 2, &hr),
	    STORE_UNAVAILABLE);
	/* terminated while it waits: committed locally, not durable either */
	store_commit_timeout(f->st, 60000);
	hook_set(HOOK_TERMINATE_SYNCREP, PGDB_HOOK_COMMIT_SENT);
	assert_int_equal(fx_place(f, "killed", T0 + 3, &res), STORE_UNAVAILABLE);
	hook_set(HOOK_NONE, 0);
	sync_standby("");
	store_commit_timeout(f->st, 5000);
	assert_int_equal(fx_place(f, "after", T0 + 4, &res), 0);
}

/* No connection allowed (the database closed to new connections, the
 * store's backend ended): the store is down; a user it placed is still
 * answered (unrecorded), a new one fails fast; store_recover brings it
 * back once connections are allowed again. */
static void
test_outage(void **state)
{
	struct fx *f = *state;
	struct store_place_result res, first;
	int64_t since = 0, t;
	char why[160];

	pg_need("TSB_PG_PSQL");
	fx_farm(f, 2, 10);
	assert_int_equal(fx_place(f, "known", T0 + 1, &first), 0);
	psql("postgres", "ALTER DATABASE tsb ALLOW_CONNECTIONS false", NULL, 0);
	psql("postgres", "SELECT count(pg_terminate_backend(pid)) >= 0 FROM pg_stat_activity "
	    "WHERE datname = 'tsb'", NULL, 0);
	psql_until("SELECT count(*) FROM pg_stat_activity WHERE datname = 'tsb'", "0");
	assert_int_equal(fx_place(f, "known", T0 + 2, &res), 0);
	assert_true(res.unrecorded && res.reconnect);
	assert_string_equal(res.server, first.server);
	assert_int_equal(res.session_id, first.session_id);
	assert_int_equal(store_outage(f->st, &since, why, sizeof(why)), 1);
	assert_true(since > 0);
	t = util_mono_ms();
	assert_int_equal(fx_place(f, "new", T0 + 3, &res), STORE_UNAVAILABLE);
	assert_true(util_mono_ms() - t < 100);	/* fast: no connection tried */
	assert_int_equal(store_recover(f->st), STORE_UNAVAILABLE);
	psql("postgres", "ALTER DATABASE tsb ALLOW_CONNECTIONS true", NULL, 0);
	assert_int_equal(store_recover(f->st), 1);
	assert_int_equal(store_outage(f->st, NULL, NULL, 0), 0);
	assert_int_equal(fx_place(f, "new", T0 + 4, &res), 0);
	assert_int_equal(fx_count(f, NULL, "pending"), 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_two_brokers_storm),
		FX_TEST(test_two_brokers_equal_farm),
		FX_TEST(test_background_once),
	};
	/* PostgreSQL only: its backend, a second connection, its faults */
	const struct CMUnitTest pg_tests[] = {
		FX_TEST(test_backend_killed),
		FX_TEST(test_commit_in_flight),
		FX_TEST(test_deadlock_retried),
		FX_TEST(test_commit_lost_never_committed),
		FX_TEST(test_commit_lost_committed),
		FX_TEST(test_sync_wait_bounded),
		FX_TEST(test_outage),
	};
	const char *engine = getenv("TSB_STORE_ENGINE");
	int r;

	log_init("test_store_pg", getenv("TSB_TEST_LOG") ? LOG_DEBUG : LOG_ERROR);
	r = cmocka_run_group_tests_name("store_pg", tests, NULL, NULL);
	if (engine == NULL || strcmp(engine, "postgresql") != 0) {
		print_message("the PostgreSQL-only cases run on engine postgresql "
		    "(make unit-pg)\n");
		return r;
	}
	return r | cmocka_run_group_tests_name("store_pg_only", pg_tests, NULL, NULL);
}
