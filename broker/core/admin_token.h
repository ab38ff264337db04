/* admin_token: the bearer tokens of the admin API, "tsba_" and 64 hex
 * characters, made by `tsbroker admin token add` and kept by the store as
 * their SHA-256 only. The caller owns every buffer; tokens in them are
 * secrets (wipe them with crypto_wipe). */
#ifndef TS_ADMIN_TOKEN_H
#define TS_ADMIN_TOKEN_H

#include <stddef.h>

#include "broker/core/crypto.h"

#define ADMIN_TOKEN_PREFIX	"tsba_"
#define ADMIN_TOKEN_LEN		(sizeof(ADMIN_TOKEN_PREFIX) - 1 + CRYPTO_TOKEN_LEN)
#define ADMIN_TOKEN_MALFORMED	(-10)	/* not of the token's form */

/* A new token into out (n > ADMIN_TOKEN_LEN) and its SHA-256 hex into
 * hash[CRYPTO_HASH_HEX]. 0 or CRYPTO_ERR. */
int admin_token_new(char *out, size_t n, char *hash);
/* The SHA-256 hex of a presented token into hash[CRYPTO_HASH_HEX], after
 * checking its form. 0, ADMIN_TOKEN_MALFORMED or CRYPTO_ERR. */
int admin_token_hash(const char *token, char *hash);

#endif
