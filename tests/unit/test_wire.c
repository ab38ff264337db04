/* Unit tests for broker/common/wire.c: the heartbeat JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/common/wire.h"

#define HB(sessions) "{\"name\":\"ts1\",\"version\":\"1\",\"rdp\":{\"address\":\"10.0.0.1\"," \
	"\"port\":3389,\"accepting\":true},\"load\":{\"ncpu\":4,\"cpu_percent\":12.5," \
	"\"load1\":0.5,\"mem_total_kb\":1000,\"mem_available_kb\":500},\"sessions\":" sessions "}"

static int
decode(const char *s, struct wire_heartbeat *hb, char *err)
{
	return wire_heartbeat_decode(s, strlen(s), hb, err, 256);
}

static void
test_decode_ok(void **state)
{
	struct wire_heartbeat hb;
	char err[256];

	assert_int_equal(decode(HB("[{\"user\":\"alice\",\"domain\":\"CORP\",\"id\":42,"
	    "\"state\":\"disconnected\",\"since\":1700000000}]"), &hb, err), 0);
	assert_string_equal(hb.name, "ts1");
	assert_int_equal(hb.rdp_port, 3389);
	assert_int_equal(hb.rdp_accepting, 1);
	assert_int_equal(hb.ncpu, 4);
	assert_true(hb.cpu_percent == 12.5);
	assert_int_equal(hb.sessions_known, 1);
	assert_int_equal(hb.nsessions, 1);
	assert_string_equal(hb.sessions[0].user, "alice");
	assert_string_equal(hb.sessions[0].id, "42");
	assert_int_equal(hb.sessions[0].state, WIRE_DISCONNECTED);
	assert_int_equal(hb.sessions[0].since, 1700000000);
	wire_heartbeat_clear(&hb);
}

static void
test_unknown_sessions(void **state)
{
	struct wire_heartbeat hb;
	char err[256];

	assert_int_equal(decode(HB("null, \"sessions_error\":\"xrdp unreadable\""), &hb,
	    err), 0);
	assert_int_equal(hb.sessions_known, 0);
	assert_string_equal(hb.sessions_error, "xrdp unreadable");
	wire_heartbeat_clear(&hb);
}

static void
test_roundtrip(void **state)
{
	struct wire_heartbeat hb, back;
	struct wire_session s = { "bob", "", "7", WIRE_ACTIVE, 5 };
	char err[256], *text;

	memset(&hb, 0, sizeof(hb));
	strcpy(hb.name, "ts2");
	hb.rdp_port = 1;
	hb.rdp_accepting = 0;
	hb.ncpu = 1;
	hb.sessions_known = 1;
	hb.sessions = &s;
	hb.nsessions = 1;
	assert_non_null(text = wire_heartbeat_encode(&hb));
	assert_int_equal(decode(text, &back, err), 0);
	assert_string_equal(back.name, "ts2");
	assert_int_equal(back.rdp_accepting, 0);
	assert_string_equal(back.sessions[0].user, "bob");
	wire_heartbeat_clear(&back);
	free(text);
}

static void
test_errors(void **state)
{
	static const struct { const char *in, *err; } cases[] = {
		{ "", "invalid JSON" },
		{ "[]", "expected a JSON object" },
		{ "{\"name\":\"\"}", "'name' must not be empty" },
		{ "{\"name\":5}", "'name' must be a string" },
		{ "{\"name\":\"a\",\"name\":\"b\"}", "invalid JSON" },
		{ "{\"name\":\"a\"}", "'rdp' must be an object" },
		{ "{\"name\":\"a\",\"rdp\":{\"port\":0}}", "'rdp.port' must be an integer from 1 to 65535" },
		{ "{\"name\":\"a\",\"rdp\":{\"port\":1}}", "'rdp.accepting' must be true or false" },
		{ HB("{}"), "'sessions' must be an array or null" },
		{ HB("[{\"user\":\"a\",\"state\":\"gone\"}]"),
		  "'sessions[0].state' must be \"active\" or \"disconnected\"" },
		{ HB("[{\"state\":\"active\"}]"), "'sessions[0].user' is missing" },
		{ HB("[1]"), "'sessions[0]' must be an object" },
		/* the path of a later session (made only for the error) */
		{ HB("[{\"user\":\"a\",\"state\":\"active\"},{\"user\":\"b\","
		    "\"state\":\"active\",\"id\":[]}]"), "'sessions[1].id' must be a string" },
	};
	struct wire_heartbeat hb;
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(decode(cases[i].in, &hb, err), -1);
		if (strstr(err, cases[i].err) == NULL)
			fail_msg("case %zu: got '%s', want '%s'", i, err, cases[i].err);
	}
}

static void
test_sessions_list(void **state)
{
	struct wire_session *s = NULL;
	size_t n = 0;
	char err[256];
	const char *ok = "[{\"user\":\"a\",\"state\":\"active\"},"
	    "{\"user\":\"b\",\"state\":\"disconnected\",\"id\":\"x\"}]";

	assert_int_equal(wire_sessions_decode(ok, strlen(ok), &s, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_string_equal(s[1].id, "x");
	free(s);
	assert_int_equal(wire_sessions_decode("{}", 2, &s, &n, err, sizeof(err)), -1);
	assert_string_equal(err, "expected a JSON array of sessions");
}

/* The broker's commands in the answer, the agent's results in the beat. */
static void
test_commands_and_results(void **state)
{
	struct wire_answer a, back;
	struct wire_heartbeat hb;
	char err[256], *text;
	const char *beat = "{\"name\":\"ts1\",\"rdp\":{\"port\":3389,\"accepting\":true},"
	    "\"load\":{\"ncpu\":2,\"cpu_percent\":1,\"load1\":0,\"mem_total_kb\":1,"
	    "\"mem_available_kb\":1},\"sessions\":[],\"results\":[{\"id\":7,\"ok\":false,"
	    "\"expired\":true,\"detail\":\"late\"},{\"id\":8,\"ok\":true}]}";

	memset(&a, 0, sizeof(a));
	a.interval = 5;
	a.ncommands = 2;
	a.commands[0].id = 3;
	a.commands[0].kind = WIRE_LOGOFF;
	strcpy(a.commands[0].session, "1234");
	strcpy(a.commands[0].user, "alice");
	a.commands[0].deadline_ms = 29950;
	a.commands[1].id = 4;
	a.commands[1].kind = WIRE_DISCONNECT;
	strcpy(a.commands[1].session, "77");
	assert_non_null(text = wire_answer_encode(&a));
	assert_non_null(strstr(text, "\"kind\":\"logoff\""));
	assert_int_equal(wire_answer_decode(text, strlen(text), &back, err, sizeof(err)), 0);
	free(text);
	assert_int_equal(back.ncommands, 2);
	assert_int_equal(back.commands[0].deadline_ms, 29950);
	assert_string_equal(back.commands[0].user, "alice");
	assert_int_equal(back.commands[1].kind, WIRE_DISCONNECT);
	/* no commands: the answer as before */
	a.ncommands = 0;
	assert_non_null(text = wire_answer_encode(&a));
	assert_null(strstr(text, "commands"));
	free(text);
	/* malformed commands refuse the answer, with the reason */
	text = "{\"interval\":5,\"admin_state\":\"enabled\",\"commands\":[{\"id\":1,"
	    "\"kind\":\"reboot\",\"session\":\"1\",\"deadline_ms\":5}]}";
	assert_int_equal(wire_answer_decode(text, strlen(text), &back, err, sizeof(err)), -1);
	assert_string_equal(err, "'commands[0].kind' must be \"logoff\" or \"disconnect\"");
	text = "{\"interval\":5,\"admin_state\":\"enabled\",\"commands\":[{\"id\":1,"
	    "\"kind\":\"logoff\",\"session\":\"1\",\"deadline_ms\":-1}]}";
	assert_int_equal(wire_answer_decode(text, strlen(text), &back, err, sizeof(err)), -1);
	/* results */
	assert_int_equal(wire_heartbeat_decode(beat, strlen(beat), &hb, err, sizeof(err)), 0);
	assert_int_equal(hb.nresults, 2);
	assert_int_equal(hb.results[0].expired, 1);
	assert_string_equal(hb.results[0].detail, "late");
	assert_int_equal(hb.results[1].ok, 1);
	assert_non_null(text = wire_heartbeat_encode(&hb));
	wire_heartbeat_clear(&hb);
	assert_int_equal(wire_heartbeat_decode(text, strlen(text), &hb, err, sizeof(err)), 0);
	free(text);
	assert_int_equal(hb.nresults, 2);
	assert_int_equal(hb.results[0].id, 7);
	wire_heartbeat_clear(&hb);
	/* a bad result after a good session list is refused, not half-accepted
	 * (the sessions' decode had left the return code 0: fuzz_heartbeat) */
	assert_int_equal(wire_heartbeat_decode("{\"name\":\"ts1\",\"rdp\":{\"port\":3389,"
	    "\"accepting\":true},\"load\":{\"ncpu\":2,\"cpu_percent\":1,\"load1\":0,"
	    "\"mem_total_kb\":1,\"mem_available_kb\":1},\"sessions\":[{\"user\":\"a\","
	    "\"state\":\"active\"}],\"results\":[{\"ok\":true}]}", 200, &hb, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "results[0].id"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_ok),
		cmocka_unit_test(test_unknown_sessions),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_sessions_list),
		cmocka_unit_test(test_commands_and_results),
	};
	return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
