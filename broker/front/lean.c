/* lean: the lean redirect engine. See lean.h.
 *
 *   consume the X.224 request, answer RDP_NEG_RSP (TLS)
 *   TLS accept (non-blocking, polled against the deadline and stop)
 *   MCS Connect Initial -> Connect Response
 *   Erect Domain, Attach User -> Confirm, Channel Join -> Confirm, in any
 *     order, until a Send Data Request on the I/O channel: Client Info
 *   licensing "valid client"
 *   DOOR_LOGON: the Server Redirection PDU or a Set Error Info
 *   drain until the client closes (bounded), close. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "broker/common/log.h"
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
};

struct lean_engine {
	pthread_mutex_t lock;	/* guards ctx */
	SSL_CTX *ctx;		/* swapped whole; each SSL holds a reference */
	int token_mode;
	int stop_fd;
	char dump_dir[256];	/* TSBROKER_LEAN_DUMP, "" off */
	unsigned dump_seq;	/* connections dumped (under lock) */
};

struct lean_conn {
	struct lean_engine *e;
	struct door_conn *dc;
	int fd;			/* the admission engine's socket */
	SSL *ssl;
	uint8_t *in;		/* MCS_PDU_MAX bytes read, not yet used */
	size_t have;
	struct mcs_client_data cd;
	uint16_t user_id;	/* assigned at Attach User, 0 before */
	char why[160];		/* what went wrong, for the report */
	unsigned dump_id;
	int dump_n;
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

/* After an SSL call returned r <= 0: waits for what it wants, or says why
 * it cannot go on. */
static int
ssl_wait(struct lean_conn *c, int r)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return conn_wait(c, POLLIN);
	case SSL_ERROR_WANT_WRITE:
		return conn_wait(c, POLLOUT);
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

static int
tls_accept(struct lean_conn *c)
{
	int r, e;

	while ((r = SSL_accept(c->ssl)) != 1)
		if ((e = ssl_wait(c, r)) != 0)
			return e;
	return 0;
}

static int
tls_write(struct lean_conn *c, const uint8_t *buf, size_t n)
{
	int r, e;

	while ((r = SSL_write(c->ssl, buf, (int)n)) <= 0)
		if ((e = ssl_wait(c, r)) != 0)
			return e;
	return 0;
}

/* Reads until one whole TPKT packet is at c->in: its length in *len. */
static int
tls_read_pdu(struct lean_conn *c, size_t *len)
{
	size_t need;
	int r, e;

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
		if ((r = SSL_read(c->ssl, c->in + c->have, (int)(MCS_PDU_MAX - c->have))) > 0)
			c->have += (size_t)r;
		else if ((e = ssl_wait(c, r)) != 0)
			return e;
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
	(void)fwrite(pdu, 1, len, f);
	fclose(f);
}

static int
proto_error(struct lean_conn *c, const char *what, const char *detail)
{
	snprintf(c->why, sizeof(c->why), "%s: %s", what, detail);
	return LEAN_EPROTO;
}

/* Connect Initial in, Connect Response out. */
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
	    c->dc->req.x224.requested_protocols)) < 0)
		return proto_error(c, "MCS Connect Response", mcs_strerror(n));
	return tls_write(c, out, (size_t)n);
}

/* A channel the client may join: its user channel, the I/O channel or one
 * of its static channels. */
static int
channel_known(const struct lean_conn *c, uint16_t ch)
{
	return ch == c->user_id || ch == MCS_GLOBAL_CHANNEL ||
	    (ch > MCS_GLOBAL_CHANNEL && ch <= MCS_GLOBAL_CHANNEL + c->cd.channel_count);
}

/* Erect Domain, Attach User, Channel Joins until Client Info: the user and
 * domain into ci, the password wiped from the buffer. */
static int
step_domain(struct lean_conn *c, struct clientinfo *ci)
{
	struct mcs_domain_pdu d;
	uint8_t out[16], *data;
	size_t len;
	int r, n = 0;

	for (;;) {
		if ((r = tls_read_pdu(c, &len)) != 0)
			return r;
		if ((r = mcs_parse_domain(c->in, len, &d)) != 0) {
			conn_dump(c, "domain-bad", c->in, len);
			return proto_error(c, "MCS domain PDU", mcs_strerror(r));
		}
		switch (d.type) {
		case MCS_ERECT_DOMAIN_REQUEST:
			conn_dump(c, "erect-domain", c->in, len);
			n = 0;
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
			if (d.channel != MCS_GLOBAL_CHANNEL || d.data_len < 4)
				return proto_error(c, "Send Data Request", "not on the I/O channel");
			if (d.data[0] & SEC_EXCHANGE_PKT)
				return proto_error(c, "Security Exchange", "standard RDP security");
			data = c->in + (d.data - c->in);
			r = clientinfo_parse(data, d.data_len, ci);
			clientinfo_wipe_password(data, d.data_len, ci);
			conn_dump(c, "client-info", c->in, len);
			OPENSSL_cleanse(c->in, len);	/* the rest of it too */
			conn_consume(c, len);
			if (r != 0)
				return proto_error(c, "Client Info", clientinfo_strerror(r));
			return 0;
		case MCS_DISCONNECT_PROVIDER_ULTIMATUM:
			return LEAN_ECLOSED;
		}
		conn_consume(c, len);
		if (n < 0)
			return proto_error(c, "MCS confirm", mcs_strerror(n));
		if (n > 0 && (r = tls_write(c, out, (size_t)n)) != 0)
			return r;
	}
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

/* The licensing phase: the server says the client is licensed. */
static int
step_license(struct lean_conn *c)
{
	uint8_t out[64];
	int n;

	if ((n = redir_build_license_valid(out, sizeof(out))) < 0)
		return proto_error(c, "licensing", redir_strerror(n));
	return tls_write(c, out, (size_t)n);
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
	pthread_mutex_lock(&e->lock);
	c->ssl = SSL_new(e->ctx);
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
	struct lean_conn c;
	struct clientinfo ci;
	const char *stage = "X.224";
	int r;

	memset(&c, 0, sizeof(c));
	c.e = e;
	c.dc = dc;
	c.fd = admit_conn_fd(dc->ac);
	memset(&ci, 0, sizeof(ci));
	if ((r = step_x224(&c)) != 0 || (r = conn_open(&c)) != 0)
		goto out;
	stage = "TLS";
	if ((r = tls_accept(&c)) != 0)
		goto out;
	stage = "MCS";
	if ((r = step_connect(&c)) != 0 || (r = step_domain(&c, &ci)) != 0)
		goto out;
	stage = "licensing";
	if ((r = step_license(&c)) != 0)
		goto out;
	stage = "logon";
	if (step_logon(&c, &ci) == 0)
		admit_conn_drain(dc->ac, LEAN_DRAIN_MS);
 out:
	if (!dc->reported) {
		char reason[256];

		if (r == LEAN_EPROTO)
			snprintf(reason, sizeof(reason), "%s", c.why);
		else
			snprintf(reason, sizeof(reason), "%s (%s)%s", lean_strerror(r), stage,
			    dc->req.user[0] ? " after Client Info" : "");
		door_report(dc, DOOR_FAILED, NULL, reason);
	}
	OPENSSL_cleanse(&ci, sizeof(ci));
	SSL_free(c.ssl);
	if (c.in != NULL) {
		OPENSSL_cleanse(c.in, MCS_PDU_MAX);
		free(c.in);
	}
}

/* A new SSL_CTX with the certificate chain and key. */
static SSL_CTX *
ctx_load(const char *certificate, const char *private_key, char *err, size_t n)
{
	unsigned long e;
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		goto fail;
	if (SSL_CTX_use_certificate_chain_file(ctx, certificate) != 1) {
		e = ERR_peek_last_error();
		snprintf(err, n, "cannot load certificate %s: %s", certificate,
		    ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "error");
		goto fail_msg;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, private_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, n, "cannot load private key %s (or it does not match the certificate)",
		    private_key);
		goto fail_msg;
	}
	/* plaintext (Client Info's password) wiped from OpenSSL's buffers too;
	 * buffers released while idle; no session state kept */
	SSL_CTX_set_options(ctx, SSL_OP_CLEANSE_PLAINTEXT | SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	ERR_clear_error();
	return ctx;
 fail:
	snprintf(err, n, "cannot create a TLS context");
 fail_msg:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

struct lean_engine *
lean_new(const char *certificate, const char *private_key, int token_mode, int stop_fd,
    char *err, size_t n)
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
	if ((e->ctx = ctx_load(certificate, private_key, err, n)) == NULL) {
		lean_free(e);
		return NULL;
	}
	if ((dump = getenv("TSBROKER_LEAN_DUMP")) != NULL && dump[0] != '\0') {
		util_strlcpy(e->dump_dir, dump, sizeof(e->dump_dir));
		log_warn("TSBROKER_LEAN_DUMP: decrypted client PDUs are written to %s "
		    "(passwords zeroed)", e->dump_dir);
	}
	return e;
}

int
lean_reload(struct lean_engine *e, const char *certificate, const char *private_key,
    char *err, size_t n)
{
	SSL_CTX *ctx, *old;

	if ((ctx = ctx_load(certificate, private_key, err, n)) == NULL)
		return -1;
	pthread_mutex_lock(&e->lock);
	old = e->ctx;
	e->ctx = ctx;
	pthread_mutex_unlock(&e->lock);
	SSL_CTX_free(old);	/* freed when the last connection on it ends */
	return 0;
}

void
lean_free(struct lean_engine *e)
{
	if (e == NULL)
		return;
	SSL_CTX_free(e->ctx);
	pthread_mutex_destroy(&e->lock);
	free(e);
}
