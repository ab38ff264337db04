/* store_pg: the PostgreSQL engine's own statements, where its dialect does
 * better than the SQL both engines share (store_sql.c): a heartbeat's
 * session changes as one statement per kind (arrays unnested) instead of
 * one round trip per session. Over sql_db.h, on pg_db.c's connection.
 * Returns 0 or a STORE_* code (store.h). */
#ifndef TS_STORE_PG_H
#define TS_STORE_PG_H

#include <stdint.h>

#include "broker/state/reconcile.h"

struct store_db;

/* The changes of plan (reconcile.c) for server id's beat hb at now: its
 * inserts, updates and ends, each kind one statement. */
int store_pg_changes_apply(struct store_db *d, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_plan *plan, int64_t now);

#endif
