/* Unit tests for broker/front/token.c: routing tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "broker/front/token.h"

static struct token_key key = { { 1, 2, 3 } };

static void
test_issue_verify(void **state)
{
	char tok[TOKEN_MAX];
	int64_t sid = 0;

	assert_int_equal(token_issue(&key, 42, 1700000060, tok, sizeof(tok)), 0);
	assert_true(strlen(tok) < 50);
	assert_memory_equal(tok, "tsb1.42.1700000060.", 19);
	for (const char *p = tok; *p; p++)
		assert_true(*p > 32 && *p < 127);
	assert_int_equal(token_verify(&key, tok, strlen(tok), 1700000000, &sid), 0);
	assert_int_equal(sid, 42);
	assert_int_equal(token_verify(&key, tok, strlen(tok), 1700000060, &sid), 0);
	assert_int_equal(token_verify(&key, tok, strlen(tok), 1700000061, &sid),
	    TOKEN_EXPIRED);
}

static void
test_forged_and_malformed(void **state)
{
	struct token_key other = { { 9 } };
	char tok[TOKEN_MAX], bad[TOKEN_MAX];
	int64_t sid = -7;
	size_t n;

	assert_int_equal(token_issue(&key, 42, 1700000060, tok, sizeof(tok)), 0);
	n = strlen(tok);
	/* another key */
	assert_int_equal(token_verify(&other, tok, n, 0, &sid), TOKEN_FORGED);
	/* another session with the same MAC */
	memcpy(bad, tok, n + 1);
	bad[5] = '4';
	bad[6] = '3';
	assert_int_equal(token_verify(&key, bad, n, 0, &sid), TOKEN_FORGED);
	/* a later expiry with the same MAC */
	memcpy(bad, tok, n + 1);
	bad[8] = '2';
	assert_int_equal(token_verify(&key, bad, n, 0, &sid), TOKEN_FORGED);
	/* one bit of the MAC */
	memcpy(bad, tok, n + 1);
	bad[n - 1] ^= 1;
	assert_int_equal(token_verify(&key, bad, n, 0, &sid), TOKEN_FORGED);
	/* every truncation */
	for (size_t i = 0; i < n; i++)
		assert_true(token_verify(&key, tok, i, 0, &sid) < 0);
	assert_int_equal(token_verify(&key, "3640205228.15629.0000", 21, 0, &sid),
	    TOKEN_MALFORMED);
	assert_int_equal(token_verify(&key, "tsb1.0.1.AAAAAAAAAAAAAAAAAAAAAA", 31, 0,
	    &sid), TOKEN_MALFORMED);
	assert_int_equal(sid, -7);	/* untouched on failure */
}

static void
test_key_file(void **state)
{
	char dir[] = "/tmp/tsb-token-XXXXXX", path[64], err[256];
	struct token_key a, b;
	struct stat sb;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/token.key", dir);
	assert_int_equal(token_key_load(path, &a, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(sb.st_size, TOKEN_KEY_LEN);
	assert_int_equal(token_key_load(path, &b, err, sizeof(err)), 0);
	assert_memory_equal(a.k, b.k, TOKEN_KEY_LEN);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(token_key_load(path, &b, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "chmod 600"));
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_issue_verify),
		cmocka_unit_test(test_forged_and_malformed),
		cmocka_unit_test(test_key_file),
	};
	return cmocka_run_group_tests_name("token", tests, NULL, NULL);
}
