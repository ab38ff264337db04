/* libFuzzer target: routing-token verification (broker/front/token.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/front/token.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct token_key key = { { 7, 7, 7 } };
	int64_t sid;

	if (token_verify(&key, (const char *)data, size, 0, &sid) != 0)
		return 0;
	/* without the key nothing should verify; if it does, it is well formed */
	if (size >= TOKEN_MAX || sid < 1)
		abort();
	return 0;
}
