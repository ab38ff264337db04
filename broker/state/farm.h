/* farm: the farm's summary and its n+1 headroom, computed from a snapshot of
 * the servers (store_server_list). Pure: no I/O, no allocation, no clock
 * (now is given). Used by the status API and /metrics, unit-tested.
 *
 * n+1 headroom: can the farm lose any one up server and still place all of
 * that server's sessions on the servers that take new users? For each up
 * server i, its sessions (active + disconnected + pending: each is a user
 * who will come back) must fit into the free places of the other servers
 * that are up and enabled (not draining, not quarantined):
 *   headroom(i) = sum over those j != i of max(0, max_sessions(j) - sessions(j))
 *                 - sessions(i)
 * The farm's headroom is the smallest headroom(i): the free places left on
 * the servers that take new users after the worst server to lose has gone
 * and its users have been placed on the others (spare is the same before
 * they are placed). This is the one number the card, /metrics, the alert
 * rule and the history chart show.
 * The farm is n+1 safe when every headroom(i) >= 0 and each i has at least
 * one such other server. Weights do not enter: placement uses them to
 * choose among servers, but any up, enabled server below max_sessions takes
 * a user, so max_sessions alone bounds where the displaced users can go.
 * The worst server (smallest headroom) is reported; with equal max_sessions
 * everywhere it is simply the fullest enabled one. */
#ifndef TS_FARM_H
#define TS_FARM_H

#include <stddef.h>
#include <stdint.h>

#include "broker/state/store.h"

struct farm_n1 {
	int ok;				/* 1: the loss of any one up server is absorbed */
	int up;				/* up servers considered */
	char worst[WIRE_NAME_MAX];	/* the server whose loss hurts most; "" if none up */
	int worst_sessions;		/* its sessions to re-place */
	int spare;			/* free places on the others that take new users */
	int headroom;			/* spare - worst_sessions (negative: users left out) */
	char busiest[WIRE_NAME_MAX];	/* the up server with the most sessions */
	int busiest_sessions;
};

struct farm_summary {
	int servers;			/* all known servers */
	int up, down, unknown;		/* health state */
	int draining;			/* admin state, any health */
	int quarantined;		/* quarantined_until > now */
	int accepting;			/* up, enabled, not quarantined: take new users */
	int capacity;			/* max_sessions of the accepting servers */
	int free;			/* their free places */
	int active, disconnected, pending, lost;
	struct farm_n1 n1;
};

/* Sessions of s that count as load: active + disconnected + pending. */
int farm_server_sessions(const struct store_server *s);
/* 1 if s takes new users at time now (ms): up, enabled, not quarantined. */
int farm_server_accepting(const struct store_server *s, int64_t now);
/* Fills out from the n servers at time now (ms). */
void farm_summarise(const struct store_server *servers, size_t n, int64_t now,
    struct farm_summary *out);

#endif
