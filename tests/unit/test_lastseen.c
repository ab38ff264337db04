/* lastseen: the bounded map of the users' last live sessions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "broker/common/util.h"
#include "broker/state/lastseen.h"

static void
entry(struct lastseen_entry *e, const char *user, int64_t session, int64_t server,
    const char *fqdn)
{
	memset(e, 0, sizeof(*e));
	util_strlcpy(e->r.user, user, sizeof(e->r.user));
	util_strlcpy(e->r.login, user, sizeof(e->r.login));
	e->r.session_id = session;
	e->r.server_id = server;
	snprintf(e->r.server, sizeof(e->r.server), "ts%lld", (long long)server);
	snprintf(e->r.address, sizeof(e->r.address), "10.0.0.%lld", (long long)server);
	e->r.port = 3389;
	util_strlcpy(e->fqdn, fqdn, sizeof(e->fqdn));
}

/* The latest entry of a user wins; a route (no fqdn) keeps the server's. */
static void
test_put_get(void **state)
{
	struct lastseen *ls = lastseen_new();
	struct lastseen_entry e, out;

	assert_non_null(ls);
	assert_int_equal(lastseen_get(ls, "alice", &out), -1);
	entry(&e, "alice", 1, 2, "ts2.example");
	assert_int_equal(lastseen_put(ls, &e), 0);
	entry(&e, "alice", 7, 2, "");
	assert_int_equal(lastseen_put(ls, &e), 0);
	assert_int_equal(lastseen_get(ls, "alice", &out), 0);
	assert_int_equal(out.r.session_id, 7);
	assert_string_equal(out.r.address, "10.0.0.2");
	assert_string_equal(out.fqdn, "ts2.example");
	assert_int_equal(lastseen_session(ls, 7, &out), 0);
	assert_string_equal(out.r.user, "alice");
	assert_int_equal(lastseen_session(ls, 1, &out), -1);
	assert_int_equal(lastseen_get(ls, "bob", &out), -1);
	lastseen_free(ls);
}

/* Bounded: past two generations the oldest users are forgotten, the most
 * recent LASTSEEN_USERS always kept; a user seen again moves to the newer
 * generation and their old session is not found by its id. */
static void
test_bounded(void **state)
{
	struct lastseen *ls = lastseen_new();
	struct lastseen_entry e, out;
	char u[32];
	int n = 3 * LASTSEEN_USERS;

	for (int i = 0; i < n; i++) {
		snprintf(u, sizeof(u), "u%d", i);
		entry(&e, u, i + 1, 1 + i % 5, "");
		assert_int_equal(lastseen_put(ls, &e), 0);
		if (i == LASTSEEN_USERS * 2 + 10) {	/* u5 again, in the newest */
			entry(&e, "u5", 999999, 3, "");
			assert_int_equal(lastseen_put(ls, &e), 0);
		}
	}
	assert_true(lastseen_count(ls) <= 2 * LASTSEEN_USERS);
	for (int i = n - LASTSEEN_USERS; i < n; i++) {
		snprintf(u, sizeof(u), "u%d", i);
		assert_int_equal(lastseen_get(ls, u, &out), 0);
		assert_int_equal(out.r.session_id, i + 1);
	}
	assert_int_equal(lastseen_get(ls, "u6", &out), -1);
	assert_int_equal(lastseen_get(ls, "u5", &out), 0);
	assert_int_equal(out.r.session_id, 999999);
	assert_int_equal(lastseen_session(ls, 6, &out), -1);
	lastseen_free(ls);
	lastseen_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get),
		cmocka_unit_test(test_bounded),
	};
	return cmocka_run_group_tests_name("lastseen", tests, NULL, NULL);
}
