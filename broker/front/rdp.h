/* rdp: the RDP endpoint. The only module that includes FreeRDP.
 * It accepts thin clients with TLS, reads the user in the Capabilities phase,
 * asks its owner where the user goes (rdp_ops.place, which commits the
 * placement durably), sends the Server Redirection PDU and lets the client
 * close first. It knows nothing of the store: main.c wires the callbacks.
 *
 * address mode: the PDU carries the server's address; the client reconnects
 *   there on the port it first used.
 * token mode: the PDU carries a routing token (LoadBalanceInfo
 *   "Cookie: msts=<token>\r\n") and no address; the client reconnects to the
 *   broker and sends that line in its X.224 Connection Request. rdp.c reads
 *   such a request (exactly its TPKT length) before FreeRDP sees it and hands
 *   the connection to rdp_ops.route, which verifies the token and splices.
 * trust_cookie (either mode): a request with "Cookie: mstshash=USER" and no
 *   token is first offered to rdp_ops.route, unread; route may splice it to
 *   the user's live session or decline (then FreeRDP handles it as usual). */
#ifndef TS_RDP_H
#define TS_RDP_H

#include <stddef.h>
#include <stdint.h>

struct rdp_conf {
	char listen[272];		/* host:port */
	char mode[16];			/* "address" or "token" */
	char certificate[512];		/* PEM files */
	char private_key[512];
	int handshake_timeout;		/* seconds, whole handshake up to the redirect */
	int max_handshakes;		/* connections being handled at once */
	int max_connections;		/* open at once, waiting for their request or in a handshake */
	int trust_cookie;		/* offer mstshash cookies to ops->route */
};

struct rdp_request {
	const char *user;		/* as the client sent it in Client Info */
	const char *domain;
	const char *client_addr;	/* "ip" of the client */
	const char *cookie;		/* Cookie: mstshash= hint, "" if none */
};

struct rdp_target {
	char server[64];		/* server name */
	char address[256];		/* TargetNetAddress */
	char fqdn[256];			/* optional FQDN, "" if none */
	int port;
	int reconnect;			/* 1: back to an existing session */
	int64_t session_id;
	char routing_token[128];	/* token mode: sent as "Cookie: msts=<this>"; ASCII */
};

/* A connection for ops->route, before FreeRDP has seen it. */
enum rdp_route_kind {
	RDP_ROUTE_TOKEN,		/* "Cookie: msts=" in token mode */
	RDP_ROUTE_COOKIE,		/* "Cookie: mstshash=" with trust_cookie */
};

struct rdp_route_request {
	enum rdp_route_kind kind;
	const char *token;		/* RDP_ROUTE_TOKEN: what follows "msts=" */
	const char *cookie;		/* the mstshash user, "" if none */
	const char *client_addr;	/* "ip" of the client */
	/* RDP_ROUTE_TOKEN: the Connection Request, already read from the
	 * socket, to be sent to the server first, unchanged. RDP_ROUTE_COOKIE:
	 * NULL/0, the request is still unread in the socket (the relay passes
	 * it on), so that a declined connection can go on to FreeRDP. */
	const uint8_t *request;
	size_t request_len;
};

/* What route returns. */
#define RDP_ROUTE_SPLICED	0	/* it took fd (closes it when done) */
#define RDP_ROUTE_DECLINED	1	/* RDP_ROUTE_COOKIE only: fd untouched, go on */
#define RDP_ROUTE_CLOSED	(-1)	/* refused or failed (logged, an event): close */

enum rdp_outcome {
	RDP_REDIRECTED = 0,
	RDP_REFUSED,			/* placement said no (capacity, no server) */
	RDP_FAILED,			/* protocol error, timeout, client went away */
};

/* Refusals place may return. The client is told with a Set Error Info PDU:
 * RDP_PLACE_NO_SERVER as ERRINFO_CB_DESTINATION_POOL_NOT_FREE ("no
 * available endpoints in the pool"), any other negative value as
 * ERRINFO_SERVER_DENIED_CONNECTION. */
#define RDP_PLACE_REFUSED	(-1)
#define RDP_PLACE_NO_SERVER	(-2)

struct rdp_ops {
	/* Decide and durably commit where req goes. 0 and *out filled (in
	 * token mode with a routing token for the placement's session), or
	 * negative (RDP_PLACE_*) with a reason for the refusal in reason.
	 * Called from connection threads, concurrently, only with a non-empty
	 * user (a client without one is refused before). */
	int (*place)(void *ctx, const struct rdp_request *req, struct rdp_target *out,
	    char *reason, size_t n);
	/* Called once per connection when its outcome is known (the redirect
	 * or refusal is sent, or the connection failed); target is NULL unless
	 * redirected. elapsed_us is the broker's time from accept to the
	 * redirect PDU (or to the failure). Before Client Info, req->user and
	 * req->domain are "". Not called for connections closed at accept
	 * because max_connections were open: those are counted and logged at
	 * most every 10 s, nor for connections route spliced or
	 * closed (route reports those itself). */
	void (*done)(void *ctx, enum rdp_outcome outcome, const struct rdp_request *req,
	    const struct rdp_target *target, const char *reason, int64_t elapsed_us);
	/* Token mode and trust_cookie (required then, else may be NULL): takes a
	 * connection that came back with a routing token or a user hint, finds
	 * the server, connects and splices. fd is a descriptor of its own for
	 * the client's socket. Returns RDP_ROUTE_*; never writes to fd unless it
	 * splices. It must return within a few connect timeouts: the endpoint
	 * waits for it. Called from connection threads, concurrently. */
	int (*route)(void *ctx, const struct rdp_route_request *req, int fd);
	void *ctx;
};

struct rdp;

/* Reads the certificate and key, binds the listener. NULL with the reason
 * in err (also for mode "token" or trust_cookie without ops->route). */
struct rdp *rdp_new(const struct rdp_conf *conf, const struct rdp_ops *ops,
    char *err, size_t errlen);
/* Starts serving in background threads. 0 or -1. */
int rdp_start(struct rdp *r);
/* Stops serving, waits for connections to end (bounded), frees r. NULL ok. */
void rdp_free(struct rdp *r);

#endif
