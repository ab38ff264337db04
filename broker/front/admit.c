/* admit: the admission engine. See admit.h.
 *
 * Locking: a->lock guards the connection list, the queue, the counters and
 * each connection's fd_open/deadline/timed_out/handoff/waiting/ready. A
 * connection's socket is closed only by its owner (the listener while it
 * waits, then its worker), under the lock, so the watchdog never touches a
 * reused descriptor. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "broker/common/log.h"
#include "broker/common/net.h"
#include "broker/common/util.h"
#include "broker/front/addrlimit.h"
#include "broker/front/admit.h"
#include "broker/front/x224.h"

#define ADMIT_TICK_MS		200	/* listener/watchdog period */
#define ADMIT_OVERFLOW_LOG_MS	10000
#define ADMIT_STOP_WAIT_MS	5000	/* admit_free: how long workers may take */
#define ADMIT_STACK_SIZE	(1024 * 1024)
#define ADMIT_BACKLOG		512

struct admit_conn {
	struct admit *a;
	int fd;
	int fd_open;			/* under a->lock */
	int waiting;			/* under a->lock: in the listener's poll set */
	int ready;			/* under a->lock: waiting, its request complete */
	int lowat;			/* SO_RCVLOWAT set (listener only) */
	int timed_out;			/* under a->lock: the watchdog fired */
	int handoff;			/* under a->lock: the watchdog leaves it */
	int limited;			/* counted by a->limits (handshake_end at release) */
	int64_t deadline_ms;		/* under a->lock, monotonic */
	int64_t accepted_us;		/* monotonic */
	uint64_t tag;			/* conf.accept's */
	char client[NET_ADDR_MAX];
	uint8_t request[X224_PACKET_MAX];	/* set when ready */
	size_t request_len;
	struct admit_conn *prev, *next;	/* a->conns */
	struct admit_conn *qnext;	/* a->queue */
};

struct admit {
	struct admit_conf conf;		/* the listener's (written by it only) */
	struct admit_conf next;		/* admit_set_limits', under lock */
	int has_next;
	struct admit_handler h;
	struct addrlimit *limits;	/* per client address */
	int lfd;
	int wake[2];			/* wakes the listener */
	int stop[2];			/* readable once stopping (never drained) */

	pthread_mutex_t lock;
	pthread_cond_t cond;		/* queue not empty, or stopping */
	pthread_cond_t idle_cond;	/* a worker exited */
	int stopping;
	int started;
	pthread_t listener;
	struct admit_conn *conns;	/* accepted, not yet finished */
	struct admit_conn *qhead, *qtail;	/* in a slot, waiting for a worker */
	int nconns;			/* open: waiting + in a slot */
	int nwaiting;			/* in the listener's poll set */
	int nready;			/* ... of which complete, waiting for a slot */
	int nhandshakes;		/* in a slot */
	uint64_t slot_timeouts;		/* timed out waiting for a slot, since the last log */
	int64_t slot_logged_ms;
	int nqueued;			/* in the queue */
	int nthreads;			/* live workers */
	int nidle;			/* workers waiting for the queue */
	uint64_t overflow;		/* closed at accept since the last log */
	int64_t overflow_logged_ms;
};

static int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- one connection ------------------------------------------------------------ */

int
admit_conn_fd(const struct admit_conn *c)
{
	return c->fd;
}

const char *
admit_conn_client(const struct admit_conn *c)
{
	return c->client;
}

const uint8_t *
admit_conn_request(const struct admit_conn *c, size_t *len)
{
	*len = c->request_len;
	return c->request;
}

int64_t
admit_conn_elapsed_us(const struct admit_conn *c)
{
	return mono_us() - c->accepted_us;
}

int64_t
admit_conn_left_ms(struct admit_conn *c)
{
	int64_t left;

	pthread_mutex_lock(&c->a->lock);
	left = c->deadline_ms - util_mono_ms();
	pthread_mutex_unlock(&c->a->lock);
	return left;
}

void
admit_conn_set_deadline(struct admit_conn *c, int64_t ms)
{
	pthread_mutex_lock(&c->a->lock);
	c->deadline_ms = util_mono_ms() + ms;
	pthread_mutex_unlock(&c->a->lock);
}

int
admit_conn_timed_out(struct admit_conn *c)
{
	int t;

	pthread_mutex_lock(&c->a->lock);
	t = c->timed_out;
	pthread_mutex_unlock(&c->a->lock);
	return t;
}

void
admit_conn_set_handoff(struct admit_conn *c, int on)
{
	pthread_mutex_lock(&c->a->lock);
	c->handoff = on;
	pthread_mutex_unlock(&c->a->lock);
}

int
admit_stopping(struct admit *a)
{
	int s;

	pthread_mutex_lock(&a->lock);
	s = a->stopping;
	pthread_mutex_unlock(&a->lock);
	return s;
}

int
admit_conn_stopping(struct admit_conn *c)
{
	return admit_stopping(c->a);
}

void
admit_conn_drain(struct admit_conn *c, int ms)
{
	int64_t end = util_mono_ms() + ms, left;
	struct pollfd pfd;
	char buf[4096];
	ssize_t n;

	admit_conn_set_deadline(c, ms);
	pfd.fd = c->fd;
	pfd.events = POLLIN;
	while ((left = end - util_mono_ms()) > 0 && !admit_stopping(c->a)) {
		if (poll(&pfd, 1, left < ADMIT_TICK_MS ? (int)left : ADMIT_TICK_MS) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (pfd.revents == 0)
			continue;
		n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return;
	}
}

static void
conn_release(struct admit_conn *c)
{
	struct admit *a = c->a;

	pthread_mutex_lock(&a->lock);
	c->fd_open = 0;
	close(c->fd);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		a->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	a->nconns--;
	if (!c->waiting) {
		a->nhandshakes--;
		if (a->nready > 0 && a->wake[1] >= 0)	/* a slot is free: promote */
			(void)!write(a->wake[1], "s", 1);
		if (a->stopping)	/* admit_free waits for the kept ones */
			pthread_cond_broadcast(&a->idle_cond);
	} else {
		a->nwaiting--;
		a->nready -= c->ready;
	}
	pthread_mutex_unlock(&a->lock);
	if (c->limited)
		addrlimit_handshake_end(a->limits, c->client, util_mono_ms());
	free(c);
}

void
admit_conn_release(struct admit_conn *c)
{
	conn_release(c);
}

uint64_t
admit_conn_tag(const struct admit_conn *c)
{
	return c->tag;
}

/* Ends a connection of the waiting stage (listener thread, or admit_free
 * after the listener stopped). */
static void
conn_drop(struct admit_conn *c, const char *why)
{
	c->a->h.dropped(c->a->h.ctx, c, why);
	conn_release(c);
}

/* ---- workers ------------------------------------------------------------------- */

static void *
worker_main(void *arg)
{
	struct admit *a = arg;
	struct admit_conn *c;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (a->qhead == NULL && !a->stopping)
			pthread_cond_wait(&a->cond, &a->lock);
		if ((c = a->qhead) == NULL)
			break;		/* stopping and nothing left */
		if ((a->qhead = c->qnext) == NULL)
			a->qtail = NULL;
		a->nqueued--;
		a->nidle--;
		pthread_mutex_unlock(&a->lock);
		if (a->h.handle(a->h.ctx, c) != ADMIT_KEPT)
			conn_release(c);
		pthread_mutex_lock(&a->lock);
		a->nidle++;
	}
	a->nidle--;
	a->nthreads--;
	pthread_cond_broadcast(&a->idle_cond);
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/* Starts a detached worker. Called with a->lock held. */
static int
worker_spawn(struct admit *a)
{
	pthread_attr_t attr;
	pthread_t th;
	int e;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, ADMIT_STACK_SIZE);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	e = pthread_create(&th, &attr, worker_main, a);
	pthread_attr_destroy(&attr);
	if (e != 0)
		return -1;
	a->nthreads++;
	a->nidle++;
	return 0;
}

/* ---- listener ------------------------------------------------------------------ */

/* A warning about *count connections turned away by a limit, at most every
 * ADMIT_OVERFLOW_LOG_MS (force: now). Called with a->lock held. */
static void
limit_log(uint64_t *count, int64_t *logged_ms, int64_t now, int force, const char *verb,
    const char *what, int limit, const char *state)
{
	if (*count == 0 || (!force && now - *logged_ms < ADMIT_OVERFLOW_LOG_MS))
		return;
	log_warn("%s%llu connection(s) %s: %d %s", verb, (unsigned long long)*count, what,
	    limit, state);
	*count = 0;
	*logged_ms = now;
}

static void
overflow_log(struct admit *a, int64_t now, int force)
{
	limit_log(&a->overflow, &a->overflow_logged_ms, now, force, "closed ", "at accept",
	    a->conf.max_connections, "connections open (max_connections)");
}

static void
slot_timeout_log(struct admit *a, int64_t now, int force)
{
	limit_log(&a->slot_timeouts, &a->slot_logged_ms, now, force, "",
	    "waited handshake_timeout for a handshake slot", a->conf.max_handshakes,
	    "handshakes in progress (max_handshakes)");
}

/* A refusal by a per-address limit: logged at most once a second per
 * address, with how many were left out since. Any thread. */
static void
limit_refused(struct admit *a, const char *client, const char *what, int limit,
    const char *state)
{
	uint64_t quiet;

	if (!addrlimit_log_pass(a->limits, client, util_mono_ms(), &quiet))
		return;
	if (quiet > 0)
		log_warn("%s: %s: %d %s (%llu more refused since the last line)", client, what,
		    limit, state, (unsigned long long)quiet);
	else
		log_warn("%s: %s: %d %s", client, what, limit, state);
}

int
admit_placement_take(struct admit *a, const char *client, int *counted)
{
	int limit;

	if (addrlimit_placement_take(a->limits, client, util_mono_ms(), counted) == 0)
		return 0;
	pthread_mutex_lock(&a->lock);	/* the listener may be applying new limits */
	limit = a->conf.placements_per_address_minute;
	pthread_mutex_unlock(&a->lock);
	limit_refused(a, client, "logon refused", limit,
	    "new placements in the last minute from it (placements_per_address_minute)");
	return ADMIT_LIMITED;
}

void
admit_placement_return(struct admit *a, const char *client)
{
	addrlimit_placement_return(a->limits, client, util_mono_ms());
}

/* A waiting connection's socket is readable (or closed): drops it, or
 * marks it ready once its whole Connection Request is in, or sets
 * SO_RCVLOWAT to the missing length and lets it wait. Listener thread. */
static void
waiting_check(struct admit *a, struct admit_conn *c, short revents)
{
	uint8_t buf[X224_PACKET_MAX];
	char why[160];
	size_t need = X224_TPKT_HEADER_LEN;
	ssize_t got;
	int rc, lowat;

	got = recv(c->fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (got < 0) {
		snprintf(why, sizeof(why), "reading the Connection Request: %s", strerror(errno));
		conn_drop(c, why);
		return;
	}
	if (got == 0) {
		conn_drop(c, "client closed before its Connection Request");
		return;
	}
	rc = x224_packet_length(buf, (size_t)got, &need);
	if (rc != 0 && rc != X224_ETRUNCATED) {
		snprintf(why, sizeof(why), "not an RDP client: %s", x224_strerror(rc));
		conn_drop(c, why);
		return;
	}
	if (rc == X224_ETRUNCATED || (size_t)got < need) {
		if (revents & (POLLRDHUP | POLLHUP | POLLERR)) {
			conn_drop(c, "client closed before its Connection Request");
			return;
		}
		lowat = (int)need;
		if (setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) == 0)
			c->lowat = 1;
		return;
	}
	if (c->lowat) {
		lowat = 1;
		setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
		c->lowat = 0;
	}
	memcpy(c->request, buf, need);
	c->request_len = need;
	pthread_mutex_lock(&a->lock);
	c->ready = 1;
	a->nready++;
	pthread_mutex_unlock(&a->lock);
}

/* Moves ready connections to free slots and the workers' queue. Listener
 * thread. */
static void
waiting_promote(struct admit *a)
{
	struct admit_conn *c;

	pthread_mutex_lock(&a->lock);
	for (c = a->conns; c != NULL && a->nready > 0 && !a->stopping &&
	    a->nhandshakes < a->conf.max_handshakes; c = c->next) {
		if (!c->waiting || !c->ready)
			continue;
		c->waiting = c->ready = 0;
		c->deadline_ms = util_mono_ms() + (int64_t)a->conf.handshake_timeout * 1000;
		a->nwaiting--;
		a->nready--;
		a->nhandshakes++;
		c->qnext = NULL;
		if (a->qtail != NULL)
			a->qtail->qnext = c;
		else
			a->qhead = c;
		a->qtail = c;
		a->nqueued++;
		/* a worker for each queued connection (at most max_handshakes) */
		if (a->nidle < a->nqueued && worker_spawn(a) != 0 && a->nthreads == 0)
			log_error("cannot start a connection thread");
		pthread_cond_signal(&a->cond);
	}
	pthread_mutex_unlock(&a->lock);
}

/* The poll set: the listening socket, the wake pipe and the waiting
 * connections not yet ready. Returns its size (0 if memory is short). */
static size_t
waiting_pollset(struct admit *a, struct pollfd **pfd, struct admit_conn ***pc, size_t *cap)
{
	struct admit_conn *c;
	size_t n = 2, want;

	pthread_mutex_lock(&a->lock);
	want = (size_t)a->nwaiting + 2;
	if (want > *cap) {
		struct pollfd *np = realloc(*pfd, want * sizeof(**pfd));
		struct admit_conn **nc;

		if (np != NULL)
			*pfd = np;
		nc = np ? realloc(*pc, want * sizeof(**pc)) : NULL;
		if (nc != NULL) {
			*pc = nc;
			*cap = want;
		}
	}
	if (*cap < 2) {
		pthread_mutex_unlock(&a->lock);
		return 0;
	}
	(*pfd)[0] = (struct pollfd){ .fd = a->lfd, .events = POLLIN };
	(*pfd)[1] = (struct pollfd){ .fd = a->wake[0], .events = POLLIN };
	for (c = a->conns; c != NULL && n < *cap; c = c->next) {
		if (!c->waiting || c->ready)
			continue;
		(*pfd)[n] = (struct pollfd){ .fd = c->fd, .events = POLLIN | POLLRDHUP };
		(*pc)[n++] = c;
	}
	pthread_mutex_unlock(&a->lock);
	return n;
}

static void
listener_accept(struct admit *a)
{
	struct admit_conn *c;
	char client[NET_ADDR_MAX];
	uint64_t tag = 0;
	int fd, limited;

	for (;;) {
		if ((fd = a->conf.accept != NULL ? a->conf.accept(a->conf.accept_ctx, a->lfd,
		    client, sizeof(client), &tag) : net_accept(a->lfd, client, sizeof(client))) < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				log_error("accept: %s", strerror(errno));
				usleep(100000);	/* EMFILE and friends: do not spin */
			}
			return;
		}
		pthread_mutex_lock(&a->lock);
		if (a->nconns >= a->conf.max_connections || a->stopping) {
			a->overflow++;
			overflow_log(a, util_mono_ms(), 0);
			pthread_mutex_unlock(&a->lock);
			close(fd);
			continue;
		}
		pthread_mutex_unlock(&a->lock);
		if (addrlimit_handshake_begin(a->limits, client, util_mono_ms(), &limited) != 0) {
			limit_refused(a, client, "connection closed at accept",
			    a->conf.max_handshakes_per_address,
			    "connections open from it (max_handshakes_per_address)");
			close(fd);
			continue;
		}
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			if (limited)
				addrlimit_handshake_end(a->limits, client, util_mono_ms());
			close(fd);
			continue;
		}
		c->limited = limited;
		c->a = a;
		c->fd = fd;
		c->fd_open = 1;
		c->tag = tag;
		c->accepted_us = mono_us();
		c->deadline_ms = c->accepted_us / 1000 + (int64_t)a->conf.handshake_timeout * 1000;
		util_strlcpy(c->client, client, sizeof(c->client));
		c->waiting = 1;
		pthread_mutex_lock(&a->lock);
		c->next = a->conns;
		if (a->conns != NULL)
			a->conns->prev = c;
		a->conns = c;
		a->nconns++;
		a->nwaiting++;
		pthread_mutex_unlock(&a->lock);
		/* a request sent with the connect is often there already */
		waiting_check(a, c, 0);
	}
}

/* Shuts down the socket of every handled connection past its deadline
 * (all: every one), and drops the waiting ones past theirs. */
static void
listener_watchdog(struct admit *a, int all)
{
	struct admit_conn *c, *next, *expired = NULL;
	char why[96];
	int64_t now = util_mono_ms();

	pthread_mutex_lock(&a->lock);
	for (c = a->conns; c != NULL; c = next) {
		next = c->next;
		if (c->waiting) {
			/* the listener's own: ended here, outside the lock */
			if (all || now >= c->deadline_ms) {
				c->qnext = expired;
				expired = c;
			}
			continue;
		}
		if (c->fd_open && !c->timed_out && (all || (now >= c->deadline_ms &&
		    !c->handoff))) {
			shutdown(c->fd, SHUT_RDWR);
			c->timed_out = 1;
		}
	}
	for (c = expired; c != NULL; c = c->qnext)
		a->slot_timeouts += c->ready && !a->stopping;
	overflow_log(a, now, 0);
	slot_timeout_log(a, now, 0);
	pthread_mutex_unlock(&a->lock);
	for (c = expired; c != NULL; c = next) {
		next = c->qnext;
		if (all)
			snprintf(why, sizeof(why), "broker stopping");
		else if (c->ready)
			snprintf(why, sizeof(why), "no handshake slot within %d s (max_handshakes)",
			    a->conf.handshake_timeout);
		else
			snprintf(why, sizeof(why), "no Connection Request within %d s",
			    a->conf.handshake_timeout);
		conn_drop(c, why);
	}
}

/* Listener thread: the limits of admit_set_limits, if any came. */
static void
limits_apply(struct admit *a)
{
	pthread_mutex_lock(&a->lock);
	if (a->has_next) {
		a->conf = a->next;
		a->has_next = 0;
	}
	pthread_mutex_unlock(&a->lock);
}

static void *
listener_main(void *arg)
{
	struct admit *a = arg;
	struct pollfd *pfd = NULL;
	struct admit_conn **pc = NULL;
	size_t cap = 0, n, i;
	char sink[64];

	while (!admit_stopping(a)) {
		int k;

		if ((n = waiting_pollset(a, &pfd, &pc, &cap)) == 0) {
			usleep(100000);		/* out of memory: retry */
			listener_watchdog(a, 0);
			continue;
		}
		if ((k = poll(pfd, n, ADMIT_TICK_MS)) < 0 && errno != EINTR) {
			log_error("poll: %s", strerror(errno));
			usleep(100000);
		}
		if (k > 0) {
			if (pfd[1].revents & POLLIN)
				while (read(a->wake[0], sink, sizeof(sink)) > 0)
					;
			for (i = 2; i < n; i++)
				if (pfd[i].revents != 0)
					waiting_check(a, pc[i], pfd[i].revents);
			if (pfd[0].revents & POLLIN)
				listener_accept(a);
		}
		limits_apply(a);
		waiting_promote(a);
		listener_watchdog(a, 0);
	}
	free(pfd);
	free(pc);
	return NULL;
}

/* ---- set-up -------------------------------------------------------------------- */

/* The limits of conf, defaults applied, into out (no pointers kept). */
static void
conf_limits(struct admit_conf *out, const struct admit_conf *conf)
{
	*out = *conf;
	out->listen = NULL;
	out->limits_exempt = NULL;
	if (out->handshake_timeout <= 0)
		out->handshake_timeout = 10;
	if (out->max_handshakes <= 0)
		out->max_handshakes = 64;
	if (out->max_connections < out->max_handshakes)
		out->max_connections = out->max_handshakes;
}

/* The per-address limits of conf (seed 0). 0, or -1 with err set. */
static int
conf_addrlimit(struct addrlimit_conf *lc, const struct admit_conf *conf, char *err, size_t n)
{
	memset(lc, 0, sizeof(*lc));
	lc->max_handshakes = conf->max_handshakes_per_address;
	lc->placements_per_minute = conf->placements_per_address_minute;
	return addrlimit_exempt_parse(lc, conf->limits_exempt, err, n) != 0 ? -1 : 0;
}

int
admit_set_limits(struct admit *a, const struct admit_conf *conf, char *err, size_t n)
{
	struct addrlimit_conf lc;
	struct admit_conf next;

	if (conf_addrlimit(&lc, conf, err, n) != 0)
		return -1;
	conf_limits(&next, conf);
	/* the listener applies them (it reads a->conf without the lock) */
	pthread_mutex_lock(&a->lock);
	a->next = next;
	a->has_next = 1;
	pthread_mutex_unlock(&a->lock);
	addrlimit_set_conf(a->limits, &lc);
	(void)!write(a->wake[1], "s", 1);
	return 0;
}

struct admit *
admit_new(const struct admit_conf *conf, const struct admit_handler *h, char *err, size_t n)
{
	struct addrlimit_conf lc;
	struct admit *a;

	if (conf == NULL || (conf->listen == NULL && conf->accept == NULL) || h == NULL || h->handle == NULL ||
	    h->dropped == NULL) {
		snprintf(err, n, "invalid arguments");
		return NULL;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(err, n, "out of memory");
		return NULL;
	}
	conf_limits(&a->conf, conf);
	a->h = *h;
	a->lfd = a->wake[0] = a->wake[1] = a->stop[0] = a->stop[1] = -1;
	if (conf->accept != NULL)
		a->lfd = conf->listen_fd;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	pthread_cond_init(&a->idle_cond, NULL);
	if (pipe2(a->wake, O_CLOEXEC | O_NONBLOCK) != 0 ||
	    pipe2(a->stop, O_CLOEXEC | O_NONBLOCK) != 0) {
		snprintf(err, n, "pipe: %s", strerror(errno));
		goto fail;
	}
	if (conf_addrlimit(&lc, conf, err, n) != 0)
		goto fail;
	if (getrandom(&lc.seed, sizeof(lc.seed), 0) != sizeof(lc.seed))
		lc.seed = (uint64_t)mono_us();
	if ((a->limits = addrlimit_new(&lc)) == NULL) {
		snprintf(err, n, "out of memory");
		goto fail;
	}
	if (conf->accept == NULL &&
	    (a->lfd = net_listen(err, n, conf->listen, ADMIT_BACKLOG)) < 0)
		goto fail;
	return a;
 fail:
	(void)admit_free(a);
	return NULL;
}

int
admit_start(struct admit *a)
{
	if (a == NULL || a->started)
		return -1;
	if (pthread_create(&a->listener, NULL, listener_main, a) != 0) {
		log_error("cannot start the listener thread");
		return -1;
	}
	a->started = 1;
	return 0;
}

const struct admit_conf *
admit_conf(const struct admit *a)
{
	return &a->conf;
}

int
admit_listen_fd(const struct admit *a)
{
	return a->lfd;
}

int
admit_stop_fd(const struct admit *a)
{
	return a->stop[0];
}

static void
fd_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

int
admit_free(struct admit *a)
{
	struct timespec until;
	int left, kept;

	if (a == NULL)
		return 0;
	pthread_mutex_lock(&a->lock);
	a->stopping = 1;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	if (a->stop[1] >= 0)
		(void)!write(a->stop[1], "x", 1);
	if (a->wake[1] >= 0)
		(void)!write(a->wake[1], "x", 1);
	if (a->started)
		pthread_join(a->listener, NULL);
	fd_close(&a->lfd);
	/* end every connection: blocked reads and writes return at once */
	listener_watchdog(a, 1);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ADMIT_STOP_WAIT_MS / 1000;
	pthread_mutex_lock(&a->lock);
	overflow_log(a, util_mono_ms(), 1);
	slot_timeout_log(a, util_mono_ms(), 1);
	/* the workers, and the connections handlers kept (in a slot, not
	 * queued), which end once their sockets are shut down */
	while (a->nthreads > 0 || a->nhandshakes > a->nqueued) {
		if (pthread_cond_timedwait(&a->idle_cond, &a->lock, &until) == ETIMEDOUT)
			break;
	}
	left = a->nthreads;
	kept = a->nhandshakes - a->nqueued;
	pthread_mutex_unlock(&a->lock);
	if (left > 0 || kept > 0) {
		/* a worker is stuck in its handler, or a handler on a kept
		 * connection: leave a to it rather than free memory under its feet */
		log_error("%d connection thread(s) busy, %d handled connection(s) not ended "
		    "after %d s; not freeing", left, kept, ADMIT_STOP_WAIT_MS / 1000);
		return ADMIT_BUSY;
	}
	/* queued connections no worker could take (thread creation failed):
	 * out of the slot stage, so dropped like waiting ones */
	while (a->qhead != NULL) {
		struct admit_conn *c = a->qhead;

		a->qhead = c->qnext;
		a->h.dropped(a->h.ctx, c, "broker stopping");
		conn_release(c);
	}
	fd_close(&a->wake[0]);
	fd_close(&a->wake[1]);
	fd_close(&a->stop[0]);
	fd_close(&a->stop[1]);
	pthread_cond_destroy(&a->cond);
	pthread_cond_destroy(&a->idle_cond);
	pthread_mutex_destroy(&a->lock);
	addrlimit_free(a->limits);
	free(a);
	return 0;
}
