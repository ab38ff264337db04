/* libFuzzer target: the agent's session list (wire_sessions_decode), read
 * from the file: and command: providers' output. What is accepted must be
 * NUL-terminated within its fields and have a known state. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/common/wire.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_session *s = NULL;
	char err[256];
	size_t n = 0;

	if (wire_sessions_decode((const char *)data, size, &s, &n, err, sizeof(err)) != 0) {
		if (strnlen(err, sizeof(err)) == sizeof(err) || err[0] == '\0')
			abort();	/* every refusal says why */
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (strnlen(s[i].user, sizeof(s[i].user)) == sizeof(s[i].user) ||
		    strnlen(s[i].domain, sizeof(s[i].domain)) == sizeof(s[i].domain) ||
		    strnlen(s[i].id, sizeof(s[i].id)) == sizeof(s[i].id) ||
		    (s[i].state != WIRE_ACTIVE && s[i].state != WIRE_DISCONNECTED))
			abort();
	}
	free(s);
	return 0;
}
