/* api_agent: POST /api/v1/heartbeat, the agents' API (docs/api.md). */
#ifndef TS_API_AGENT_H
#define TS_API_AGENT_H

#include "broker/common/loglimit.h"
#include "broker/http/http.h"

struct conf;
struct metrics_heartbeats;
struct store;

/* Set the first three before the route is served; zero the rest. */
struct api_agent {
	struct store *st;		/* borrowed */
	const struct conf *c;		/* borrowed */
	struct metrics_heartbeats *m;	/* borrowed: its counters */
	struct loglimit rejected_log;
};

/* http_handler_fn; ctx is a struct api_agent. */
void api_agent_heartbeat(void *ctx, const struct http_request *req,
    struct http_response *res);

#endif
