/* placement: where a user goes. Pure: no I/O, no allocation, no clock.
 * The caller (store_placement_commit) gives a snapshot of the servers and of
 * the user's sessions and commits the decision atomically. Rules:
 * docs/placement.md. */
#ifndef TS_PLACEMENT_H
#define TS_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "broker/state/states.h"

struct pl_server {
	int64_t id;
	const char *name;
	enum server_state state;	/* up: heartbeats arriving and RDP accepting */
	enum admin_state admin;	/* draining: keeps reconnects, gets no new users */
	int quarantined;	/* black hole: no new users, no pending reconnects */
	int weight;		/* >= 1 */
	int max_sessions;	/* >= 1 */
	int sessions;		/* active + disconnected */
	int pending;		/* unexpired pending placements */
	double cpu_percent;
};

/* A live session (or unexpired pending placement) of the user. */
struct pl_session {
	int64_t id;
	int64_t server_id;
	enum session_state state;	/* pending, active or disconnected */
	int64_t updated;	/* larger is more recent */
};

struct pl_input {
	const struct pl_server *servers;
	size_t nservers;
	const struct pl_session *sessions;
	size_t nsessions;
	int pending_penalty;
};

struct pl_decision {
	size_t server;		/* index into servers */
	int reconnect;		/* 1: back to sessions[session] */
	size_t session;
};

#define PLACEMENT_NO_SERVER	-1	/* no server is up and enabled */
#define PLACEMENT_NO_CAPACITY	-2	/* all candidates are at max_sessions */

/* 0 and *out set, or PLACEMENT_NO_SERVER / PLACEMENT_NO_CAPACITY. */
int placement_pick(const struct pl_input *in, struct pl_decision *out);
const char *placement_strerror(int r);
/* The order of new users' candidates: <0 if a goes before b (lower load
 * ratio, then lower CPU, then name), >0 after, 0 only for equal names. */
int placement_cmp(const struct pl_server *a, const struct pl_server *b, int penalty);
/* 1 if s would take a new user when not quarantined (up, enabled, below
 * max_sessions): placement_pick's candidates are these, not quarantined. */
int placement_open(const struct pl_server *s);

/* Normalises a login for comparison: "DOMAIN\user", "user@domain" and "user"
 * all become "user", lower-cased (ASCII). -1 if empty or longer than n-1. */
int placement_user_normalise(const char *login, char *out, size_t n);

#endif
