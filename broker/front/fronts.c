/* fronts: the core's side of the front processes. See fronts.h.
 *
 * Each connection passed to a front has a slot here (its id, in the
 * messages, is the slot's index and a generation), which holds the
 * admission engine's connection until the front ends it or dies. Nothing a
 * front sends is trusted beyond its shape: ids are checked to be its own,
 * strings are cut at their bounds, the client's address is the core's, the
 * answer reported as redirected is the one the core gave.
 *
 * Locking: f->lock guards the slots and each front's pid/alive state. A
 * slot being worked on outside the lock is busy; whoever clears busy on a
 * slot marked ended finishes it (its connection released). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker/common/log.h"
#include "broker/common/net.h"
#include "broker/common/util.h"
#include "broker/core/privdrop.h"
#include "broker/front/admit.h"
#include "broker/front/door.h"
#include "broker/front/frontmsg.h"
#include "broker/front/fronts.h"
#include "broker/front/lean.h"
#include "broker/front/rdp.h"

#define FRONTS_MAX		64
#define FRONTS_DECIDERS		8	/* decision threads per front */
#define FRONTS_BACKOFF_MIN_MS	100
#define FRONTS_BACKOFF_MAX_MS	5000
#define FRONTS_STABLE_MS	10000	/* up this long: the next restart is quick again */
#define FRONTS_STOP_WAIT_MS	2000
#define FRONTS_DECIDER_STACK	(256 * 1024)
/* The slots, in chunks that never move, so the table grows (a reload that
 * raises max_handshakes) while slots are used outside the lock. */
#define SLOT_CHUNK		64
#define SLOT_CHUNKS		((100000 + SLOT_CHUNK - 1) / SLOT_CHUNK)	/* max_handshakes' bound */

struct front;

struct slot {
	uint64_t id;			/* 0: free */
	struct front *fr;
	struct admit_conn *ac;
	int busy, ended, reported, limited, died;
	int waiting;			/* deciders in slot_get for it */
	uint32_t seq;			/* the front's next message for it (frontmsg.h) */
	struct door_answer ans;		/* the core's last answer (LOGON) */
	uint32_t next_free;		/* index + 1, 0: none */
};

struct front {
	struct fronts *f;
	int index;
	pid_t pid;			/* 0: not running */
	int pidfd, door, conn;		/* the core's ends, -1 */
	int alive;			/* under f->lock: takes connections */
	int closing;			/* under f->lock: its deciders are to end */
	pthread_t deciders[FRONTS_DECIDERS];
	int ndeciders;
	int64_t started_ms, restart_at_ms;
	int backoff_ms;
};

struct fronts {
	struct rdp_conf conf;
	struct door_ops ops;
	uint64_t *restarts;
	struct privdrop_front pf;
	char exe[PATH_MAX];
	char **envp;			/* the fronts' environment (owned) */
	struct frontmsg_hello *hello;	/* with the PEM (owned, wiped at free) */
	size_t hello_len;
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a slot is no longer busy */
	struct slot *chunks[SLOT_CHUNKS];
	uint32_t nslots;		/* chunks set up to it; read without the lock (atomic) */
	uint32_t free_head, gen;
	struct front fr[FRONTS_MAX];
	int nfronts;
	unsigned next;
	int stopping;
	int wake[2];			/* wakes the supervisor */
	pthread_t super;
	int super_started;
};

/* ---- slots ---------------------------------------------------------------------- */

/* Slot i (< nslots). */
static struct slot *
slot_at(struct fronts *f, uint32_t i)
{
	return &f->chunks[i / SLOT_CHUNK][i % SLOT_CHUNK];
}

/* At least n slots (at most SLOT_CHUNKS chunks), the new ones free. Called
 * with f->lock held (or before the fronts start). 0, or -1: out of memory
 * (the table as it was). */
static int
slots_grow(struct fronts *f, uint32_t n)
{
	uint32_t have = f->nslots;

	if (n > SLOT_CHUNKS * SLOT_CHUNK)
		n = SLOT_CHUNKS * SLOT_CHUNK;
	while (have < n) {
		struct slot *c = calloc(SLOT_CHUNK, sizeof(*c));

		if (c == NULL)
			return -1;
		f->chunks[have / SLOT_CHUNK] = c;
		for (uint32_t i = have + SLOT_CHUNK; i > have; i--) {
			c[i - 1 - have].next_free = f->free_head;
			f->free_head = i;
		}
		have += SLOT_CHUNK;
		/* the chunk is set before a reader can index it */
		__atomic_store_n(&f->nslots, have, __ATOMIC_RELEASE);
	}
	return 0;
}

/* A free slot for ac in fr, busy. Called with f->lock held. NULL if none. */
static struct slot *
slot_take(struct fronts *f, struct front *fr, struct admit_conn *ac)
{
	struct slot *s;
	uint32_t i;
	int waiting;

	if (f->free_head == 0)
		return NULL;
	i = f->free_head - 1;
	s = slot_at(f, i);
	f->free_head = s->next_free;
	/* a decider woken for its ended connection may not have counted
	 * itself out yet */
	waiting = s->waiting;
	memset(s, 0, sizeof(*s));
	s->waiting = waiting;
	if (++f->gen == 0)
		f->gen = 1;
	s->id = (uint64_t)f->gen << 32 | i;
	s->fr = fr;
	s->ac = ac;
	s->busy = 1;
	return s;
}

/* Called with f->lock held. */
static void
slot_put(struct fronts *f, struct slot *s)
{
	s->next_free = f->free_head;
	f->free_head = (uint32_t)(s->id & 0xffffffffu) + 1;
	s->id = 0;
}

/* fr's slot id for its message seq, made busy once the messages before it
 * are done (several deciders read one socket: a connection's messages are
 * taken in the order sent), or NULL (not fr's, ended, out of order). */
static struct slot *
slot_get(struct front *fr, uint64_t id, uint32_t seq)
{
	struct fronts *f = fr->f;
	uint32_t i = (uint32_t)(id & 0xffffffffu);
	struct slot *s = id != 0 && i < __atomic_load_n(&f->nslots, __ATOMIC_ACQUIRE) ?
	    slot_at(f, i) : NULL;

	pthread_mutex_lock(&f->lock);
	while (s != NULL && s->id == id && s->fr == fr && !s->ended && !fr->closing &&
	    (s->busy || seq != s->seq) && seq >= s->seq && seq <= s->seq + FRONTMSG_PER_CONN) {
		s->waiting++;
		pthread_cond_wait(&f->cond, &f->lock);
		s->waiting--;
	}
	if (s != NULL && (s->id != id || s->fr != fr || s->ended || fr->closing ||
	    seq != s->seq || s->busy))
		s = NULL;
	if (s != NULL)
		s->busy = 1;
	pthread_mutex_unlock(&f->lock);
	return s;
}

/* Reports a connection failed that nobody reported (DOOR_CONNECT stage,
 * the client's address only). */
static void
report_failed(struct fronts *f, struct admit_conn *ac, const char *why)
{
	struct door_request req;

	memset(&req, 0, sizeof(req));
	req.stage = DOOR_CONNECT;
	util_strlcpy(req.client_addr, admit_conn_client(ac), sizeof(req.client_addr));
	f->ops.done(f->ops.ctx, &req, DOOR_FAILED, NULL, why, admit_conn_elapsed_us(ac));
}

/* Ends s: reported failed if nobody did, its connection released. s is
 * not busy and no longer reachable (ended). */
static void
slot_finish(struct fronts *f, struct slot *s)
{
	struct admit_conn *ac = s->ac;

	if (!s->reported)
		report_failed(f, ac, s->died ? "front process died" : f->stopping ?
		    "broker stopping" : "front ended it unreported");
	pthread_mutex_lock(&f->lock);
	slot_put(f, s);
	pthread_mutex_unlock(&f->lock);
	admit_conn_release(ac);
}

/* Clears busy (next: a front's message done); finishes s if it was ended
 * meanwhile. */
static void
slot_done(struct fronts *f, struct slot *s, int next)
{
	int ended;

	pthread_mutex_lock(&f->lock);
	s->busy = 0;
	s->seq += next;
	ended = s->ended;
	if (s->waiting > 0)	/* else no decider waits for it: wake none */
		pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	if (ended)
		slot_finish(f, s);
}

/* Ends every slot of fr (died: it crashed). The busy ones are finished by
 * whoever holds them. */
static void
slots_end(struct front *fr, int died)
{
	struct fronts *f = fr->f;
	int n = 0;

	for (uint32_t i = 0; i < __atomic_load_n(&f->nslots, __ATOMIC_ACQUIRE); i++) {
		struct slot *s = slot_at(f, i);
		int now;

		pthread_mutex_lock(&f->lock);
		now = s->id != 0 && s->fr == fr && !s->ended;
		if (now) {
			s->ended = 1;
			s->died = died;
			now = !s->busy;
			s->busy |= now;
		}
		pthread_mutex_unlock(&f->lock);
		if (now) {
			slot_finish(f, s);
			n++;
		}
	}
	if (n > 0 && died)
		log_warn("front %d: %d handshake(s) in it lost", fr->index, n);
}

/* ---- what a front says ---------------------------------------------------------- */

#define CUT(a) ((a)[sizeof(a) - 1] = '\0')

/* Bounds every string of a front's request; the address is the core's. */
static void
req_clean(struct door_request *req, struct admit_conn *ac)
{
	util_strlcpy(req->client_addr, admit_conn_client(ac), sizeof(req->client_addr));
	CUT(req->user);
	CUT(req->domain);
	CUT(req->client_name);
	CUT(req->x224.cookie);
	CUT(req->x224.token);
	if (req->x224.len > sizeof(req->x224.bytes))
		req->x224.len = 0;
	req->limited = 0;
}

static void
answer_send(struct front *fr, uint64_t id, const struct door_answer *ans)
{
	struct frontmsg_answer m;

	memset(&m.h, 0, sizeof(m.h));
	m.h.version = FRONTMSG_VERSION;
	m.h.type = FRONTMSG_ANSWER;
	m.h.size = sizeof(m);
	m.h.id = id;
	m.ans = *ans;
	if (send(fr->door, &m, sizeof(m), MSG_NOSIGNAL) != (ssize_t)sizeof(m))
		log_debug("front %d: cannot answer: %s", fr->index, strerror(errno));
}

/* DOOR_CONNECT, as rdp.c's conn_ask does in one process: decided and, for
 * a splice, carried out here on the core's own descriptor. The answer says
 * DOOR_SPLICE once spliced, DOOR_GO_ON if the front goes on. */
static void
ask_connect(struct fronts *f, struct slot *s, struct door_request *req,
    struct door_answer *ans)
{
	enum door_splice_result rc = DOOR_CLOSED;
	int fd;

	admit_conn_set_handoff(s->ac, 1);
	f->ops.decide(f->ops.ctx, req, ans);
	if (ans->verdict == DOOR_SPLICE) {
		if ((fd = fcntl(admit_conn_fd(s->ac), F_DUPFD_CLOEXEC, 0)) < 0)
			report_failed(f, s->ac, "out of file descriptors");
		else if ((rc = f->ops.splice(f->ops.ctx, req, ans, fd)) != DOOR_SPLICED)
			close(fd);
	} else if (ans->verdict == DOOR_GO_ON)
		rc = DOOR_DECLINED;
	if (rc != DOOR_SPLICED)
		admit_conn_set_handoff(s->ac, 0);
	ans->verdict = rc == DOOR_SPLICED ? DOOR_SPLICE : rc == DOOR_DECLINED ? DOOR_GO_ON :
	    DOOR_REFUSE;
	/* the core recorded it, unless the front goes on with an unread request */
	s->reported = ans->verdict != DOOR_GO_ON || req->x224.consumed;
}

/* The core's answer to an ask, into *ans (the caller sends it). */
static void
on_ask(struct front *fr, struct slot *s, struct frontmsg_ask *m, struct door_answer *ans)
{
	struct fronts *f = fr->f;

	memset(ans, 0, sizeof(*ans));
	req_clean(&m->req, s->ac);
	if (m->req.stage == DOOR_CONNECT)
		ask_connect(f, s, &m->req, ans);
	else if (m->req.stage == DOOR_LOGON) {
		f->ops.decide(f->ops.ctx, &m->req, ans);
		s->limited = m->req.limited;
		s->ans = *ans;
	} else {
		ans->verdict = DOOR_REFUSE;
		ans->refusal = DOOR_REFUSAL_DENIED;
		util_strlcpy(ans->reason, "bad request stage", sizeof(ans->reason));
	}
}

static void
on_done(struct front *fr, struct slot *s, struct frontmsg_done *m)
{
	struct fronts *f = fr->f;
	enum door_outcome o = m->outcome <= DOOR_FAILED ? (enum door_outcome)m->outcome :
	    DOOR_FAILED;

	if (s->reported)
		return;
	s->reported = 1;
	req_clean(&m->req, s->ac);
	m->req.limited = s->limited;
	CUT(m->reason);
	/* a redirect the core did not answer is no redirect */
	if (o == DOOR_REDIRECTED && s->ans.verdict != DOOR_REDIRECT)
		o = DOOR_FAILED;
	f->ops.done(f->ops.ctx, &m->req, o, o == DOOR_REDIRECTED ? &s->ans : NULL, m->reason,
	    admit_conn_elapsed_us(s->ac));
}

/* A decision thread: one message at a time from fr's door socket, until
 * it closes. */
static void *
decider_main(void *arg)
{
	struct front *fr = arg;
	union {
		struct frontmsg_hdr h;
		struct frontmsg_ask ask;
		struct frontmsg_done done;
	} *m;
	struct door_answer ans;
	struct slot *s;
	ssize_t r;

	if ((m = malloc(sizeof(*m))) == NULL)
		return NULL;
	for (;;) {
		if ((r = recv(fr->door, m, sizeof(*m), 0)) < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (!frontmsg_ok(&m->h, (size_t)r, FRONTMSG_END, sizeof(m->h)) &&
		    !frontmsg_ok(&m->h, (size_t)r, FRONTMSG_ASK, sizeof(m->ask)) &&
		    !frontmsg_ok(&m->h, (size_t)r, FRONTMSG_DONE, sizeof(m->done))) {
			log_warn("front %d: a malformed message (%zd bytes): ignored", fr->index, r);
			continue;
		}
		if ((s = slot_get(fr, m->h.id, m->h.seq)) == NULL) {
			log_warn("front %d: a message for a connection not its own: ignored",
			    fr->index);
			continue;
		}
		if (m->h.type == FRONTMSG_ASK) {
			uint64_t id = s->id;

			/* the slot is free for the connection's next message before
			 * the answer goes out (which that message follows), so no
			 * decider waits for this one */
			on_ask(fr, s, &m->ask, &ans);
			slot_done(fr->f, s, 1);
			answer_send(fr, id, &ans);
			continue;
		}
		if (m->h.type == FRONTMSG_DONE)
			on_done(fr, s, &m->done);
		else
			s->ended = 1;	/* the front is done with it: finished below */
		slot_done(fr->f, s, 1);
	}
	free(m);
	return NULL;
}

/* ---- the processes -------------------------------------------------------------- */

/* The forked child: the front's user and descriptors, then the exec. Only
 * async-signal-safe calls. */
static void
child_exec(struct fronts *f, int door, int conn)
{
	static const char msg[] = "tsbroker: front: cannot set up or exec\n";
	char *argv[] = { "tsbroker-front", "--front", NULL };
	sigset_t none;
	int d, c, null;

	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) != 0 || privdrop_front_child(&f->pf) != 0 ||
	    (d = fcntl(door, F_DUPFD, 10)) < 0 || (c = fcntl(conn, F_DUPFD, 10)) < 0 ||
	    dup2(d, FRONTMSG_DOOR_FD) < 0 || dup2(c, FRONTMSG_CONN_FD) < 0 ||
	    (null = open("/dev/null", O_RDWR)) < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
	    close_range(FRONTMSG_CONN_FD + 1, ~0U, 0) != 0)
		goto fail;
	execve(f->exe, argv, f->envp);
 fail:
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(127);
}

/* Starts fr: its sockets, the process, the hello, its deciders. 0 or -1
 * (logged). */
static int
front_spawn(struct front *fr)
{
	struct fronts *f = fr->f;
	pthread_attr_t attr;
	int ds[2] = { -1, -1 }, cs[2] = { -1, -1 };
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ds) != 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cs) != 0) {
		log_error("front %d: socketpair: %s", fr->index, strerror(errno));
		goto fail;
	}
	if ((pid = fork()) < 0) {
		log_error("front %d: fork: %s", fr->index, strerror(errno));
		goto fail;
	}
	if (pid == 0)
		child_exec(f, ds[1], cs[1]);
	close(ds[1]);
	close(cs[1]);
	fr->conn = cs[0];
	fr->pid = pid;
	fr->started_ms = util_mono_ms();
	if ((fr->pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0)
		log_error("front %d: pidfd_open: %s", fr->index, strerror(errno));
	/* under the lock: a reload (fronts_reload) sends its hello after this one */
	pthread_mutex_lock(&f->lock);
	fr->door = ds[0];
	if (send(fr->door, f->hello, f->hello_len, MSG_NOSIGNAL) != (ssize_t)f->hello_len)
		log_error("front %d: cannot send its hello: %s", fr->index, strerror(errno));
	pthread_mutex_unlock(&f->lock);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, FRONTS_DECIDER_STACK);
	for (fr->ndeciders = 0; fr->ndeciders < FRONTS_DECIDERS; fr->ndeciders++)
		if (pthread_create(&fr->deciders[fr->ndeciders], &attr, decider_main, fr) != 0)
			break;
	pthread_attr_destroy(&attr);
	pthread_mutex_lock(&f->lock);
	fr->alive = fr->ndeciders > 0 && fr->pidfd >= 0;
	pthread_mutex_unlock(&f->lock);
	log_info("front %d started (pid %d, user %s)", fr->index, (int)pid, f->pf.user);
	return 0;
 fail:
	for (int i = 0; i < 2; i++) {
		if (ds[i] >= 0)
			close(ds[i]);
		if (cs[i] >= 0)
			close(cs[i]);
	}
	return -1;
}

/* After fr's process ended (its status collected): no more connections to
 * it, its deciders joined, its sockets closed, its connections ended. */
static void
front_reap(struct front *fr, int died)
{
	pthread_mutex_lock(&fr->f->lock);
	fr->alive = 0;
	fr->closing = 1;
	pthread_cond_broadcast(&fr->f->cond);
	pthread_mutex_unlock(&fr->f->lock);
	shutdown(fr->door, SHUT_RDWR);
	for (int i = 0; i < fr->ndeciders; i++)
		pthread_join(fr->deciders[i], NULL);
	fr->ndeciders = 0;
	slots_end(fr, died);
	close(fr->door);
	close(fr->conn);
	if (fr->pidfd >= 0)
		close(fr->pidfd);
	fr->door = fr->conn = fr->pidfd = -1;
	fr->pid = 0;
	pthread_mutex_lock(&fr->f->lock);
	fr->closing = 0;
	pthread_mutex_unlock(&fr->f->lock);
}

/* fr's process has ended: logged once with how, restart scheduled. */
static void
front_died(struct front *fr)
{
	int64_t now = util_mono_ms();
	int status = 0;
	char how[96];

	while (waitpid(fr->pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFSIGNALED(status))
		snprintf(how, sizeof(how), "killed by signal %d (%s)", WTERMSIG(status),
		    strsignal(WTERMSIG(status)));
	else
		snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
	fr->backoff_ms = now - fr->started_ms >= FRONTS_STABLE_MS || fr->backoff_ms == 0 ?
	    FRONTS_BACKOFF_MIN_MS : fr->backoff_ms * 2 > FRONTS_BACKOFF_MAX_MS ?
	    FRONTS_BACKOFF_MAX_MS : fr->backoff_ms * 2;
	log_error("front %d (pid %d) %s; starting it again in %d ms", fr->index, (int)fr->pid,
	    how, fr->backoff_ms);
	front_reap(fr, 1);
	fr->restart_at_ms = now + fr->backoff_ms;
}

/* The supervisor: waits for fronts to end and starts them again. */
static void *
super_main(void *arg)
{
	struct fronts *f = arg;
	struct pollfd pfd[FRONTS_MAX + 1];
	struct front *who[FRONTS_MAX + 1];
	char sink[16];

	for (;;) {
		int64_t now = util_mono_ms(), wait = 1000;
		nfds_t n = 1;

		pthread_mutex_lock(&f->lock);
		if (f->stopping) {
			pthread_mutex_unlock(&f->lock);
			break;
		}
		pthread_mutex_unlock(&f->lock);
		pfd[0] = (struct pollfd){ .fd = f->wake[0], .events = POLLIN };
		for (int i = 0; i < f->nfronts; i++) {
			struct front *fr = &f->fr[i];

			if (fr->pid == 0 && now >= fr->restart_at_ms) {
				if (front_spawn(fr) == 0) {
					__atomic_add_fetch(f->restarts, 1, __ATOMIC_RELAXED);
				} else {
					fr->backoff_ms = FRONTS_BACKOFF_MAX_MS;
					fr->restart_at_ms = now + fr->backoff_ms;
				}
			}
			if (fr->pid == 0) {
				if (fr->restart_at_ms - now < wait)
					wait = fr->restart_at_ms - now;
			} else if (fr->pidfd >= 0) {
				pfd[n] = (struct pollfd){ .fd = fr->pidfd, .events = POLLIN };
				who[n++] = fr;
			}
		}
		if (poll(pfd, n, wait < 0 ? 0 : (int)wait) < 0 && errno != EINTR)
			log_error("poll: %s", strerror(errno));
		if (pfd[0].revents & POLLIN)
			while (read(f->wake[0], sink, sizeof(sink)) > 0)
				;
		for (nfds_t i = 1; i < n; i++)
			if (pfd[i].revents != 0)
				front_died(who[i]);
	}
	return NULL;
}

/* ---- the interface -------------------------------------------------------------- */

int
fronts_pass(struct fronts *f, struct admit_conn *c)
{
	struct frontmsg_conn m;
	struct front *fr = NULL;
	struct slot *s = NULL;
	int fd = admit_conn_fd(c), sent;

	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->nfronts && !f->stopping; i++) {
		struct front *t = &f->fr[f->next++ % (unsigned)f->nfronts];

		if (t->alive) {
			fr = t;
			break;
		}
	}
	if (fr != NULL)
		s = slot_take(f, fr, c);
	pthread_mutex_unlock(&f->lock);
	if (s == NULL) {
		report_failed(f, c, f->stopping ? "broker stopping" : fr == NULL ?
		    "no front process running" : "no free front slot");
		return 0;
	}
	/* the slot's deadline stays the core's (admit.h: its watchdog shuts the
	 * socket down at handshake_timeout, as in one process): a front never
	 * holds a slot longer, whatever it does */
	memset(&m, 0, sizeof(m));
	m.h.version = FRONTMSG_VERSION;
	m.h.type = FRONTMSG_CONN;
	m.h.size = sizeof(m);
	m.h.id = s->id;
	util_strlcpy(m.client, admit_conn_client(c), sizeof(m.client));
	sent = net_send_fd(fr->conn, &m, sizeof(m), fd) == (long)sizeof(m);
	if (!sent) {
		char why[128];

		snprintf(why, sizeof(why), "cannot pass it to front %d: %s", fr->index,
		    strerror(errno));
		pthread_mutex_lock(&f->lock);
		slot_put(f, s);
		pthread_mutex_unlock(&f->lock);
		report_failed(f, c, why);
		return 0;
	}
	slot_done(f, s, 0);
	return ADMIT_KEPT;
}

/* The fronts' environment: the core's test and sanitizer switches only. */
static char **
env_filter(void)
{
	static const char *const keep[] = { "TSBROKER_", "ASAN_", "TSAN_", "LSAN_", "UBSAN_" };
	extern char **environ;
	char **out;
	size_t n = 0, k = 0;

	while (environ[n] != NULL)
		n++;
	if ((out = calloc(n + 1, sizeof(*out))) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < sizeof(keep) / sizeof(keep[0]); j++)
			if (strncmp(environ[i], keep[j], strlen(keep[j])) == 0) {
				if ((out[k] = strdup(environ[i])) != NULL)
					k++;
				break;
			}
	return out;
}

/* The hello for conf and pem (allocated, *len its size). NULL if out of memory. */
static struct frontmsg_hello *
hello_new(const struct rdp_conf *conf, const struct lean_pem *pem, size_t *len)
{
	struct frontmsg_hello *h;

	*len = sizeof(*h) + pem->cert_len + pem->key_len;
	if ((h = calloc(1, *len)) == NULL)
		return NULL;
	h->h.version = FRONTMSG_VERSION;
	h->h.type = FRONTMSG_HELLO;
	h->h.size = (uint32_t)*len;
	h->conf = *conf;
	h->cert_len = (uint32_t)pem->cert_len;
	h->key_len = (uint32_t)pem->key_len;
	memcpy(h + 1, pem->cert, pem->cert_len);
	memcpy((char *)(h + 1) + pem->cert_len, pem->key, pem->key_len);
	return h;
}

static void
hello_free(struct frontmsg_hello *h, size_t len)
{
	if (h != NULL) {
		explicit_bzero(h, len);
		free(h);
	}
}

int
fronts_reload(struct fronts *f, const struct rdp_conf *conf, const struct lean_pem *pem,
    char *err, size_t n)
{
	struct frontmsg_hello *h, *old;
	size_t len, old_len;

	if ((h = hello_new(conf, pem, &len)) == NULL) {
		snprintf(err, n, "out of memory");
		return -1;
	}
	pthread_mutex_lock(&f->lock);
	if (slots_grow(f, (uint32_t)conf->max_handshakes) != 0) {
		pthread_mutex_unlock(&f->lock);
		hello_free(h, len);
		snprintf(err, n, "out of memory for %d handshakes", conf->max_handshakes);
		return -1;
	}
	old = f->hello;
	old_len = f->hello_len;
	f->hello = h;
	f->hello_len = len;
	/* a running front takes it as it came (frontproc.c); one started
	 * later gets it as its first message */
	for (int i = 0; i < f->nfronts; i++)
		if (!f->fr[i].closing && f->fr[i].door >= 0 &&
		    send(f->fr[i].door, h, len, MSG_NOSIGNAL) != (ssize_t)len)
			log_error("front %d: cannot send it the new configuration: %s",
			    f->fr[i].index, strerror(errno));
	pthread_mutex_unlock(&f->lock);
	hello_free(old, old_len);
	return 0;
}

struct fronts *
fronts_new(const struct rdp_conf *conf, const struct lean_pem *pem,
    const struct door_ops *ops, uint64_t *restarts, char *err, size_t n)
{
	struct fronts *f;
	ssize_t len;

	if (conf->fronts > FRONTS_MAX) {
		snprintf(err, n, "[rdp] fronts %d: at most %d", conf->fronts, FRONTS_MAX);
		return NULL;
	}
	if ((f = calloc(1, sizeof(*f))) == NULL) {
		snprintf(err, n, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	f->wake[0] = f->wake[1] = -1;
	f->conf = *conf;
	f->ops = *ops;
	f->restarts = restarts;
	f->nfronts = conf->fronts;
	for (int i = 0; i < f->nfronts; i++)
		f->fr[i] = (struct front){ .f = f, .index = i, .pidfd = -1, .door = -1,
		    .conn = -1 };
	if (privdrop_front_prepare(&f->pf, conf->front_user, err, n) != 0)
		goto fail;
	if ((len = readlink("/proc/self/exe", f->exe, sizeof(f->exe) - 1)) <= 0) {
		snprintf(err, n, "cannot find this program (/proc/self/exe): %s", strerror(errno));
		goto fail;
	}
	f->exe[len] = '\0';
	/* every connection in an admission slot can be in a front */
	if (slots_grow(f, (uint32_t)(conf->max_handshakes > 0 ? conf->max_handshakes : 64)) != 0 ||
	    (f->envp = env_filter()) == NULL ||
	    (f->hello = hello_new(conf, pem, &f->hello_len)) == NULL ||
	    pipe2(f->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
		snprintf(err, n, "out of memory");
		goto fail;
	}
	return f;
 fail:
	fronts_free(f);
	return NULL;
}

int
fronts_start(struct fronts *f)
{
	for (int i = 0; i < f->nfronts; i++)
		if (front_spawn(&f->fr[i]) != 0)
			return -1;
	if (pthread_create(&f->super, NULL, super_main, f) != 0) {
		log_error("cannot start the fronts' supervisor");
		return -1;
	}
	f->super_started = 1;
	log_info("%d front process(es) as user %s (%s)", f->nfronts, f->pf.user, f->exe);
	return 0;
}

void
fronts_stop(struct fronts *f)
{
	if (f == NULL)
		return;
	pthread_mutex_lock(&f->lock);
	f->stopping = 1;
	pthread_mutex_unlock(&f->lock);
	if (f->wake[1] >= 0)
		(void)!write(f->wake[1], "x", 1);
	if (f->super_started)
		pthread_join(f->super, NULL);
	f->super_started = 0;
	for (int i = 0; i < f->nfronts; i++) {
		struct front *fr = &f->fr[i];
		struct pollfd p = { .fd = fr->pidfd, .events = POLLIN };

		if (fr->pid == 0)
			continue;
		/* its sockets closing ends it; a stuck one is killed */
		shutdown(fr->conn, SHUT_RDWR);
		shutdown(fr->door, SHUT_RDWR);
		if (fr->pidfd < 0 || poll(&p, 1, FRONTS_STOP_WAIT_MS) <= 0)
			kill(fr->pid, SIGKILL);
		while (waitpid(fr->pid, NULL, 0) < 0 && errno == EINTR)
			;
		front_reap(fr, 0);
	}
}

void
fronts_free(struct fronts *f)
{
	if (f == NULL)
		return;
	fronts_stop(f);
	hello_free(f->hello, f->hello_len);
	for (size_t i = 0; f->envp != NULL && f->envp[i] != NULL; i++)
		free(f->envp[i]);
	free(f->envp);
	for (int i = 0; i < SLOT_CHUNKS; i++)
		free(f->chunks[i]);
	if (f->wake[0] >= 0)
		close(f->wake[0]);
	if (f->wake[1] >= 0)
		close(f->wake[1]);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}
