/* rdp: the RDP redirection endpoint. The only module that includes FreeRDP.
 * It accepts thin clients with TLS, reads the user in the Capabilities phase,
 * asks its owner where the user goes (rdp_place_fn, which commits the
 * placement durably), sends the Server Redirection PDU and lets the client
 * close first. It knows nothing of the store: main.c wires the callbacks. */
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
};

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
	/* Decide and durably commit where req goes. 0 and *out filled, or
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
	 * because max_handshakes were in progress: those are counted and
	 * logged at most every 10 s. */
	void (*done)(void *ctx, enum rdp_outcome outcome, const struct rdp_request *req,
	    const struct rdp_target *target, const char *reason, int64_t elapsed_us);
	void *ctx;
};

struct rdp;

/* Reads the certificate and key, binds the listener. NULL with the reason
 * in err. mode "token" is refused until token mode is implemented. */
struct rdp *rdp_new(const struct rdp_conf *conf, const struct rdp_ops *ops,
    char *err, size_t errlen);
/* Starts serving in background threads. 0 or -1. */
int rdp_start(struct rdp *r);
/* Stops serving, waits for connections to end (bounded), frees r. NULL ok. */
void rdp_free(struct rdp *r);

#endif
