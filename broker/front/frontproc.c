/* frontproc: a front process. See frontproc.h.
 *
 * Threads: the main one reads the door socket (the core's answers, each
 * handed to its asker); the endpoint's (rdp.h, admit.h: its listener takes
 * the passed sockets, a few workers for the X.224 stage, the lean engine's
 * loops). A DOOR_LOGON ask waits in no thread (remote_decide_async: the
 * answer completes it); a DOOR_CONNECT one waits in its worker. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "broker/common/log.h"
#include "broker/common/net.h"
#include "broker/common/util.h"
#include "broker/front/admit.h"
#include "broker/front/door.h"
#include "broker/front/frontmsg.h"
#include "broker/front/frontproc.h"
#include "broker/front/lean.h"
#include "broker/front/rdp.h"
#include "broker/front/sandbox.h"

/* An ask waiting for its answer: a worker on cv (complete NULL), or a
 * completion to call. */
struct waiter {
	uint64_t id;
	struct door_answer *ans;
	void (*complete)(void *arg);
	void *arg;
	int done;
	pthread_cond_t cv;
	struct waiter *next;
};

static struct {
	pthread_mutex_t lock;
	struct waiter *waiters;
} fp = { PTHREAD_MUTEX_INITIALIZER, NULL };

/* A connection's messages are sent one at a time (by whichever thread
 * handles it then), numbered in its door_conn from 0. */
static void
hdr_set(struct frontmsg_hdr *h, enum frontmsg_type t, size_t size, struct door_conn *dc)
{
	memset(h, 0, sizeof(*h));
	h->version = FRONTMSG_VERSION;
	h->type = t;
	h->size = (uint32_t)size;
	h->id = admit_conn_tag(dc->ac);
	h->seq = dc->seq++;
}

static int
door_send(const void *msg, size_t n)
{
	return send(FRONTMSG_DOOR_FD, msg, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static void
refuse_unreachable(struct door_answer *ans)
{
	memset(ans, 0, sizeof(*ans));
	ans->verdict = DOOR_REFUSE;
	ans->refusal = DOOR_REFUSAL_DENIED;
	util_strlcpy(ans->reason, "the core is unreachable", sizeof(ans->reason));
}

/* Sends req's ASK with w waiting for its answer. 0, or -1 (w not waiting). */
static int
ask_send(const struct door_request *req, struct waiter *w)
{
	struct door_conn *dc = door_conn_of(req);
	struct frontmsg_ask m;
	struct waiter **p;

	hdr_set(&m.h, FRONTMSG_ASK, sizeof(m), dc);
	w->id = m.h.id;
	m.req = *req;
	pthread_mutex_lock(&fp.lock);
	w->next = fp.waiters;
	fp.waiters = w;
	pthread_mutex_unlock(&fp.lock);
	if (door_send(&m, sizeof(m)) == 0)
		return 0;
	pthread_mutex_lock(&fp.lock);
	for (p = &fp.waiters; *p != NULL; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	pthread_mutex_unlock(&fp.lock);
	return -1;
}

/* door_ops.decide: asks the core and waits for its answer (DOOR_CONNECT,
 * in an admission worker). */
static void
remote_decide(void *ctx, const struct door_request *req, struct door_answer *ans)
{
	struct waiter w = { .ans = ans };

	pthread_cond_init(&w.cv, NULL);
	if (ask_send(req, &w) == 0) {
		pthread_mutex_lock(&fp.lock);
		while (!w.done)
			pthread_cond_wait(&w.cv, &fp.lock);
		pthread_mutex_unlock(&fp.lock);
	} else
		refuse_unreachable(ans);
	pthread_cond_destroy(&w.cv);
}

/* door_ops.decide_async: asks the core; door_run completes it. */
static void
remote_decide_async(void *ctx, const struct door_request *req, struct door_answer *ans,
    void (*complete)(void *arg), void *arg)
{
	struct waiter *w;

	if ((w = calloc(1, sizeof(*w))) != NULL) {
		w->ans = ans;
		w->complete = complete;
		w->arg = arg;
		if (ask_send(req, w) == 0)
			return;
		free(w);
	}
	refuse_unreachable(ans);
	complete(arg);
}

/* door_ops.splice: the core has spliced already (its DOOR_CONNECT answer
 * says DOOR_SPLICE only then) on its own descriptor. */
static enum door_splice_result
remote_splice(void *ctx, const struct door_request *req, const struct door_answer *ans, int fd)
{
	close(fd);
	return DOOR_SPLICED;
}

static void
remote_done(void *ctx, const struct door_request *req, enum door_outcome outcome,
    const struct door_answer *ans, const char *reason, int64_t elapsed_us)
{
	struct frontmsg_done m;

	memset(&m, 0, sizeof(m));
	hdr_set(&m.h, FRONTMSG_DONE, sizeof(m), door_conn_of(req));
	m.req = *req;
	m.outcome = outcome;
	if (ans != NULL) {
		m.has_ans = 1;
		m.ans = *ans;
	}
	util_strlcpy(m.reason, reason, sizeof(m.reason));
	if (door_send(&m, sizeof(m)) != 0)
		log_warn("cannot report to the core: %s", strerror(errno));
}

static void
conn_ended(void *ctx, struct door_conn *dc)
{
	struct frontmsg_hdr h;

	hdr_set(&h, FRONTMSG_END, sizeof(h), dc);
	(void)door_send(&h, sizeof(h));
}

/* admit_conf.accept: the next client socket the core passed. */
static int
conn_accept(void *ctx, int fd, char *client, size_t n, uint64_t *tag)
{
	struct frontmsg_conn m;
	long r;
	int cfd;

	if ((r = net_recv_fd(fd, &m, sizeof(m), &cfd)) < 0 && errno != EMSGSIZE)
		return -1;
	if (r == 0) {
		log_info("the core closed the connection socket: exiting");
		_exit(0);
	}
	if (cfd < 0 || !frontmsg_ok(&m.h, (size_t)r, FRONTMSG_CONN, sizeof(m))) {
		log_error("a malformed connection message from the core: dropped");
		if (cfd >= 0)
			close(cfd);
		errno = EINTR;		/* the next one */
		return -1;
	}
	m.client[sizeof(m.client) - 1] = '\0';
	util_strlcpy(client, m.client, n);
	*tag = m.h.id;
	return cfd;
}

static void
test_forbidden(int sig)
{
	(void)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
}

/* A hello of r bytes in h (the configuration, the certificate and the key)
 * checked, *pem pointing into it. 0 or -1. */
static int
hello_parse(struct frontmsg_hello *h, ssize_t r, struct lean_pem *pem)
{
	if (r < (ssize_t)sizeof(*h) || h->h.version != FRONTMSG_VERSION ||
	    h->h.type != FRONTMSG_HELLO || h->h.size != (size_t)r ||
	    h->cert_len > LEAN_PEM_MAX || h->key_len > LEAN_PEM_MAX ||
	    sizeof(*h) + h->cert_len + h->key_len != (size_t)r)
		return -1;
	memset(pem, 0, sizeof(*pem));
	pem->cert = (const char *)(h + 1);
	pem->cert_len = h->cert_len;
	pem->key = pem->cert + h->cert_len;
	pem->key_len = h->key_len;
	util_strlcpy(pem->cert_name, h->conf.certificate, sizeof(pem->cert_name));
	util_strlcpy(pem->key_name, h->conf.private_key, sizeof(pem->key_name));
	h->conf.fronts = 0;
	/* the core's watchdog cuts a handshake at handshake_timeout (its slot's
	 * deadline), as in one process; this one is only a fallback */
	h->conf.handshake_timeout += 1;
	return 0;
}

/* The largest message from the core: a hello. */
#define HELLO_CAP	(sizeof(struct frontmsg_hello) + 2 * (size_t)LEAN_PEM_MAX)

/* The door socket's messages until the core goes: answers to their
 * waiters, a hello again (a reload) to the engine. buf: HELLO_CAP bytes. */
static void
door_run(struct rdp *rdp, void *buf)
{
	struct frontmsg_answer *m = buf;
	struct lean_pem pem;
	struct waiter *w;
	char err[512];
	ssize_t r;

	for (;;) {
		if ((r = recv(FRONTMSG_DOOR_FD, buf, HELLO_CAP, 0)) < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			log_info("the core closed the door socket: exiting");
			_exit(0);
		}
		if (r >= (ssize_t)sizeof(m->h) && m->h.type == FRONTMSG_HELLO) {
			if (hello_parse(buf, r, &pem) != 0)
				log_error("a malformed reload from the core: ignored");
			else if (rdp_front_reload(rdp, &((struct frontmsg_hello *)buf)->conf, &pem,
			    err, sizeof(err)) != 0)
				log_error("reload: %s (the old configuration stays)", err);
			explicit_bzero(buf, (size_t)r);
			continue;
		}
		if (!frontmsg_ok(&m->h, (size_t)r, FRONTMSG_ANSWER, sizeof(*m))) {
			log_error("a malformed answer from the core: ignored");
			continue;
		}
		pthread_mutex_lock(&fp.lock);
		for (struct waiter **p = &fp.waiters; (w = *p) != NULL; p = &w->next)
			if (w->id == m->h.id) {
				*p = w->next;
				*w->ans = m->ans;
				if (w->complete == NULL) {
					w->done = 1;
					pthread_cond_signal(&w->cv);
					w = NULL;
				}
				break;
			}
		pthread_mutex_unlock(&fp.lock);
		if (w != NULL) {	/* an asynchronous ask: completed outside the lock */
			w->complete(w->arg);
			free(w);
		}
	}
}

int
frontproc_main(void)
{
	static const struct door_ops ops = { remote_decide, remote_splice, remote_done, NULL,
	    remote_decide_async };
	const char *test = getenv("TSBROKER_TEST_SECCOMP");
	const char *dump = getenv("TSBROKER_LEAN_DUMP");
	struct frontmsg_hello *h;
	struct lean_pem pem;
	struct rdp *r;
	char err[512];
	ssize_t n;

	log_init("tsbroker-front", LOG_INFO);
	signal(SIGPIPE, SIG_IGN);
	if ((h = malloc(HELLO_CAP)) == NULL)
		return 1;
	while ((n = recv(FRONTMSG_DOOR_FD, h, HELLO_CAP, 0)) < 0 && errno == EINTR)
		;
	if (hello_parse(h, n, &pem) != 0) {
		log_error("no valid hello from the core (version %u expected)", FRONTMSG_VERSION);
		return 1;
	}
	r = rdp_front_new(&h->conf, &pem, FRONTMSG_CONN_FD, conn_accept, &ops, conn_ended,
	    err, sizeof(err));
	explicit_bzero(h, (size_t)n);	/* the engine has its copy */
	if (r == NULL) {
		log_error("%s", err);
		return 1;
	}
	if (test != NULL && strcmp(test, "1") == 0)
		signal(SIGUSR1, test_forbidden);
	/* strftime's tzset (the log's) reads no zone file under the filter */
	setenv("TZ", "UTC0", 1);
	tzset();
	if (sandbox_enter(dump != NULL && dump[0] != '\0', err, sizeof(err)) != 0 ||
	    rdp_start(r) != 0) {
		log_error("%s", err);
		return 1;
	}
	door_run(r, h);
	return 0;
}
