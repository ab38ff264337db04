#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/common/log.h"
#include "broker/common/net.h"
#include "broker/common/util.h"
#include "broker/front/relay.h"
#include "broker/front/splice.h"

_Static_assert(RELAY_CLOSE_REASONS == METRICS_RELAY_CLOSES, "metrics_relay.closed");

#define SPLICE_THREADS_MAX	4
#define SPLICE_EVENTS		256
#define SPLICE_TICK_MS		1000	/* idle sweeps at least this often */
#define SPLICE_PIPE_SIZE	RELAY_BUF	/* a direction's pipe, when bulk */
#ifndef SPLICE_PIPE_MIN			/* -D for a copy-only build, to compare */
#define SPLICE_PIPE_MIN		(64 * 1024)	/* bytes waiting: bulk */
#endif

struct pair;

/* One socket of a pair: what epoll hands back. */
struct leg {
	struct pair *p;
	int side;		/* 0 client, 1 server */
	int fd;
	uint32_t ev;		/* events registered now */
};

struct pair {
	struct leg leg[2];
	struct relay_dir dir[2];	/* dir[i]: from leg i to leg 1-i */
	int pipe[2][2];			/* dir[i]'s for splice(2); -1: none */
	int64_t last_ms;		/* last progress */
	int closed;
	struct pair *prev, *next;	/* the worker's list, oldest first */
};

struct worker {
	struct splice *s;
	pthread_t t;
	int ep, wake;			/* epoll, eventfd */
	pthread_mutex_t lock;		/* incoming */
	struct pair *incoming;		/* handed over, not yet adopted */
	struct pair *head, *tail;	/* adopted: least recently active first */
	struct pair *dead;		/* closed in this batch, freed after it */
	char *buf;			/* RELAY_BUF: one read at a time */
};

struct splice {
	struct splice_conf c;
	struct worker *w;
	int nw;
	int active;			/* atomic */
	int stopping;			/* atomic */
	unsigned int next;		/* atomic: round robin */
};

/* n bytes delivered in direction i. */
static void
count_bytes(struct splice *s, int i, uint64_t n)
{
	if (s->c.m != NULL && n > 0)
		__atomic_add_fetch(&s->c.m->bytes[i], n, __ATOMIC_RELAXED);
}

static void
count_close(struct splice *s, enum relay_close why)
{
	if (s->c.m != NULL)
		__atomic_add_fetch(&s->c.m->closed[why], 1, __ATOMIC_RELAXED);
}

static void
list_unlink(struct worker *w, struct pair *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		w->head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		w->tail = p->prev;
	p->prev = p->next = NULL;
}

static void
list_append(struct worker *w, struct pair *p)
{
	p->prev = w->tail;
	p->next = NULL;
	if (w->tail)
		w->tail->next = p;
	else
		w->head = p;
	w->tail = p;
}

/* p made progress: to the end of the idle queue. */
static void
pair_touch(struct worker *w, struct pair *p)
{
	p->last_ms = util_mono_ms();
	if (w->tail != p) {
		list_unlink(w, p);
		list_append(w, p);
	}
}

static void
pipe_drop(struct pair *p, int i)
{
	if (p->pipe[i][0] < 0)
		return;
	close(p->pipe[i][0]);
	close(p->pipe[i][1]);
	p->pipe[i][0] = p->pipe[i][1] = -1;
}

/* Closes both legs at once and counts why; freed after the event batch. */
static void
pair_close(struct worker *w, struct pair *p, enum relay_close why)
{
	if (p->closed)
		return;
	p->closed = 1;
	for (int i = 0; i < 2; i++) {
		/* DEL first: a duplicate of the fd elsewhere keeps it in epoll */
		(void)epoll_ctl(w->ep, EPOLL_CTL_DEL, p->leg[i].fd, NULL);
		close(p->leg[i].fd);
		relay_dir_clear(&p->dir[i]);
		pipe_drop(p, i);
	}
	list_unlink(w, p);
	p->next = w->dead;
	w->dead = p;
	count_close(w->s, why);
	__atomic_sub_fetch(&w->s->active, 1, __ATOMIC_RELEASE);
}

/* Why a socket failed, from errno or its SO_ERROR. */
static enum relay_close
close_cause(int fd, int e)
{
	socklen_t len = sizeof(e);

	if (e == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0)
		e = errno;
	return e == ETIMEDOUT ? RELAY_CLOSE_LOST : RELAY_CLOSE_RESET;
}

/* Registers what each leg waits for now. -1 if epoll refuses. */
static int
pair_arm(struct worker *w, struct pair *p)
{
	for (int i = 0; i < 2; i++) {
		uint32_t ev = relay_events(p->dir, i);

		if (ev == p->leg[i].ev)
			continue;
		struct epoll_event e = { .events = ev, .data.ptr = &p->leg[i] };
		if (epoll_ctl(w->ep, EPOLL_CTL_MOD, p->leg[i].fd, &e) != 0)
			return -1;
		p->leg[i].ev = ev;
	}
	return 0;
}

/* Carries a drained EOF across as a half-close; closes a done pair.
 * 0, or -1 when the pair was closed. */
static int
pair_settle(struct worker *w, struct pair *p)
{
	for (int i = 0; i < 2; i++) {
		if (!relay_dir_shut_due(&p->dir[i]))
			continue;
		(void)shutdown(p->leg[1 - i].fd, SHUT_WR);
		relay_dir_shut(&p->dir[i]);
	}
	if (relay_done(p->dir)) {
		pair_close(w, p, RELAY_CLOSE_DONE);
		return -1;
	}
	if (pair_arm(w, p) != 0) {
		log_warn("%s: epoll_ctl: %s", __func__, strerror(errno));
		pair_close(w, p, RELAY_CLOSE_RESET);
		return -1;
	}
	return 0;
}

/* Sends what waits in dir i to its sink. 0, or -1 when the pair was closed. */
static int
pair_flush(struct worker *w, struct pair *p, int i)
{
	struct relay_dir *d = &p->dir[i];
	int sink = p->leg[1 - i].fd;

	while (d->pend != NULL && d->off < d->len) {
		ssize_t n = send(sink, d->pend + d->off, d->len - d->off,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0) {
			pair_close(w, p, close_cause(sink, errno));
			return -1;
		}
		relay_dir_sent(d, (size_t)n);
		count_bytes(w->s, i, (uint64_t)n);
		pair_touch(w, p);
	}
	while (d->piped > 0) {
		ssize_t n = splice(p->pipe[i][0], NULL, sink, NULL, d->piped,
		    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			pair_close(w, p, close_cause(sink, n < 0 ? errno : EPIPE));
			return -1;
		}
		relay_dir_unpiped(d, (size_t)n);
		count_bytes(w->s, i, (uint64_t)n);
		pair_touch(w, p);
	}
	return 0;
}

/* Bulk: one splice(2) from leg i's socket into dir i's pipe (made on first
 * use), and on to the sink: no copy through user space. 1 if it read, 0 if
 * not (nothing to read, or no pipe: copy instead), -1 when the pair was
 * closed. */
static int
pair_pump_pipe(struct worker *w, struct pair *p, int i)
{
	struct relay_dir *d = &p->dir[i];
	ssize_t got;

	if (p->pipe[i][0] < 0) {
		if (pipe2(p->pipe[i], O_NONBLOCK | O_CLOEXEC) != 0) {
			p->pipe[i][0] = p->pipe[i][1] = -1;
			return 0;
		}
		(void)fcntl(p->pipe[i][1], F_SETPIPE_SZ, SPLICE_PIPE_SIZE);
	}
	do
		got = splice(p->leg[i].fd, NULL, p->pipe[i][1], NULL, SPLICE_PIPE_SIZE,
		    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	while (got < 0 && errno == EINTR);
	if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 1;
	if (got < 0) {
		pair_close(w, p, close_cause(p->leg[i].fd, errno));
		return -1;
	}
	if (got == 0) {
		relay_dir_eof(d);
		return 1;
	}
	relay_dir_piped(d, (size_t)got);
	return pair_flush(w, p, i) == 0 ? 1 : -1;
}

/* One read from leg i's socket, sent on at once; what the sink does not take
 * waits. 0, or -1 when the pair was closed. */
static int
pair_pump(struct worker *w, struct pair *p, int i)
{
	struct relay_dir *d = &p->dir[i];
	int src = p->leg[i].fd, sink = p->leg[1 - i].fd, r, avail = 0;
	ssize_t got, n;

	/* a backlog of bulk bytes goes through the pipe; short reads (the
	 * interactive case) are copied, and then the pipe is given back */
	if (ioctl(src, FIONREAD, &avail) == 0 && avail >= SPLICE_PIPE_MIN) {
		if ((r = pair_pump_pipe(w, p, i)) != 0)
			return r < 0 ? -1 : 0;
	} else if (p->pipe[i][0] >= 0)
		pipe_drop(p, i);

	do
		got = recv(src, w->buf, RELAY_BUF, MSG_DONTWAIT);
	while (got < 0 && errno == EINTR);
	if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (got < 0) {
		pair_close(w, p, close_cause(src, errno));
		return -1;
	}
	if (got == 0) {
		relay_dir_eof(d);
		return 0;
	}
	do
		n = send(sink, w->buf, (size_t)got, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		n = 0;
	if (n < 0) {
		pair_close(w, p, close_cause(sink, errno));
		return -1;
	}
	relay_dir_passed(d, (size_t)n);
	count_bytes(w->s, i, (uint64_t)n);
	if (n < got && (r = relay_dir_keep(d, w->buf + n, (size_t)(got - n))) != RELAY_OK) {
		log_warn("%s: %s", __func__, r == RELAY_ENOMEM ? "out of memory" :
		    "buffer full");
		pair_close(w, p, RELAY_CLOSE_RESET);
		return -1;
	}
	if (n == got)
		pair_touch(w, p);
	return 0;
}

static void
leg_event(struct worker *w, struct leg *l, uint32_t ev)
{
	struct pair *p = l->p;
	int i = l->side;

	if (p->closed)
		return;
	if ((ev & EPOLLOUT) && pair_flush(w, p, 1 - i) != 0)
		return;
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && (l->ev & EPOLLIN) &&
	    pair_pump(w, p, i) != 0)
		return;
	if (ev & EPOLLERR) {
		pair_close(w, p, close_cause(l->fd, 0));
		return;
	}
	if (pair_settle(w, p) != 0)
		return;
	if ((ev & EPOLLHUP) && l->ev == 0)
		pair_close(w, p, RELAY_CLOSE_DONE);	/* nothing left to wait for */
}

/* Takes in the pairs splice_start handed over. */
static void
worker_adopt(struct worker *w)
{
	struct pair *p, *next;
	uint64_t v;

	(void)!read(w->wake, &v, sizeof(v));
	pthread_mutex_lock(&w->lock);
	p = w->incoming;
	w->incoming = NULL;
	pthread_mutex_unlock(&w->lock);
	for (; p != NULL; p = next) {
		next = p->next;
		p->next = NULL;
		list_append(w, p);
		p->last_ms = util_mono_ms();
		for (int i = 0; i < 2; i++) {
			struct epoll_event e = { .events = 0, .data.ptr = &p->leg[i] };
			if (epoll_ctl(w->ep, EPOLL_CTL_ADD, p->leg[i].fd, &e) != 0) {
				log_warn("%s: epoll_ctl: %s", __func__, strerror(errno));
				pair_close(w, p, RELAY_CLOSE_RESET);
				break;
			}
		}
		if (!p->closed)
			(void)pair_settle(w, p);
	}
}

static void
worker_sweep(struct worker *w, int64_t now)
{
	int idle = __atomic_load_n(&w->s->c.idle_timeout_ms, __ATOMIC_RELAXED);

	while (w->head != NULL && now - w->head->last_ms >= idle) {
		log_info("spliced connection idle for %d s: closed",
		    idle / 1000);
		pair_close(w, w->head, RELAY_CLOSE_IDLE);
	}
}

static void
worker_reap(struct worker *w)
{
	struct pair *p, *next;

	for (p = w->dead; p != NULL; p = next) {
		next = p->next;
		free(p);
	}
	w->dead = NULL;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event ev[SPLICE_EVENTS];
	int idle = __atomic_load_n(&w->s->c.idle_timeout_ms, __ATOMIC_RELAXED);
	int tick = idle < SPLICE_TICK_MS ? idle : SPLICE_TICK_MS;

	while (!__atomic_load_n(&w->s->stopping, __ATOMIC_ACQUIRE)) {
		int n = epoll_wait(w->ep, ev, SPLICE_EVENTS, tick);

		if (n < 0 && errno != EINTR) {
			log_error("%s: epoll_wait: %s", __func__, strerror(errno));
			break;
		}
		for (int k = 0; k < n; k++) {
			if (ev[k].data.ptr == NULL)
				worker_adopt(w);
			else
				leg_event(w, ev[k].data.ptr, ev[k].events);
		}
		worker_sweep(w, util_mono_ms());
		worker_reap(w);
	}
	worker_adopt(w);	/* a pair handed over while stopping */
	while (w->head != NULL)
		pair_close(w, w->head, RELAY_CLOSE_STOP);
	worker_reap(w);
	return NULL;
}

static void
worker_clean(struct worker *w)
{
	struct pair *p, *next;

	for (p = w->incoming; p != NULL; p = next) {	/* handed over too late */
		next = p->next;
		close(p->leg[0].fd);
		close(p->leg[1].fd);
		relay_dir_clear(&p->dir[0]);
		free(p);
		__atomic_sub_fetch(&w->s->active, 1, __ATOMIC_RELEASE);
	}
	w->incoming = NULL;
	if (w->ep >= 0)
		close(w->ep);
	if (w->wake >= 0)
		close(w->wake);
	pthread_mutex_destroy(&w->lock);
	free(w->buf);
}

static int
worker_init(struct splice *s, struct worker *w)
{
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };

	w->s = s;
	w->ep = w->wake = -1;
	pthread_mutex_init(&w->lock, NULL);
	if ((w->buf = malloc(RELAY_BUF)) == NULL ||
	    (w->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
	    (w->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 ||
	    epoll_ctl(w->ep, EPOLL_CTL_ADD, w->wake, &e) != 0 ||
	    (errno = pthread_create(&w->t, NULL, worker_main, w)) != 0) {
		worker_clean(w);
		return -1;
	}
	return 0;
}

struct splice *
splice_new(const struct splice_conf *c)
{
	struct splice *s = calloc(1, sizeof(*s));
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	if (s == NULL)
		return NULL;
	s->c = *c;
	s->nw = c->threads > 0 ? c->threads : cores > SPLICE_THREADS_MAX ?
	    SPLICE_THREADS_MAX : cores > 0 ? (int)cores : 1;
	if ((s->w = calloc((size_t)s->nw, sizeof(*s->w))) == NULL) {
		free(s);
		return NULL;
	}
	for (int i = 0; i < s->nw; i++) {
		if (worker_init(s, &s->w[i]) == 0)
			continue;
		s->nw = i;
		splice_free(s);
		return NULL;
	}
	return s;
}

void
splice_free(struct splice *s)
{
	uint64_t one = 1;

	if (s == NULL)
		return;
	__atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < s->nw; i++)
		(void)!write(s->w[i].wake, &one, sizeof(one));
	for (int i = 0; i < s->nw; i++) {
		pthread_join(s->w[i].t, NULL);
		worker_clean(&s->w[i]);
	}
	free(s->w);
	free(s);
}

int
splice_active(struct splice *s)
{
	/* acquire: a caller that sees a pair gone also sees its counts */
	return __atomic_load_n(&s->active, __ATOMIC_ACQUIRE);
}

int
splice_threads(const struct splice *s)
{
	return s->nw;
}

void
splice_set_conf(struct splice *s, const struct splice_conf *c)
{
	__atomic_store_n(&s->c.idle_timeout_ms, c->idle_timeout_ms, __ATOMIC_RELAXED);
	__atomic_store_n(&s->c.max, c->max, __ATOMIC_RELAXED);
	__atomic_store_n(&s->c.keepalive_s, c->keepalive_s, __ATOMIC_RELAXED);
	__atomic_store_n(&s->c.user_timeout_s, c->user_timeout_s, __ATOMIC_RELAXED);
}

int
splice_start(struct splice *s, int client, int server, const void *first, size_t n)
{
	struct worker *w;
	struct pair *p;
	uint64_t one = 1;
	int a = __atomic_load_n(&s->active, __ATOMIC_RELAXED);

	do {
		if (a >= __atomic_load_n(&s->c.max, __ATOMIC_RELAXED) ||
		    __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE))
			return -1;
	} while (!__atomic_compare_exchange_n(&s->active, &a, a + 1, 1,
	    __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    relay_dir_keep(&p->dir[0], first, n) != RELAY_OK ||
	    net_set_nonblock(client, 1) != NET_OK || net_set_nonblock(server, 1) != NET_OK) {
		if (p != NULL)
			relay_dir_clear(&p->dir[0]);
		free(p);
		__atomic_sub_fetch(&s->active, 1, __ATOMIC_RELAXED);
		return -1;
	}
	for (int i = 0; i < 2; i++) {
		p->pipe[i][0] = p->pipe[i][1] = -1;
		p->leg[i].p = p;
		p->leg[i].side = i;
		p->leg[i].fd = i == 0 ? client : server;
		/* a failure leaves the leg without keepalive: still relayed */
		(void)net_set_keepalive(p->leg[i].fd, __atomic_load_n(&s->c.keepalive_s,
		    __ATOMIC_RELAXED), __atomic_load_n(&s->c.user_timeout_s, __ATOMIC_RELAXED));
	}
	w = &s->w[__atomic_fetch_add(&s->next, 1, __ATOMIC_RELAXED) % (unsigned int)s->nw];
	pthread_mutex_lock(&w->lock);
	p->next = w->incoming;
	w->incoming = p;
	pthread_mutex_unlock(&w->lock);
	(void)!write(w->wake, &one, sizeof(one));
	return 0;
}
