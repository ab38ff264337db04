/* health: turns the absence of heartbeats into server states, expires
 * pending placements, quarantines black holes, takes the history samples
 * ([history] period) and prunes old events, history, expired admin
 * sessions and the desk trail.
 * (Heartbeats themselves are applied by store_heartbeat_apply.) */
#ifndef TS_HEALTH_H
#define TS_HEALTH_H

#include <stdint.h>

struct conf;
struct store;
struct health;

/* One pass at time now (ms). A broker that started at `started` (ms) gives
 * every server down_after from then: heartbeats missed while the broker
 * itself was down do not count. 0 or a STORE_* code. */
int health_sweep(struct store *st, const struct conf *c, int64_t now,
    int64_t started);

/* Runs health_sweep every second in a thread until health_stop. Both stay
 * owned by the caller and must outlive it. NULL on failure. */
struct health *health_start(struct store *st, const struct conf *c);
void health_stop(struct health *h);

#endif
