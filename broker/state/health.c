#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/core/conf.h"
#include "broker/state/farm.h"
#include "broker/state/health.h"
#include "broker/state/store.h"

struct health {
	struct store *st;
	const struct conf *c;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stop;
	int64_t started;	/* ms: the grace for servers after a restart */
	int64_t sampled;	/* ms: the last history sample taken or seen */
};

/* Did a server other than `self` confirm a placement since `since`? */
static int
others_confirm(const struct store_server *list, size_t n, size_t self, int64_t since)
{
	for (size_t i = 0; i < n; i++)
		if (i != self && list[i].last_confirmed >= since)
			return 1;
	return 0;
}

int
health_sweep(struct store *st, const struct conf *c, int64_t now, int64_t started)
{
	struct store_server *list = NULL;
	size_t n = 0;
	int64_t down_ms = (int64_t)CONF_GET(c, down_after) * 1000;
	char reason[128];
	int r, expired, changed;

	if ((r = store_server_list(st, &list, &n)) != 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		int64_t last = list[i].last_heartbeat > started ? list[i].last_heartbeat :
		    started;
		if (list[i].state != SERVER_UP || now - last <= down_ms)
			continue;
		snprintf(reason, sizeof(reason), "no heartbeat for %lld s",
		    (long long)((now - last) / 1000));
		r = store_server_down(st, list[i].id, reason, now, &changed);
		if (r == 0 && changed)	/* else another broker did, and logged it */
			log_warn("server %s is down: %s", list[i].name, reason);
	}
	free(list);
	list = NULL;
	if (r == 0)
		r = store_command_expire(st, now, &expired);	/* events say which */
	if (r == 0)
		r = store_pending_expire(st, now, &expired);
	if (r != 0 || expired == 0)
		return r;
	/* black holes: placements expire here while other servers confirm theirs */
	if ((r = store_server_list(st, &list, &n)) != 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		struct store_server *s = &list[i];
		if (s->unconfirmed < CONF_GET(c, quarantine_after) ||
		    s->quarantined_until > now ||
		    !others_confirm(list, n, i, now - 2LL * CONF_GET(c, pending_ttl) * 1000))
			continue;
		snprintf(reason, sizeof(reason), "%d placements in a row not confirmed "
		    "while other servers confirm theirs", s->unconfirmed);
		r = store_server_quarantine(st, s->id,
		    now + (int64_t)CONF_GET(c, quarantine_time) * 1000, reason, now, &changed);
		if (r == 0 && changed)	/* else another broker did, and logged it */
			log_warn("server %s quarantined for %d s: %s", s->name,
			    CONF_GET(c, quarantine_time), reason);
	}
	free(list);
	return r;
}

/* The desk trail older than desk_keep_days deleted: each row by one broker. */
static void
trail_prune(struct health *h, int64_t now)
{
	int pruned = 0;

	if (store_trail_prune(h->st,
	    now - (int64_t)CONF_GET(h->c, desk_keep_days) * 86400 * 1000,
	    &pruned) == 0 && pruned > 0)
		log_info("%d rows of the desk trail past %d days deleted", pruned,
		    CONF_GET(h->c, desk_keep_days));
}

/* Expired admin browser sessions (auth.h) deleted: each by one broker. */
static void
admin_sessions_prune(struct health *h, int64_t now)
{
	const struct store_session_limits lim = {
	    (int64_t)CONF_GET(h->c, admin_session_idle) * 1000,
	    (int64_t)CONF_GET(h->c, admin_session_max) * 1000 };
	int pruned = 0;

	if (store_admin_session_prune(h->st, now, &lim, &pruned) == 0 && pruned > 0)
		log_info("%d expired admin sessions deleted", pruned);
}

/* History (store.h): the sample of each period just over, taken by
 * whichever broker comes first; a few missed periods (a slow sweep, a
 * database outage) are taken late, their sessions as now. The grace lets
 * the period's last events commit. */
#define HISTORY_GRACE_MS	200
#define HISTORY_CATCH_UP	10	/* periods */

static void
history_sample(struct health *h, int64_t now)
{
	int64_t period = (int64_t)CONF_GET(h->c, history_period) * 1000;
	int64_t t = now - HISTORY_GRACE_MS;
	int64_t last = t - t % period - period, first = last - (HISTORY_CATCH_UP - 1) * period;
	struct store_server *list = NULL;
	struct farm_summary f;
	size_t n = 0;
	int taken;

	if (last <= h->sampled)
		return;
	if (store_server_list(h->st, &list, &n) != 0)	/* logged by store */
		return;
	farm_summarise(list, n, now, &f);
	free(list);
	if (h->sampled == 0)		/* just started: from now on */
		first = last;
	else if (h->sampled + period > first)
		first = h->sampled + period;
	for (t = first; t <= last; t += period) {
		if (store_history_take(h->st, t, period, f.n1.headroom, &taken) != 0)
			return;
		h->sampled = t;
	}
}

static void
history_prune(struct health *h, int64_t now)
{
	int merged, deleted;

	/* 10 samples a step: 10,000 rows at 1,000 servers, a few ms
	 * (docs/operations.md "History") */
	if (store_history_prune(h->st, now,
	    now - (int64_t)CONF_GET(h->c, history_keep) * 86400 * 1000,
	    10, 50, &merged, &deleted) == 0 && merged + deleted > 0)
		log_info("history: %d buckets merged, %d samples deleted", merged, deleted);
}

static void *
health_main(void *arg)
{
	struct health *h = arg;
	int64_t last_prune = 0;
	struct timespec ts;
	int r;

	pthread_mutex_lock(&h->lock);
	while (!h->stop) {
		pthread_mutex_unlock(&h->lock);
		int64_t now = util_now_ms();
		/* the state database unreachable: try it every 250 ms, sweep
		 * nothing (the broker's view is stale); back, the servers get
		 * the grace of a restart (no heartbeat could be recorded) */
		if ((r = store_recover(h->st)) == 1)
			h->started = now;
		int down = r < 0;
		if (!down) {
			(void)health_sweep(h->st, h->c, now, h->started);	/* errors logged by store */
			history_sample(h, now);
		}
		if (now - last_prune > 60 * 1000) {
			(void)store_event_prune(h->st, now -
			    (int64_t)CONF_GET(h->c, event_retention_days) * 86400 * 1000,
			    CONF_GET(h->c, event_max));
			admin_sessions_prune(h, now);
			history_prune(h, now);
			trail_prune(h, now);
			last_prune = now;
		}
		pthread_mutex_lock(&h->lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		if (down && (ts.tv_nsec += 250 * 1000000L) >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		} else if (!down)
			ts.tv_sec += 1;
		if (!h->stop)
			pthread_cond_timedwait(&h->cond, &h->lock, &ts);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

struct health *
health_start(struct store *st, const struct conf *c)
{
	struct health *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return NULL;
	h->st = st;
	h->c = c;
	h->started = util_now_ms();
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	if (pthread_create(&h->thread, NULL, health_main, h) != 0) {
		log_error("cannot start the health thread");
		free(h);
		return NULL;
	}
	return h;
}

void
health_stop(struct health *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->lock);
	h->stop = 1;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}
