#include <string.h>

#include "broker/core/admin_token.h"

#define PREFIX_LEN	(sizeof(ADMIN_TOKEN_PREFIX) - 1)

int
admin_token_new(char *out, size_t n, char *hash)
{
	int r;

	if (n <= ADMIN_TOKEN_LEN)
		return CRYPTO_ERR;
	memcpy(out, ADMIN_TOKEN_PREFIX, PREFIX_LEN);
	if ((r = crypto_token_new(out + PREFIX_LEN, n - PREFIX_LEN)) != 0 ||
	    (r = crypto_sha256_hex(out, ADMIN_TOKEN_LEN, hash)) != 0)
		crypto_wipe(out, n);
	return r;
}

int
admin_token_hash(const char *token, char *hash)
{
	if (strncmp(token, ADMIN_TOKEN_PREFIX, PREFIX_LEN) != 0 ||
	    !crypto_token_valid(token + PREFIX_LEN))
		return ADMIN_TOKEN_MALFORMED;
	return crypto_sha256_hex(token, ADMIN_TOKEN_LEN, hash);
}
