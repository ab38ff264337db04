/* crypto: everything the broker does with OpenSSL outside the RDP TLS stack:
 * agent tokens (random, stored as SHA-256), admin passwords (scrypt), HMAC,
 * and the self-signed certificate made on first start. Secrets passed in are
 * never logged; buffers holding them are wiped with crypto_wipe. */
#ifndef TS_CRYPTO_H
#define TS_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define CRYPTO_TOKEN_LEN	64	/* hex characters of an agent token */
#define CRYPTO_HASH_HEX		65	/* SHA-256 hex + NUL */
#define CRYPTO_PWHASH_MAX	192	/* "scrypt$N$r$p$salt$hash" + NUL */

/* Return codes: 0, or one of these. */
#define CRYPTO_ERR		(-1)	/* OpenSSL or the kernel failed */
#define CRYPTO_MISMATCH		(-2)	/* crypto_password_verify: another password */
#define CRYPTO_MALFORMED	(-3)	/* ... the stored hash cannot be used */

/* A new random token (CRYPTO_TOKEN_LEN hex chars) into out (n > 64), for
 * agents, admin tokens and sessions. 0 or CRYPTO_ERR. */
int crypto_token_new(char *out, size_t n);
/* 1 if s is of crypto_token_new's form (CRYPTO_TOKEN_LEN hex chars). */
int crypto_token_valid(const char *s);
/* SHA-256 of s as lower-case hex into out[CRYPTO_HASH_HEX]. 0 or CRYPTO_ERR. */
int crypto_sha256_hex(const char *s, size_t len, char *out);
/* Constant-time comparison of two equal-length buffers: 1 if equal. */
int crypto_equal(const void *a, const void *b, size_t n);
void crypto_wipe(void *p, size_t n);

/* A random human-typable password (n-1 characters from a 32-letter set).
 * 0 or CRYPTO_ERR. */
int crypto_password_generate(char *out, size_t n);
/* scrypt with a random salt, encoded into out[CRYPTO_PWHASH_MAX]. 0 or
 * CRYPTO_ERR. */
int crypto_password_hash(const char *password, char *out, size_t n);
/* 0 if password matches stored, CRYPTO_MISMATCH if not, CRYPTO_MALFORMED if
 * stored is malformed (or scrypt cannot run with its parameters),
 * CRYPTO_ERR if OpenSSL failed (out of memory): try again later. */
int crypto_password_verify(const char *password, const char *stored);

/* HMAC-SHA256 of data under key into out[32]. 0 or CRYPTO_ERR. */
int crypto_hmac_sha256(const uint8_t *key, size_t keylen, const void *data,
    size_t len, uint8_t out[32]);

/* The fingerprint of a secret key: HMAC-SHA256(key, "tsbroker token-key
 * fingerprint") as lower-case hex into out[CRYPTO_HASH_HEX]. It names the
 * key without revealing anything of it. 0 or CRYPTO_ERR. */
int crypto_key_fingerprint(const uint8_t *key, size_t keylen, char out[CRYPTO_HASH_HEX]);

#define CRYPTO_CERT_FP	96	/* "AB:CD:..." of SHA-256 + NUL */
/* The SHA-256 fingerprint of the first certificate in the PEM file path, as
 * `openssl x509 -noout -fingerprint -sha256` prints it (upper-case hex
 * pairs joined by ':') into out[CRYPTO_CERT_FP]. 0, or CRYPTO_ERR with err. */
int crypto_cert_fingerprint(const char *path, char out[CRYPTO_CERT_FP], char *err,
    size_t errlen);

/* Checks that the PEM files hold a certificate and its private key (a
 * reload's check before anything is swapped). 0, or CRYPTO_ERR with err. */
int crypto_keypair_check(const char *cert_path, const char *key_path, char *err,
    size_t errlen);

/* Writes a new RSA-2048 key (mode 0600) and a self-signed certificate for
 * common_name, localhost and 127.0.0.1 valid ten years. 0 or CRYPTO_ERR
 * with err. */
int crypto_selfsigned_create(const char *cert_path, const char *key_path,
    const char *common_name, char *err, size_t errlen);

#endif
