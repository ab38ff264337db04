/* keys.c: the fingerprints of the pair's shared key and certificate
 * (keys.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broker/common/util.h"
#include "broker/core/keys.h"
#include "broker/front/token.h"
#include "broker/state/store.h"

int
keys_token_fingerprint(const char *path, int create, char fp[CRYPTO_HASH_HEX], char *err,
    size_t errlen)
{
	struct token_key key;
	int r;

	if (!create && access(path, F_OK) != 0 && errno == ENOENT)
		return KEYS_NONE;
	if (token_key_load(path, &key, err, errlen) != 0)
		return -1;
	r = crypto_key_fingerprint(key.k, sizeof(key.k), fp);
	crypto_wipe(&key, sizeof(key));
	if (r != 0)
		snprintf(err, errlen, "%s: cannot compute its fingerprint", path);
	return r == 0 ? 0 : -1;
}

int
keys_token_check(struct store *st, const char *path, int *first, char *err, size_t errlen)
{
	char fp[CRYPTO_HASH_HEX], recorded[STORE_SETTING_MAX];
	int r;

	*first = 0;
	if ((r = keys_token_fingerprint(path, 1, fp, err, errlen)) != 0)
		return r;
	if ((r = store_setting_claim(st, STORE_SETTING_TOKEN_KEY, fp, util_now_ms(),
	    recorded, sizeof(recorded), first)) != 0) {
		snprintf(err, errlen, "cannot read the recorded routing-token key fingerprint: "
		    "%s", store_strerror(r));
		return r;
	}
	if (strcmp(recorded, fp) == 0)
		return 0;
	snprintf(err, errlen, "the routing-token key %s (fingerprint %s) is not the one "
	    "the brokers sharing this database use (fingerprint %s): copy their key file "
	    "to %s (docs/ha-keys.md), or, to rotate the key on purpose, run 'tsbroker "
	    "admin token-key record'", path, fp, recorded, path);
	return KEYS_MISMATCH;
}

int
keys_token_record(struct store *st, const char *path, char old[CRYPTO_HASH_HEX],
    char fp[CRYPTO_HASH_HEX], char *err, size_t errlen)
{
	char recorded[STORE_SETTING_MAX] = "";
	int r;

	if ((r = keys_token_fingerprint(path, 1, fp, err, errlen)) != 0)
		return r;
	if ((r = store_setting_get(st, STORE_SETTING_TOKEN_KEY, recorded,
	    sizeof(recorded))) != 0 && r != STORE_NOT_FOUND) {
		snprintf(err, errlen, "%s", store_strerror(r));
		return r;
	}
	if ((r = store_setting_set(st, STORE_SETTING_TOKEN_KEY, fp, util_now_ms())) != 0) {
		snprintf(err, errlen, "%s", store_strerror(r));
		return r;
	}
	util_strlcpy(old, recorded, CRYPTO_HASH_HEX);
	return 0;
}
