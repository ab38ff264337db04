/* api_agent: POST /api/v1/heartbeat, the agents' API (README "Agent API"). */
#ifndef TS_API_AGENT_H
#define TS_API_AGENT_H

#include <stdint.h>

#include "broker/http/http.h"

struct conf;
struct store;

struct api_agent {
	struct store *st;		/* borrowed */
	const struct conf *c;		/* borrowed */
	/* counters, read by the metrics endpoint */
	uint64_t received, rejected;
	/* bad-token log limiter */
	int64_t bad_log_ms;
	uint64_t bad_suppressed;
};

/* http_handler_fn; ctx is a struct api_agent. */
void api_agent_heartbeat(void *ctx, const struct http_request *req,
    struct http_response *res);

#endif
