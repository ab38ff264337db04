/* Unit tests for broker/front/pem_cache.c: loading, the interposed PEM
 * readers (the cached object for the loaded text, libcrypto's for any other)
 * and the start-up self-check. Linked with -rdynamic: the readers are then
 * in the executable's dynamic symbol table, as libfreerdp2's references put
 * them in tsbroker's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "broker/front/pem_cache.h"

static char dir[] = "/tmp/test_pem_cache.XXXXXX";
static char cert_a[64], key_a[64], key_b[64];

static EVP_PKEY *
key_new(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

static void
key_write(EVP_PKEY *k, const char *path)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
}

/* A self-signed certificate for k. */
static void
cert_write(EVP_PKEY *k, const char *path)
{
	X509 *x = X509_new();
	FILE *f = fopen(path, "w");

	assert_non_null(x);
	assert_non_null(f);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	    (const unsigned char *)"test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
	X509_free(x);
}

static int
setup(void **state)
{
	EVP_PKEY *a, *b;

	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(cert_a, sizeof(cert_a), "%s/a.crt", dir);
	snprintf(key_a, sizeof(key_a), "%s/a.key", dir);
	snprintf(key_b, sizeof(key_b), "%s/b.key", dir);
	a = key_new();
	b = key_new();
	key_write(a, key_a);
	key_write(b, key_b);
	cert_write(a, cert_a);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	return 0;
}

static int
teardown(void **state)
{
	unlink(cert_a);
	unlink(key_a);
	unlink(key_b);
	rmdir(dir);
	return 0;
}

static void
test_load_errors(void **state)
{
	char err[256] = "", *c = NULL, *k = NULL;

	assert_int_equal(pem_cache_load(cert_a, key_b, &c, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not match"));
	assert_int_equal(pem_cache_load("/nonexistent.crt", key_a, &c, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent.crt"));
	assert_int_equal(pem_cache_load(key_a, key_a, &c, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no PEM certificate"));
	assert_int_equal(pem_cache_load(cert_a, cert_a, &c, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no PEM private key"));
	assert_null(c);
	assert_null(k);
}

static void
test_cached_reads_and_selfcheck(void **state)
{
	char err[256] = "", *c = NULL, *k = NULL, *copy;
	uint64_t hits;
	X509 *x1, *x2, *x3;
	EVP_PKEY *k1;
	BIO *b;

	assert_int_equal(pem_cache_load(cert_a, key_a, &c, &k, err, sizeof(err)), 0);
	assert_non_null(c);
	assert_non_null(k);
	hits = pem_cache_hits();
	assert_int_equal(pem_cache_selfcheck(err, sizeof(err)), 0);
	assert_int_equal(pem_cache_hits(), hits);	/* the check does not count */

	/* the loaded text, as FreeRDP reads it: the same object each time */
	b = BIO_new_mem_buf(c, -1);
	x1 = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	b = BIO_new_mem_buf(c, -1);
	x2 = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	b = BIO_new_mem_buf(k, -1);
	k1 = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	assert_non_null(x1);
	assert_ptr_equal(x1, x2);
	assert_non_null(k1);
	assert_int_equal(X509_check_private_key(x1, k1), 1);
	assert_int_equal(pem_cache_hits(), hits + 3);

	/* any other text (here: the same but its last newline) is parsed by
	 * libcrypto */
	copy = strdup(c);
	b = BIO_new_mem_buf(copy, (int)strlen(copy) - 1);
	x3 = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	assert_non_null(x3);
	assert_ptr_not_equal(x3, x1);
	assert_int_equal(X509_cmp(x3, x1), 0);
	assert_int_equal(pem_cache_hits(), hits + 3);
	X509_free(x3);
	free(copy);

	X509_free(x1);
	X509_free(x2);
	EVP_PKEY_free(k1);

	/* forgotten: the texts may go, the readers parse again */
	pem_cache_forget(c);
	assert_int_equal(pem_cache_selfcheck(err, sizeof(err)), -1);
	assert_non_null(strstr(err, "nothing loaded"));
	b = BIO_new_mem_buf(c, -1);
	x1 = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	assert_non_null(x1);
	assert_int_equal(pem_cache_hits(), hits + 3);
	X509_free(x1);
	free(c);
	free(k);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_cached_reads_and_selfcheck),
	};
	return cmocka_run_group_tests_name("pem_cache", tests, setup, teardown);
}
