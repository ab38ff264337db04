/* lean: the lean redirect engine. See lean.h.
 *
 * A connection is handled in two places, and no thread waits for it:
 *   the admission worker (lean_run): consumes the X.224 request, answers
 *     RDP_NEG_RSP (TLS), sets TLS up, hands the connection to a loop and
 *     returns (ADMIT_KEPT: the engine ends it, admit_conn_release);
 *   a loop thread (epoll, non-blocking TLS, a state machine per
 *     connection, EPOLLONESHOT so one thread at a time owns it), to its
 *     end: TLS accept, MCS Connect Initial -> Response, Erect Domain,
 *     Attach User -> Confirm, Channel Join -> Confirm (in any order) until
 *     Client Info on the I/O channel (the password wiped at once), the
 *     licensing "valid client"; then DOOR_LOGON asked without waiting
 *     (door_ops.decide_async, or, where the core's decide blocks on the
 *     store, on one of a few decider threads), the connection out of the
 *     epoll set until the answer comes back through the loop's eventfd;
 *     the Server Redirection PDU or a Set Error Info, the TLS state freed,
 *     the drain until the client closes (bounded by the deadline), the
 *     report and the release.
 * Deadlines and stop are the admission engine's: its watchdog shuts the
 * socket down, which ends the state machine with a timeout (or the drain
 * with an end of file). */
#include <errno.h>
#include <fcntl.h>
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
#define LEAN_LOOPS_MAX		4
#define LEAN_DECIDERS		4	/* threads for a core whose decide waits */
#define LEAN_EVENTS		64
#define LEAN_IN_MIN		2048	/* the input buffer's first size (grown to a PDU's) */
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
	LEAN_ASKED = -7,	/* loop: the core has it (ST_DECIDING), hands off */
	LEAN_ESENT = -8,	/* the redirect not sent (reported already) */
};

/* Where a connection is. */
enum lean_state {
	ST_X224 = 0,		/* the admission worker's */
	ST_TLS,			/* TLS accept */
	ST_CONNECT,		/* waiting for the MCS Connect Initial */
	ST_DOMAIN,		/* Erect Domain, Attach User, Channel Joins, until Client Info */
	ST_LICENSED,		/* the licensing PDU being written, then the ask */
	ST_DECIDING,		/* the core deciding: off the loop until its answer */
	ST_ANSWER,		/* the redirect or Set Error Info being written */
	ST_DRAIN,		/* TLS freed: read and discard until the client closes */
};

struct lean_conn;

struct lean_loop {
	struct lean_engine *e;
	int epfd;
	int wake_fd;		/* eventfd: answers in done */
	pthread_mutex_t m;	/* guards done */
	struct lean_conn *done;	/* decided, for this loop to go on with */
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
	/* the deciders (started at the first ask of a core without
	 * decide_async): a queue of connections to decide */
	pthread_mutex_t dlock;
	pthread_cond_t dcond;
	struct lean_conn *dhead, *dtail;
	pthread_t deciders[LEAN_DECIDERS];
	int ndeciders;
	int dquit;
};

struct lean_conn {
	struct lean_engine *e;
	struct lean_loop *l;
	struct door_conn dc;	/* the connection's side of the seam, from lean_run on */
	void (*end)(void *arg, struct door_conn *dc);
	void *end_arg;
	int fd;			/* the admission engine's socket */
	SSL *ssl;
	uint8_t *in;		/* PDU bytes read, not yet used; NULL while none */
	size_t cap;		/* its size */
	size_t have;
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
	uint8_t *out;		/* a PDU not yet written (out_len bytes), or NULL */
	size_t out_len;
	struct door_answer *ans;	/* from the ask on: the core's answer */
	int redirecting;	/* ST_ANSWER: out is the redirect (reported once written) */
	int out_held;		/* out is the licensing PDU, written with the answer */
	int stopped;		/* not decided: the endpoint stopping */
	struct lean_conn *next;	/* a loop's done list, the deciders' queue */
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
	case ST_X224: return "X.224";
	case ST_TLS: return "TLS";
	case ST_CONNECT: return "MCS Connect";
	case ST_DOMAIN: return "MCS";
	case ST_LICENSED: return "licensing";
	default: return "redirect";
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
		return admit_conn_timed_out(c->dc.ac) ? LEAN_ETIMEOUT : LEAN_ECLOSED;
	default:
		ERR_clear_error();
		return admit_conn_timed_out(c->dc.ac) ? LEAN_ETIMEOUT : LEAN_EIO;
	}
}

/* ---- the loop's non-blocking steps ---- */

/* *p (n bytes, NULL ok) wiped and freed, *p NULL. */
static void
wiped_free(uint8_t **p, size_t n)
{
	if (*p != NULL) {
		OPENSSL_cleanse(*p, n);
		free(*p);
	}
	*p = NULL;
}

static void
out_free(struct lean_conn *c)
{
	wiped_free(&c->out, c->out_len);
	c->out_len = 0;
}

/* Writes the pending PDU, if any. 0 once it is out. */
static int
out_flush(struct lean_conn *c)
{
	int r;

	if (c->out == NULL || c->out_held)
		return 0;
	if ((r = SSL_write(c->ssl, c->out, (int)c->out_len)) <= 0)
		return ssl_want(c, r);
	out_free(c);
	return 0;
}

/* pdu (n bytes, or n < 0: it could not be built) to be written next,
 * after the held licensing PDU if there is one. */
static int
out_set(struct lean_conn *c, const uint8_t *pdu, int n, const char *what)
{
	size_t keep = c->out_held ? c->out_len : 0;
	uint8_t *out;

	if (n <= 0) {
		snprintf(c->why, sizeof(c->why), "%s: cannot build it", what);
		return LEAN_EPROTO;
	}
	if ((out = malloc(keep + (size_t)n)) == NULL) {
		snprintf(c->why, sizeof(c->why), "%s: out of memory", what);
		return LEAN_EPROTO;
	}
	if (keep > 0)
		memcpy(out, c->out, keep);
	memcpy(out + keep, pdu, (size_t)n);
	out_free(c);
	c->out = out;
	c->out_len = keep + (size_t)n;
	c->out_held = 0;
	return 0;
}

/* The input buffer wiped and freed (it may hold Client Info). */
static void
in_free(struct lean_conn *c)
{
	wiped_free(&c->in, c->cap);
	c->cap = c->have = 0;
}

/* The input buffer at least n bytes (at most MCS_PDU_MAX), what it holds
 * kept, the old one wiped. 0 or -1. */
static int
in_reserve(struct lean_conn *c, size_t n)
{
	uint8_t *in;

	if (n <= c->cap)
		return 0;
	if ((in = malloc(n)) == NULL)
		return -1;
	memset(in, 0, n);
	if (c->in != NULL) {
		memcpy(in, c->in, c->have);
		OPENSSL_cleanse(c->in, c->cap);
		free(c->in);
	}
	c->in = in;
	c->cap = n;
	return 0;
}

/* One whole TPKT packet at c->in (its length in *len), reading what TLS
 * has; LEAN_AGAIN when it needs the socket. */
static int
tls_read_pdu(struct lean_conn *c, size_t *len)
{
	size_t need = LEAN_IN_MIN;
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
			if (r != 0)
				need = LEAN_IN_MIN;
		}
		if (in_reserve(c, need < LEAN_IN_MIN ? LEAN_IN_MIN : need) != 0) {
			snprintf(c->why, sizeof(c->why), "out of memory");
			return LEAN_EPROTO;
		}
		if ((r = SSL_read(c->ssl, c->in + c->have, (int)(c->cap - c->have))) <= 0)
			return ssl_want(c, r);
		c->have += (size_t)r;
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
	uint8_t out[MCS_CONNECT_RESPONSE_MAX];
	size_t len;
	int r, n;

	if ((r = tls_read_pdu(c, &len)) != 0)
		return r;
	conn_dump(c, "connect-initial", c->in, len);
	if ((r = mcs_parse_connect_initial(c->in, len, &c->cd)) != 0)
		return proto_error(c, "MCS Connect Initial", mcs_strerror(r));
	conn_consume(c, len);
	if ((n = mcs_build_connect_response(out, sizeof(out), &c->cd,
	    c->dc.req.x224.requested_protocols)) < 0)
		return proto_error(c, "MCS Connect Response", mcs_strerror(n));
	c->st = ST_DOMAIN;
	return out_set(c, out, n, "MCS Connect Response");
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
	uint8_t out[REDIR_PDU_MAX];
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
	n = redir_build_license_valid(out, sizeof(out));
	c->st = ST_LICENSED;
	/* written with the answer, in one record: the client waits for both */
	if ((r = out_set(c, out, n, "licensing")) == 0)
		c->out_held = 1;
	return r;
}

/* One domain PDU: Erect Domain, Attach User, a Channel Join, Client Info. */
static int
step_domain(struct lean_conn *c)
{
	uint8_t out[MCS_CONNECT_RESPONSE_MAX];
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
		n = mcs_build_attach_confirm(out, sizeof(out), c->user_id);
		break;
	case MCS_CHANNEL_JOIN_REQUEST:
		conn_dump(c, "channel-join", c->in, len);
		if (c->user_id == 0 || !channel_known(c, d.channel))
			return proto_error(c, "Channel Join", c->user_id == 0 ?
			    "before Attach User" : "unknown channel");
		n = mcs_build_join_confirm(out, sizeof(out), c->user_id, d.channel);
		break;
	case MCS_SEND_DATA_REQUEST:
		return step_client_info(c, &d, len);
	case MCS_DISCONNECT_PROVIDER_ULTIMATUM:
		return LEAN_ECLOSED;
	}
	conn_consume(c, len);
	return n != 0 ? out_set(c, out, n, "MCS confirm") : 0;
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
	c->dc.req.tls_refused = 1;
	snprintf(c->why, sizeof(c->why), "TLS refused by the policy (tls_min_version, "
	    "tls_ciphers, tls_ciphersuites): client offered %.160s", c->hello);
	return LEAN_EPROTO;
}

/* ---- the decision ---- */

static uint32_t
refusal_errinfo(enum door_refusal why)
{
	return why == DOOR_REFUSAL_NO_SERVER ? ERRINFO_CB_DESTINATION_POOL_NOT_FREE :
	    ERRINFO_SERVER_DENIED_CONNECTION;
}

/* A Set Error Info PDU to be written next (ST_ANSWER); then the stream
 * ends: the client reads the error, sees the end and closes. */
static int
answer_refuse(struct lean_conn *c, uint32_t errinfo)
{
	uint8_t out[64];

	c->st = ST_ANSWER;
	c->redirecting = 0;
	return out_set(c, out, redir_build_error_info(out, sizeof(out), errinfo),
	    "Set Error Info");
}

/* A loop's: a connection decided (c->ans filled), for it to go on with. Any
 * thread. */
static void
conn_decided(void *arg)
{
	struct lean_conn *c = arg;
	struct lean_loop *l = c->l;
	uint64_t one = 1;

	pthread_mutex_lock(&l->m);
	c->next = l->done;
	l->done = c;
	pthread_mutex_unlock(&l->m);
	if (write(l->wake_fd, &one, sizeof(one)) != sizeof(one) && errno != EAGAIN)
		log_error("cannot wake a loop: %s", strerror(errno));
}

static void *
decider_main(void *arg)
{
	struct lean_engine *e = arg;
	struct lean_conn *c;

	pthread_mutex_lock(&e->dlock);
	for (;;) {
		while (e->dhead == NULL && !e->dquit)
			pthread_cond_wait(&e->dcond, &e->dlock);
		if ((c = e->dhead) == NULL)
			break;
		if ((e->dhead = c->next) == NULL)
			e->dtail = NULL;
		pthread_mutex_unlock(&e->dlock);
		/* stopping: what is queued is not decided, nothing placed */
		if (admit_conn_stopping(c->dc.ac))
			c->stopped = 1;
		else
			c->dc.ops->decide(c->dc.ops->ctx, &c->dc.req, c->ans);
		conn_decided(c);
		pthread_mutex_lock(&e->dlock);
	}
	pthread_mutex_unlock(&e->dlock);
	return NULL;
}

/* c to a decider (started on the first). 0, or -1 if none could start. */
static int
deciders_push(struct lean_engine *e, struct lean_conn *c)
{
	pthread_mutex_lock(&e->dlock);
	while (e->ndeciders < LEAN_DECIDERS &&
	    pthread_create(&e->deciders[e->ndeciders], NULL, decider_main, e) == 0)
		e->ndeciders++;
	if (e->ndeciders == 0) {
		pthread_mutex_unlock(&e->dlock);
		return -1;
	}
	c->next = NULL;
	if (e->dtail != NULL)
		e->dtail->next = c;
	else
		e->dhead = c;
	e->dtail = c;
	pthread_cond_signal(&e->dcond);
	pthread_mutex_unlock(&e->dlock);
	return 0;
}

/* Licensed: DOOR_LOGON asked without waiting (LEAN_ASKED: the core has c,
 * the loop must not touch it), or refused here (0: the Set Error Info
 * pending, ST_ANSWER). */
static int
step_ask(struct lean_conn *c)
{
	struct door_conn *dc = &c->dc;
	struct door_request *req = &dc->req;

	in_free(c);	/* nothing more to read but the drain's */
	req->stage = DOOR_LOGON;
	util_strlcpy(req->user, c->ci.user, sizeof(req->user));
	util_strlcpy(req->domain, c->ci.domain, sizeof(req->domain));
	util_strlcpy(req->client_name, c->cd.client_name, sizeof(req->client_name));
	req->cluster_flags = c->cd.has_cluster ? c->cd.cluster_flags : 0;
	if (req->cluster_flags & DOOR_CLUSTER_SESSIONID_VALID)
		req->redirected_session_id = c->cd.redirected_session_id;
	if (req->user[0] == '\0') {
		door_report(dc, DOOR_REFUSED, NULL, "client sent no user name");
		return answer_refuse(c, ERRINFO_SERVER_DENIED_CONNECTION);
	}
	/* liberal: a client without cluster data is not known to refuse */
	if (c->cd.has_cluster && !(req->cluster_flags & DOOR_CLUSTER_REDIRECTION_SUPPORTED)) {
		door_report(dc, DOOR_REFUSED, NULL, "client cannot follow a redirect "
		    "(no REDIRECTION_SUPPORTED in its cluster data)");
		return answer_refuse(c, ERRINFO_SERVER_DENIED_CONNECTION);
	}
	if ((c->ans = calloc(1, sizeof(*c->ans))) == NULL) {
		snprintf(c->why, sizeof(c->why), "out of memory");
		return LEAN_EPROTO;
	}
	c->st = ST_DECIDING;
	if (dc->ops->decide_async != NULL) {
		dc->ops->decide_async(dc->ops->ctx, req, c->ans, conn_decided, c);
		return LEAN_ASKED;
	}
	if (deciders_push(c->e, c) == 0)
		return LEAN_ASKED;
	c->st = ST_LICENSED;
	snprintf(c->why, sizeof(c->why), "cannot start a thread to ask the core");
	return LEAN_EPROTO;
}

/* The core's answer (c->ans) to what is written next: the redirect, or a
 * Set Error Info (the outcome reported now). 0, or LEAN_EPROTO. */
static int
conn_answer(struct lean_conn *c)
{
	struct door_conn *dc = &c->dc;
	struct door_answer *ans = c->ans;
	struct door_redirect *t = &ans->redirect;
	struct redir_target rt;
	uint8_t out[REDIR_PDU_MAX];
	int n;

	if (ans->verdict != DOOR_REDIRECT) {
		ans->reason[sizeof(ans->reason) - 1] = '\0';
		door_report(dc, DOOR_REFUSED, NULL, ans->reason[0] ? ans->reason : "refused");
		return answer_refuse(c, refusal_errinfo(ans->refusal));
	}
	t->address[sizeof(t->address) - 1] = '\0';
	t->fqdn[sizeof(t->fqdn) - 1] = '\0';
	t->routing_token[sizeof(t->routing_token) - 1] = '\0';
	memset(&rt, 0, sizeof(rt));
	rt.user = dc->req.user;
	rt.domain = dc->req.domain;
	if (c->e->token_mode) {
		if (t->routing_token[0] == '\0') {
			door_report(dc, DOOR_FAILED, NULL, "no routing token for the placement");
			return answer_refuse(c, ERRINFO_SERVER_DENIED_CONNECTION);
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
		return answer_refuse(c, ERRINFO_CB_DESTINATION_NOT_FOUND);
	}
	c->st = ST_ANSWER;
	c->redirecting = 1;
	return out_set(c, out, n, "Server Redirection");
}

/* The answer written (or not, a refusal): the redirect reported, the TLS
 * state freed, the drain begun (its deadline set). 0, LEAN_AGAIN or
 * LEAN_ESENT. */
static int
step_answer(struct lean_conn *c)
{
	int r = out_flush(c);

	if (r == LEAN_AGAIN)
		return r;
	if (c->redirecting) {
		if (r != 0) {
			snprintf(c->why, sizeof(c->why), "%s sending the redirect",
			    lean_strerror(r));
			door_report(&c->dc, DOOR_FAILED, NULL, c->why);
			return LEAN_ESENT;
		}
		door_report(&c->dc, DOOR_REDIRECTED, c->ans, NULL);
	} else {
		(void)SSL_shutdown(c->ssl);
		ERR_clear_error();
		shutdown(c->fd, SHUT_WR);
	}
	/* what is left to do needs no TLS */
	out_free(c);
	SSL_free(c->ssl);
	c->ssl = NULL;
	c->st = ST_DRAIN;
	admit_conn_set_deadline(c->dc.ac, LEAN_DRAIN_MS);
	return 0;
}

/* Reads and discards until the client closes (or the watchdog, at the
 * deadline or stop, shuts the socket down): 0 then, or LEAN_AGAIN. */
static int
step_drain(struct lean_conn *c)
{
	char buf[4096];
	ssize_t n;

	for (;;) {
		if ((n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->want = EPOLLIN;
			return LEAN_AGAIN;
		}
		return 0;
	}
}

/* Runs c's state machine as far as the socket lets it: LEAN_AGAIN (wait
 * for c->want), LEAN_ASKED (the core has it), 0 once it is over (drained),
 * or an error. */
static int
conn_advance(struct lean_conn *c)
{
	int r;

	for (;;) {
		if (c->st == ST_ANSWER) {
			if ((r = step_answer(c)) != 0)
				return r;
			continue;
		}
		if (c->st == ST_DRAIN)
			return step_drain(c);
		if ((r = out_flush(c)) != 0)
			return r;
		switch (c->st) {
		case ST_TLS:
			if ((r = SSL_accept(c->ssl)) != 1)
				return tls_accept_failed(c, r);
			c->st = ST_CONNECT;
			r = 0;
			break;
		case ST_CONNECT:
			r = step_connect(c);
			break;
		case ST_DOMAIN:
			r = step_domain(c);
			break;
		default:	/* ST_LICENSED */
			r = step_ask(c);
			break;
		}
		if (r != 0)
			return r;
	}
}

/* c at its end: reported if it was not, its state freed, the connection
 * handed back to whoever gave it (end: its release). */
static void
conn_finish(struct lean_conn *c, int r)
{
	struct door_conn *dc = &c->dc;

	if (c->l != NULL)
		(void)epoll_ctl(c->l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (!dc->reported) {
		char reason[256];

		if (admit_conn_stopping(dc->ac) || r == LEAN_ESTOP)
			snprintf(reason, sizeof(reason), "broker stopping");
		else if (r == LEAN_EPROTO)
			snprintf(reason, sizeof(reason), "%s", c->why);
		else
			snprintf(reason, sizeof(reason), "%s (%s)%s", lean_strerror(r),
			    state_name(c->st), dc->req.user[0] ? " after Client Info" : "");
		door_report(dc, DOOR_FAILED, NULL, reason);
	}
	SSL_free(c->ssl);
	in_free(c);
	out_free(c);
	if (c->ans != NULL) {
		OPENSSL_cleanse(c->ans, sizeof(*c->ans));
		free(c->ans);
	}
	c->end(c->end_arg, dc);
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

/* Runs c on its loop until it waits for the socket (re-armed), the core
 * has it, or it ends. */
static void
conn_run(struct lean_conn *c)
{
	struct epoll_event ev = { .data.ptr = c };
	int r;

	if ((r = conn_advance(c)) == LEAN_ASKED)
		return;
	if (r == LEAN_AGAIN) {
		if (c->have == 0)
			in_free(c);	/* a waiting connection holds no buffer */
		ev.events = c->want | EPOLLONESHOT;
		if (epoll_ctl(c->l->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
			return;
		r = LEAN_EIO;
	}
	conn_finish(c, r);
}

/* The connections decided since the last wake, gone on with. */
static void
loop_resume(struct lean_loop *l)
{
	struct lean_conn *c, *next;
	uint64_t v;

	(void)!read(l->wake_fd, &v, sizeof(v));
	pthread_mutex_lock(&l->m);
	c = l->done;
	l->done = NULL;
	pthread_mutex_unlock(&l->m);
	for (; c != NULL; c = next) {
		next = c->next;
		if (c->stopped)
			conn_finish(c, LEAN_ESTOP);
		else if (conn_answer(c) != 0)
			conn_finish(c, LEAN_EPROTO);
		else
			conn_run(c);
	}
}

static void *
loop_main(void *arg)
{
	struct lean_loop *l = arg;
	struct epoll_event ev[LEAN_EVENTS];
	int n, i;

	for (;;) {
		if ((n = epoll_wait(l->epfd, ev, LEAN_EVENTS, -1)) < 0) {
			if (errno == EINTR)
				continue;
			log_error("epoll_wait: %s", strerror(errno));
			return NULL;
		}
		for (i = 0; i < n; i++) {
			if (ev[i].data.ptr == NULL)
				return NULL;		/* quit_fd: lean_free */
			if (ev[i].data.ptr == l)
				loop_resume(l);
			else
				conn_run(ev[i].data.ptr);
		}
	}
}

/* ---- the admission worker's part ---- */

/* Consumes the X.224 request (in the socket already) and answers it. */
static int
step_x224(struct lean_conn *c)
{
	uint8_t buf[X224_PACKET_MAX];
	size_t len = c->dc.req.x224.len;
	int n;

	if (recv(c->fd, buf, len, MSG_DONTWAIT) != (ssize_t)len)
		return LEAN_EIO;
	c->dc.req.x224.consumed = 1;
	if ((n = x224_build_neg_response(buf, sizeof(buf), X224_PROTOCOL_SSL,
	    X224_RSP_EXTENDED_CLIENT_DATA)) < 0)
		return LEAN_EIO;
	if (send(c->fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
		return LEAN_EIO;
	return 0;
}

/* The socket non-blocking, the TLS state, the loop. */
static int
conn_open(struct lean_conn *c)
{
	struct lean_engine *e = c->e;
	int fl;

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
	c->l = &e->loops[e->next_loop++ % (unsigned)e->nloops];
	pthread_mutex_unlock(&e->lock);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
		ERR_clear_error();
		return LEAN_EIO;
	}
	return 0;
}

int
lean_run(struct lean_engine *e, struct door_conn *dc,
    void (*end)(void *arg, struct door_conn *dc), void *arg)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT };
	struct lean_conn *c;
	struct lean_loop *l;
	int r;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		door_report(dc, DOOR_FAILED, NULL, "out of memory");
		return 0;
	}
	c->e = e;
	c->dc = *dc;
	c->end = end;
	c->end_arg = arg;
	c->fd = admit_conn_fd(dc->ac);
	c->st = ST_X224;
	if ((r = step_x224(c)) != 0 || (r = conn_open(c)) != 0)
		goto fail;
	c->st = ST_TLS;
	ev.data.ptr = c;
	l = c->l;
	/* from here on the loop has c: it may be over before this returns */
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0)
		return ADMIT_KEPT;
	r = LEAN_EIO;
	c->l = NULL;
 fail:
	conn_finish(c, r);
	return ADMIT_KEPT;
}

/* The loop threads, one per CPU (at most LEAN_LOOPS_MAX), each with its
 * epoll set, the quit eventfd and its own wake eventfd in it. */
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
		struct epoll_event wev = { .events = EPOLLIN };

		l = &e->loops[i];
		l->e = e;
		wev.data.ptr = l;
		pthread_mutex_init(&l->m, NULL);
		if ((l->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
		    (l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 ||
		    epoll_ctl(l->epfd, EPOLL_CTL_ADD, e->quit_fd, &ev) != 0 ||
		    epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &wev) != 0) {
			snprintf(err, n, "epoll: %s", strerror(errno));
			e->nloops = i + 1;
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
	pthread_mutex_init(&e->dlock, NULL);
	pthread_cond_init(&e->dcond, NULL);
	e->token_mode = token_mode;
	e->stop_fd = stop_fd;
	e->quit_fd = -1;
	for (int i = 0; i < LEAN_LOOPS_MAX; i++)
		e->loops[i].epfd = e->loops[i].wake_fd = -1;
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
	pthread_mutex_lock(&e->dlock);
	e->dquit = 1;
	pthread_cond_broadcast(&e->dcond);
	pthread_mutex_unlock(&e->dlock);
	for (i = 0; i < e->ndeciders; i++)
		pthread_join(e->deciders[i], NULL);
	if (e->quit_fd >= 0 && write(e->quit_fd, &one, sizeof(one)) != sizeof(one))
		log_error("cannot stop the loops: %s", strerror(errno));
	for (i = 0; i < e->nloops; i++) {
		if (e->loops[i].started)
			pthread_join(e->loops[i].thread, NULL);
		if (e->loops[i].epfd >= 0)
			close(e->loops[i].epfd);
		if (e->loops[i].wake_fd >= 0)
			close(e->loops[i].wake_fd);
		pthread_mutex_destroy(&e->loops[i].m);
	}
	if (e->quit_fd >= 0)
		close(e->quit_fd);
	pthread_cond_destroy(&e->dcond);
	pthread_mutex_destroy(&e->dlock);
	SSL_CTX_free(e->ctx);
	pem_free(&e->pem);
	pthread_mutex_destroy(&e->lock);
	free(e);
}
