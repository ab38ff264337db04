/* libFuzzer target: a heartbeat body as the agent API handles it: parsed
 * (broker/common/wire.c), round-tripped through the encoder, then applied to
 * a real in-memory SQLite store (reconciliation in broker/state/store.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/common/log.h"
#include "broker/common/wire.h"
#include "broker/state/store.h"

static struct store *st;
static int64_t server_id;

static void
init(void)
{
	struct store_server s = { 0 };
	char err[256], name[WIRE_NAME_MAX];

	log_init("fuzz", LOG_ERROR);
	if ((st = store_open(":memory:", err, sizeof(err))) == NULL)
		abort();
	strcpy(s.name, "ts1");
	strcpy(s.address, "127.0.0.2");
	s.port = 3389;
	s.weight = 100;
	s.max_sessions = 100;
	if (store_server_add(st, &s, "hash", 1) != 0 ||
	    store_server_auth(st, "hash", &server_id, name, sizeof(name)) != 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_heartbeat hb, back;
	struct store_heartbeat_result res;
	char err[256], *text;

	if (st == NULL)
		init();
	if (wire_heartbeat_decode((const char *)data, size, &hb, err, sizeof(err)) != 0)
		return 0;
	/* what was accepted must encode and decode to the same snapshot */
	if ((text = wire_heartbeat_encode(&hb)) != NULL) {
		if (wire_heartbeat_decode(text, strlen(text), &back, err, sizeof(err)) != 0 ||
		    strcmp(back.name, hb.name) != 0 || back.nsessions != hb.nsessions ||
		    back.sessions_known != hb.sessions_known || back.nresults != hb.nresults)
			abort();
		for (size_t i = 0; i < hb.nresults; i++)
			if (back.results[i].id != hb.results[i].id ||
			    back.results[i].ok != hb.results[i].ok ||
			    strcmp(back.results[i].detail, hb.results[i].detail) != 0)
				abort();
		wire_heartbeat_clear(&back);
		free(text);
	}
	if (store_heartbeat_apply(st, server_id, &hb, 2, &res) != 0)
		abort();	/* an accepted heartbeat must always apply */
	wire_heartbeat_clear(&hb);
	return 0;
}
