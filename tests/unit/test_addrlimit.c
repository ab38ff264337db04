/* Unit tests for broker/front/addrlimit.c: handshakes and placements per
 * address, the sliding minute, exempt networks, bounded memory, one log
 * line a second per address, and threads counting at once. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "broker/front/addrlimit.h"

#define T0	(1000LL * ADDRLIMIT_MINUTE_MS)	/* a minute's start */

static struct addrlimit *
limits(int handshakes, int placements, const char *exempt)
{
	struct addrlimit_conf c = { .max_handshakes = handshakes,
	    .placements_per_minute = placements, .seed = 42 };
	char err[128];

	if (exempt != NULL)
		assert_int_equal(addrlimit_exempt_parse(&c, exempt, err, sizeof(err)), 0);
	return addrlimit_new(&c);
}

static void
test_handshakes(void **state)
{
	struct addrlimit *a = limits(3, 0, NULL);
	int counted;

	for (int i = 0; i < 3; i++) {
		assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.5", T0, &counted), 0);
		assert_int_equal(counted, 1);
	}
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.5", T0, &counted),
	    ADDRLIMIT_EHANDSHAKES);
	assert_int_equal(counted, 0);
	/* another address has its own budget */
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.6", T0, &counted), 0);
	addrlimit_handshake_end(a, "192.0.2.6", T0);
	addrlimit_handshake_end(a, "192.0.2.5", T0);
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.5", T0, &counted), 0);
	for (int i = 0; i < 3; i++)
		addrlimit_handshake_end(a, "192.0.2.5", T0);
	assert_int_equal(addrlimit_used(a, T0 + 2000), 0);
	addrlimit_free(a);
}

static void
test_placements_sliding_minute(void **state)
{
	struct addrlimit *a = limits(0, 10, NULL);
	int counted, i;

	for (i = 0; i < 10; i++)
		assert_int_equal(addrlimit_placement_take(a, "2001:db8::1", T0 + i, &counted), 0);
	assert_int_equal(addrlimit_placement_take(a, "2001:db8::1", T0 + 50000, &counted),
	    ADDRLIMIT_EPLACEMENTS);
	/* a reconnect given back frees its place */
	addrlimit_placement_return(a, "2001:db8::1", T0 + 50000);
	assert_int_equal(addrlimit_placement_take(a, "2001:db8::1", T0 + 50000, &counted), 0);
	/* a quarter into the next minute, 3/4 of the last one still counts:
	 * 8 (10 weighted by 0.75, rounded up), so 2 more */
	for (i = 0; i < 2; i++)
		assert_int_equal(addrlimit_placement_take(a, "2001:db8::1",
		    T0 + ADDRLIMIT_MINUTE_MS * 5 / 4, &counted), 0);
	assert_int_equal(addrlimit_placement_take(a, "2001:db8::1",
	    T0 + ADDRLIMIT_MINUTE_MS * 5 / 4, &counted), ADDRLIMIT_EPLACEMENTS);
	/* two minutes later all is forgotten */
	assert_int_equal(addrlimit_placement_take(a, "2001:db8::1",
	    T0 + 3 * ADDRLIMIT_MINUTE_MS, &counted), 0);
	addrlimit_free(a);
}

static void
test_exempt(void **state)
{
	struct addrlimit_conf c = { 0 };
	struct addrlimit *a;
	char err[128];
	int counted;

	assert_int_equal(addrlimit_exempt_parse(&c, "10.0.0.0/8, 192.168.1.7 fd00::/8", err,
	    sizeof(err)), 0);
	assert_int_equal(c.nexempt, 3);
	assert_int_equal(addrlimit_exempt_parse(&c, "10.0.0.0/33", err, sizeof(err)),
	    ADDRLIMIT_EINVAL);
	assert_non_null(strstr(err, "10.0.0.0/33"));
	assert_int_equal(addrlimit_exempt_parse(&c, "office", err, sizeof(err)),
	    ADDRLIMIT_EINVAL);
	assert_int_equal(addrlimit_exempt_parse(&c, "10.0.0.0/", err, sizeof(err)),
	    ADDRLIMIT_EINVAL);
	assert_int_equal(addrlimit_exempt_parse(&c, "", err, sizeof(err)), 0);
	assert_int_equal(c.nexempt, 0);

	a = limits(1, 1, "10.0.0.0/8 192.168.1.7 fd00::/8 172.16.0.0/12");
	for (int i = 0; i < 5; i++) {
		assert_int_equal(addrlimit_handshake_begin(a, "10.200.3.4", T0, &counted), 0);
		assert_int_equal(counted, 0);
		assert_int_equal(addrlimit_placement_take(a, "fd12::9", T0, &counted), 0);
		assert_int_equal(addrlimit_placement_take(a, "192.168.1.7", T0, &counted), 0);
		assert_int_equal(addrlimit_placement_take(a, "172.31.255.1", T0, &counted), 0);
	}
	assert_int_equal(addrlimit_placement_take(a, "172.32.0.1", T0, &counted), 0);
	assert_int_equal(addrlimit_placement_take(a, "172.32.0.1", T0, &counted),
	    ADDRLIMIT_EPLACEMENTS);
	assert_int_equal(addrlimit_placement_take(a, "192.168.1.8", T0, &counted), 0);
	assert_int_equal(addrlimit_placement_take(a, "192.168.1.8", T0, &counted),
	    ADDRLIMIT_EPLACEMENTS);
	assert_int_equal(addrlimit_used(a, T0), 2);
	addrlimit_free(a);
}

static void
test_bounded(void **state)
{
	struct addrlimit *a = limits(1, 0, NULL);
	char addr[64];
	int counted, tracked = 0;

	/* more addresses in a handshake at once than slots: the excess is
	 * untracked (not limited), the table does not grow */
	for (int i = 0; i < 2 * ADDRLIMIT_SLOTS; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.1", i >> 8, i & 255);
		assert_int_equal(addrlimit_handshake_begin(a, addr, T0, &counted), 0);
		tracked += counted;
	}
	assert_true(tracked <= ADDRLIMIT_SLOTS);
	assert_true(tracked > ADDRLIMIT_SLOTS / 2);
	assert_int_equal(addrlimit_untracked(a), (uint64_t)(2 * ADDRLIMIT_SLOTS - tracked));
	for (int i = 0; i < 2 * ADDRLIMIT_SLOTS; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.1", i >> 8, i & 255);
		addrlimit_handshake_end(a, addr, T0);
	}
	/* all ended: every slot free again, for new addresses */
	assert_int_equal(addrlimit_used(a, T0 + 2000), 0);
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.1", T0 + 2000, &counted), 0);
	assert_int_equal(counted, 1);
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.1", T0 + 2000, &counted),
	    ADDRLIMIT_EHANDSHAKES);
	/* garbage is not limited */
	assert_int_equal(addrlimit_handshake_begin(a, "not an address", T0, &counted), 0);
	assert_int_equal(counted, 0);
	addrlimit_free(a);
}

static void
test_log_once_a_second(void **state)
{
	struct addrlimit *a = limits(1, 1, NULL);
	uint64_t quiet = 99;

	assert_int_equal(addrlimit_log_pass(a, "192.0.2.9", T0, &quiet), 1);
	assert_int_equal(quiet, 0);
	for (int i = 1; i <= 9; i++)
		assert_int_equal(addrlimit_log_pass(a, "192.0.2.9", T0 + i * 100, &quiet), 0);
	/* another address logs its own */
	assert_int_equal(addrlimit_log_pass(a, "192.0.2.10", T0 + 500, &quiet), 1);
	assert_int_equal(addrlimit_log_pass(a, "192.0.2.9", T0 + 1000, &quiet), 1);
	assert_int_equal(quiet, 9);
	addrlimit_free(a);
}

#define THREADS	4
#define ROUNDS	20000

struct race {
	struct addrlimit *a;
	int taken;
};

static void *
racer(void *arg)
{
	struct race *r = arg;
	int counted;

	for (int i = 0; i < ROUNDS; i++) {
		if (addrlimit_handshake_begin(r->a, "192.0.2.77", T0, &counted) == 0 && counted)
			addrlimit_handshake_end(r->a, "192.0.2.77", T0);
		if (addrlimit_placement_take(r->a, "192.0.2.77", T0, &counted) == 0)
			r->taken++;
	}
	return NULL;
}

static void
test_threads(void **state)
{
	struct addrlimit *a = limits(2, 500, NULL);
	struct race r[THREADS];
	pthread_t th[THREADS];
	int total = 0, counted;

	for (int i = 0; i < THREADS; i++) {
		r[i] = (struct race){ a, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, racer, &r[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		total += r[i].taken;
	}
	assert_int_equal(total, 500);	/* exactly the limit, never more */
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.77", T0, &counted), 0);
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.77", T0, &counted), 0);
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.77", T0, &counted),
	    ADDRLIMIT_EHANDSHAKES);
	addrlimit_free(a);
}

/* New limits keep the counts; an address exempted since ends what it began. */
static void
test_set_conf(void **state)
{
	struct addrlimit *a = limits(3, 0, NULL);
	struct addrlimit_conf c = { .max_handshakes = 1, .seed = 7 };
	char err[128];
	int counted;

	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.5", T0, &counted), 0);
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.5", T0, &counted), 0);
	addrlimit_set_conf(a, &c);
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.5", T0, &counted),
	    ADDRLIMIT_EHANDSHAKES);
	assert_int_equal(addrlimit_exempt_parse(&c, "192.0.2.0/24", err, sizeof(err)), 0);
	addrlimit_set_conf(a, &c);
	assert_int_equal(addrlimit_handshake_begin(a, "192.0.2.5", T0, &counted), 0);
	assert_int_equal(counted, 0);
	addrlimit_handshake_end(a, "192.0.2.5", T0);
	addrlimit_handshake_end(a, "192.0.2.5", T0);
	assert_int_equal(addrlimit_used(a, T0 + 2000), 0);
	addrlimit_free(a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshakes),
		cmocka_unit_test(test_placements_sliding_minute),
		cmocka_unit_test(test_exempt),
		cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_log_once_a_second),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_set_conf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
