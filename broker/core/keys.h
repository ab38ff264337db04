/* keys: what brokers sharing one store must have alike (docs/ha-keys.md):
 * the RDP certificate (clients reach them by one name) and the routing-token
 * key (a token minted by one is spliced by another). Both are compared by
 * fingerprints (`tsbroker -t`); the store records the token key's, written
 * by the first broker in token mode and checked by every broker at start.
 * Strings out are caller's buffers; no key byte leaves this module. */
#ifndef TS_KEYS_H
#define TS_KEYS_H

#include <stddef.h>

#include "broker/core/crypto.h"

#define KEYS_NONE	(-2)	/* the key file does not exist (yet) */
#define KEYS_MISMATCH	(-3)	/* another key than the one recorded */

struct store;

/* The fingerprint of the routing-token key file path (crypto_key_fingerprint)
 * into fp. create: make the file if it is missing (as the broker does at its
 * first start), else KEYS_NONE. 0, KEYS_NONE, or -1 with the reason in err
 * (a file of another size or readable by others). */
int keys_token_fingerprint(const char *path, int create, char fp[CRYPTO_HASH_HEX],
    char *err, size_t errlen);

/* At start: the fingerprint of key file path (made if missing) against the
 * store's. 0 if it is the recorded one or none was recorded (recorded now:
 * *first 1); KEYS_MISMATCH with the message (both fingerprints and the
 * file) in err; -1 or a STORE_* code with err. */
int keys_token_check(struct store *st, const char *path, int *first, char *err,
    size_t errlen);

/* `admin token-key record`: path's key becomes the recorded one (key
 * rotation); the one it replaces (or "" if none) into old. 0, or -1 or a
 * STORE_* code with err. */
int keys_token_record(struct store *st, const char *path, char old[CRYPTO_HASH_HEX],
    char fp[CRYPTO_HASH_HEX], char *err, size_t errlen);

#endif
