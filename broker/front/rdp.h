/* rdp: the RDP endpoint. Puts the parts of the front together: the
 * admission engine (admit.h: listener, limits, workers), the X.224 stage
 * every engine shares (here), and the engine for the TLS handshake up to
 * Client Info ([rdp] engine): the lean engine (lean.h, the default) or
 * FreeRDP's server peer (rdp_freerdp.h). Where a user goes is the core's
 * decision, asked through the front door (door.h); this module knows
 * nothing of the store: main.c wires the core's door_ops.
 *
 * address mode: the redirect carries the server's address; the client
 *   reconnects there on the port it first used.
 * token mode: the redirect carries a routing token (LoadBalanceInfo
 *   "Cookie: msts=<token>\r\n") and no address; the client reconnects to the
 *   broker and sends that line in its X.224 Connection Request. Such a
 *   request is read here (exactly its TPKT length) before FreeRDP sees it
 *   and asked about at DOOR_CONNECT: the core verifies the token and splices.
 * trust_cookie (either mode): a request with "Cookie: mstshash=USER" and no
 *   token is first asked about at DOOR_CONNECT, unread; the core may splice
 *   it to the user's live session or say go on (then FreeRDP handles it). */
#ifndef TS_RDP_H
#define TS_RDP_H

#include <stddef.h>
#include <stdint.h>

struct door_ops;

struct rdp_conf {
	char listen[272];		/* host:port */
	char mode[16];			/* "address" or "token" */
	char engine[16];		/* "lean" (lean.h, also ""), or "freerdp" (rdp_freerdp.h) */
	char certificate[512];		/* PEM files */
	char private_key[512];
	int handshake_timeout;		/* seconds, whole handshake up to the redirect */
	int max_handshakes;		/* connections being handled at once */
	int max_connections;		/* open at once, waiting for their request or in a handshake */
	int trust_cookie;		/* ask about mstshash cookies at DOOR_CONNECT */
	/* per client address (admit.h), 0: no limit */
	int max_handshakes_per_address;
	int placements_per_address_minute;
	char limits_exempt[1024];	/* networks never limited */
	/* the TLS policy (lean.h; FreeRDP: rdp_freerdp.h says what it takes) */
	char tls_ciphers[512];		/* TLS 1.2: OpenSSL cipher list */
	char tls_ciphersuites[256];	/* TLS 1.3: OpenSSL ciphersuites */
	char tls_min_version[8];	/* "1.2" or "1.3" ("1.0", "1.1" to relax) */
	/* the lean engine in front processes (fronts.h); 0: in this one */
	int fronts;
	char front_user[64];		/* their user ("": tsbroker-front, else nobody) */
};

struct rdp;

/* Reads the certificate and key, binds the listener. ops (decide and done
 * required; splice too in token mode or with trust_cookie) is copied.
 * With conf->fronts (lean engine only) the handshakes run in front
 * processes (fronts.h), restarts counted in *front_restarts (borrowed).
 * NULL with the reason in err. */
struct rdp *rdp_new(const struct rdp_conf *conf, const struct door_ops *ops,
    uint64_t *front_restarts, char *err, size_t errlen);
/* In a front process (frontproc.c): the endpoint on client sockets that
 * accept takes from conn_fd (admit.h: conf.accept; the tag is the core's
 * id), the lean engine on pem, ops the remote core's (its decide_async
 * used for DOOR_LOGON). ended(ctx, dc) is called once per connection when
 * this process is done with it (any endpoint thread), before its release. */
struct door_conn;
struct lean_pem;
struct rdp *rdp_front_new(const struct rdp_conf *conf, const struct lean_pem *pem,
    int conn_fd, int (*accept)(void *, int, char *, size_t, uint64_t *),
    const struct door_ops *ops, void (*ended)(void *ctx, struct door_conn *dc),
    char *err, size_t errlen);
/* Checks what the libraries must judge (for -t): the TLS policy (with
 * OpenSSL) and limits_exempt. 0, or -1 with the reason in err. */
int rdp_conf_check(const struct rdp_conf *conf, char *err, size_t errlen);
/* A reload ([rdp]'s live keys; listen, mode and engine are the caller's
 * to keep): the certificate and key read again (new connections get them,
 * those in flight keep theirs), the TLS policy (the freerdp engine: what
 * rdp_freerdp_set_tls can set), the limits, trust_cookie. 0, or -1 with the reason in err and nothing changed. Main thread. */
int rdp_reload(struct rdp *r, const struct rdp_conf *conf, char *err, size_t errlen);
/* In a front process: the reload the core sent (its conf and pem, checked
 * by the core). 0, or -1 with the reason in err. */
int rdp_front_reload(struct rdp *r, const struct rdp_conf *conf, const struct lean_pem *pem,
    char *err, size_t errlen);
/* Starts serving in background threads. 0 or -1. */
int rdp_start(struct rdp *r);
/* Stops serving, waits for connections to end (bounded), frees r. NULL ok. */
void rdp_free(struct rdp *r);

#endif
