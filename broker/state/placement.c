#include <ctype.h>
#include <string.h>

#include "broker/state/placement.h"

/* Is a's load ratio lower than b's? Exact: (load_a / w_a) < (load_b / w_b). */
int
placement_cmp(const struct pl_server *a, const struct pl_server *b, int penalty)
{
	int64_t la = (int64_t)a->sessions + (int64_t)a->pending * penalty;
	int64_t lb = (int64_t)b->sessions + (int64_t)b->pending * penalty;
	int64_t x = la * b->weight, y = lb * a->weight;

	if (x != y)
		return x < y ? -1 : 1;
	if (a->cpu_percent != b->cpu_percent)
		return a->cpu_percent < b->cpu_percent ? -1 : 1;
	return strcmp(a->name, b->name);
}

static const struct pl_server *
server_by_id(const struct pl_input *in, int64_t id, size_t *index)
{
	for (size_t i = 0; i < in->nservers; i++) {
		if (in->servers[i].id == id) {
			*index = i;
			return &in->servers[i];
		}
	}
	return NULL;
}

/* Reconnect wins: a disconnected session first, then the most recent one. */
static int
pick_reconnect(const struct pl_input *in, struct pl_decision *out)
{
	const struct pl_session *best = NULL;
	size_t best_server = 0, best_i = 0, si;

	for (size_t i = 0; i < in->nsessions; i++) {
		const struct pl_session *s = &in->sessions[i];
		const struct pl_server *srv = server_by_id(in, s->server_id, &si);

		if (srv == NULL || srv->state != SERVER_UP)
			continue;
		if (s->state == SESSION_PENDING && srv->quarantined)
			continue;
		if (best != NULL) {
			int d = s->state == SESSION_DISCONNECTED, bd = best->state == SESSION_DISCONNECTED;
			if (d < bd || (d == bd && s->updated <= best->updated))
				continue;
		}
		best = s;
		best_server = si;
		best_i = i;
	}
	if (best == NULL)
		return -1;
	out->server = best_server;
	out->reconnect = 1;
	out->session = best_i;
	return 0;
}

int
placement_pick(const struct pl_input *in, struct pl_decision *out)
{
	const struct pl_server *best = NULL;
	size_t best_i = 0;
	int candidates = 0;

	if (pick_reconnect(in, out) == 0)
		return 0;
	for (size_t i = 0; i < in->nservers; i++) {
		const struct pl_server *s = &in->servers[i];

		if (!states_takes_new_users(s->state, s->admin, s->quarantined))
			continue;	/* (placement_open says the same) */
		candidates++;
		if (s->sessions + s->pending >= s->max_sessions)
			continue;
		if (best == NULL || placement_cmp(s, best, in->pending_penalty) < 0) {
			best = s;
			best_i = i;
		}
	}
	if (best == NULL)
		return candidates ? PLACEMENT_NO_CAPACITY : PLACEMENT_NO_SERVER;
	out->server = best_i;
	out->reconnect = 0;
	out->session = 0;
	return 0;
}

int
placement_open(const struct pl_server *s)
{
	return states_takes_new_users(s->state, s->admin, 0) &&
	    s->sessions + s->pending < s->max_sessions;
}

const char *
placement_strerror(int r)
{
	switch (r) {
	case 0:
		return "placed";
	case PLACEMENT_NO_SERVER:
		return "no server is available";
	case PLACEMENT_NO_CAPACITY:
		return "all servers are full";
	default:
		return "placement error";
	}
}

int
placement_user_normalise(const char *login, char *out, size_t n)
{
	const char *p = strrchr(login, '\\'), *at;
	size_t len;

	if (p != NULL)
		login = p + 1;
	at = strchr(login, '@');
	len = at ? (size_t)(at - login) : strlen(login);
	if (len == 0 || len >= n)
		return -1;
	for (size_t i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)login[i]);
	out[len] = '\0';
	return 0;
}
