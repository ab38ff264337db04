/* token: signed routing tokens for token mode (docs/token-mode.md).
 *
 *   tsb1.<session>.<expires>.<mac>
 *
 * session: the placement's session id (decimal), expires: unix seconds
 * (decimal), mac: the first 16 bytes of HMAC-SHA256(key, "tsb1.<session>.
 * <expires>") in base64url (22 characters). At most TOKEN_MAX - 1 bytes of
 * ASCII. A token never carries an address: the broker looks the server up
 * by the session when the client comes back. */
#ifndef TS_TOKEN_H
#define TS_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define TOKEN_MAX	64
#define TOKEN_KEY_LEN	32

#define TOKEN_MALFORMED	-1	/* not a tsb1 token, or truncated */
#define TOKEN_FORGED	-2	/* the MAC does not match */
#define TOKEN_EXPIRED	-3

struct token_key {
	uint8_t k[TOKEN_KEY_LEN];
};

/* Reads the key file, creating it (mode 0600, 32 random bytes) if it does
 * not exist. 0, or -1 with the reason in err (a file of another size or
 * readable by others is refused). */
int token_key_load(const char *path, struct token_key *key, char *err, size_t errlen);

/* Writes a token for session that expires at expires (unix s). 0 or -1. */
int token_issue(const struct token_key *key, int64_t session, int64_t expires,
    char *out, size_t n);

/* Verifies tok (len bytes, need not be NUL-terminated) at time now (unix s).
 * 0 with *session set, or TOKEN_MALFORMED / TOKEN_FORGED / TOKEN_EXPIRED. */
int token_verify(const struct token_key *key, const char *tok, size_t len,
    int64_t now, int64_t *session);
const char *token_strerror(int r);

#endif
