/* libFuzzer target: the heartbeat body parser (broker/common/wire.c) and the
 * encoder it round-trips through. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/common/wire.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_heartbeat hb, back;
	char err[256], *text;

	if (wire_heartbeat_decode((const char *)data, size, &hb, err, sizeof(err)) != 0)
		return 0;
	/* what was accepted must encode and decode to the same snapshot */
	if ((text = wire_heartbeat_encode(&hb)) != NULL) {
		if (wire_heartbeat_decode(text, strlen(text), &back, err, sizeof(err)) != 0 ||
		    strcmp(back.name, hb.name) != 0 || back.nsessions != hb.nsessions ||
		    back.sessions_known != hb.sessions_known)
			abort();
		wire_heartbeat_clear(&back);
		free(text);
	}
	wire_heartbeat_clear(&hb);
	return 0;
}
