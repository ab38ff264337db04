/* Unit tests for broker/core/admin_token.c: the admin API's bearer tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "broker/core/admin_token.h"

static void
test_new_and_hash(void **state)
{
	char tok[ADMIN_TOKEN_LEN + 1], other[ADMIN_TOKEN_LEN + 1];
	char hash[CRYPTO_HASH_HEX], again[CRYPTO_HASH_HEX], want[CRYPTO_HASH_HEX];

	assert_int_equal(admin_token_new(tok, sizeof(tok), hash), 0);
	assert_int_equal(strlen(tok), ADMIN_TOKEN_LEN);
	assert_memory_equal(tok, "tsba_", 5);
	assert_true(crypto_token_valid(tok + 5));
	assert_int_equal(crypto_sha256_hex(tok, strlen(tok), want), 0);
	assert_string_equal(hash, want);
	assert_int_equal(admin_token_hash(tok, again), 0);
	assert_string_equal(again, hash);
	assert_int_equal(admin_token_new(other, sizeof(other), again), 0);
	assert_string_not_equal(other, tok);
	assert_int_equal(admin_token_new(tok, ADMIN_TOKEN_LEN, hash), CRYPTO_ERR);
}

static void
test_malformed(void **state)
{
	char tok[ADMIN_TOKEN_LEN + 2], hash[CRYPTO_HASH_HEX] = "unchanged";
	const char *bad[] = { "", "tsba_", "tsba_abc", "Bearer tsba_",
	    "tsbb_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	    "tsba_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
	    "tsba_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
	    "tsba_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
	    "tsba_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde ",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(admin_token_hash(bad[i], hash), ADMIN_TOKEN_MALFORMED);
	assert_string_equal(hash, "unchanged");
	strcpy(tok, "tsba_0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF");
	assert_int_equal(admin_token_hash(tok, hash), 0);
}

/* The form shared by agent tokens, session ids and the tail of admin
 * tokens. */
static void
test_token_form(void **state)
{
	char tok[CRYPTO_TOKEN_LEN + 2];

	assert_int_equal(crypto_token_new(tok, sizeof(tok)), 0);
	assert_true(crypto_token_valid(tok));
	tok[CRYPTO_TOKEN_LEN - 1] = '\0';
	assert_false(crypto_token_valid(tok));
	tok[CRYPTO_TOKEN_LEN - 1] = 'A';
	assert_true(crypto_token_valid(tok));
	tok[CRYPTO_TOKEN_LEN] = 'a';
	tok[CRYPTO_TOKEN_LEN + 1] = '\0';
	assert_false(crypto_token_valid(tok));
	tok[CRYPTO_TOKEN_LEN] = '\0';
	tok[3] = 'g';
	assert_false(crypto_token_valid(tok));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_and_hash),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_token_form),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
