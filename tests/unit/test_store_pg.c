/* Several brokers at once on one store (run on PostgreSQL by
 * tests/pg/unit-pg.sh; on SQLite by default, whose write lock serialises
 * the same): two stores on the same location place a storm of users from
 * two threads, each user by both at once. Every user gets exactly one
 * session, the servers' shares differ by at most one and none goes over
 * max_sessions, and each store's load cache sees the other's commits;
 * background sweeps by both land once; a killed backend is survived. */
#include <pthread.h>
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
#include "broker/state/store.h"
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
		struct store_place_request q = { u, u, "", "127.0.0.7", T0 + 1 + i, 600000, 1 };

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
		struct store_session_filter flt = { u, NULL, NULL };
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
		struct store_place_request q = { u, u, "", "127.0.0.7", T0 + 500, 600000, 1 };

		snprintf(u, sizeof(u), "late%d", i);
		assert_int_equal(store_placement_commit(b[i % 2].st, &q, &res), 0);
	}
	for (int i = 0; i < 4; i++)
		assert_true(fx_count(f, names[i], "pending") <= 31);
	{
		struct store_place_result res;
		struct store_place_request q = { "x", "x", "", "127.0.0.7", T0 + 600, 600000, 1 };

		assert_int_equal(store_placement_commit(b[1].st, &q, &res), STORE_REFUSED);
	}
	store_close(b[0].st);
	store_close(b[1].st);
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

/* PostgreSQL only (TSB_PG_KILL: a command ending every other backend of
 * the test database, pg_terminate_backend): the store's connection dies
 * between two operations; the next one reconnects (nothing was sent yet)
 * and works, and the data is whole. */
static void
test_backend_killed(void **state)
{
	struct fx *f = *state;
	const char *kill = getenv("TSB_PG_KILL");
	struct store_place_result res;

	if (kill == NULL || kill[0] == '\0')
		return;		/* not PostgreSQL */
	fx_farm(f, 2, 10);
	assert_int_equal(fx_place(f, "before", T0 + 1, &res), 0);
	assert_int_equal(system(kill), 0);
	assert_int_equal(fx_place(f, "after", T0 + 2, &res), 0);
	assert_int_equal(fx_count(f, NULL, "pending"), 2);
	assert_int_equal(fx_place(f, "after", T0 + 3, &res), 0);
	assert_true(res.reconnect);
	assert_int_equal(fx_count(f, NULL, "pending"), 2);
	/* a write op and a read op too */
	assert_int_equal(system(kill), 0);
	assert_int_equal(store_server_drain(f->st, "a", 1, T0 + 4), 0);
	assert_int_equal(fx_server_in(f, "a", "up"), 1);
	assert_int_equal(fx_count(f, NULL, "pending"), 2);
}

/* The first line psql (TSB_PG_PSQL) prints for sql, into out. */
static void
psql_out(const char *psql, const char *sql, char *out, size_t n)
{
	char cmd[1024];
	FILE *p;

	snprintf(cmd, sizeof(cmd), "%s -tA -c \"%s\"", psql, sql);
	assert_non_null(p = popen(cmd, "r"));
	out[0] = '\0';
	if (fgets(out, (int)n, p) != NULL)
		out[strcspn(out, "\n")] = '\0';
	assert_int_equal(pclose(p), 0);
}

/* Polls psql's answer to sql until it is want (10 s at most). */
static void
psql_until(const char *psql, const char *sql, const char *want)
{
	char out[128] = "";

	for (int i = 0; i < 1000 && strcmp(out, want) != 0; i++) {
		psql_out(psql, sql, out, sizeof(out));
		if (strcmp(out, want) != 0)
			usleep(10000);
	}
	assert_string_equal(out, want);
}

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
	const char *psql = getenv("TSB_PG_PSQL");
	struct store_place_result res;
	struct store *other;
	char cmd[1024], go[64];
	FILE *fp;

	if (psql == NULL || psql[0] == '\0')
		return;		/* not PostgreSQL */
	fx_farm(f, 2, 100);
	assert_int_equal(store_server_drain(f->st, "b", 1, T0), 0);
	snprintf(go, sizeof(go), "/tmp/tsb-go-%d", (int)getpid());
	(void)unlink(go);
	/* the enable: its xid assigned, then it waits for the file go (the
	 * server reads it: /tmp) */
	snprintf(cmd, sizeof(cmd), "%s -c \"BEGIN; UPDATE servers SET admin_state = "
	    "'enabled' WHERE name = 'b'; DO \\$\\$ BEGIN WHILE (pg_stat_file('%s', true))."
	    "size IS NULL LOOP PERFORM pg_sleep(0.01); END LOOP; END \\$\\$; COMMIT;\" "
	    ">/dev/null &", psql, go);
	assert_int_equal(system(cmd), 0);
	psql_until(psql, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'tsb' "
	    "AND backend_xid IS NOT NULL AND query LIKE '%pg_stat_file%'", "1");
	/* a later transaction commits: xmax passes the drain's xid */
	other = fx_open(f);
	assert_int_equal(store_event_add(other, "test", NULL, NULL, NULL, NULL, 0), 0);
	store_close(other);
	assert_int_equal(fx_place(f, "u0", T0 + 1, &res), 0);	/* cache loaded */
	assert_non_null(fp = fopen(go, "w"));
	fclose(fp);
	psql_until(psql, "SELECT admin_state FROM servers WHERE name = 'b'", "enabled");
	assert_int_equal(fx_place(f, "u1", T0 + 2, &res), 0);
	assert_string_equal(res.server, "b");
	(void)unlink(go);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_two_brokers_storm),
		FX_TEST(test_background_once),
		FX_TEST(test_backend_killed),
		FX_TEST(test_commit_in_flight),
	};
	log_init("test_store_pg", LOG_ERROR);
	return cmocka_run_group_tests_name("store_pg", tests, NULL, NULL);
}
