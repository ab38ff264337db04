/* Unit tests for the admin API's part of broker/common/wire.c: the JSON
 * builder and the login body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/common/wire.h"

static void
test_builder(void **state)
{
	struct wire_json *o = wire_json_object(), *a = wire_json_array(), *c;
	char *s;

	wire_json_str(o, "name", "ts\"1\\<b>");
	wire_json_int(o, "big", INT64_C(1795614741207));
	wire_json_num(o, "cpu", 12.5);
	wire_json_bool(o, "ok", 1);
	wire_json_null(o, "none");
	wire_json_str(o, "bytes", "caf\xe9\x01");	/* not UTF-8: made ASCII */
	c = wire_json_object();
	wire_json_int(c, "id", 7);
	wire_json_add(a, NULL, c);
	wire_json_add(a, NULL, wire_json_array());
	wire_json_add(o, "list", a);
	s = wire_json_dump(o);
	assert_non_null(s);
	assert_string_equal(s, "{\"name\":\"ts\\\"1\\\\<b>\",\"big\":1795614741207,"
	    "\"cpu\":12.5,\"ok\":true,\"none\":null,\"bytes\":\"caf??\","
	    "\"list\":[{\"id\":7},[]]}");
	free(s);
}

static void
test_builder_failure_propagates(void **state)
{
	struct wire_json *o = wire_json_object();

	wire_json_add(o, "missing", NULL);	/* a child that could not be made */
	assert_null(wire_json_dump(o));
	/* NULL nodes are accepted everywhere */
	wire_json_str(NULL, "k", "v");
	wire_json_int(NULL, "k", 1);
	wire_json_add(NULL, "k", wire_json_object());
	assert_null(wire_json_dump(NULL));
	wire_json_free(NULL);
}

static void
test_login_decode(void **state)
{
	char pw[16], err[128];
	const char *ok = "{\"password\": \"s3cret-pw\", \"extra\": 1}";
	const char *bad[] = {
		"", "{", "[]", "\"x\"", "{\"password\": 1}", "{\"pw\": \"x\"}",
		"{\"password\": \"\"}", "{\"password\": \"a\\u0000b\"}",
		"{\"password\": \"0123456789abcdef\"}",		/* too long for pw[16] */
		"{\"password\": \"a\", \"password\": \"b\"}",
		"{\"password\": \"hunter2\"",			/* cut: not in err */
	};

	assert_int_equal(wire_login_decode(ok, strlen(ok), pw, sizeof(pw), err,
	    sizeof(err)), 0);
	assert_string_equal(pw, "s3cret-pw");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(wire_login_decode(bad[i], strlen(bad[i]), pw, sizeof(pw),
		    err, sizeof(err)), -1);
		assert_non_null(strstr(err, "password"));
		assert_null(strstr(err, "hunter2"));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_builder),
		cmocka_unit_test(test_builder_failure_propagates),
		cmocka_unit_test(test_login_decode),
	};
	return cmocka_run_group_tests_name("wire_admin", tests, NULL, NULL);
}
