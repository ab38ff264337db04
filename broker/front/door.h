/* door: the front door, the one seam between whatever speaks RDP to a
 * client (the engine: lean.c, or the FreeRDP peer, rdp_freerdp.c) and the broker
 * core (broker/core/broker.c, which decides with the store, issues tokens
 * and runs the splice relay). The engine asks with a door_request and does
 * what the door_answer says; it never decides where a user goes.
 *
 * The request and the answer are flat and fixed-size (bounded strings,
 * enums, integers, no pointers), so that an engine in another process can
 * send them over a local socket as they are. A splice is an answer the core
 * carries out itself on a descriptor of the client's socket it is given
 * (door_ops.splice); the engine never relays.
 *
 * A connection is asked about at most twice:
 *   DOOR_CONNECT  after the X.224 Connection Request, before TLS, only for a
 *                 routing token in token mode or a "Cookie: mstshash=" with
 *                 trust_cookie: answered DOOR_SPLICE, DOOR_REFUSE, or
 *                 DOOR_GO_ON (go on with the handshake).
 *   DOOR_LOGON    after Client Info (user, domain, client name, cluster
 *                 data known): answered DOOR_REDIRECT or DOOR_REFUSE.
 * The core records (logs, events, metrics) what it answers at DOOR_CONNECT
 * and what its splices do; every other outcome the engine reports once with
 * door_ops.done (door_report helps). */
#ifndef TS_DOOR_H
#define TS_DOOR_H

#include <stddef.h>
#include <stdint.h>

#include "broker/front/x224.h"

#define DOOR_NAME_MAX		256	/* user, domain, cookie: bytes with the NUL */
#define DOOR_CLIENT_NAME_MAX	64	/* Client Core Data clientName (15 characters) */
#define DOOR_ADDR_MAX		64	/* numeric IPv4/IPv6 address */
#define DOOR_TOKEN_MAX		(X224_PACKET_MAX + 1)
#define DOOR_REASON_MAX		256

/* Client Cluster Data (TS_UD_CS_CLUSTER) flags, [MS-RDPBCGR] 2.2.1.3.5 */
#define DOOR_CLUSTER_REDIRECTION_SUPPORTED	0x00000001u
#define DOOR_CLUSTER_SESSIONID_VALID		0x00000002u
#define DOOR_CLUSTER_SMARTCARD_LOGON		0x00000040u

enum door_stage {
	DOOR_CONNECT = 0,
	DOOR_LOGON,
};

/* The X.224 Connection Request, as parsed (struct x224_request without its
 * pointers) and as sent. */
struct door_x224 {
	uint8_t bytes[X224_PACKET_MAX];		/* exactly as the client sent it */
	uint16_t len;
	/* 1: read from the socket, the core sends bytes to the server first;
	 * 0: still unread in the socket (the relay passes it on with the rest) */
	uint8_t consumed;
	uint8_t has_neg_req;
	uint8_t neg_flags;
	uint32_t requested_protocols;		/* X224_PROTOCOL_* */
	enum x224_token_kind token_kind;
	char cookie[DOOR_NAME_MAX];		/* Cookie: mstshash= user hint, "" */
	char token[DOOR_TOKEN_MAX];		/* X224_TOKEN_MSTS: what follows "msts=" */
};

struct door_request {
	enum door_stage stage;
	char client_addr[DOOR_ADDR_MAX];	/* numeric address of the client */
	/* 1: the engine's TLS policy refused the client's hello (reported
	 * DOOR_FAILED, the reason says what it offered: an event) */
	uint8_t tls_refused;
	/* 1: refused by a per-address limit (admit.h), which the front logs at
	 * most once a second per address: counted, no line or event each */
	uint8_t limited;
	struct door_x224 x224;
	/* DOOR_LOGON only ("" and 0 before) */
	char user[DOOR_NAME_MAX];		/* as the client sent it in Client Info */
	char domain[DOOR_NAME_MAX];
	/* Client Core Data clientName, UTF-8 cleaned (utf16.h utf8_name_clean):
	 * every engine fills it; "" is a name too (the client sent none) */
	char client_name[DOOR_CLIENT_NAME_MAX];
	uint32_t cluster_flags;			/* DOOR_CLUSTER_* */
	uint32_t redirected_session_id;		/* with DOOR_CLUSTER_SESSIONID_VALID */
};

enum door_verdict {
	DOOR_GO_ON = 0,		/* DOOR_CONNECT: nothing for the core, go on */
	DOOR_REFUSE,		/* refusal and reason say why */
	DOOR_REDIRECT,		/* DOOR_LOGON: send the Server Redirection PDU */
	DOOR_SPLICE,		/* DOOR_CONNECT: hand the socket to door_ops.splice */
};

/* Why the core refused. The engine maps it to the client at its edge (the
 * FreeRDP engine: a Set Error Info PDU, see rdp_freerdp.c); at DOOR_CONNECT
 * the connection is closed, nothing can be said before TLS. */
enum door_refusal {
	DOOR_REFUSAL_NONE = 0,
	DOOR_REFUSAL_DENIED,		/* bad name, bad token, the broker's fault */
	DOOR_REFUSAL_NO_SERVER,		/* placement found no server with room */
};

/* Where DOOR_REDIRECT sends the client. */
struct door_redirect {
	char server[64];		/* server name */
	char address[256];		/* TargetNetAddress */
	char fqdn[256];			/* optional FQDN, "" if none */
	int port;
	int reconnect;			/* 1: back to an existing session */
	int64_t session_id;
	char routing_token[128];	/* token mode: "Cookie: msts=<this>", ASCII */
};

/* Where DOOR_SPLICE joins the client, and what the core needs to place the
 * user again should that server be unreachable. */
struct door_splice {
	int64_t server_id;
	int64_t session_id;
	char server[64];
	char address[256];
	int port;
	char user[DOOR_NAME_MAX];	/* normalised */
	char login[DOOR_NAME_MAX];	/* as the user logged on, for logs and events */
	char domain[DOOR_NAME_MAX];
	char note[160];			/* how the core got there, for its events */
};

struct door_answer {
	enum door_verdict verdict;
	enum door_refusal refusal;		/* DOOR_REFUSE */
	char reason[DOOR_REASON_MAX];		/* DOOR_REFUSE: for the event */
	struct door_redirect redirect;		/* DOOR_REDIRECT */
	struct door_splice splice;		/* DOOR_SPLICE */
};

/* What door_ops.splice returns. */
enum door_splice_result {
	DOOR_SPLICED = 0,	/* it took fd (closes it when done) */
	DOOR_DECLINED = 1,	/* request unread only: fd untouched, go on with the handshake */
	DOOR_CLOSED = -1,	/* failed (logged, an event): close the connection */
};

/* How a connection ended, for door_ops.done (the redirect metrics count by
 * this order). */
enum door_outcome {
	DOOR_REDIRECTED = 0,
	DOOR_REFUSED,		/* the core said no (capacity, no server, no name) */
	DOOR_FAILED,		/* protocol error, timeout, client went away */
};

/* The core's entry points. Every call comes from engine threads,
 * concurrently; nothing the core is given outlives the call (decide_async:
 * its completion). */
struct door_ops {
	/* Decides req (and at DOOR_LOGON commits the placement durably
	 * before it answers). Fills the whole *ans. */
	void (*decide)(void *ctx, const struct door_request *req, struct door_answer *ans);
	/* Carries out a DOOR_SPLICE answer: connects (failing over to another
	 * server where the answer allows) and starts the relay on fd, a
	 * descriptor of the client's socket of its own. Returns within a few
	 * connect timeouts; never writes to fd unless it splices. */
	enum door_splice_result (*splice)(void *ctx, const struct door_request *req,
	    const struct door_answer *ans, int fd);
	/* Once per connection the core did not record itself, when its outcome
	 * is known (the redirect or refusal sent, or the connection failed).
	 * ans is NULL unless redirected; elapsed_us is the time from accept to
	 * the outcome. Before Client Info, req->user is "". */
	void (*done)(void *ctx, const struct door_request *req, enum door_outcome outcome,
	    const struct door_answer *ans, const char *reason, int64_t elapsed_us);
	void *ctx;
	/* Optional (NULL: engines call decide, in a thread of their own that
	 * may wait): decide without waiting. Decides req as decide does, fills
	 * the whole *ans and then calls complete(arg) once, from any thread,
	 * maybe before it returns; req and ans stay the caller's, untouched
	 * until then. A front process's (frontproc.c): the core's answer. */
	void (*decide_async)(void *ctx, const struct door_request *req, struct door_answer *ans,
	    void (*complete)(void *arg), void *arg);
};

struct admit_conn;

/* One connection's side of the seam, kept by the engine for as long as it
 * handles the connection. */
struct door_conn {
	const struct door_ops *ops;	/* borrowed */
	struct admit_conn *ac;		/* borrowed: the admission engine's (admit.h) */
	struct door_request req;
	int reported;			/* done called, or the core recorded it */
	uint32_t seq;			/* a front's messages about it so far (frontmsg.h) */
};

/* The door_conn whose request req is (engines always ask with &dc->req):
 * for door_ops that need the connection, e.g. a front's remote core. */
static inline struct door_conn *
door_conn_of(const struct door_request *req)
{
	return (struct door_conn *)(void *)((char *)req - offsetof(struct door_conn, req));
}

/* Sets up dc for a connection the admission engine accepted: stage
 * DOOR_CONNECT, the client's address, nothing else yet. */
void door_conn_init(struct door_conn *dc, const struct door_ops *ops, struct admit_conn *ac);
/* Fills req->x224 from a parsed request and its bytes (len at most
 * X224_PACKET_MAX). 0, or -1 if len is too long. */
int door_request_set_x224(struct door_request *req, const uint8_t *buf, size_t len,
    const struct x224_request *x);
/* Calls dc->ops->done once (later calls do nothing), with the time since
 * the connection was accepted; reason may be NULL. */
void door_report(struct door_conn *dc, enum door_outcome outcome,
    const struct door_answer *ans, const char *reason);

#endif
