#include <string.h>

#include "broker/common/util.h"
#include "broker/state/farm.h"

int
farm_server_sessions(const struct store_server *s)
{
	return s->active + s->disconnected + s->pending;
}

int
farm_server_accepting(const struct store_server *s, int64_t now)
{
	return states_takes_new_users(s->state, s->admin_state, s->quarantined_until > now);
}

static int
server_free(const struct store_server *s)
{
	int used = farm_server_sessions(s);

	return s->max_sessions > used ? s->max_sessions - used : 0;
}

static void
farm_n1_compute(const struct store_server *sv, size_t n, int64_t now, struct farm_n1 *o)
{
	int total_free = 0, accepting = 0, have_worst = 0, worst_ok = 1;

	memset(o, 0, sizeof(*o));
	for (size_t i = 0; i < n; i++) {
		if (farm_server_accepting(&sv[i], now)) {
			total_free += server_free(&sv[i]);
			accepting++;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct store_server *s = &sv[i];
		int acc, need, spare, others, ok;

		if (s->state != SERVER_UP)
			continue;
		o->up++;
		acc = farm_server_accepting(s, now);
		need = farm_server_sessions(s);
		spare = total_free - (acc ? server_free(s) : 0);
		others = accepting - acc;
		ok = others > 0 && spare - need >= 0;
		if (o->busiest[0] == '\0' || need > o->busiest_sessions) {
			util_strlcpy(o->busiest, s->name, sizeof(o->busiest));
			o->busiest_sessions = need;
		}
		/* worst: a failing case first, then the least headroom, then the
		 * most sessions; the input order (by name) breaks ties */
		if (!have_worst || (worst_ok && !ok) || (worst_ok == ok &&
		    (spare - need < o->headroom || (spare - need == o->headroom &&
		    need > o->worst_sessions)))) {
			have_worst = 1;
			worst_ok = ok;
			util_strlcpy(o->worst, s->name, sizeof(o->worst));
			o->worst_sessions = need;
			o->spare = spare;
			o->headroom = spare - need;
		}
	}
	o->ok = have_worst && worst_ok;
}

void
farm_summarise(const struct store_server *sv, size_t n, int64_t now,
    struct farm_summary *out)
{
	struct farm_summary f;

	memset(&f, 0, sizeof(f));
	f.servers = (int)n;
	for (size_t i = 0; i < n; i++) {
		const struct store_server *s = &sv[i];

		if (s->state == SERVER_UP)
			f.up++;
		else if (s->state == SERVER_DOWN)
			f.down++;
		else
			f.unknown++;
		if (s->admin_state == ADMIN_DRAINING)
			f.draining++;
		if (s->quarantined_until > now)
			f.quarantined++;
		if (farm_server_accepting(s, now)) {
			f.accepting++;
			f.capacity += s->max_sessions;
			f.free += server_free(s);
		}
		f.active += s->active;
		f.disconnected += s->disconnected;
		f.pending += s->pending;
		f.lost += s->lost;
	}
	farm_n1_compute(sv, n, now, &f.n1);
	*out = f;
}
