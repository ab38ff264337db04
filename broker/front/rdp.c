/* rdp: the RDP redirection endpoint on FreeRDP 2.11's peer API. See rdp.h.
 *
 * Threads: one listener (accept, limits, and a watchdog that shuts down the
 * socket of any connection past its deadline, which is what unblocks
 * FreeRDP's TLS handshake loop), and a pool of workers grown on demand up
 * to max_handshakes, each handling one connection at a time.
 *
 * Two stages, so that idle or slow clients cost a descriptor, not a
 * handshake: an accepted connection first waits in the listener's poll set
 * (at most max_connections at once, more are closed at accept) until its
 * whole Connection Request has arrived (SO_RCVLOWAT set to the missing
 * length, so a partial request does not wake the listener), and only then
 * takes one of max_handshakes slots and a worker; what closes or sends a
 * bad TPKT header first ends there. Each stage has handshake_timeout: from
 * accept to a slot (the request, then a free slot), and from the slot to
 * the redirect, so a client that waited for a slot still gets a whole
 * handshake. A worker then:
 *
 *   peek the X.224 Connection Request (MSG_PEEK, exactly its TPKT length)
 *   refuse a routing token other than "Cookie: msts=" (FreeRDP 2.11 fails
 *     on it) with an RDP_NEG_FAILURE
 *   token mode, "Cookie: msts=": read the request, ops->route (verify the
 *     token, connect, splice), done; never FreeRDP
 *   trust_cookie, "Cookie: mstshash=": ops->route with the request unread;
 *     spliced, or declined and on
 *   refuse a client that does not offer TLS with an RDP_NEG_FAILURE
 *   hand a dup of the socket to freerdp_peer_new(): TLS only
 *   Capabilities callback: user and domain from Client Info, ops->place,
 *     Server Redirection PDU (address, or routing token in token mode; or
 *     Set Error Info + disconnect), return FALSE
 *   read and discard until the client closes (bounded), close.
 *
 * Locking: r->lock guards the connection list, the queue, the counters and
 * each connection's fd_open/deadline/timed_out/handoff. A connection's
 * socket is closed only by its worker, under the lock, so the watchdog never
 * touches a reused descriptor. While ops->route runs (handoff), the watchdog
 * leaves the socket alone: route bounds its own time, and a socket it
 * splices lives on in its own descriptor after the worker closes ours. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <freerdp/error.h>
#include <freerdp/freerdp.h>
#include <freerdp/peer.h>
#include <freerdp/settings.h>
#include <winpr/ssl.h>
#include <winpr/synch.h>
#include <winpr/wlog.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/front/rdp.h"
#include "broker/front/x224.h"

#define RDP_PEM_MAX		(256 * 1024)
#define RDP_DRAIN_MS		5000	/* wait for the client to close after the PDU */
#define RDP_REFUSE_DRAIN_MS	1000	/* the same after an X.224 refusal */
#define RDP_TICK_MS		200	/* listener/watchdog period */
#define RDP_OVERFLOW_LOG_MS	10000
#define RDP_STOP_WAIT_MS	5000	/* rdp_free: how long workers may take */
#define RDP_STACK_SIZE		(1024 * 1024)
#define RDP_NAME_MAX		256

struct rdp_conn {
	struct rdp *r;
	int fd;				/* ours; FreeRDP gets a dup */
	int fd_open;			/* under r->lock */
	int waiting;			/* under r->lock: in the listener's poll set */
	int ready;			/* under r->lock: waiting, its request complete */
	int lowat;			/* SO_RCVLOWAT set (listener only) */
	int timed_out;			/* under r->lock: the watchdog fired */
	int handoff;			/* under r->lock: in ops->route */
	int64_t deadline_ms;		/* under r->lock, monotonic */
	int64_t accepted_us;		/* monotonic */
	int done_called;
	char client[64];
	char user[RDP_NAME_MAX];
	char domain[RDP_NAME_MAX];
	char cookie[RDP_NAME_MAX];
	struct rdp_conn *prev, *next;	/* r->conns */
	struct rdp_conn *qnext;		/* r->queue */
};

struct rdp {
	struct rdp_conf conf;
	struct rdp_ops ops;
	char *cert;			/* PEM text, loaded once */
	char *key;
	int token_mode;			/* conf.mode is "token" */
	int lfd;
	int wake[2];			/* wakes the listener on stop */
	HANDLE stop_event;		/* wakes workers inside FreeRDP waits */

	pthread_mutex_t lock;
	pthread_cond_t cond;		/* queue not empty, or stopping */
	pthread_cond_t idle_cond;	/* a worker exited */
	int stopping;
	int started;
	pthread_t listener;
	struct rdp_conn *conns;		/* accepted, not yet finished */
	struct rdp_conn *qhead, *qtail;	/* in a handshake slot, waiting for a worker */
	int nconns;			/* open: waiting + in a handshake slot */
	int nwaiting;			/* in the listener's poll set */
	int nready;			/* ... of which complete, waiting for a slot */
	int nhandshakes;		/* in a handshake slot */
	uint64_t slot_timeouts;		/* timed out waiting for a slot, since the last log */
	int64_t slot_logged_ms;
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

static int
is_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

/* ---- outcome ------------------------------------------------------------------- */

static void
conn_done(struct rdp_conn *c, enum rdp_outcome outcome, const struct rdp_target *t,
    const char *reason)
{
	struct rdp *r = c->r;
	struct rdp_request req;

	if (c->done_called)
		return;
	c->done_called = 1;
	req.user = c->user;
	req.domain = c->domain;
	req.client_addr = c->client;
	req.cookie = c->cookie;
	if (r->ops.done != NULL)
		r->ops.done(r->ops.ctx, outcome, &req, t, reason ? reason : "",
		    mono_us() - c->accepted_us);
}

static void
conn_set_deadline(struct rdp_conn *c, int64_t ms_from_now)
{
	pthread_mutex_lock(&c->r->lock);
	c->deadline_ms = util_mono_ms() + ms_from_now;
	pthread_mutex_unlock(&c->r->lock);
}

static int
conn_timed_out(struct rdp_conn *c)
{
	int t;

	pthread_mutex_lock(&c->r->lock);
	t = c->timed_out;
	pthread_mutex_unlock(&c->r->lock);
	return t;
}

static int
rdp_stopping(struct rdp *r)
{
	int s;

	pthread_mutex_lock(&r->lock);
	s = r->stopping;
	pthread_mutex_unlock(&r->lock);
	return s;
}

/* Reads and discards until the client closes, the deadline, or stop. */
static void
conn_drain(struct rdp_conn *c, int ms)
{
	int64_t end = util_mono_ms() + ms, left;
	struct pollfd pfd;
	char buf[4096];
	ssize_t n;

	conn_set_deadline(c, ms);
	pfd.fd = c->fd;
	pfd.events = POLLIN;
	while ((left = end - util_mono_ms()) > 0 && !rdp_stopping(c->r)) {
		if (poll(&pfd, 1, left < RDP_TICK_MS ? (int)left : RDP_TICK_MS) < 0) {
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

/* ---- X.224 ------------------------------------------------------------------- */

/* ms > 0: a receive timeout; 0: none. */
static void
set_rcvtimeo(int fd, int64_t ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* Peeks the whole Connection Request (exactly its TPKT length) without
 * consuming it. 0 with *len, or -1 with a reason. */
static int
conn_peek(struct rdp_conn *c, uint8_t *buf, size_t *len, char *why, size_t n)
{
	size_t want = X224_TPKT_HEADER_LEN, need;
	int64_t left;
	ssize_t got;
	int r;

	for (;;) {
		pthread_mutex_lock(&c->r->lock);
		left = c->deadline_ms - util_mono_ms();
		pthread_mutex_unlock(&c->r->lock);
		if (rdp_stopping(c->r)) {
			snprintf(why, n, "broker stopping");
			return -1;
		}
		if (left <= 0) {
			snprintf(why, n, "no Connection Request within %d s",
			    c->r->conf.handshake_timeout);
			return -1;
		}
		set_rcvtimeo(c->fd, left < 1 ? 1 : left);
		got = recv(c->fd, buf, want, MSG_PEEK | MSG_WAITALL);
		if (got == 0) {
			if (rdp_stopping(c->r))
				snprintf(why, n, "broker stopping");
			else if (conn_timed_out(c))
				snprintf(why, n, "no Connection Request within %d s",
				    c->r->conf.handshake_timeout);
			else
				snprintf(why, n, "client closed before its Connection Request");
			return -1;
		}
		if (got < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;	/* the deadline check above decides */
			snprintf(why, n, "reading the Connection Request: %s", strerror(errno));
			return -1;
		}
		if ((size_t)got < want) {
			/* MSG_WAITALL gave up early (signal, timeout): wait a little */
			usleep(2000);
			continue;
		}
		if (want == X224_TPKT_HEADER_LEN) {
			if ((r = x224_packet_length(buf, (size_t)got, &need)) != 0) {
				snprintf(why, n, "not an RDP client: %s", x224_strerror(r));
				return -1;
			}
			want = need;
			continue;
		}
		set_rcvtimeo(c->fd, 0);
		*len = (size_t)got;
		return 0;
	}
}

/* Answers the request with an X.224 Connection Confirm carrying an
 * RDP_NEG_FAILURE, then lets the client close. */
static void
conn_refuse_x224(struct rdp_conn *c, size_t request_len, uint32_t failure_code)
{
	uint8_t buf[X224_PACKET_MAX];
	int n;

	/* consume the request we peeked: it is in the socket buffer already */
	if (recv(c->fd, buf, request_len, MSG_DONTWAIT) != (ssize_t)request_len)
		return;
	if ((n = x224_build_neg_failure(buf, sizeof(buf), failure_code)) < 0)
		return;
	if (send(c->fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
		return;
	shutdown(c->fd, SHUT_WR);
	conn_drain(c, RDP_REFUSE_DRAIN_MS);
}

static void
conn_set_handoff(struct rdp_conn *c, int on)
{
	pthread_mutex_lock(&c->r->lock);
	c->handoff = on;
	pthread_mutex_unlock(&c->r->lock);
}

/* Offers the connection to ops->route: a routing token (the request is read
 * here first, exactly its length, and passed on) or a cookie (the request
 * stays unread). 1 if route answered it (spliced or closed: route has
 * reported it), 0 to go on with FreeRDP (a declined cookie). */
static int
conn_route(struct rdp_conn *c, enum rdp_route_kind kind, const struct x224_request *req,
    const uint8_t *raw, size_t len)
{
	struct rdp *r = c->r;
	struct rdp_route_request rr;
	char token[X224_PACKET_MAX + 1];
	uint8_t sink[X224_PACKET_MAX];
	int fd, rc;

	memset(&rr, 0, sizeof(rr));
	rr.kind = kind;
	rr.token = "";
	rr.cookie = c->cookie;
	rr.client_addr = c->client;
	if (kind == RDP_ROUTE_TOKEN) {
		x224_copy(token, sizeof(token), req->msts, req->msts_len);
		rr.token = token;
		/* consume exactly the request we peeked: it is in the socket
		 * buffer already, and what follows it stays there for the relay */
		if (len > sizeof(sink) || recv(c->fd, sink, len, MSG_DONTWAIT) != (ssize_t)len) {
			conn_done(c, RDP_FAILED, NULL, "cannot read the Connection Request");
			return 1;
		}
		rr.request = raw;
		rr.request_len = len;
	}
	if ((fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		conn_done(c, RDP_FAILED, NULL, "out of file descriptors");
		return 1;
	}
	conn_set_handoff(c, 1);
	rc = r->ops.route(r->ops.ctx, &rr, fd);
	conn_set_handoff(c, 0);
	if (rc == RDP_ROUTE_SPLICED) {
		c->done_called = 1;	/* route reported it */
		return 1;
	}
	close(fd);
	if (rc == RDP_ROUTE_DECLINED && kind == RDP_ROUTE_COOKIE)
		return 0;
	c->done_called = 1;
	return 1;
}

/* 0 to continue with FreeRDP, -1 when the connection was answered here. */
static int
conn_check_request(struct rdp_conn *c)
{
	uint8_t buf[X224_PACKET_MAX];
	struct x224_request req;
	char why[160];
	size_t len;
	int r;

	if (conn_peek(c, buf, &len, why, sizeof(why)) != 0) {
		conn_done(c, RDP_FAILED, NULL, why);
		return -1;
	}
	if ((r = x224_parse_request(buf, len, &req)) != 0) {
		snprintf(why, sizeof(why), "malformed Connection Request: %s", x224_strerror(r));
		conn_done(c, RDP_FAILED, NULL, why);
		return -1;
	}
	x224_copy(c->cookie, sizeof(c->cookie), req.cookie, req.cookie_len);
	if (req.token_kind == X224_TOKEN_OTHER) {
		/* FreeRDP 2.11's server fails on anything but "Cookie: msts=" */
		conn_done(c, RDP_FAILED, NULL, "unsupported routing token (not Cookie: msts=)");
		conn_refuse_x224(c, len, X224_FAILURE_INCONSISTENT_FLAGS);
		return -1;
	}
	/* before the TLS check: a spliced client talks to its server, NLA included */
	if (req.token_kind == X224_TOKEN_MSTS && c->r->token_mode)
		return conn_route(c, RDP_ROUTE_TOKEN, &req, buf, len) ? -1 : 0;
	if (req.token_kind == X224_TOKEN_NONE && c->cookie[0] != '\0' &&
	    c->r->conf.trust_cookie && conn_route(c, RDP_ROUTE_COOKIE, &req, buf, len))
		return -1;
	if (!req.has_neg_req || !(req.requested_protocols & X224_PROTOCOL_SSL)) {
		conn_done(c, RDP_FAILED, NULL, req.has_neg_req ?
		    "client does not offer TLS (NLA only?)" :
		    "client offers standard RDP security only");
		conn_refuse_x224(c, len, X224_FAILURE_SSL_REQUIRED_BY_SERVER);
		return -1;
	}
	return 0;
}

/* ---- FreeRDP peer ------------------------------------------------------------- */

/* Sends a Set Error Info PDU and half-closes the socket: the client reads
 * the error, sees the end of the stream and closes. (FreeRDP's peer->Close
 * would send Deactivate All first, which a 2.11 client awaiting Demand
 * Active takes for a protocol error and retries the connection.) */
static void
peer_refuse(freerdp_peer *peer, UINT32 errinfo)
{
	struct rdp_conn *c = peer->ContextExtra;

	freerdp_set_error_info(peer->context->rdp, errinfo);
	freerdp_send_error_info(peer->context->rdp);
	shutdown(c->fd, SHUT_WR);
}

static BOOL
peer_capabilities(freerdp_peer *peer)
{
	struct rdp_conn *c = peer->ContextExtra;
	struct rdp *r = c->r;
	rdpSettings *s = peer->settings;
	struct rdp_request req;
	struct rdp_target t;
	char reason[256];
	const char *user, *domain, *fqdn;
	int rc;

	user = s->Username ? s->Username : "";
	domain = s->Domain ? s->Domain : "";
	if (util_strlcpy(c->user, user, sizeof(c->user)) != 0 ||
	    util_strlcpy(c->domain, domain, sizeof(c->domain)) != 0) {
		conn_done(c, RDP_REFUSED, NULL, "user or domain name too long");
		peer_refuse(peer, ERRINFO_SERVER_DENIED_CONNECTION);
		return FALSE;
	}
	if (c->user[0] == '\0') {
		conn_done(c, RDP_REFUSED, NULL, "client sent no user name");
		peer_refuse(peer, ERRINFO_SERVER_DENIED_CONNECTION);
		return FALSE;
	}
	req.user = c->user;
	req.domain = c->domain;
	req.client_addr = c->client;
	req.cookie = c->cookie;
	memset(&t, 0, sizeof(t));
	reason[0] = '\0';
	rc = r->ops.place(r->ops.ctx, &req, &t, reason, sizeof(reason));
	if (rc != 0) {
		conn_done(c, RDP_REFUSED, NULL, reason[0] ? reason : "refused");
		peer_refuse(peer, rc == RDP_PLACE_NO_SERVER ?
		    ERRINFO_CB_DESTINATION_POOL_NOT_FREE : ERRINFO_SERVER_DENIED_CONNECTION);
		return FALSE;
	}
	t.address[sizeof(t.address) - 1] = '\0';
	t.fqdn[sizeof(t.fqdn) - 1] = '\0';
	t.routing_token[sizeof(t.routing_token) - 1] = '\0';
	if (r->token_mode) {
		if (t.routing_token[0] == '\0' || !is_ascii(t.routing_token)) {
			conn_done(c, RDP_FAILED, NULL, "no routing token for the placement");
			peer_refuse(peer, ERRINFO_SERVER_DENIED_CONNECTION);
			return FALSE;
		}
		/* no address: the client reconnects to the broker with
		 * LoadBalanceInfo "Cookie: msts=<token>\r\n" (FreeRDP adds the
		 * prefix and the CRLF) as its X.224 routing token */
		peer->SendServerRedirection(peer, 0, NULL, t.routing_token,
		    is_ascii(c->user) ? c->user : NULL,
		    is_ascii(c->domain) ? c->domain : NULL, NULL, NULL, NULL, 0, NULL, 0,
		    NULL);
		goto sent;
	}
	if (t.address[0] == '\0' || !is_ascii(t.address)) {
		/* the placement is committed but unusable: a configuration error */
		log_error("server '%.64s' has no usable address '%.256s'", t.server, t.address);
		conn_done(c, RDP_FAILED, NULL, "target has no usable address");
		peer_refuse(peer, ERRINFO_CB_DESTINATION_NOT_FOUND);
		return FALSE;
	}
	fqdn = t.fqdn[0] != '\0' && is_ascii(t.fqdn) ? t.fqdn : NULL;
	/* FreeRDP 2.11 miscounts UTF-16 lengths of non-ASCII strings; without
	 * LB_USERNAME/LB_DOMAIN the client keeps the names it already has */
	peer->SendServerRedirection(peer, 0, t.address, NULL,
	    is_ascii(c->user) ? c->user : NULL, is_ascii(c->domain) ? c->domain : NULL,
	    NULL, fqdn, NULL, 0, NULL, 0, NULL);
 sent:
	if (conn_timed_out(c))		/* the watchdog closed it during place */
		conn_done(c, RDP_FAILED, NULL, "handshake timeout before the redirect");
	else
		conn_done(c, RDP_REDIRECTED, &t, NULL);
	return FALSE;			/* no Demand Active: the client leaves */
}

static BOOL
peer_refuse_activation(freerdp_peer *peer)
{
	return FALSE;			/* never reached: Capabilities stops first */
}

/* Runs FreeRDP on a dup of the socket until the outcome is known. */
static void
conn_run_peer(struct rdp_conn *c)
{
	struct rdp *r = c->r;
	freerdp_peer *peer = NULL;
	rdpSettings *s;
	HANDLE handles[MAXIMUM_WAIT_OBJECTS];
	const char *why = "handshake failed";
	DWORD count, status;
	int64_t left = 1;
	int fd2;

	if ((fd2 = fcntl(c->fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		conn_done(c, RDP_FAILED, NULL, "out of file descriptors");
		return;
	}
	if ((peer = freerdp_peer_new(fd2)) == NULL) {
		close(fd2);
		conn_done(c, RDP_FAILED, NULL, "out of memory");
		return;
	}
	peer->ContextExtra = c;
	if (!freerdp_peer_context_new(peer)) {	/* closes fd2 on failure */
		freerdp_peer_free(peer);
		conn_done(c, RDP_FAILED, NULL, "out of memory");
		return;
	}
	s = peer->settings;
	if (!freerdp_settings_set_string(s, FreeRDP_CertificateContent, r->cert) ||
	    !freerdp_settings_set_string(s, FreeRDP_PrivateKeyContent, r->key)) {
		why = "out of memory";
		goto out;
	}
	s->RdpSecurity = FALSE;
	s->TlsSecurity = TRUE;
	s->NlaSecurity = FALSE;
	s->ExtSecurity = FALSE;
	peer->Capabilities = peer_capabilities;
	peer->PostConnect = peer_refuse_activation;
	peer->Activate = peer_refuse_activation;
	if (!peer->Initialize(peer)) {
		why = "peer initialisation failed";
		goto out;
	}
	while (!c->done_called) {
		pthread_mutex_lock(&r->lock);
		left = c->deadline_ms - util_mono_ms();
		pthread_mutex_unlock(&r->lock);
		if (left <= 0)
			break;
		count = peer->GetEventHandles(peer, handles, MAXIMUM_WAIT_OBJECTS - 1);
		if (count == 0)
			break;
		handles[count++] = r->stop_event;
		status = WaitForMultipleObjects(count, handles, FALSE, (DWORD)left);
		if (status == WAIT_FAILED || rdp_stopping(r))
			break;
		if (status == WAIT_TIMEOUT)
			continue;
		if (!peer->CheckFileDescriptor(peer))
			break;
	}
	if (!c->done_called) {
		if (rdp_stopping(r))
			why = "broker stopping";
		else if (conn_timed_out(c) || left <= 0)
			why = "handshake timeout";
	} else
		conn_drain(c, RDP_DRAIN_MS);
 out:
	if (!c->done_called) {
		char reason[96];

		snprintf(reason, sizeof(reason), "%s%s", why,
		    c->user[0] ? " after Client Info" : "");
		conn_done(c, RDP_FAILED, NULL, reason);
	}
	peer->Disconnect(peer);
	freerdp_peer_context_free(peer);
	freerdp_peer_free(peer);
}

static void
conn_handle(struct rdp_conn *c)
{
	if (rdp_stopping(c->r)) {
		conn_done(c, RDP_FAILED, NULL, "broker stopping");
		return;
	}
	if (conn_check_request(c) != 0)
		return;
	conn_run_peer(c);
}

/* ---- threads ----------------------------------------------------------------- */

static void
conn_release(struct rdp_conn *c)
{
	struct rdp *r = c->r;

	pthread_mutex_lock(&r->lock);
	c->fd_open = 0;
	close(c->fd);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	r->nconns--;
	if (!c->waiting) {
		r->nhandshakes--;
		if (r->nready > 0 && r->wake[1] >= 0)	/* a slot is free: promote */
			(void)!write(r->wake[1], "s", 1);
	} else {
		r->nwaiting--;
		r->nready -= c->ready;
	}
	pthread_mutex_unlock(&r->lock);
	free(c);
}

static void *
worker_main(void *arg)
{
	struct rdp *r = arg;
	struct rdp_conn *c;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		while (r->qhead == NULL && !r->stopping)
			pthread_cond_wait(&r->cond, &r->lock);
		if ((c = r->qhead) == NULL)
			break;		/* stopping and nothing left */
		if ((r->qhead = c->qnext) == NULL)
			r->qtail = NULL;
		r->nidle--;
		pthread_mutex_unlock(&r->lock);
		conn_handle(c);
		conn_release(c);
		pthread_mutex_lock(&r->lock);
		r->nidle++;
	}
	r->nidle--;
	r->nthreads--;
	pthread_cond_broadcast(&r->idle_cond);
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* Starts a detached worker. Called with r->lock held. */
static int
worker_spawn(struct rdp *r)
{
	pthread_attr_t attr;
	pthread_t th;
	int e;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, RDP_STACK_SIZE);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	e = pthread_create(&th, &attr, worker_main, r);
	pthread_attr_destroy(&attr);
	if (e != 0)
		return -1;
	r->nthreads++;
	r->nidle++;
	return 0;
}

static void
overflow_log(struct rdp *r, int64_t now, int force)
{
	if (r->overflow == 0)
		return;
	if (!force && now - r->overflow_logged_ms < RDP_OVERFLOW_LOG_MS)
		return;
	log_warn("closed %llu connection(s) at accept: %d connections open "
	    "(max_connections)", (unsigned long long)r->overflow, r->conf.max_connections);
	r->overflow = 0;
	r->overflow_logged_ms = now;
}

/* Called with r->lock held. */
static void
slot_timeout_log(struct rdp *r, int64_t now, int force)
{
	if (r->slot_timeouts == 0)
		return;
	if (!force && now - r->slot_logged_ms < RDP_OVERFLOW_LOG_MS)
		return;
	log_warn("%llu connection(s) waited handshake_timeout for a handshake slot: "
	    "%d handshakes in progress (max_handshakes)",
	    (unsigned long long)r->slot_timeouts, r->conf.max_handshakes);
	r->slot_timeouts = 0;
	r->slot_logged_ms = now;
}

/* Ends a connection of the waiting stage (listener thread, or rdp_free
 * after the listener stopped). */
static void
waiting_finish(struct rdp_conn *c, const char *why)
{
	conn_done(c, RDP_FAILED, NULL, why);
	conn_release(c);
}

/* A waiting connection's socket is readable (or closed): finishes it, or
 * marks it ready once its whole Connection Request is in, or sets
 * SO_RCVLOWAT to the missing length and lets it wait. Listener thread. */
static void
waiting_check(struct rdp *r, struct rdp_conn *c, short revents)
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
		waiting_finish(c, why);
		return;
	}
	if (got == 0) {
		waiting_finish(c, "client closed before its Connection Request");
		return;
	}
	rc = x224_packet_length(buf, (size_t)got, &need);
	if (rc != 0 && rc != X224_ETRUNCATED) {
		snprintf(why, sizeof(why), "not an RDP client: %s", x224_strerror(rc));
		waiting_finish(c, why);
		return;
	}
	if (rc == X224_ETRUNCATED || (size_t)got < need) {
		if (revents & (POLLRDHUP | POLLHUP | POLLERR)) {
			waiting_finish(c, "client closed before its Connection Request");
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
	pthread_mutex_lock(&r->lock);
	c->ready = 1;
	r->nready++;
	pthread_mutex_unlock(&r->lock);
}

/* Moves ready connections to free handshake slots and the workers' queue.
 * Listener thread. */
static void
waiting_promote(struct rdp *r)
{
	struct rdp_conn *c;

	pthread_mutex_lock(&r->lock);
	for (c = r->conns; c != NULL && r->nready > 0 && !r->stopping &&
	    r->nhandshakes < r->conf.max_handshakes; c = c->next) {
		if (!c->waiting || !c->ready)
			continue;
		c->waiting = c->ready = 0;
		c->deadline_ms = util_mono_ms() + (int64_t)r->conf.handshake_timeout * 1000;
		r->nwaiting--;
		r->nready--;
		r->nhandshakes++;
		c->qnext = NULL;
		if (r->qtail != NULL)
			r->qtail->qnext = c;
		else
			r->qhead = c;
		r->qtail = c;
		if (r->nidle == 0 && worker_spawn(r) != 0 && r->nthreads == 0)
			log_error("cannot start a connection thread");
		pthread_cond_signal(&r->cond);
	}
	pthread_mutex_unlock(&r->lock);
}

/* The poll set: the listening socket, the wake pipe and the waiting
 * connections not yet ready. Returns its size (2 if memory is short). */
static size_t
waiting_pollset(struct rdp *r, struct pollfd **pfd, struct rdp_conn ***pc, size_t *cap)
{
	struct rdp_conn *c;
	size_t n = 2, want;

	pthread_mutex_lock(&r->lock);
	want = (size_t)r->nwaiting + 2;
	if (want > *cap) {
		struct pollfd *np = realloc(*pfd, want * sizeof(**pfd));
		struct rdp_conn **nc;

		if (np != NULL)
			*pfd = np;
		nc = np ? realloc(*pc, want * sizeof(**pc)) : NULL;
		if (nc != NULL) {
			*pc = nc;
			*cap = want;
		}
	}
	if (*cap < 2) {
		pthread_mutex_unlock(&r->lock);
		return 0;
	}
	(*pfd)[0] = (struct pollfd){ .fd = r->lfd, .events = POLLIN };
	(*pfd)[1] = (struct pollfd){ .fd = r->wake[0], .events = POLLIN };
	for (c = r->conns; c != NULL && n < *cap; c = c->next) {
		if (!c->waiting || c->ready)
			continue;
		(*pfd)[n] = (struct pollfd){ .fd = c->fd, .events = POLLIN | POLLRDHUP };
		(*pc)[n++] = c;
	}
	pthread_mutex_unlock(&r->lock);
	return n;
}

static void
listener_accept(struct rdp *r)
{
	struct sockaddr_storage ss;
	socklen_t slen;
	struct rdp_conn *c;
	char host[NI_MAXHOST];
	int fd;

	for (;;) {
		slen = sizeof(ss);
		if ((fd = accept4(r->lfd, (struct sockaddr *)&ss, &slen, SOCK_CLOEXEC)) < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				log_error("accept: %s", strerror(errno));
				usleep(100000);	/* EMFILE and friends: do not spin */
			}
			return;
		}
		pthread_mutex_lock(&r->lock);
		if (r->nconns >= r->conf.max_connections || r->stopping) {
			r->overflow++;
			overflow_log(r, util_mono_ms(), 0);
			pthread_mutex_unlock(&r->lock);
			close(fd);
			continue;
		}
		pthread_mutex_unlock(&r->lock);
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			close(fd);
			continue;
		}
		c->r = r;
		c->fd = fd;
		c->fd_open = 1;
		c->accepted_us = mono_us();
		c->deadline_ms = c->accepted_us / 1000 + (int64_t)r->conf.handshake_timeout * 1000;
		if (getnameinfo((struct sockaddr *)&ss, slen, host, sizeof(host), NULL, 0,
		    NI_NUMERICHOST) == 0)
			util_strlcpy(c->client, host, sizeof(c->client));
		c->waiting = 1;
		pthread_mutex_lock(&r->lock);
		c->next = r->conns;
		if (r->conns != NULL)
			r->conns->prev = c;
		r->conns = c;
		r->nconns++;
		r->nwaiting++;
		pthread_mutex_unlock(&r->lock);
		/* a request sent with the connect is often there already */
		waiting_check(r, c, 0);
	}
}

/* Shuts down the socket of every connection past its deadline: this ends
 * reads and writes blocked inside FreeRDP (its TLS handshake has no timeout). */
static void
listener_watchdog(struct rdp *r, int all)
{
	struct rdp_conn *c, *next, *expired = NULL;
	char why[96];
	int64_t now = util_mono_ms();

	pthread_mutex_lock(&r->lock);
	for (c = r->conns; c != NULL; c = next) {
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
		r->slot_timeouts += c->ready && !r->stopping;
	overflow_log(r, now, 0);
	slot_timeout_log(r, now, 0);
	pthread_mutex_unlock(&r->lock);
	for (c = expired; c != NULL; c = next) {
		next = c->qnext;
		if (all)
			snprintf(why, sizeof(why), "broker stopping");
		else if (c->ready)
			snprintf(why, sizeof(why), "no handshake slot within %d s (max_handshakes)",
			    r->conf.handshake_timeout);
		else
			snprintf(why, sizeof(why), "no Connection Request within %d s",
			    r->conf.handshake_timeout);
		waiting_finish(c, why);
	}
}

static void *
listener_main(void *arg)
{
	struct rdp *r = arg;
	struct pollfd *pfd = NULL;
	struct rdp_conn **pc = NULL;
	size_t cap = 0, n, i;
	char sink[64];

	while (!rdp_stopping(r)) {
		int k;

		if ((n = waiting_pollset(r, &pfd, &pc, &cap)) == 0) {
			usleep(100000);		/* out of memory: retry */
			listener_watchdog(r, 0);
			continue;
		}
		if ((k = poll(pfd, n, RDP_TICK_MS)) < 0 && errno != EINTR) {
			log_error("poll: %s", strerror(errno));
			usleep(100000);
		}
		if (k > 0) {
			if (pfd[1].revents & POLLIN)
				while (read(r->wake[0], sink, sizeof(sink)) > 0)
					;
			for (i = 2; i < n; i++)
				if (pfd[i].revents != 0)
					waiting_check(r, pc[i], pfd[i].revents);
			if (pfd[0].revents & POLLIN)
				listener_accept(r);
		}
		waiting_promote(r);
		listener_watchdog(r, 0);
	}
	free(pfd);
	free(pc);
	return NULL;
}

/* ---- setup ------------------------------------------------------------------- */

static int
listen_open(const char *hostport, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256], port[16];
	int p, fd = -1, one = 1, e;

	if (util_hostport_parse(hostport, host, sizeof(host), &p) != 0) {
		snprintf(err, errlen, "listen '%s' is not host:port", hostport);
		return -1;
	}
	snprintf(port, sizeof(port), "%d", p);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((e = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "listen '%s': %s", hostport, gai_strerror(e));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 512) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
		errno = e;
	}
	if (fd < 0)
		snprintf(err, errlen, "listen '%s': %s", hostport, strerror(errno));
	freeaddrinfo(res);
	return fd;
}

/* FreeRDP 2.11's tls_accept() parses the private key and the certificate on
 * every connection and never frees either (SSL_use_PrivateKey and
 * SSL_use_certificate take their own references): about 7 KB lost per
 * connection, and an RSA key parse of CPU. Workaround: tsbroker defines the
 * two PEM readers tls_accept() calls, so they take precedence over
 * libcrypto's. When the input is a memory BIO holding exactly the PEM text
 * loaded at start (FreeRDP reads CertificateContent/PrivateKeyContent that
 * way), they return the object parsed once, with one more reference: the
 * caller owns one reference as usual, and the one FreeRDP drops only raises
 * a counter. Any other input goes to OpenSSL unchanged. */
static pthread_mutex_t pem_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	const char *cert_text, *key_text;
	X509 *cert;
	EVP_PKEY *key;
} pem_cache;

typedef EVP_PKEY *(*pem_key_fn)(BIO *, EVP_PKEY **, pem_password_cb *, void *);
typedef X509 *(*pem_x509_fn)(BIO *, X509 **, pem_password_cb *, void *);

/* 1 if bp is a memory BIO whose unread data is exactly text. */
static int
pem_bio_is(BIO *bp, const char *text)
{
	char *data;
	long n;

	if (bp == NULL || text == NULL || BIO_method_type(bp) != BIO_TYPE_MEM)
		return 0;
	n = BIO_get_mem_data(bp, &data);
	return n > 0 && (size_t)n == strlen(text) && memcmp(data, text, (size_t)n) == 0;
}

EVP_PKEY *
PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u)
{
	static pem_key_fn real;
	EVP_PKEY *k = NULL;

	if (x == NULL && cb == NULL) {
		pthread_mutex_lock(&pem_lock);
		if (pem_cache.key != NULL && pem_bio_is(bp, pem_cache.key_text) &&
		    EVP_PKEY_up_ref(pem_cache.key) == 1)
			k = pem_cache.key;
		pthread_mutex_unlock(&pem_lock);
		if (k != NULL)
			return k;	/* the BIO is left unread: FreeRDP frees it */
	}
	if (real == NULL)
		real = (pem_key_fn)dlsym(RTLD_NEXT, "PEM_read_bio_PrivateKey");
	return real != NULL ? real(bp, x, cb, u) : NULL;
}

X509 *
PEM_read_bio_X509(BIO *bp, X509 **x, pem_password_cb *cb, void *u)
{
	static pem_x509_fn real;
	X509 *c = NULL;

	if (x == NULL && cb == NULL) {
		pthread_mutex_lock(&pem_lock);
		if (pem_cache.cert != NULL && pem_bio_is(bp, pem_cache.cert_text) &&
		    X509_up_ref(pem_cache.cert) == 1)
			c = pem_cache.cert;
		pthread_mutex_unlock(&pem_lock);
		if (c != NULL)
			return c;
	}
	if (real == NULL)
		real = (pem_x509_fn)dlsym(RTLD_NEXT, "PEM_read_bio_X509");
	return real != NULL ? real(bp, x, cb, u) : NULL;
}

static void
pem_cache_set(const char *cert_text, X509 *cert, const char *key_text, EVP_PKEY *key)
{
	X509 *oc;
	EVP_PKEY *ok;

	pthread_mutex_lock(&pem_lock);
	oc = pem_cache.cert;
	ok = pem_cache.key;
	pem_cache.cert_text = cert_text;
	pem_cache.cert = cert;
	pem_cache.key_text = key_text;
	pem_cache.key = key;
	pthread_mutex_unlock(&pem_lock);
	X509_free(oc);
	EVP_PKEY_free(ok);
}

/* Loads the PEM files once and checks that they belong together, so a bad
 * configuration fails at start rather than in every handshake. */
static int
pem_load(struct rdp *r, char *err, size_t errlen)
{
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	BIO *b;
	size_t len;
	int ret = -1;

	if (util_file_read(r->conf.certificate, RDP_PEM_MAX, &r->cert, &len) != 0) {
		snprintf(err, errlen, "certificate '%s': %s", r->conf.certificate,
		    strerror(errno));
		return -1;
	}
	if (util_file_read(r->conf.private_key, RDP_PEM_MAX, &r->key, &len) != 0) {
		snprintf(err, errlen, "private key '%s': %s", r->conf.private_key,
		    strerror(errno));
		return -1;
	}
	if ((b = BIO_new_mem_buf(r->cert, -1)) != NULL) {
		x = PEM_read_bio_X509(b, NULL, NULL, NULL);
		BIO_free(b);
	}
	if ((b = BIO_new_mem_buf(r->key, -1)) != NULL) {
		k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
		BIO_free(b);
	}
	if (x == NULL)
		snprintf(err, errlen, "certificate '%s': no PEM certificate", r->conf.certificate);
	else if (k == NULL)
		snprintf(err, errlen, "private key '%s': no PEM private key", r->conf.private_key);
	else if (X509_check_private_key(x, k) != 1)
		snprintf(err, errlen, "private key '%s' does not match certificate '%s'",
		    r->conf.private_key, r->conf.certificate);
	else {
		pem_cache_set(r->cert, x, r->key, k);	/* takes x and k */
		return 0;
	}
	X509_free(x);
	EVP_PKEY_free(k);
	return ret;
}

/* FreeRDP logs through WLog to stdout by default: send it to stderr and,
 * unless WLOG_LEVEL says otherwise, keep it quiet (the broker logs every
 * outcome itself). */
static void
wlog_setup(void)
{
	wLog *root = WLog_GetRoot();
	wLogAppender *app;

	WLog_SetLogAppenderType(root, WLOG_APPENDER_CONSOLE);
	if ((app = WLog_GetLogAppender(root)) != NULL)
		WLog_ConfigureAppender(app, "outputstream", (void *)"stderr");
	if (getenv("WLOG_LEVEL") == NULL)
		WLog_SetLogLevel(root, WLOG_FATAL);
}

struct rdp *
rdp_new(const struct rdp_conf *conf, const struct rdp_ops *ops, char *err, size_t errlen)
{
	struct rdp *r;

	if (conf == NULL || ops == NULL || ops->place == NULL) {
		snprintf(err, errlen, "invalid arguments");
		return NULL;
	}
	if (strcmp(conf->mode, "address") != 0 && strcmp(conf->mode, "token") != 0) {
		snprintf(err, errlen, "mode '%s' is not 'address' or 'token'", conf->mode);
		return NULL;
	}
	if ((strcmp(conf->mode, "token") == 0 || conf->trust_cookie) && ops->route == NULL) {
		snprintf(err, errlen, "token mode and trust_cookie need a route callback");
		return NULL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->conf = *conf;
	r->conf.listen[sizeof(r->conf.listen) - 1] = '\0';
	r->conf.certificate[sizeof(r->conf.certificate) - 1] = '\0';
	r->conf.private_key[sizeof(r->conf.private_key) - 1] = '\0';
	if (r->conf.handshake_timeout <= 0)
		r->conf.handshake_timeout = 10;
	if (r->conf.max_handshakes <= 0)
		r->conf.max_handshakes = 64;
	if (r->conf.max_connections < r->conf.max_handshakes)
		r->conf.max_connections = r->conf.max_handshakes;
	r->ops = *ops;
	r->token_mode = strcmp(r->conf.mode, "token") == 0;
	r->lfd = r->wake[0] = r->wake[1] = -1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	pthread_cond_init(&r->idle_cond, NULL);
	if (pem_load(r, err, errlen) != 0)
		goto fail;
	wlog_setup();
	winpr_InitializeSSL(WINPR_SSL_INIT_DEFAULT);
	if ((r->stop_event = CreateEvent(NULL, TRUE, FALSE, NULL)) == NULL) {
		snprintf(err, errlen, "cannot create an event");
		goto fail;
	}
	if (pipe2(r->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	if ((r->lfd = listen_open(r->conf.listen, err, errlen)) < 0)
		goto fail;
	return r;
 fail:
	rdp_free(r);
	return NULL;
}

int
rdp_start(struct rdp *r)
{
	if (r == NULL || r->started)
		return -1;
	if (pthread_create(&r->listener, NULL, listener_main, r) != 0) {
		log_error("cannot start the listener thread");
		return -1;
	}
	r->started = 1;
	log_info("listening on %s (%s mode%s, TLS, handshake_timeout %d s, "
	    "max_handshakes %d, max_connections %d)", r->conf.listen, r->conf.mode,
	    r->conf.trust_cookie ? ", trust_cookie" : "", r->conf.handshake_timeout,
	    r->conf.max_handshakes, r->conf.max_connections);
	return 0;
}

void
rdp_free(struct rdp *r)
{
	struct timespec until;
	int left;

	if (r == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = 1;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (r->wake[1] >= 0)
		(void)!write(r->wake[1], "x", 1);
	if (r->started)
		pthread_join(r->listener, NULL);
	if (r->lfd >= 0)
		close(r->lfd);
	if (r->stop_event != NULL)
		SetEvent(r->stop_event);
	/* end every connection: blocked reads and writes return at once */
	listener_watchdog(r, 1);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += RDP_STOP_WAIT_MS / 1000;
	pthread_mutex_lock(&r->lock);
	overflow_log(r, util_mono_ms(), 1);
	slot_timeout_log(r, util_mono_ms(), 1);
	while (r->nthreads > 0) {
		if (pthread_cond_timedwait(&r->idle_cond, &r->lock, &until) == ETIMEDOUT)
			break;
	}
	left = r->nthreads;
	pthread_mutex_unlock(&r->lock);
	if (left == 0) {
		/* queued connections no worker could take (thread creation failed) */
		while (r->qhead != NULL) {
			struct rdp_conn *c = r->qhead;

			r->qhead = c->qnext;
			conn_done(c, RDP_FAILED, NULL, "broker stopping");
			conn_release(c);
		}
	}
	if (left > 0) {
		/* a worker is stuck in ops->place: leave r to it rather than
		 * free memory under its feet */
		log_error("%d connection thread(s) still busy after %d s; not freeing",
		    left, RDP_STOP_WAIT_MS / 1000);
		return;
	}
	if (r->stop_event != NULL)
		CloseHandle(r->stop_event);
	if (r->wake[0] >= 0)
		close(r->wake[0]);
	if (r->wake[1] >= 0)
		close(r->wake[1]);
	pthread_cond_destroy(&r->cond);
	pthread_cond_destroy(&r->idle_cond);
	pthread_mutex_destroy(&r->lock);
	/* forget the texts freed below but keep the objects: FreeRDP holds
	 * references to them that it never drops (see pem_cache), so freeing
	 * ours would only make them unreachable, a leak to LeakSanitizer */
	pthread_mutex_lock(&pem_lock);
	if (pem_cache.cert_text == r->cert) {
		pem_cache.cert_text = NULL;
		pem_cache.key_text = NULL;
	}
	pthread_mutex_unlock(&pem_lock);
	free(r->cert);
	free(r->key);
	free(r);
}
