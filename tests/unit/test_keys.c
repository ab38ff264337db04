/* keys.c and its crypto: the routing-token key's fingerprint (a known
 * HMAC value; a missing file not made by -t), the certificate's as openssl
 * prints it, and the check at start against the store's record: the first
 * records, the same key passes, another is refused with both fingerprints
 * and the file named, a record (rotation) makes the other one pass. */
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

#include "broker/common/log.h"
#include "broker/core/crypto.h"
#include "broker/core/keys.h"
#include "broker/state/store.h"

/* HMAC-SHA256(bytes 0..31, "tsbroker token-key fingerprint") (Python's hmac) */
#define FP_0_31 "c6cd18fb866908ebc3327c54e1e7560a9b2ccb63a9316386af944a081837c466"

struct kx {
	char dir[64], key[128], key2[128], db[128];
};

static int
setup(void **state)
{
	struct kx *k = calloc(1, sizeof(*k));

	assert_non_null(k);
	snprintf(k->dir, sizeof(k->dir), "/tmp/tsb-keys-XXXXXX");
	assert_non_null(mkdtemp(k->dir));
	snprintf(k->key, sizeof(k->key), "%s/token.key", k->dir);
	snprintf(k->key2, sizeof(k->key2), "%s/other.key", k->dir);
	snprintf(k->db, sizeof(k->db), "%s/state.db", k->dir);
	*state = k;
	return 0;
}

static int
teardown(void **state)
{
	struct kx *k = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", k->dir);
	assert_int_equal(system(cmd), 0);
	free(k);
	return 0;
}

static void
test_key_fingerprint(void **state)
{
	struct kx *k = *state;
	uint8_t key[32];
	char fp[CRYPTO_HASH_HEX], fp2[CRYPTO_HASH_HEX], err[256];
	FILE *f;

	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	assert_int_equal(crypto_key_fingerprint(key, sizeof(key), fp), 0);
	assert_string_equal(fp, FP_0_31);
	/* the same through the file, once it exists (-t makes none) */
	assert_int_equal(keys_token_fingerprint(k->key, 0, fp2, err, sizeof(err)), KEYS_NONE);
	assert_int_equal(access(k->key, F_OK), -1);
	assert_non_null(f = fopen(k->key, "w"));
	assert_int_equal(fwrite(key, 1, sizeof(key), f), sizeof(key));
	fclose(f);
	assert_int_equal(chmod(k->key, 0600), 0);
	assert_int_equal(keys_token_fingerprint(k->key, 0, fp2, err, sizeof(err)), 0);
	assert_string_equal(fp2, FP_0_31);
	/* readable by others: refused, as the broker refuses it */
	assert_int_equal(chmod(k->key, 0644), 0);
	assert_int_equal(keys_token_fingerprint(k->key, 0, fp2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "chmod 600"));
}

static void
test_cert_fingerprint(void **state)
{
	struct kx *k = *state;
	char crt[160], keyf[160], cmd[512], want[CRYPTO_CERT_FP] = "", fp[CRYPTO_CERT_FP];
	char err[256];
	FILE *p;

	snprintf(crt, sizeof(crt), "%s/b.crt", k->dir);
	snprintf(keyf, sizeof(keyf), "%s/b.key", k->dir);
	assert_int_equal(crypto_selfsigned_create(crt, keyf, "broker", err, sizeof(err)), 0);
	snprintf(cmd, sizeof(cmd), "openssl x509 -noout -fingerprint -sha256 -in %s", crt);
	assert_non_null(p = popen(cmd, "r"));
	assert_non_null(fgets(cmd, sizeof(cmd), p));
	pclose(p);
	cmd[strcspn(cmd, "\n")] = '\0';
	snprintf(want, sizeof(want), "%s", strchr(cmd, '=') + 1);
	assert_int_equal(crypto_cert_fingerprint(crt, fp, err, sizeof(err)), 0);
	assert_string_equal(fp, want);
	assert_int_equal(crypto_cert_fingerprint(keyf, fp, err, sizeof(err)), CRYPTO_ERR);
}

static void
test_check_and_record(void **state)
{
	struct kx *k = *state;
	char err[768], fp1[CRYPTO_HASH_HEX], fp2[CRYPTO_HASH_HEX], old[CRYPTO_HASH_HEX];
	struct store *st;
	int first = -1;

	assert_non_null(st = store_open(k->db, err, sizeof(err)));
	/* the first broker makes its key and records it; again: the same */
	assert_int_equal(keys_token_check(st, k->key, &first, err, sizeof(err)), 0);
	assert_int_equal(first, 1);
	assert_int_equal(keys_token_check(st, k->key, &first, err, sizeof(err)), 0);
	assert_int_equal(first, 0);
	/* another key: refused, both fingerprints and the file named */
	assert_int_equal(keys_token_fingerprint(k->key, 0, fp1, err, sizeof(err)), 0);
	assert_int_equal(keys_token_fingerprint(k->key2, 1, fp2, err, sizeof(err)), 0);
	assert_string_not_equal(fp1, fp2);
	assert_int_equal(keys_token_check(st, k->key2, &first, err, sizeof(err)),
	    KEYS_MISMATCH);
	assert_non_null(strstr(err, fp1));
	assert_non_null(strstr(err, fp2));
	assert_non_null(strstr(err, k->key2));
	/* rotation: the other key recorded on purpose; now the first is refused */
	assert_int_equal(keys_token_record(st, k->key2, old, fp2, err, sizeof(err)), 0);
	assert_string_equal(old, fp1);
	assert_int_equal(keys_token_check(st, k->key2, &first, err, sizeof(err)), 0);
	assert_int_equal(keys_token_check(st, k->key, &first, err, sizeof(err)),
	    KEYS_MISMATCH);
	store_close(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_key_fingerprint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cert_fingerprint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_and_record, setup, teardown),
	};
	log_init("test_keys", LOG_ERROR);
	return cmocka_run_group_tests_name("keys", tests, NULL, NULL);
}
