/* reconcile: what one heartbeat changes. Pure: no I/O, no clock, no
 * allocation beyond the arrays the caller gives. Given the server's stored
 * health and its stored sessions that have not ended, a heartbeat (a full
 * snapshot) yields one plan: the up/down transition the beat causes and one
 * batched list of session changes, which an engine applies in one
 * transaction (store_engine.h: heartbeat_apply). Rules: docs/api.md "Agent API"
 * and DESIGN "Rules the behaviour must follow".
 *
 * Transition: a beat with RDP accepting brings a server that is not up up;
 * one without takes a server that is not down down, and the engine's down
 * transition applies at once (active and disconnected sessions become lost,
 * pending placements end), before the session changes, which are computed
 * on the rows as that transition leaves them.
 * Sessions (only when the agent knows them, hb->sessions_known): each
 * reported session matches the stored row with the same agent id, else the
 * user's pending placement, else a row of the user without an id (or any of
 * the user's rows when the agent gives no id); a match whose state or id
 * changed is updated (a pending one is confirmed, a lost one restored), no
 * match is inserted; a stored row nothing matched ends, except a pending
 * placement, which waits for its expiry. A reported session's state is
 * lost while the server is not accepting. Users that do not normalise
 * (placement_user_normalise) are skipped. */
#ifndef TS_RECONCILE_H
#define TS_RECONCILE_H

#include <stddef.h>
#include <stdint.h>

#include "broker/common/wire.h"
#include "broker/state/states.h"

/* A stored session of the server that has not ended. */
struct rc_row {
	int64_t id;
	char user[WIRE_USER_MAX];	/* normalised */
	char remote_id[WIRE_ID_MAX];
	enum session_state state;
};

enum rc_transition { RC_STAY, RC_UP, RC_DOWN };

enum rc_op {
	RC_INSERT,		/* a new session: session, state, user */
	RC_UPDATE,		/* row_id takes session's state, id, login and domain */
	RC_END			/* row_id ends */
};

struct rc_change {
	enum rc_op op;
	int64_t row_id;			/* RC_UPDATE, RC_END */
	size_t session;			/* RC_INSERT, RC_UPDATE: index into hb->sessions */
	enum session_state state;	/* RC_INSERT, RC_UPDATE: the new state */
	char user[WIRE_USER_MAX];	/* RC_INSERT: normalised */
};

struct rc_plan {
	enum rc_transition transition;
	int confirmed;			/* pending placements confirmed (the server's
					 * last_confirmed is now, unconfirmed 0) */
	struct rc_change *changes;	/* the caller's array, filled */
	size_t nchanges;
};

/* The changes array reconcile_heartbeat needs at most. */
#define RECONCILE_CHANGES_MAX(nsessions, nrows) ((nsessions) + (nrows))

#define RECONCILE_TOO_MANY	-1	/* cap below RECONCILE_CHANGES_MAX */

/* Plans heartbeat hb of a server whose stored health is state, with its
 * stored rows (not ended; rows[i].state as stored, before the beat) into
 * out, its changes written to changes[0..cap). seen (nrows bytes) is set
 * to which rows a reported session matched. 0 or RECONCILE_TOO_MANY. */
int reconcile_heartbeat(enum server_state state, const struct wire_heartbeat *hb,
    const struct rc_row *rows, size_t nrows, unsigned char *seen,
    struct rc_change *changes, size_t cap, struct rc_plan *out);

#endif
