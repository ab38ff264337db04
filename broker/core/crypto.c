#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "broker/common/util.h"
#include "broker/core/crypto.h"

/* scrypt cost: 16 MiB and about 50 ms per verification on one core. */
#define SCRYPT_N	16384
#define SCRYPT_R	8
#define SCRYPT_P	1
/* the most memory OpenSSL's scrypt may use by default (its maxmem_bytes) */
#define SCRYPT_MAXMEM	(1025UL * 1024 * 1024)
#define SALT_LEN	16
#define DK_LEN		32

int
crypto_token_new(char *out, size_t n)
{
	uint8_t raw[CRYPTO_TOKEN_LEN / 2];

	if (n <= CRYPTO_TOKEN_LEN || RAND_bytes(raw, sizeof(raw)) != 1)
		return CRYPTO_ERR;
	util_hex(raw, sizeof(raw), out);
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

int
crypto_token_valid(const char *s)
{
	size_t i;

	for (i = 0; i < CRYPTO_TOKEN_LEN; i++)
		if (!isxdigit((unsigned char)s[i]))
			return 0;
	return s[i] == '\0';
}

/* SHA-256 fetched once (EVP_sha256() is fetched again on every digest:
 * a heartbeat's token hash); NULL if that failed: EVP_sha256() then. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void
sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int
crypto_sha256_hex(const char *s, size_t len, char *out)
{
	uint8_t md[32];
	unsigned int mdlen = 0;

	(void)pthread_once(&sha256_once, sha256_fetch);
	if (EVP_Digest(s, len, md, &mdlen, sha256_md != NULL ? sha256_md : EVP_sha256(),
	    NULL) != 1 || mdlen != 32)
		return CRYPTO_ERR;
	util_hex(md, 32, out);
	return 0;
}

int
crypto_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

void
crypto_wipe(void *p, size_t n)
{
	OPENSSL_cleanse(p, n);
}

int
crypto_password_generate(char *out, size_t n)
{
	/* no 0/O/1/l/I: easy to read off a terminal */
	static const char set[] = "abcdefghjkmnpqrstuvwxyz23456789AB";
	uint8_t raw[64];

	if (n < 2 || n - 1 > sizeof(raw) || RAND_bytes(raw, (int)(n - 1)) != 1)
		return CRYPTO_ERR;
	for (size_t i = 0; i < n - 1; i++)
		out[i] = set[raw[i] & 31];
	out[n - 1] = '\0';
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

int
crypto_keypair_check(const char *cert_path, const char *key_path, char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;
	X509 *x = NULL;
	FILE *f;
	int r = CRYPTO_ERR;

	if ((f = fopen(cert_path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", cert_path, strerror(errno));
		return CRYPTO_ERR;
	}
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (x == NULL) {
		snprintf(err, errlen, "%s: not a PEM certificate", cert_path);
		goto out;
	}
	if ((f = fopen(key_path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", key_path, strerror(errno));
		goto out;
	}
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (k == NULL)
		snprintf(err, errlen, "%s: not a PEM private key", key_path);
	else if (X509_check_private_key(x, k) != 1)
		snprintf(err, errlen, "%s does not match the certificate %s", key_path, cert_path);
	else
		r = 0;
 out:
	EVP_PKEY_free(k);
	X509_free(x);
	ERR_clear_error();
	return r;
}

static int
scrypt(const char *pw, const uint8_t *salt, size_t saltlen, uint64_t N,
    uint32_t r, uint32_t p, uint8_t *out, size_t outlen)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[6], *q = params;
	int ret = CRYPTO_ERR;

	if (ctx == NULL)
		goto out;
	*q++ = OSSL_PARAM_construct_octet_string("pass", (void *)pw, strlen(pw));
	*q++ = OSSL_PARAM_construct_octet_string("salt", (void *)salt, saltlen);
	*q++ = OSSL_PARAM_construct_uint64("n", &N);
	*q++ = OSSL_PARAM_construct_uint32("r", &r);
	*q++ = OSSL_PARAM_construct_uint32("p", &p);
	*q = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, out, outlen, params) == 1)
		ret = 0;
 out:
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ret;
}

int
crypto_password_hash(const char *password, char *out, size_t n)
{
	uint8_t salt[SALT_LEN], dk[DK_LEN];
	char salt_hex[2 * SALT_LEN + 1], dk_hex[2 * DK_LEN + 1];
	int r = CRYPTO_ERR;

	if (RAND_bytes(salt, sizeof(salt)) != 1 ||
	    scrypt(password, salt, sizeof(salt), SCRYPT_N, SCRYPT_R, SCRYPT_P,
	    dk, sizeof(dk)) != 0)
		goto out;
	util_hex(salt, sizeof(salt), salt_hex);
	util_hex(dk, sizeof(dk), dk_hex);
	if (snprintf(out, n, "scrypt$%d$%d$%d$%s$%s", SCRYPT_N, SCRYPT_R, SCRYPT_P,
	    salt_hex, dk_hex) < (int)n)
		r = 0;
 out:
	OPENSSL_cleanse(dk, sizeof(dk));
	return r;
}

static int
unhex(const char *s, size_t len, uint8_t *out)
{
	for (size_t i = 0; i < len; i++) {
		unsigned int v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return CRYPTO_ERR;
		out[i] = (uint8_t)v;
	}
	return 0;
}

int
crypto_password_verify(const char *password, const char *stored)
{
	char salt_hex[2 * SALT_LEN + 1], dk_hex[2 * DK_LEN + 1];
	uint8_t salt[SALT_LEN], want[DK_LEN], got[DK_LEN];
	unsigned long N, r, p;
	int ret = CRYPTO_MALFORMED;

	if (sscanf(stored, "scrypt$%lu$%lu$%lu$%32[0-9a-f]$%64[0-9a-f]", &N, &r, &p,
	    salt_hex, dk_hex) != 5 || strlen(salt_hex) != 2 * SALT_LEN ||
	    strlen(dk_hex) != 2 * DK_LEN || N < 2 || N > (1UL << 20) || r < 1 ||
	    r > 32 || p < 1 || p > 16 || 128 * r * (N + 2 + p) > SCRYPT_MAXMEM)
		return CRYPTO_MALFORMED;
	if (unhex(salt_hex, SALT_LEN, salt) != 0 || unhex(dk_hex, DK_LEN, want) != 0)
		return CRYPTO_MALFORMED;
	if (scrypt(password, salt, SALT_LEN, N, (uint32_t)r, (uint32_t)p, got,
	    sizeof(got)) != 0) {
		ret = CRYPTO_ERR;	/* parameters it can run: OpenSSL failed (memory) */
		goto out;
	}
	ret = CRYPTO_memcmp(got, want, DK_LEN) == 0 ? 0 : CRYPTO_MISMATCH;
 out:
	OPENSSL_cleanse(got, sizeof(got));
	return ret;
}

int
crypto_hmac_sha256(const uint8_t *key, size_t keylen, const void *data,
    size_t len, uint8_t out[32])
{
	unsigned int outlen = 0;

	if (HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen) == NULL ||
	    outlen != 32)
		return CRYPTO_ERR;
	return 0;
}

int
crypto_key_fingerprint(const uint8_t *key, size_t keylen, char out[CRYPTO_HASH_HEX])
{
	static const char label[] = "tsbroker token-key fingerprint";
	uint8_t mac[32];

	if (crypto_hmac_sha256(key, keylen, label, sizeof(label) - 1, mac) != 0)
		return CRYPTO_ERR;
	util_hex(mac, sizeof(mac), out);
	return 0;
}

int
crypto_cert_fingerprint(const char *path, char out[CRYPTO_CERT_FP], char *err,
    size_t errlen)
{
	static const char hex[] = "0123456789ABCDEF";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	X509 *x = NULL;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return CRYPTO_ERR;
	}
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (x == NULL || X509_digest(x, EVP_sha256(), md, &n) != 1 || n != 32) {
		snprintf(err, errlen, "%s: not a PEM certificate", path);
		X509_free(x);
		ERR_clear_error();
		return CRYPTO_ERR;
	}
	X509_free(x);
	for (unsigned int i = 0; i < n; i++) {
		out[3 * i] = hex[md[i] >> 4];
		out[3 * i + 1] = hex[md[i] & 15];
		out[3 * i + 2] = i + 1 < n ? ':' : '\0';
	}
	return 0;
}

static int
add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ex;
	int r;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	if ((ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value)) == NULL)
		return CRYPTO_ERR;
	r = X509_add_ext(x, ex, -1) == 1 ? 0 : CRYPTO_ERR;
	X509_EXTENSION_free(ex);
	return r;
}

int
crypto_selfsigned_create(const char *cert_path, const char *key_path,
    const char *common_name, char *err, size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	FILE *f = NULL;
	char san[512];
	int fd = -1, r = CRYPTO_ERR, ok;

	if ((pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)) == NULL ||
	    (x = X509_new()) == NULL) {
		snprintf(err, errlen, "key generation failed");
		goto out;
	}
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(util_now_ms() / 1000));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
	X509_set_pubkey(x, pkey);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	    (const unsigned char *)common_name, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	snprintf(san, sizeof(san), "DNS:%s,DNS:localhost,IP:127.0.0.1", common_name);
	if (add_ext(x, NID_subject_alt_name, san) != 0 ||
	    add_ext(x, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
	    X509_sign(x, pkey, EVP_sha256()) == 0) {
		snprintf(err, errlen, "certificate signing failed");
		goto out;
	}
	fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		snprintf(err, errlen, "%s: %s", key_path, strerror(errno));
		goto out;
	}
	fd = -1;
	ok = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1;
	if (fclose(f) != 0 || !ok) {
		f = NULL;
		snprintf(err, errlen, "%s: cannot write the key", key_path);
		goto out;
	}
	if ((f = fopen(cert_path, "wx")) == NULL) {
		snprintf(err, errlen, "%s: %s", cert_path, strerror(errno));
		goto out;
	}
	ok = PEM_write_X509(f, x) == 1;
	if (fclose(f) != 0 || !ok) {
		f = NULL;
		snprintf(err, errlen, "%s: cannot write the certificate", cert_path);
		goto out;
	}
	f = NULL;
	r = 0;
 out:
	if (f != NULL)
		fclose(f);
	if (fd >= 0)
		close(fd);
	X509_free(x);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return r;
}
