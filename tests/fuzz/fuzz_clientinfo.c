/* libFuzzer target for broker/front/clientinfo.c: never reads outside its
 * input; the names are terminated; the password it locates lies inside the
 * input and is wiped. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/front/clientinfo.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct clientinfo ci;
	uint8_t *copy;
	size_t i;
	int r;

	if ((copy = malloc(size ? size : 1)) == NULL)
		return 0;
	memcpy(copy, data, size);
	r = clientinfo_parse(copy, size, &ci);
	if (ci.password_off > size || ci.password_len > size - ci.password_off)
		abort();
	if (r == 0 && (memchr(ci.user, '\0', sizeof(ci.user)) == NULL ||
	    memchr(ci.domain, '\0', sizeof(ci.domain)) == NULL))
		abort();
	clientinfo_wipe_password(copy, size, &ci);
	for (i = 0; i < ci.password_len; i++)
		if (copy[ci.password_off + i] != 0)
			abort();
	if (clientinfo_strerror(r) == NULL)
		abort();
	free(copy);
	return 0;
}
