/* Unit tests for broker/front/lean.c's TLS context: loaded once at
 * lean_new (a missing file, a key that does not match: refused with the
 * reason), swapped whole by lean_reload (a bad reload keeps the old one).
 * The connection sequence itself runs against real clients in
 * tests/e2e/test_lean.py and the other redirect suites. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/front/lean.h"

static char dir[] = "/tmp/test_lean.XXXXXX";
static char cert_a[64], key_a[64], cert_b[64], key_b[64];
static int stop_pipe[2];

/* A self-signed certificate and its key, by the openssl command. */
static int
make_pair(const char *cert, const char *key)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -subj /CN=test -days 1 -keyout %s -out %s 2>/dev/null", key, cert);
	return system(cmd);
}

static int
setup(void **state)
{
	if (mkdtemp(dir) == NULL || pipe(stop_pipe) != 0)
		return -1;
	snprintf(cert_a, sizeof(cert_a), "%s/a.crt", dir);
	snprintf(key_a, sizeof(key_a), "%s/a.key", dir);
	snprintf(cert_b, sizeof(cert_b), "%s/b.crt", dir);
	snprintf(key_b, sizeof(key_b), "%s/b.key", dir);
	return make_pair(cert_a, key_a) != 0 || make_pair(cert_b, key_b) != 0 ? -1 : 0;
}

static int
teardown(void **state)
{
	unlink(cert_a);
	unlink(key_a);
	unlink(cert_b);
	unlink(key_b);
	rmdir(dir);
	close(stop_pipe[0]);
	close(stop_pipe[1]);
	return 0;
}

/* lean_new from the files (as rdp.c does), NULL on a read error too */
static struct lean_engine *
new_from(const char *cert, const char *key, int token_mode, char *err, size_t n)
{
	struct lean_engine *e;
	struct lean_pem pem;

	if (lean_pem_read(&pem, cert, key, err, n) != 0)
		return NULL;
	e = lean_new(&pem, token_mode, stop_pipe[0], err, n);
	lean_pem_free(&pem);
	return e;
}

static void
test_load_errors(void **state)
{
	char err[256] = "";

	assert_null(new_from("/nonexistent.crt", key_a, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent.crt"));
	assert_null(new_from(cert_a, key_b, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "does not match"));
	assert_null(new_from(cert_a, cert_a, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "private key"));
}

static void
test_reload(void **state)
{
	struct lean_engine *e;
	char err[256] = "";

	e = new_from(cert_a, key_a, 1, err, sizeof(err));
	assert_non_null(e);
	/* a bad reload says why and keeps the context in use */
	assert_int_equal(lean_reload(e, cert_b, key_a, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not match"));
	assert_int_equal(lean_reload(e, cert_b, key_b, err, sizeof(err)), 0);
	assert_int_equal(lean_reload(e, cert_a, key_a, err, sizeof(err)), 0);
	lean_free(e);
	lean_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_reload),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
