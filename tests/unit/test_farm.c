/* Unit tests for broker/state/farm.c: the farm summary and its n+1 headroom. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "broker/state/farm.h"

#define NOW 1000000

static struct store_server
srv(const char *name, const char *state, int max, int active, int disc, int pending)
{
	struct store_server s;

	memset(&s, 0, sizeof(s));
	strcpy(s.name, name);
	assert_int_equal(server_state_parse(state, &s.state), 0);
	s.admin_state = ADMIN_ENABLED;
	s.weight = 100;
	s.max_sessions = max;
	s.active = active;
	s.disconnected = disc;
	s.pending = pending;
	return s;
}

static void
test_counts(void **state)
{
	struct store_server sv[4] = {
		srv("a", "up", 10, 3, 1, 1), srv("b", "down", 10, 0, 0, 0),
		srv("c", "unknown", 10, 0, 0, 0), srv("d", "up", 20, 2, 0, 0),
	};
	struct farm_summary f;

	sv[1].lost = 4;
	sv[3].admin_state = ADMIN_DRAINING;
	sv[0].quarantined_until = NOW - 1;	/* over */
	farm_summarise(sv, 4, NOW, &f);
	assert_int_equal(f.servers, 4);
	assert_int_equal(f.up, 2);
	assert_int_equal(f.down, 1);
	assert_int_equal(f.unknown, 1);
	assert_int_equal(f.draining, 1);
	assert_int_equal(f.quarantined, 0);
	assert_int_equal(f.accepting, 1);
	assert_int_equal(f.capacity, 10);
	assert_int_equal(f.free, 5);
	assert_int_equal(f.active, 5);
	assert_int_equal(f.disconnected, 1);
	assert_int_equal(f.pending, 1);
	assert_int_equal(f.lost, 4);
}

static void
test_n1_equal_servers(void **state)
{
	/* free 7 + 9 + 8 = 24; losing any one with max 10 leaves 24 - 10 */
	struct store_server sv[3] = {
		srv("ts1", "up", 10, 2, 1, 0), srv("ts2", "up", 10, 1, 0, 0),
		srv("ts3", "up", 10, 2, 0, 0),
	};
	struct farm_summary f;

	farm_summarise(sv, 3, NOW, &f);
	assert_int_equal(f.n1.ok, 1);
	assert_int_equal(f.n1.up, 3);
	assert_int_equal(f.n1.headroom, 14);
	assert_string_equal(f.n1.worst, "ts1");	/* ties: the most sessions */
	assert_int_equal(f.n1.worst_sessions, 3);
	assert_int_equal(f.n1.spare, 17);
	assert_string_equal(f.n1.busiest, "ts1");
	/* ts3 goes down: 7 + 9 free, minus the 10 of either */
	sv[2].state = SERVER_DOWN;
	farm_summarise(sv, 3, NOW, &f);
	assert_int_equal(f.n1.up, 2);
	assert_int_equal(f.n1.headroom, 6);
	assert_string_equal(f.n1.worst, "ts1");
	assert_int_equal(f.n1.spare, 9);
}

static void
test_n1_demo_worked(void **state)
{
	/* make demo: three servers of max 20 holding 2, 2 and 1 sessions.
	 * Losing ts1: its 2 users go to ts2 (18 free) and ts3 (19 free),
	 * 37 free before they land, 35 after: the headroom is 35, the number
	 * the card, /metrics, the alert and the chart all show. */
	struct store_server sv[3] = {
		srv("ts1", "up", 20, 1, 1, 0), srv("ts2", "up", 20, 2, 0, 0),
		srv("ts3", "up", 20, 0, 0, 1),
	};
	struct farm_summary f;

	farm_summarise(sv, 3, NOW, &f);
	assert_int_equal(f.n1.ok, 1);
	assert_string_equal(f.n1.worst, "ts1");
	assert_int_equal(f.n1.worst_sessions, 2);
	assert_int_equal(f.n1.spare, 37);
	assert_int_equal(f.n1.headroom, 35);
	/* ts2 killed: ts1's 2 go to ts3 (19 free): 17 left */
	sv[1].state = SERVER_DOWN;
	farm_summarise(sv, 3, NOW, &f);
	assert_int_equal(f.n1.headroom, 17);
	/* ts3 killed too: nowhere left, headroom below zero */
	sv[2].state = SERVER_DOWN;
	farm_summarise(sv, 3, NOW, &f);
	assert_int_equal(f.n1.ok, 0);
	assert_int_equal(f.n1.headroom, -2);
}

static void
test_n1_worst_is_not_always_the_busiest(void **state)
{
	/* a: full (10/10); b: 9 of 100; c: 0 of 5. Losing a: 10 into 91 + 5.
	 * Losing b: 9 into a's 0 and c's 5: four users without a place. */
	struct store_server sv[3] = {
		srv("a", "up", 10, 10, 0, 0), srv("b", "up", 100, 9, 0, 0),
		srv("c", "up", 5, 0, 0, 0),
	};
	struct farm_summary f;

	farm_summarise(sv, 3, NOW, &f);
	assert_int_equal(f.n1.ok, 0);
	assert_string_equal(f.n1.worst, "b");
	assert_int_equal(f.n1.worst_sessions, 9);
	assert_int_equal(f.n1.spare, 5);
	assert_int_equal(f.n1.headroom, -4);
	assert_string_equal(f.n1.busiest, "a");
	assert_int_equal(f.n1.busiest_sessions, 10);
}

static void
test_n1_draining_and_quarantined_give_no_room(void **state)
{
	struct store_server sv[3] = {
		srv("a", "up", 10, 4, 0, 0), srv("b", "up", 10, 0, 0, 0),
		srv("c", "up", 10, 0, 0, 0),
	};
	struct farm_summary f;

	sv[1].admin_state = ADMIN_DRAINING;
	sv[2].quarantined_until = NOW + 1000;
	farm_summarise(sv, 3, NOW, &f);
	assert_int_equal(f.quarantined, 1);
	assert_int_equal(f.accepting, 1);
	/* losing a: nowhere to go */
	assert_int_equal(f.n1.ok, 0);
	assert_string_equal(f.n1.worst, "a");
	assert_int_equal(f.n1.spare, 0);
	assert_int_equal(f.n1.headroom, -4);
	/* weights change nothing */
	sv[1].weight = 1;
	sv[0].weight = 10000;
	farm_summarise(sv, 3, NOW, &f);
	assert_int_equal(f.n1.headroom, -4);
}

static void
test_n1_edges(void **state)
{
	struct store_server sv[2] = {
		srv("a", "up", 10, 0, 0, 0), srv("b", "down", 10, 0, 0, 0),
	};
	struct farm_summary f;

	farm_summarise(sv, 0, NOW, &f);
	assert_int_equal(f.n1.ok, 0);
	assert_int_equal(f.n1.up, 0);
	assert_string_equal(f.n1.worst, "");
	/* one empty server: headroom 0 but nowhere to fail over to */
	farm_summarise(sv, 2, NOW, &f);
	assert_int_equal(f.n1.up, 1);
	assert_int_equal(f.n1.headroom, 0);
	assert_int_equal(f.n1.ok, 0);
	/* over max_sessions (max lowered): no negative free places */
	sv[1].state = SERVER_UP;
	sv[1].active = 12;
	farm_summarise(sv, 2, NOW, &f);
	assert_int_equal(f.free, 10);
	assert_string_equal(f.n1.worst, "b");
	assert_int_equal(f.n1.headroom, -2);
	/* pending placements count as sessions */
	sv[1].active = 0;
	sv[1].pending = 3;
	farm_summarise(sv, 2, NOW, &f);
	assert_int_equal(f.n1.ok, 1);
	assert_int_equal(f.n1.headroom, 7);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counts),
		cmocka_unit_test(test_n1_equal_servers),
		cmocka_unit_test(test_n1_demo_worked),
		cmocka_unit_test(test_n1_worst_is_not_always_the_busiest),
		cmocka_unit_test(test_n1_draining_and_quarantined_give_no_room),
		cmocka_unit_test(test_n1_edges),
	};
	return cmocka_run_group_tests_name("farm", tests, NULL, NULL);
}
