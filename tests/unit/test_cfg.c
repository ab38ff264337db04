/* Unit tests for broker/common/cfg.c through the broker's key table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "broker/common/cfg.h"
#include "broker/core/conf.h"

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int
load(const char *text, struct conf *c, char *err, size_t n)
{
	write_file("/tmp/tsb-test.conf", text);
	return conf_load(c, "/tmp/tsb-test.conf", err, n);
}

static void
test_defaults(void **state)
{
	struct conf c;
	char err[256];

	assert_int_equal(load("", &c, err, sizeof(err)), 0);
	assert_string_equal(c.state_path, "var/tsbroker.db");
	assert_string_equal(c.rdp.listen, "0.0.0.0:3389");
	assert_string_equal(c.rdp.mode, "address");
	assert_int_equal(c.rdp.handshake_timeout, 10);
	assert_string_equal(c.http_listen, "127.0.0.1:8443");
	assert_string_equal(c.http_certificate, c.rdp.certificate);
	assert_int_equal(c.heartbeat_interval, 5);
	assert_int_equal(c.down_after, 15);
	assert_int_equal(c.pending_ttl, 120);
	assert_int_equal(c.pending_penalty, 1);
	assert_int_equal(c.token_ttl, 60);
	assert_int_equal(c.rdp.trust_cookie, 0);
	assert_int_equal(c.splice_max, 10000);
	assert_int_equal(c.splice_idle_timeout, 7200);
	assert_int_equal(c.connect_timeout, 3);
}

static void
test_values_and_comments(void **state)
{
	struct conf c;
	char err[256];

	assert_int_equal(load("; comment\n[rdp]\nlisten = [::1]:4000\nmode = token\n"
	    "[http]\ncertificate = /x.pem\n[health]\ndown_after = 30 ; inline\n",
	    &c, err, sizeof(err)), 0);
	assert_string_equal(c.rdp.listen, "[::1]:4000");
	assert_string_equal(c.rdp.mode, "token");
	assert_string_equal(c.http_certificate, "/x.pem");
	assert_int_equal(c.down_after, 30);
	assert_int_equal(load("[rdp]\ntrust_cookie = yes\nsplice_max = 5\n"
	    "splice_idle_timeout = 30\nconnect_timeout = 2\n", &c, err, sizeof(err)), 0);
	assert_int_equal(c.rdp.trust_cookie, 1);
	assert_int_equal(c.splice_max, 5);
	assert_int_equal(c.splice_idle_timeout, 30);
	assert_int_equal(c.connect_timeout, 2);
	assert_int_equal(load("[rdp]\nconnect_timeout = 0\n", &c, err, sizeof(err)), -1);
}

static void
test_errors_name_file_line_key(void **state)
{
	struct conf c;
	char err[256];

	assert_int_equal(load("[rdp]\n\nlisten = nowhere\n", &c, err, sizeof(err)), -1);
	assert_string_equal(err, "/tmp/tsb-test.conf:3: 'listen' expects host:port");
	assert_int_equal(load("[health]\ndown_after = 0\n", &c, err, sizeof(err)), -1);
	assert_string_equal(err, "/tmp/tsb-test.conf:2: 'down_after' expects an integer "
	    "from 1 to 86400");
	assert_int_equal(load("[rdp]\nmode = magic\n", &c, err, sizeof(err)), -1);
	assert_string_equal(err, "/tmp/tsb-test.conf:2: 'mode' expects one of "
	    "address|token");
	assert_int_equal(load("[rdp]\nlisen = 1.2.3.4:5\n", &c, err, sizeof(err)), -1);
	assert_string_equal(err, "/tmp/tsb-test.conf:2: unknown key 'lisen' in [rdp]");
	assert_int_equal(load("[nope]\na = b\n", &c, err, sizeof(err)), -1);
	assert_string_equal(err, "/tmp/tsb-test.conf:2: unknown section [nope]");
	assert_int_equal(load("[rdp\n", &c, err, sizeof(err)), -1);
	assert_string_equal(err, "/tmp/tsb-test.conf:1: syntax error");
	assert_int_equal(load("[health]\nheartbeat_interval = 20\n", &c, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "'down_after' (15) must exceed"));
	assert_int_equal(conf_load(&c, "/nonexistent/x.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/x.conf: No such file or directory");
}

static void
test_printed_defaults_load_as_defaults(void **state)
{
	struct conf loaded, defaults;
	char err[256];
	FILE *f = fopen("/tmp/tsb-test-defaults.conf", "w");

	assert_non_null(f);
	assert_int_equal(conf_print_defaults(f), 0);
	fclose(f);
	assert_int_equal(conf_load(&loaded, "/tmp/tsb-test-defaults.conf", err,
	    sizeof(err)), 0);
	conf_defaults(&defaults);
	memset(loaded.path, 0, sizeof(loaded.path));
	assert_memory_equal(&loaded, &defaults, sizeof(loaded));
}

static void
count(void *ctx, const struct cfg_key *k, int live)
{
	struct cfg_changes *n = ctx;

	n->changed++;
	n->restart += !live;
	assert_true(strcmp(k->name, "listen") != 0 || !live);
}

/* A reload's diff: changed keys named with their live flag; only live
 * ones copied; the running config printed with the secret left out. */
static void
test_diff_and_take_live(void **state)
{
	struct conf a, b;
	struct cfg_changes n = { 0, 0 };
	char err[256];

	assert_int_equal(load("", &a, err, sizeof(err)), 0);
	assert_int_equal(conf_diff(&a, &a, NULL, NULL), 0);
	assert_int_equal(load("[rdp]\nlisten = 127.0.0.1:1\nmax_connections = 9\n"
	    "trust_cookie = yes\ncertificate = /x.crt\n[state]\nurl = password=s\n", &b, err,
	    sizeof(err)), 0);
	/* certificate: rdp's and http's (it follows rdp's) */
	assert_int_equal(conf_diff(&a, &b, count, &n), 6);
	assert_int_equal(n.changed, 6);
	assert_int_equal(n.restart, 2);		/* listen, url */
	conf_take_live(&a, &b);
	assert_int_equal(a.rdp.max_connections, 9);
	assert_int_equal(a.rdp.trust_cookie, 1);
	assert_string_equal(a.http_certificate, "/x.crt");
	assert_string_equal(a.rdp.listen, "0.0.0.0:3389");
	assert_string_equal(a.state_url, "");
	assert_int_equal(conf_diff(&a, &b, NULL, NULL), 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_values_and_comments),
		cmocka_unit_test(test_errors_name_file_line_key),
		cmocka_unit_test(test_printed_defaults_load_as_defaults),
		cmocka_unit_test(test_diff_and_take_live),
	};
	return cmocka_run_group_tests_name("cfg", tests, NULL, NULL);
}
