/* plindex: the servers of a placement snapshot kept ordered for new users,
 * so that a decision after a change of one server costs O(log n), not a
 * pass over every server. Its choice is placement_pick's for every input
 * (tests/unit/test_placement.c compares the two on random farms): the
 * candidates are those placement_pick would consider (up, enabled, below
 * max_sessions), ordered by placement_cmp; quarantine is checked on the
 * way down, the user's reconnects are placement_pick's own over the
 * servers of the user's sessions.
 *
 * The index holds slot numbers into the caller's array (struct
 * pl_server[n], sorted by id), which it reads but never owns: the caller calls
 * plindex_build after reordering or resizing it, plindex_update after
 * changing slot i (any field placement_cmp or the candidate test reads;
 * quarantined too is read at pick time, never stored). */
#ifndef TS_PLINDEX_H
#define TS_PLINDEX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/state/placement.h"

struct plindex;

struct plindex *plindex_new(void);
void plindex_free(struct plindex *ix);
/* Indexes sv[0..n) under pending_penalty: 0, or -1 out of memory (the
 * index is then empty, and plindex_pick falls back to placement_pick). */
int plindex_build(struct plindex *ix, const struct pl_server *sv, size_t n, int penalty);
/* Slot i of the array built changed (ix NULL: nothing). */
void plindex_update(struct plindex *ix, const struct pl_server *sv, size_t i);
/* placement_pick(in) where in->servers is the array indexed (at the
 * penalty built with; another penalty rebuilds). */
int plindex_pick(struct plindex *ix, const struct pl_input *in, struct pl_decision *out);
/* The index of server id in sv[0..n) sorted by id, or -1. */
ssize_t plindex_find(const struct pl_server *sv, size_t n, int64_t id);

#endif
