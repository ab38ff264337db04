/* libFuzzer target: the admin login body ({"password": ...}, wire.c). The
 * reason given on error must never hold the password or any of the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/common/wire.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char pw[256], err[160];

	if (wire_login_decode((const char *)data, size, pw, sizeof(pw), err,
	    sizeof(err)) == 0) {
		if (strlen(pw) == 0 || strlen(pw) >= sizeof(pw))
			abort();
	} else if (strlen(err) >= sizeof(err) || strstr(err, "password") == NULL)
		abort();	/* every error names the expected shape */
	return 0;
}
