/* libFuzzer target: a heartbeat answer as the agent reads it (interval,
 * admin state and the broker's commands; broker/common/wire.c), then
 * round-tripped through the encoder: what was accepted encodes and decodes
 * to the same commands. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/common/wire.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_answer a, back;
	char err[256], *text;

	if (wire_answer_decode((const char *)data, size, &a, err, sizeof(err)) != 0)
		return 0;
	if (a.ncommands > WIRE_COMMANDS_MAX)
		abort();
	if ((text = wire_answer_encode(&a)) == NULL)
		return 0;	/* no memory */
	if (wire_answer_decode(text, strlen(text), &back, err, sizeof(err)) != 0 ||
	    back.ncommands != a.ncommands || back.interval != a.interval)
		abort();
	for (size_t i = 0; i < a.ncommands; i++)
		if (back.commands[i].id != a.commands[i].id ||
		    back.commands[i].kind != a.commands[i].kind ||
		    back.commands[i].deadline_ms != a.commands[i].deadline_ms ||
		    strcmp(back.commands[i].session, a.commands[i].session) != 0 ||
		    strcmp(back.commands[i].user, a.commands[i].user) != 0)
			abort();
	free(text);
	return 0;
}
