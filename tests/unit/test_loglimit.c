/* Unit tests for broker/common/loglimit.c: one line a second, the others
 * counted, also when many threads pass at once. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "broker/common/loglimit.h"

#define THREADS	8
#define CALLS	20000

static void
test_one_a_second(void **state)
{
	struct loglimit l = { 0 };
	uint64_t quiet = 99;

	assert_int_equal(loglimit_pass(&l, 50000, &quiet), 1);
	assert_int_equal(quiet, 0);
	for (int64_t t = 50000; t < 50000 + LOGLIMIT_INTERVAL_MS; t += 100)
		assert_int_equal(loglimit_pass(&l, t, &quiet), 0);
	assert_int_equal(loglimit_pass(&l, 50000 + LOGLIMIT_INTERVAL_MS, &quiet), 1);
	assert_int_equal(quiet, 10);
	assert_int_equal(loglimit_pass(&l, 60000, &quiet), 1);
	assert_int_equal(quiet, 0);
}

struct race {
	struct loglimit *l;
	pthread_barrier_t *start;
	int passed;
};

static void *
racer(void *arg)
{
	struct race *r = arg;
	uint64_t quiet;

	pthread_barrier_wait(r->start);
	for (int i = 0; i < CALLS; i++)
		r->passed += loglimit_pass(r->l, 70000, &quiet);
	return NULL;
}

/* All threads at the same instant: exactly one line, every other call
 * counted for the next. */
static void
test_threads(void **state)
{
	struct loglimit l = { 0 };
	struct race r[THREADS];
	pthread_t t[THREADS];
	pthread_barrier_t start;
	uint64_t quiet;
	int passed = 0;

	assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
	for (int i = 0; i < THREADS; i++) {
		r[i] = (struct race){ &l, &start, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, racer, &r[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		passed += r[i].passed;
	}
	pthread_barrier_destroy(&start);
	assert_int_equal(passed, 1);
	assert_int_equal(loglimit_pass(&l, 80000, &quiet), 1);
	assert_int_equal(quiet, THREADS * CALLS - 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_a_second),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
