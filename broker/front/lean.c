/* lean: the lean redirect engine. See lean.h.
 *
 * A connection is handled in two places:
 *   the admission worker (lean_run): consumes the X.224 request, answers
 *     RDP_NEG_RSP (TLS), hands the connection to a loop and waits;
 *   a loop thread (epoll, non-blocking TLS, a state machine per
 *     connection, EPOLLONESHOT so one thread at a time owns it): TLS accept,
 *     MCS Connect Initial -> Response, Erect Domain, Attach User -> Confirm,
 *     Channel Join -> Confirm (in any order) until Client Info on the I/O
 *     channel (the password wiped at once), the licensing "valid client";
 *   the worker again: DOOR_LOGON (the core's decision blocks on the store,
 *     so never on a loop), the Server Redirection PDU or a Set Error Info,
 *     the TLS state freed, the drain until the client closes (bounded).
 * So the deep work (TLS, RSA) runs on a few loop stacks and a waiting
 * worker costs a shallow stack. Deadlines and stop are the admission
 * engine's: its watchdog shuts the socket down, which ends the loop's
 * state machine with a timeout. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "broker/common/log.h"
#include "broker/common/tlshello.h"
#include "broker/common/util.h"
#include "broker/front/admit.h"
#include "broker/front/clientinfo.h"
#include "broker/front/door.h"
#include "broker/front/lean.h"
#include "broker/front/mcs.h"
#include "broker/front/redir_pdu.h"
#include "broker/front/x224.h"

#define LEAN_DRAIN_MS		5000	/* wait for the client to close after the PDU */
#define LEAN_POLL_MS		1000	/* longest single wait */
#define LEAN_GRACE_MS		1000	/* past the deadline, wait this long for the watchdog */
#define LEAN_GRACE_STEP_MS	50
#define LEAN_LOOPS_MAX		4
#define LEAN_EVENTS		64
#define SEC_EXCHANGE_PKT	0x0001
/* Set Error Info codes, [MS-RDPBCGR] 2.2.5.1.1 */
#define ERRINFO_SERVER_DENIED_CONNECTION	0x00000007u
#define ERRINFO_CB_DESTINATION_NOT_FOUND	0x00000400u
#define ERRINFO_CB_DESTINATION_POOL_NOT_FREE	0x00000408u

enum lean_error {
	LEAN_OK = 0,
	LEAN_ETIMEOUT = -1,
	LEAN_ESTOP = -2,
	LEAN_ECLOSED = -3,	/* the client closed */
	LEAN_EIO = -4,		/* socket or TLS failure */
	LEAN_EPROTO = -5,	/* a PDU malformed or out of place (c->why says which) */
	LEAN_AGAIN = -6,	/* loop: wait for c->want on the socket */
};

/* Where a connection is in the loop. */
enum lean_state {
	ST_TLS = 0,		/* TLS accept */
	ST_CONNECT,		/* waiting for the MCS Connect Initial */
	ST_DOMAIN,		/* Erect Domain, Attach User, Channel Joins, until Client Info */
	ST_LICENSED,		/* the licensing PDU written: the worker's turn */
};

struct lean_loop {
	int epfd;
	pthread_t thread;
	int started;
};

struct lean_engine {
	pthread_mutex_t lock;	/* guards ctx, the policy, the files and dump_seq */
	SSL_CTX *ctx;		/* swapped whole; each SSL holds a reference */
	char ciphers[512];	/* the TLS policy ("": the default) */
	char ciphersuites[256];
	char min_version[8];
	struct lean_pem pem;	/* what ctx was loaded from (owned, the key wiped at free) */
	int token_mode;
	int stop_fd;
	int quit_fd;		/* eventfd: the loops end */
	struct lean_loop loops[LEAN_LOOPS_MAX];
	int nloops;
	unsigned next_loop;	/* round robin (under lock) */
	char dump_dir[256];	/* TSBROKER_LEAN_DUMP, "" off */
	unsigned dump_seq;	/* connections dumped */
};

struct lean_conn {
	struct lean_engine *e;
	struct door_conn *dc;
	int fd;			/* the admission engine's socket */
	SSL *ssl;
	uint8_t *in;		/* MCS_PDU_MAX bytes read, not yet used */
	size_t have;
	size_t used;		/* the most ever in it (what to wipe) */
	struct mcs_client_data cd;
	struct clientinfo ci;
	uint16_t user_id;	/* assigned at Attach User, 0 before */
	char why[DOOR_REASON_MAX];	/* what went wrong, for the report */
	char hello[180];	/* what its ClientHello offered (versions, suites) */
	unsigned dump_id;
	int dump_n;
	/* the loop's state machine */
	enum lean_state st;
	uint32_t want;		/* EPOLLIN or EPOLLOUT */
	uint8_t out[MCS_CONNECT_RESPONSE_MAX];	/* a PDU not yet written */
	size_t out_len;
	/* the hand-back to the worker */
	pthread_mutex_t m;
	pthread_cond_t cv;
	int handed;		/* the loop is done with it */
	int result;		/* 0 (licensed) or a LEAN_E* */
};

static const char *
lean_strerror(int err)
{
	switch (err) {
	case LEAN_ETIMEOUT: return "handshake timeout";
	case LEAN_ESTOP: return "broker stopping";
	case LEAN_ECLOSED: return "client closed the connection";
	case LEAN_EIO: return "TLS or socket failure";
	default: return "protocol error";
	}
}

static const char *
state_name(enum lean_state st)
{
	switch (st) {
	case ST_TLS: return "TLS";
	case ST_CONNECT: return "MCS Connect";
	case ST_DOMAIN: return "MCS";
	default: return "licensing";
	}
}

/* Why an SSL call that returned r <= 0 cannot go on, or LEAN_AGAIN with
 * c->want set. */
static int
ssl_want(struct lean_conn *c, int r)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->want = EPOLLIN;
		return LEAN_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		c->want = EPOLLOUT;
		return LEAN_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return LEAN_ECLOSED;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		return admit_conn_timed_out(c->dc->ac) ? LEAN_ETIMEOUT : LEAN_ECLOSED;
	default:
		ERR_clear_error();
		return admit_conn_timed_out(c->dc->ac) ? LEAN_ETIMEOUT : LEAN_EIO;
	}
}

/* ---- the worker's blocking I/O (after the loop: the redirect) ---- */

static int
conn_wait(struct lean_conn *c, short events)
{
	struct pollfd p[2];
	int64_t left;

	p[0].fd = c->fd;
	p[0].events = events;
	p[1].fd = c->e->stop_fd;
	p[1].events = POLLIN;
	for (;;) {
		/* the deadline is the watchdog's: it shuts the socket down in its
		 * tick (admit.h), which ends the wait; past the deadline poll in
		 * short steps until it has, and give up if it is very late */
		if (admit_conn_timed_out(c->dc->ac) ||
		    (left = admit_conn_left_ms(c->dc->ac)) < -LEAN_GRACE_MS)
			return LEAN_ETIMEOUT;
		p[0].revents = p[1].revents = 0;
		if (poll(p, 2, left > LEAN_POLL_MS ? LEAN_POLL_MS : left > 0 ? (int)left :
		    LEAN_GRACE_STEP_MS) < 0) {
			if (errno == EINTR)
				continue;
			return LEAN_EIO;
		}
		if (p[1].revents != 0)
			return LEAN_ESTOP;
		if (p[0].revents != 0)
			return 0;
	}
}

static int
tls_write(struct lean_conn *c, const uint8_t *buf, size_t n)
{
	int r, e;

	while ((r = SSL_write(c->ssl, buf, (int)n)) <= 0) {
		if ((e = ssl_want(c, r)) != LEAN_AGAIN)
			return e;
		if ((e = conn_wait(c, c->want == EPOLLOUT ? POLLOUT : POLLIN)) != 0)
			return e;
	}
	return 0;
}

/* ---- the loop's non-blocking steps ---- */

/* Writes the pending PDU, if any. 0 once it is out. */
static int
out_flush(struct lean_conn *c)
{
	int r;

	if (c->out_len == 0)
		return 0;
	if ((r = SSL_write(c->ssl, c->out, (int)c->out_len)) <= 0)
		return ssl_want(c, r);
	c->out_len = 0;
	return 0;
}

static int
out_set(struct lean_conn *c, const uint8_t *pdu, int n, const char *what)
{
	if (n < 0 || (size_t)n > sizeof(c->out)) {
		snprintf(c->why, sizeof(c->why), "%s: cannot build it", what);
		return LEAN_EPROTO;
	}
	if (pdu != c->out)
		memcpy(c->out, pdu, (size_t)n);
	c->out_len = (size_t)n;
	return 0;
}

/* One whole TPKT packet at c->in (its length in *len), reading what TLS
 * has; LEAN_AGAIN when it needs the socket. */
static int
tls_read_pdu(struct lean_conn *c, size_t *len)
{
	size_t need;
	int r;

	for (;;) {
		if (c->have > 0) {
			r = mcs_tpkt_length(c->in, c->have, &need);
			if (r == 0 && need <= c->have) {
				*len = need;
				return 0;
			}
			if (r != 0 && r != MCS_ETRUNCATED) {
				snprintf(c->why, sizeof(c->why), "%s", c->in[0] != 3 ?
				    "unexpected fast-path PDU" : "TPKT length out of bounds");
				return LEAN_EPROTO;
			}
		}
		if ((r = SSL_read(c->ssl, c->in + c->have, (int)(MCS_PDU_MAX - c->have))) <= 0)
			return ssl_want(c, r);
		c->have += (size_t)r;
		if (c->have > c->used)
			c->used = c->have;
	}
}
/* Drops the first len bytes of the input, wiping what they leave behind. */
static void
conn_consume(struct lean_conn *c, size_t len)
{
	memmove(c->in, c->in + len, c->have - len);
	OPENSSL_cleanse(c->in + c->have - len, len);
	c->have -= len;
}

/* The debug dump of one decrypted client PDU. */
static void
conn_dump(struct lean_conn *c, const char *name, const uint8_t *pdu, size_t len)
{
	char path[400];
	FILE *f;

	if (c->e->dump_dir[0] == '\0')
		return;
	snprintf(path, sizeof(path), "%s/%u-%02d-%s.bin", c->e->dump_dir, c->dump_id,
	    c->dump_n++, name);
	if ((f = fopen(path, "wb")) == NULL)
		return;
	(void)!fwrite(pdu, 1, len, f);
	fclose(f);
}

static int
proto_error(struct lean_conn *c, const char *what, const char *detail)
{
	snprintf(c->why, sizeof(c->why), "%s: %s", what, detail);
	return LEAN_EPROTO;
}

/* Connect Initial in, Connect Response out (pending). */
static int
step_connect(struct lean_conn *c)
{
	size_t len;
	int r, n;

	if ((r = tls_read_pdu(c, &len)) != 0)
		return r;
	conn_dump(c, "connect-initial", c->in, len);
	if ((r = mcs_parse_connect_initial(c->in, len, &c->cd)) != 0)
		return proto_error(c, "MCS Connect Initial", mcs_strerror(r));
	conn_consume(c, len);
	if ((n = mcs_build_connect_response(c->out, sizeof(c->out), &c->cd,
	    c->dc->req.x224.requested_protocols)) < 0)
		return proto_error(c, "MCS Connect Response", mcs_strerror(n));
	c->st = ST_DOMAIN;
	return out_set(c, c->out, n, "MCS Connect Response");
}

/* A channel the client may join: its user channel, the I/O channel or one
 * of its static channels. */
static int
channel_known(const struct lean_conn *c, uint16_t ch)
{
	return ch == c->user_id || ch == MCS_GLOBAL_CHANNEL ||
	    (ch > MCS_GLOBAL_CHANNEL && ch <= MCS_GLOBAL_CHANNEL + c->cd.channel_count);
}

/* Client Info: the user and domain into c->ci, the password wiped from the
 * buffer at once; then the licensing answer (pending). */
static int
step_client_info(struct lean_conn *c, const struct mcs_domain_pdu *d, size_t len)
{
	uint8_t *data = c->in + (d->data - c->in);
	int r, n;

	if (d->channel != MCS_GLOBAL_CHANNEL || d->data_len < 4)
		return proto_error(c, "Send Data Request", "not on the I/O channel");
	if (d->data[0] & SEC_EXCHANGE_PKT)
		return proto_error(c, "Security Exchange", "standard RDP security");
	r = clientinfo_parse(data, d->data_len, &c->ci);
	clientinfo_wipe_password(data, d->data_len, &c->ci);
	conn_dump(c, "client-info", c->in, len);
	OPENSSL_cleanse(c->in, len);	/* the rest of it too */
	conn_consume(c, len);
	if (r != 0)
		return proto_error(c, "Client Info", clientinfo_strerror(r));
	n = redir_build_license_valid(c->out, sizeof(c->out));
	c->st = ST_LICENSED;
	return out_set(c, c->out, n, "licensing");
}

/* One domain PDU: Erect Domain, Attach User, a Channel Join, Client Info. */
static int
step_domain(struct lean_conn *c)
{
	struct mcs_domain_pdu d;
	size_t len;
	int r, n = 0;

	if ((r = tls_read_pdu(c, &len)) != 0)
		return r;
	if ((r = mcs_parse_domain(c->in, len, &d)) != 0) {
		conn_dump(c, "domain-bad", c->in, len);
		return proto_error(c, "MCS domain PDU", mcs_strerror(r));
	}
	switch (d.type) {
	case MCS_ERECT_DOMAIN_REQUEST:
		conn_dump(c, "erect-domain", c->in, len);
		break;
	case MCS_ATTACH_USER_REQUEST:
		conn_dump(c, "attach-user", c->in, len);
		/* after the static channels, as FreeRDP's server counts */
		c->user_id = (uint16_t)(MCS_GLOBAL_CHANNEL + 1 + c->cd.channel_count);
		n = mcs_build_attach_confirm(c->out, sizeof(c->out), c->user_id);
		break;
	case MCS_CHANNEL_JOIN_REQUEST:
		conn_dump(c, "channel-join", c->in, len);
		if (c->user_id == 0 || !channel_known(c, d.channel))
			return proto_error(c, "Channel Join", c->user_id == 0 ?
			    "before Attach User" : "unknown channel");
		n = mcs_build_join_confirm(c->out, sizeof(c->out), c->user_id, d.channel);
		break;
	case MCS_SEND_DATA_REQUEST:
		return step_client_info(c, &d, len);
	case MCS_DISCONNECT_PROVIDER_ULTIMATUM:
		return LEAN_ECLOSED;
	}
	conn_consume(c, len);
	return n != 0 ? out_set(c, c->out, n, "MCS confirm") : 0;
}

/* SSL_accept returned r != 1: a hello the policy refused (no shared
 * version or suite) is reported with what the client offered; else as
 * ssl_want. */
static int
tls_accept_failed(struct lean_conn *c, int r)
{
	int reason;

	if (SSL_get_error(c->ssl, r) != SSL_ERROR_SSL || c->hello[0] == '\0')
		return ssl_want(c, r);
	reason = ERR_GET_REASON(ERR_peek_error());
	if (reason != SSL_R_NO_SHARED_CIPHER && reason != SSL_R_UNSUPPORTED_PROTOCOL &&
	    reason != SSL_R_VERSION_TOO_LOW && reason != SSL_R_NO_PROTOCOLS_AVAILABLE)
		return ssl_want(c, r);
	ERR_clear_error();
	c->dc->req.tls_refused = 1;
	snprintf(c->why, sizeof(c->why), "TLS refused by the policy (tls_min_version, "
	    "tls_ciphers, tls_ciphersuites): client offered %.160s", c->hello);
	return LEAN_EPROTO;
}

/* Runs c's state machine as far as the socket lets it: LEAN_AGAIN (wait
 * for c->want), 0 once licensed (the worker's turn), or an error. */
static int
conn_advance(struct lean_conn *c)
{
	int r;

	for (;;) {
		if ((r = out_flush(c)) != 0)
			return r;
		switch (c->st) {
		case ST_TLS:
			if ((r = SSL_accept(c->ssl)) != 1)
				return tls_accept_failed(c, r);
			c->st = ST_CONNECT;
			break;
		case ST_CONNECT:
			if ((r = step_connect(c)) != 0)
				return r;
			break;
		case ST_DOMAIN:
			if ((r = step_domain(c)) != 0)
				return r;
			break;
		case ST_LICENSED:
			return 0;
		}
	}
}

/* Gives c back to its worker: the loop never touches it again. */
static void
conn_hand_back(struct lean_conn *c, int result)
{
	pthread_mutex_lock(&c->m);
	c->result = result;
	c->handed = 1;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->m);
}

static void *
loop_main(void *arg)
{
	struct lean_loop *l = arg;
	struct epoll_event ev[LEAN_EVENTS];
	struct lean_conn *c;
	int n, i, r;

	for (;;) {
		if ((n = epoll_wait(l->epfd, ev, LEAN_EVENTS, -1)) < 0) {
			if (errno == EINTR)
				continue;
			log_error("epoll_wait: %s", strerror(errno));
			return NULL;
		}
		for (i = 0; i < n; i++) {
			if ((c = ev[i].data.ptr) == NULL)
				return NULL;		/* quit_fd: lean_free */
			if ((r = conn_advance(c)) == LEAN_AGAIN) {
				struct epoll_event re = { .events = c->want | EPOLLONESHOT,
				    .data.ptr = c };

				if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &re) == 0)
					continue;
				r = LEAN_EIO;
			}
			(void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
			conn_hand_back(c, r);
		}
	}
}

/* Hands c to a loop and waits until the loop is done with it. The loop's
 * result: 0 (licensed) or a LEAN_E*. */
static int
conn_run_loop(struct lean_conn *c)
{
	struct lean_engine *e = c->e;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.ptr = c };
	struct lean_loop *l;
	struct timespec ts;
	int shut = 0;

	pthread_mutex_lock(&e->lock);
	l = &e->loops[e->next_loop++ % (unsigned)e->nloops];
	pthread_mutex_unlock(&e->lock);
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
		return LEAN_EIO;
	pthread_mutex_lock(&c->m);
	while (!c->handed) {
		clock_gettime(CLOCK_REALTIME, &ts);	/* the condition's clock */
		ts.tv_sec += 1;
		pthread_cond_timedwait(&c->cv, &c->m, &ts);
		/* the watchdog ends it by shutting the socket down; should it be
		 * very late, do the same (the loop then hands it back) */
		if (!c->handed && !shut && admit_conn_left_ms(c->dc->ac) < -LEAN_GRACE_MS) {
			shutdown(c->fd, SHUT_RDWR);
			shut = 1;
		}
	}
	pthread_mutex_unlock(&c->m);
	return c->result;
}

static uint32_t
refusal_errinfo(enum door_refusal why)
{
	return why == DOOR_REFUSAL_NO_SERVER ? ERRINFO_CB_DESTINATION_POOL_NOT_FREE :
	    ERRINFO_SERVER_DENIED_CONNECTION;
}

/* Sends a Set Error Info PDU and ends the stream: the client reads the
 * error, sees the end and closes. */
static void
conn_refuse(struct lean_conn *c, uint32_t errinfo)
{
	uint8_t out[64];
	int n;

	if ((n = redir_build_error_info(out, sizeof(out), errinfo)) > 0)
		(void)tls_write(c, out, (size_t)n);
	(void)SSL_shutdown(c->ssl);
	shutdown(c->fd, SHUT_WR);
}

/* DOOR_LOGON: asks the core and sends what it answers. Reports the
 * outcome; 0 once something was sent (then drain), -1 if not. */
static int
step_logon(struct lean_conn *c, const struct clientinfo *ci)
{
	struct door_conn *dc = c->dc;
	struct door_request *req = &dc->req;
	struct door_answer ans;
	struct door_redirect *t = &ans.redirect;
	struct redir_target rt;
	uint8_t out[REDIR_PDU_MAX];
	int n, r;

	req->stage = DOOR_LOGON;
	util_strlcpy(req->user, ci->user, sizeof(req->user));
	util_strlcpy(req->domain, ci->domain, sizeof(req->domain));
	util_strlcpy(req->client_name, c->cd.client_name, sizeof(req->client_name));
	req->cluster_flags = c->cd.has_cluster ? c->cd.cluster_flags : 0;
	if (req->cluster_flags & DOOR_CLUSTER_SESSIONID_VALID)
		req->redirected_session_id = c->cd.redirected_session_id;
	if (req->user[0] == '\0') {
		door_report(dc, DOOR_REFUSED, NULL, "client sent no user name");
		conn_refuse(c, ERRINFO_SERVER_DENIED_CONNECTION);
		return 0;
	}
	/* liberal: a client without cluster data is not known to refuse */
	if (c->cd.has_cluster && !(req->cluster_flags & DOOR_CLUSTER_REDIRECTION_SUPPORTED)) {
		door_report(dc, DOOR_REFUSED, NULL, "client cannot follow a redirect "
		    "(no REDIRECTION_SUPPORTED in its cluster data)");
		conn_refuse(c, ERRINFO_SERVER_DENIED_CONNECTION);
		return 0;
	}
	memset(&ans, 0, sizeof(ans));
	dc->ops->decide(dc->ops->ctx, req, &ans);
	if (ans.verdict != DOOR_REDIRECT) {
		ans.reason[sizeof(ans.reason) - 1] = '\0';
		door_report(dc, DOOR_REFUSED, NULL, ans.reason[0] ? ans.reason : "refused");
		conn_refuse(c, refusal_errinfo(ans.refusal));
		return 0;
	}
	t->address[sizeof(t->address) - 1] = '\0';
	t->fqdn[sizeof(t->fqdn) - 1] = '\0';
	t->routing_token[sizeof(t->routing_token) - 1] = '\0';
	memset(&rt, 0, sizeof(rt));
	rt.user = req->user;
	rt.domain = req->domain;
	if (c->e->token_mode) {
		if (t->routing_token[0] == '\0') {
			door_report(dc, DOOR_FAILED, NULL, "no routing token for the placement");
			conn_refuse(c, ERRINFO_SERVER_DENIED_CONNECTION);
			return 0;
		}
		rt.routing_token = t->routing_token;
	} else {
		rt.address = t->address;
		rt.fqdn = t->fqdn;
	}
	if ((n = redir_build_redirect(out, sizeof(out), &rt)) < 0) {
		/* the placement is committed but unusable: a configuration error */
		log_error("server '%.64s': cannot redirect to '%.256s': %s", t->server,
		    t->address, redir_strerror(n));
		door_report(dc, DOOR_FAILED, NULL, "target has no usable address");
		conn_refuse(c, ERRINFO_CB_DESTINATION_NOT_FOUND);
		return 0;
	}
	if ((r = tls_write(c, out, (size_t)n)) != 0) {
		snprintf(c->why, sizeof(c->why), "%s sending the redirect", lean_strerror(r));
		door_report(dc, DOOR_FAILED, NULL, c->why);
		return -1;
	}
	door_report(dc, DOOR_REDIRECTED, &ans, NULL);
	return 0;
}

/* Consumes the X.224 request (in the socket already) and answers it. */
static int
step_x224(struct lean_conn *c)
{
	uint8_t buf[X224_PACKET_MAX];
	size_t len = c->dc->req.x224.len;
	int n;

	if (recv(c->fd, buf, len, MSG_DONTWAIT) != (ssize_t)len)
		return LEAN_EIO;
	c->dc->req.x224.consumed = 1;
	if ((n = x224_build_neg_response(buf, sizeof(buf), X224_PROTOCOL_SSL,
	    X224_RSP_EXTENDED_CLIENT_DATA)) < 0)
		return LEAN_EIO;
	if (send(c->fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
		return LEAN_EIO;
	return 0;
}

static int
conn_open(struct lean_conn *c)
{
	struct lean_engine *e = c->e;
	int fl;

	if ((c->in = malloc(MCS_PDU_MAX)) == NULL)
		return LEAN_EIO;
	if ((fl = fcntl(c->fd, F_GETFL)) < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return LEAN_EIO;
	/* each PDU answers one: no Nagle wait behind an unacknowledged one */
	fl = 1;
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &fl, sizeof(fl));
	pthread_mutex_lock(&e->lock);
	if ((c->ssl = SSL_new(e->ctx)) != NULL)
		SSL_set_app_data(c->ssl, c);
	if (e->dump_dir[0] != '\0')
		c->dump_id = ++e->dump_seq;
	pthread_mutex_unlock(&e->lock);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
		ERR_clear_error();
		return LEAN_EIO;
	}
	return 0;
}

void
lean_run(struct lean_engine *e, struct door_conn *dc)
{
	struct lean_conn *c;
	int r;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		door_report(dc, DOOR_FAILED, NULL, "out of memory");
		return;
	}
	c->e = e;
	c->dc = dc;
	c->fd = admit_conn_fd(dc->ac);
	c->st = ST_TLS;
	pthread_mutex_init(&c->m, NULL);
	pthread_cond_init(&c->cv, NULL);
	if ((r = step_x224(c)) != 0 || (r = conn_open(c)) != 0 || (r = conn_run_loop(c)) != 0)
		goto out;
	r = step_logon(c, &c->ci);
	/* what is left to do needs no TLS: free its state before the drain */
	SSL_free(c->ssl);
	c->ssl = NULL;
	if (r == 0)
		admit_conn_drain(dc->ac, LEAN_DRAIN_MS);
 out:
	if (!dc->reported) {
		char reason[256];

		if (admit_conn_stopping(dc->ac))
			snprintf(reason, sizeof(reason), "broker stopping");
		else if (r == LEAN_EPROTO)
			snprintf(reason, sizeof(reason), "%s", c->why);
		else
			snprintf(reason, sizeof(reason), "%s (%s)%s", lean_strerror(r),
			    c->ssl != NULL ? state_name(c->st) : "X.224",
			    dc->req.user[0] ? " after Client Info" : "");
		door_report(dc, DOOR_FAILED, NULL, reason);
	}
	SSL_free(c->ssl);
	if (c->in != NULL) {
		OPENSSL_cleanse(c->in, c->used);
		free(c->in);
	}
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->m);
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

/* The loop threads, one per CPU (at most LEAN_LOOPS_MAX), each with its
 * epoll set and the quit eventfd in it. */
static int
loops_start(struct lean_engine *e, char *err, size_t n)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	struct lean_loop *l;
	int i;

	if ((e->quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		snprintf(err, n, "eventfd: %s", strerror(errno));
		return -1;
	}
	e->nloops = cpus < 1 ? 1 : cpus > LEAN_LOOPS_MAX ? LEAN_LOOPS_MAX : (int)cpus;
	for (i = 0; i < e->nloops; i++) {
		l = &e->loops[i];
		if ((l->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
		    epoll_ctl(l->epfd, EPOLL_CTL_ADD, e->quit_fd, &ev) != 0) {
			snprintf(err, n, "epoll: %s", strerror(errno));
			e->nloops = i + (l->epfd >= 0);
			return -1;
		}
		if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
			snprintf(err, n, "cannot start a thread");
			e->nloops = i + 1;
			return -1;
		}
		l->started = 1;
	}
	return 0;
}

/* Appends s to buf (size n, NUL-terminated) as far as it fits. */
static void
hello_add(char *buf, size_t n, const char *sep, const char *s)
{
	size_t len = strlen(buf);

	if (len + 1 < n)
		snprintf(buf + len, n - len, "%s%s", len > 0 ? sep : "", s);
}

/* Records what the ClientHello offers, for the report should the policy
 * refuse it: the versions (supported_versions, else the legacy one) and
 * the suites OpenSSL knows by name. Never refuses itself. */
static int
hello_cb(SSL *ssl, int *alert, void *arg)
{
	struct lean_conn *c = SSL_get_app_data(ssl);
	const unsigned char *p;
	const SSL_CIPHER *sc;
	char vers[64] = "", suites[160] = "";
	size_t len, i;

	if (c == NULL)
		return SSL_CLIENT_HELLO_SUCCESS;
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &p, &len) == 1 &&
	    len >= 1 && (size_t)p[0] + 1 <= len) {
		for (i = 1; i + 1 < (size_t)p[0] + 1; i += 2)
			if (tlshello_version_name((unsigned)(p[i] << 8 | p[i + 1])) != NULL)
				hello_add(vers, sizeof(vers), ",",
				    tlshello_version_name((unsigned)(p[i] << 8 | p[i + 1])));
	} else if (tlshello_version_name(SSL_client_hello_get0_legacy_version(ssl)) != NULL)
		hello_add(vers, sizeof(vers), ",",
		    tlshello_version_name(SSL_client_hello_get0_legacy_version(ssl)));
	len = SSL_client_hello_get0_ciphers(ssl, &p);
	for (i = 0; i + 1 < len; i += 2)
		if ((sc = SSL_CIPHER_find(ssl, p + i)) != NULL)
			hello_add(suites, sizeof(suites), ",", SSL_CIPHER_get_name(sc));
	snprintf(c->hello, sizeof(c->hello), "%s; %s", vers[0] ? vers : "no known version",
	    suites[0] ? suites : "no known suite");
	return SSL_CLIENT_HELLO_SUCCESS;
}

static int
min_version_proto(const char *v)
{
	static const struct { const char *name; int proto; } t[] = {
		{ "1.0", TLS1_VERSION }, { "1.1", TLS1_1_VERSION }, { "1.2", TLS1_2_VERSION },
		{ "1.3", TLS1_3_VERSION },
	};

	if (v == NULL || v[0] == '\0')
		return TLS1_2_VERSION;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(v, t[i].name) == 0)
			return t[i].proto;
	return 0;
}

/* Sets p on ctx. 0, or -1 with the reason in err. */
static int
ctx_policy(SSL_CTX *ctx, const struct lean_tls *p, char *err, size_t n)
{
	const char *ciphers = p->ciphers && p->ciphers[0] ? p->ciphers : LEAN_TLS_CIPHERS;
	const char *suites = p->ciphersuites && p->ciphersuites[0] ? p->ciphersuites :
	    LEAN_TLS_CIPHERSUITES;
	int proto = min_version_proto(p->min_version);

	if (proto == 0 || SSL_CTX_set_min_proto_version(ctx, proto) != 1) {
		snprintf(err, n, "tls_min_version '%s' is not 1.0, 1.1, 1.2 or 1.3",
		    p->min_version);
		return -1;
	}
	/* OpenSSL takes a list if any of it is known: each part must be */
	if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		snprintf(err, n, "tls_ciphers '%s': no cipher OpenSSL knows (openssl ciphers -v "
		    "lists them)", ciphers);
		return -1;
	}
	if (SSL_CTX_set_ciphersuites(ctx, suites) != 1) {
		snprintf(err, n, "tls_ciphersuites '%s': not a list of TLS 1.3 suites "
		    "(e.g. %s)", suites, LEAN_TLS_CIPHERSUITES);
		return -1;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_client_hello_cb(ctx, hello_cb, NULL);
	return 0;
}

int
lean_tls_check(const struct lean_tls *p, char *err, size_t n)
{
	SSL_CTX *ctx;
	int r;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(err, n, "cannot create a TLS context");
		return -1;
	}
	r = ctx_policy(ctx, p, err, n);
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return r;
}

/* The certificate chain (the first PEM certificate, then its chain) and
 * the key into ctx. 0, or -1 with the reason in err. */
static int
ctx_use_pem(SSL_CTX *ctx, const struct lean_pem *p, char *err, size_t n)
{
	BIO *b = BIO_new_mem_buf(p->cert, (int)p->cert_len);
	EVP_PKEY *k = NULL;
	X509 *x = NULL;
	int ok = 0;

	if (b == NULL || (x = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL)) == NULL ||
	    SSL_CTX_use_certificate(ctx, x) != 1) {
		snprintf(err, n, "cannot load certificate %s", p->cert_name);
		goto out;
	}
	X509_free(x);
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			snprintf(err, n, "cannot load the chain of certificate %s", p->cert_name);
			goto out;
		}
	BIO_free(b);
	if ((b = BIO_new_mem_buf(p->key, (int)p->key_len)) == NULL ||
	    (k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL ||
	    SSL_CTX_use_PrivateKey(ctx, k) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, n, "cannot load private key %s (or it does not match the certificate)",
		    p->key_name);
		goto out;
	}
	ok = 1;
 out:
	X509_free(x);
	EVP_PKEY_free(k);
	BIO_free(b);
	ERR_clear_error();
	return ok ? 0 : -1;
}

/* A new SSL_CTX with the certificate chain and key and e's policy. Called
 * with e->lock held. */
static SSL_CTX *
ctx_load(struct lean_engine *e, const struct lean_pem *pem, char *err, size_t n)
{
	struct lean_tls p = { e->ciphers, e->ciphersuites, e->min_version };
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(err, n, "cannot create a TLS context");
		goto fail;
	}
	if (ctx_policy(ctx, &p, err, n) != 0 || ctx_use_pem(ctx, pem, err, n) != 0)
		goto fail;
	/* plaintext (Client Info's password) wiped from OpenSSL's buffers too;
	 * buffers released while idle; no session state kept */
	SSL_CTX_set_options(ctx, SSL_OP_CLEANSE_PLAINTEXT | SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);	/* TLS 1.3: none sent after the handshake */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	ERR_clear_error();
	return ctx;
 fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

static void
pem_free(struct lean_pem *p)
{
	if (p->cert != NULL)
		free((char *)p->cert);
	if (p->key != NULL) {
		OPENSSL_cleanse((char *)p->key, p->key_len);
		free((char *)p->key);
	}
	memset(p, 0, sizeof(*p));
}

/* A copy of p into e->pem (the old one freed). 0 or -1. */
static int
pem_keep(struct lean_engine *e, const struct lean_pem *p)
{
	struct lean_pem k = { 0 };

	if ((k.cert = malloc(p->cert_len + 1)) == NULL ||
	    (k.key = malloc(p->key_len + 1)) == NULL) {
		pem_free(&k);
		return -1;
	}
	memcpy((char *)k.cert, p->cert, p->cert_len);
	memcpy((char *)k.key, p->key, p->key_len);
	k.cert_len = p->cert_len;
	k.key_len = p->key_len;
	util_strlcpy(k.cert_name, p->cert_name, sizeof(k.cert_name));
	util_strlcpy(k.key_name, p->key_name, sizeof(k.key_name));
	pem_free(&e->pem);
	e->pem = k;
	return 0;
}

int
lean_pem_read(struct lean_pem *p, const char *certificate, const char *private_key,
    char *err, size_t n)
{
	char *buf;

	memset(p, 0, sizeof(*p));
	util_strlcpy(p->cert_name, certificate, sizeof(p->cert_name));
	util_strlcpy(p->key_name, private_key, sizeof(p->key_name));
	if (util_file_read(certificate, LEAN_PEM_MAX, &buf, &p->cert_len) != 0) {
		snprintf(err, n, "cannot read certificate %s: %s", certificate, strerror(errno));
		return -1;
	}
	p->cert = buf;
	if (util_file_read(private_key, LEAN_PEM_MAX, &buf, &p->key_len) != 0) {
		snprintf(err, n, "cannot read private key %s: %s", private_key, strerror(errno));
		pem_free(p);
		return -1;
	}
	p->key = buf;
	return 0;
}

void
lean_pem_free(struct lean_pem *p)
{
	pem_free(p);
}

struct lean_engine *
lean_new(const struct lean_pem *pem, int token_mode, int stop_fd, char *err, size_t n)
{
	struct lean_engine *e;
	const char *dump;

	if ((e = calloc(1, sizeof(*e))) == NULL) {
		snprintf(err, n, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&e->lock, NULL);
	e->token_mode = token_mode;
	e->stop_fd = stop_fd;
	e->quit_fd = -1;
	if ((e->ctx = ctx_load(e, pem, err, n)) == NULL)
		goto fail;
	if (pem_keep(e, pem) != 0) {
		snprintf(err, n, "out of memory");
		goto fail;
	}
	if (loops_start(e, err, n) != 0)
		goto fail;
	if ((dump = getenv("TSBROKER_LEAN_DUMP")) != NULL && dump[0] != '\0') {
		util_strlcpy(e->dump_dir, dump, sizeof(e->dump_dir));
		log_warn("TSBROKER_LEAN_DUMP: decrypted client PDUs are written to %s "
		    "(passwords zeroed)", e->dump_dir);
	}
	return e;
 fail:
	lean_free(e);
	return NULL;
}

/* lean_reload with pem (NULL: e's own again). Called with e->lock held. */
static int
reload_locked(struct lean_engine *e, const struct lean_pem *pem, char *err, size_t n)
{
	SSL_CTX *ctx;

	if ((ctx = ctx_load(e, pem != NULL ? pem : &e->pem, err, n)) == NULL)
		return -1;
	if (pem != NULL && pem_keep(e, pem) != 0) {
		snprintf(err, n, "out of memory");
		SSL_CTX_free(ctx);
		return -1;
	}
	SSL_CTX_free(e->ctx);	/* freed when the last connection on it ends */
	e->ctx = ctx;
	return 0;
}

int
lean_reload(struct lean_engine *e, const char *certificate, const char *private_key,
    char *err, size_t n)
{
	struct lean_pem pem;
	int r;

	if (lean_pem_read(&pem, certificate, private_key, err, n) != 0)
		return -1;
	pthread_mutex_lock(&e->lock);
	r = reload_locked(e, &pem, err, n);
	pthread_mutex_unlock(&e->lock);
	pem_free(&pem);
	return r;
}

int
lean_configure(struct lean_engine *e, const struct lean_pem *pem, const struct lean_tls *p,
    char *err, size_t n)
{
	char keep[3][512];
	int r;

	pthread_mutex_lock(&e->lock);
	util_strlcpy(keep[0], e->ciphers, sizeof(keep[0]));
	util_strlcpy(keep[1], e->ciphersuites, sizeof(keep[1]));
	util_strlcpy(keep[2], e->min_version, sizeof(keep[2]));
	util_strlcpy(e->ciphers, p->ciphers ? p->ciphers : "", sizeof(e->ciphers));
	util_strlcpy(e->ciphersuites, p->ciphersuites ? p->ciphersuites : "",
	    sizeof(e->ciphersuites));
	util_strlcpy(e->min_version, p->min_version ? p->min_version : "",
	    sizeof(e->min_version));
	if ((r = reload_locked(e, pem, err, n)) != 0) {
		/* the old policy stays with the old context */
		util_strlcpy(e->ciphers, keep[0], sizeof(e->ciphers));
		util_strlcpy(e->ciphersuites, keep[1], sizeof(e->ciphersuites));
		util_strlcpy(e->min_version, keep[2], sizeof(e->min_version));
	}
	pthread_mutex_unlock(&e->lock);
	return r;
}

int
lean_set_tls(struct lean_engine *e, const struct lean_tls *p, char *err, size_t n)
{
	return lean_configure(e, NULL, p, err, n);
}

void
lean_free(struct lean_engine *e)
{
	uint64_t one = 1;
	int i;

	if (e == NULL)
		return;
	if (e->quit_fd >= 0 && write(e->quit_fd, &one, sizeof(one)) != sizeof(one))
		log_error("cannot stop the loops: %s", strerror(errno));
	for (i = 0; i < e->nloops; i++) {
		if (e->loops[i].started)
			pthread_join(e->loops[i].thread, NULL);
		close(e->loops[i].epfd);
	}
	if (e->quit_fd >= 0)
		close(e->quit_fd);
	SSL_CTX_free(e->ctx);
	pem_free(&e->pem);
	pthread_mutex_destroy(&e->lock);
	free(e);
}
