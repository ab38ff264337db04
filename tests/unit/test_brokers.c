/* Unit tests of agent/brokers.c: parsing the 'broker' list and the choice
 * of the broker a beat reports to. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/brokers.h"

static void
test_parse_list(void **state)
{
	struct brokers b;
	char err[256];

	assert_int_equal(brokers_parse(" https://a:8443/, https://b:8443,,\t"
	    "https://c/x//  ", &b, err, sizeof(err)), BROKERS_OK);
	assert_int_equal(b.n, 3);
	assert_int_equal(b.current, 0);
	assert_string_equal(b.url[0], "https://a:8443");
	assert_string_equal(b.url[1], "https://b:8443");
	assert_string_equal(b.url[2], "https://c/x");

	assert_int_equal(brokers_parse("https://one", &b, err, sizeof(err)), 0);
	assert_int_equal(b.n, 1);
	assert_string_equal(b.url[0], "https://one");
}

static void
test_parse_errors(void **state)
{
	struct brokers b;
	char err[256], many[1024] = "";

	memset(&b, 0, sizeof(b));
	b.n = 42;
	assert_int_equal(brokers_parse("", &b, err, sizeof(err)), BROKERS_EMPTY);
	assert_int_equal(brokers_parse(" , ,", &b, err, sizeof(err)), BROKERS_EMPTY);
	assert_int_equal(brokers_parse("https://a http://b", &b, err, sizeof(err)),
	    BROKERS_BAD_URL);
	assert_non_null(strstr(err, "'http://b'"));
	assert_int_equal(brokers_parse("https://", &b, err, sizeof(err)), BROKERS_BAD_URL);
	assert_int_equal(brokers_parse("https:///x", &b, err, sizeof(err)), BROKERS_BAD_URL);
	assert_int_equal(brokers_parse("https:x", &b, err, sizeof(err)), BROKERS_BAD_URL);
	for (int i = 0; i <= BROKERS_MAX; i++)
		strcat(many, "https://h ");
	assert_int_equal(brokers_parse(many, &b, err, sizeof(err)), BROKERS_TOO_MANY);
	assert_int_equal(b.n, 42);	/* unchanged on error */
	many[strlen(many) - strlen("https://h ")] = '\0';
	assert_int_equal(brokers_parse(many, &b, err, sizeof(err)), 0);
	assert_int_equal(b.n, BROKERS_MAX);
}

static void
test_parse_too_long(void **state)
{
	char spec[BROKERS_URL_MAX + 16] = "https://";
	struct brokers b;
	char err[256];

	memset(spec + 8, 'h', BROKERS_URL_MAX - 8);
	spec[BROKERS_URL_MAX] = '\0';	/* BROKERS_URL_MAX bytes: no room for NUL */
	assert_int_equal(brokers_parse(spec, &b, err, sizeof(err)), BROKERS_BAD_URL);
	spec[BROKERS_URL_MAX - 1] = '\0';
	assert_int_equal(brokers_parse(spec, &b, err, sizeof(err)), 0);
}

/* Runs one beat where outcomes[i] is what broker i does: 'A' answers,
 * 'F' fails, 'X' aborts. Returns the number of tries, their order in order. */
static int
beat(struct brokers *b, const char *outcomes, int *order)
{
	struct brokers_beat bt;
	enum brokers_result res;
	int n = 0;

	assert_int_equal((int)strlen(outcomes), b->n);
	brokers_beat_begin(b, &bt);
	do {
		assert_ptr_equal(brokers_beat_url(b, &bt), b->url[bt.at]);
		order[n++] = bt.at;
		assert_true(n <= b->n);
		res = outcomes[bt.at] == 'A' ? BROKERS_ANSWERED :
		    outcomes[bt.at] == 'F' ? BROKERS_FAILED : BROKERS_ABORTED;
	} while (brokers_beat_record(b, &bt, res) == 1);
	return n;
}

static void
test_failover_and_stay(void **state)
{
	struct brokers b;
	char err[256];
	int order[8];

	assert_int_equal(brokers_parse("https://a https://b https://c", &b, err,
	    sizeof(err)), 0);
	assert_int_equal(beat(&b, "AAA", order), 1);
	assert_int_equal(order[0], 0);
	/* a fails: b in the same beat */
	assert_int_equal(beat(&b, "FAA", order), 2);
	assert_int_equal(order[1], 1);
	assert_int_equal(b.current, 1);
	/* a is back: the agent stays on b */
	assert_int_equal(beat(&b, "AAA", order), 1);
	assert_int_equal(order[0], 1);
	assert_int_equal(b.current, 1);
	/* b fails: c */
	assert_int_equal(beat(&b, "AFA", order), 2);
	assert_int_equal(b.current, 2);
	/* c fails: a, wrapping around */
	assert_int_equal(beat(&b, "AFF", order), 2);
	assert_int_equal(order[0], 2);
	assert_int_equal(order[1], 0);
	assert_int_equal(b.current, 0);
}

static void
test_all_fail_no_flap(void **state)
{
	struct brokers b;
	char err[256];
	int order[8];

	assert_int_equal(brokers_parse("https://a,https://b,https://c", &b, err,
	    sizeof(err)), 0);
	b.current = 1;
	for (int i = 0; i < 10; i++) {
		/* each tried once, from the current one, which stays */
		assert_int_equal(beat(&b, "FFF", order), 3);
		assert_int_equal(order[0], 1);
		assert_int_equal(order[1], 2);
		assert_int_equal(order[2], 0);
		assert_int_equal(b.current, 1);
	}
	/* a single broker that fails: one try, kept */
	assert_int_equal(brokers_parse("https://a", &b, err, sizeof(err)), 0);
	assert_int_equal(beat(&b, "F", order), 1);
	assert_int_equal(b.current, 0);
}

static void
test_abort_ends_the_beat(void **state)
{
	struct brokers b;
	char err[256];
	int order[8];

	assert_int_equal(brokers_parse("https://a https://b", &b, err, sizeof(err)), 0);
	assert_int_equal(beat(&b, "XA", order), 1);
	assert_int_equal(b.current, 0);
	assert_int_equal(beat(&b, "FX", order), 2);
	assert_int_equal(b.current, 0);	/* b did not answer: not chosen */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_list),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_too_long),
		cmocka_unit_test(test_failover_and_stay),
		cmocka_unit_test(test_all_fail_no_flap),
		cmocka_unit_test(test_abort_ends_the_beat),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
