/* metrics (the renderer): GET /metrics in the Prometheus text format 0.0.4,
 * the only place that knows the series' names. It renders the farm's
 * gauges, summarised from the store by farm.c at each request, and the
 * counters of a struct metrics (broker/core/metrics.h). No login is needed:
 * it holds counts only (no names, addresses or users). */
#ifndef TS_HTTP_METRICS_H
#define TS_HTTP_METRICS_H

#include <stdint.h>

#include "broker/http/http.h"

struct metrics;
struct store;

/* Set before metrics_register; every pointer is borrowed and must outlive
 * the HTTP server. */
struct metrics_page {
	const struct metrics *m;		/* the counters */
	struct store *st;			/* the farm's gauges */
	/* the spliced connections open now; NULL: none */
	int (*splices_active)(const void *ctx);
	const void *splices_ctx;
	/* FreeRDP's PEM reads served by the cache (front/pem_cache.h); NULL: 0 */
	uint64_t (*pem_cache_hits)(void);
};

/* Registers GET /metrics on h (before http_start). 0 or -1 (table full). */
int metrics_register(struct metrics_page *p, struct http *h);

#endif
