#include <string.h>
#include <sys/types.h>

#include "broker/common/util.h"
#include "broker/state/placement.h"
#include "broker/state/reconcile.h"

/* A row's state once the beat's transition has applied: a down transition
 * loses the live sessions and ends the pending placements. */
static enum session_state
row_state(const struct rc_row *w, enum rc_transition t)
{
	if (t != RC_DOWN)
		return w->state;
	if (w->state == SESSION_PENDING)
		return SESSION_ENDED;
	return states_session_live(w->state) ? SESSION_LOST : w->state;
}

/* The row a reported session is (see reconcile.h), or -1. */
static ssize_t
match(const struct rc_row *rows, size_t n, const unsigned char *seen,
    enum rc_transition t, const char *user, const char *rid)
{
	ssize_t loose = -1, pending = -1;

	for (size_t i = 0; i < n; i++) {
		const struct rc_row *w = &rows[i];
		enum session_state s = row_state(w, t);

		if (seen[i] || s == SESSION_ENDED || strcmp(w->user, user) != 0)
			continue;
		if (rid[0] != '\0' && strcmp(w->remote_id, rid) == 0)
			return (ssize_t)i;
		if (pending < 0 && s == SESSION_PENDING)
			pending = (ssize_t)i;
		else if (loose < 0 && (w->remote_id[0] == '\0' || rid[0] == '\0'))
			loose = (ssize_t)i;
	}
	return pending >= 0 ? pending : loose;
}

int
reconcile_heartbeat(enum server_state state, const struct wire_heartbeat *hb,
    const struct rc_row *rows, size_t nrows, unsigned char *seen,
    struct rc_change *changes, size_t cap, struct rc_plan *out)
{
	struct rc_plan p = { RC_STAY, 0, changes, 0 };
	int up = hb->rdp_accepting;

	if (up && state != SERVER_UP)
		p.transition = RC_UP;
	else if (!up && state != SERVER_DOWN)
		p.transition = RC_DOWN;
	if (!hb->sessions_known) {
		*out = p;
		return 0;
	}
	if (cap < RECONCILE_CHANGES_MAX(hb->nsessions, nrows))
		return RECONCILE_TOO_MANY;
	memset(seen, 0, nrows);
	for (size_t i = 0; i < hb->nsessions; i++) {
		const struct wire_session *ws = &hb->sessions[i];
		enum session_state s = !up ? SESSION_LOST :
		    ws->state == WIRE_ACTIVE ? SESSION_ACTIVE : SESSION_DISCONNECTED;
		struct rc_change *c = &changes[p.nchanges];
		char user[WIRE_USER_MAX];
		ssize_t m;

		if (placement_user_normalise(ws->user, user, sizeof(user)) != 0)
			continue;	/* "DOMAIN\" and the like: nobody to place */
		memset(c, 0, sizeof(*c));
		c->session = i;
		c->state = s;
		if ((m = match(rows, nrows, seen, p.transition, user, ws->id)) < 0) {
			c->op = RC_INSERT;
			util_strlcpy(c->user, user, sizeof(c->user));
			p.nchanges++;
			continue;
		}
		seen[m] = 1;
		if (row_state(&rows[m], p.transition) == SESSION_PENDING)
			p.confirmed++;
		if (row_state(&rows[m], p.transition) == s &&
		    strcmp(rows[m].remote_id, ws->id) == 0)
			continue;	/* unchanged: no write */
		c->op = RC_UPDATE;
		c->row_id = rows[m].id;
		p.nchanges++;
	}
	/* what the agent no longer reports has ended; pending ones wait */
	for (size_t i = 0; i < nrows; i++) {
		enum session_state s = row_state(&rows[i], p.transition);

		if (seen[i] || s == SESSION_PENDING || s == SESSION_ENDED)
			continue;
		memset(&changes[p.nchanges], 0, sizeof(changes[0]));
		changes[p.nchanges].op = RC_END;
		changes[p.nchanges++].row_id = rows[i].id;
	}
	*out = p;
	return 0;
}
