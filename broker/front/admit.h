/* admit: the admission engine of the RDP endpoint. It owns the listening
 * socket and decides which connections get handled, and for how long; it
 * knows no RDP beyond the TPKT header (x224_packet_length) and no FreeRDP.
 *
 * Two stages, so that idle or slow clients cost a descriptor, not a
 * handshake: an accepted connection first waits in the listener's poll set
 * (at most max_connections open at once, more are closed at accept) until
 * its whole X.224 Connection Request has arrived (SO_RCVLOWAT set to the
 * missing length, so a partial request does not wake the listener), and
 * only then takes one of max_handshakes slots and a worker thread, which
 * runs handler.handle. Each stage has handshake_timeout: from accept to a
 * slot (the request, then a free slot), and from the slot to the end of the
 * handshake, so a client that waited for a slot still gets a whole one. A
 * watchdog shuts down the socket of a handled connection past its deadline
 * (which unblocks any read or write on it, a TLS handshake's too), unless
 * the handler has handed it off (admit_conn_set_handoff).
 *
 * Per client address (addrlimit.h): a connection past
 * max_handshakes_per_address open from its address is closed at accept,
 * and admit_placement_take bounds its new placements per minute; refusals
 * are logged at most once a second per address.
 *
 * Threads: one listener (accept, waiting stage, promotion to slots,
 * watchdog) and a pool of workers grown on demand up to max_handshakes. */
#ifndef TS_ADMIT_H
#define TS_ADMIT_H

#include <stddef.h>
#include <stdint.h>

struct admit_conf {
	const char *listen;		/* host:port, [v6]:port (port 0: any) */
	int handshake_timeout;		/* seconds, per stage (<= 0: 10) */
	int max_handshakes;		/* connections handled at once (<= 0: 64) */
	int max_connections;		/* open at once (raised to max_handshakes) */
	/* per client address (addrlimit.h), 0: no limit */
	int max_handshakes_per_address;	/* open at once, from accept to the end */
	int placements_per_address_minute;	/* new placements, admit_placement_take */
	const char *limits_exempt;	/* networks never limited ("10.0.0.0/8 ..."), NULL */
	/* Set: listen is ignored and connections come from listen_fd (given
	 * to a, which closes it) through accept, which returns a client
	 * socket (the front process: sockets passed by the core), its numeric
	 * address in client and the caller's tag for it, or -1 with errno
	 * (EAGAIN: none now). NULL: accept(2) on listen. */
	int (*accept)(void *ctx, int fd, char *client, size_t n, uint64_t *tag);
	void *accept_ctx;
	int listen_fd;
};

struct admit;
struct admit_conn;

struct admit_handler {
	/* In a worker, once c holds a slot and its whole Connection Request
	 * is in the socket: handles c to its end. The engine closes the socket
	 * and frees c when it returns 0; ADMIT_KEPT: the handler keeps c (its
	 * slot, its deadline) until it calls admit_conn_release. */
	int (*handle)(void *ctx, struct admit_conn *c);
	/* c ended before a slot (closed, not a TPKT header, no request or no
	 * slot within handshake_timeout, stopping); why says which. Listener
	 * thread, or admit_free's. c is freed when it returns. */
	void (*dropped)(void *ctx, struct admit_conn *c, const char *why);
	void *ctx;
};

/* Binds the listener (nothing is accepted before admit_start). NULL with
 * the reason in err. conf and h are copied. */
struct admit *admit_new(const struct admit_conf *conf, const struct admit_handler *h,
    char *err, size_t n);
/* Starts the listener thread. 0 or -1 (logged). */
int admit_start(struct admit *a);
/* Stops accepting, ends every connection (handlers see admit_stopping and
 * their sockets shut down), waits for the workers and for the connections
 * handlers kept (ADMIT_KEPT) to be released, and frees a: 0. A worker still
 * in its handler, or a kept connection not released, after 5 s is left a
 * (logged, not freed): ADMIT_BUSY, and the handler's context must then stay
 * too. NULL ok (0). */
#define ADMIT_BUSY	(-1)
int admit_free(struct admit *a);

/* New limits (a reload; listen ignored, the rest copied): connections
 * from now on are judged by them, waiting ones promoted to new slots; those
 * in a handshake keep their deadline. 0, or -1 (a bad limits_exempt) with
 * the reason in err and nothing changed. Any thread. */
int admit_set_limits(struct admit *a, const struct admit_conf *conf, char *err, size_t n);
/* The limits in effect (defaults applied). */
const struct admit_conf *admit_conf(const struct admit *a);
/* The listening socket (for its address: net_local_name). */
int admit_listen_fd(const struct admit *a);
/* 1 once admit_free has begun. */
int admit_stopping(struct admit *a);
/* A descriptor that becomes readable, and stays so, once admit_free has
 * begun: for an engine's own waits (poll, epoll, a WinPR event). Owned by a. */
int admit_stop_fd(const struct admit *a);

/* A new placement for client (numeric) is about to be made: 0 (*counted:
 * give it back with admit_placement_return if it was none), or
 * ADMIT_LIMITED (placements_per_address_minute reached, the refusal logged
 * at most once a second per address). Any thread. */
#define ADMIT_LIMITED	(-2)
int admit_placement_take(struct admit *a, const char *client, int *counted);
void admit_placement_return(struct admit *a, const char *client);

/* ---- for the handler: one connection (valid until handle returns; kept,
 * until admit_conn_release) ---- */

#define ADMIT_KEPT	1
/* Ends a connection its handler kept (ADMIT_KEPT): closes the socket,
 * frees the slot and c. Any thread, once. */
void admit_conn_release(struct admit_conn *c);
/* The tag conf.accept gave it (0 with accept(2)). */
uint64_t admit_conn_tag(const struct admit_conn *c);

/* The client's socket (blocking, owned by the engine: dup it to keep it). */
int admit_conn_fd(const struct admit_conn *c);
/* The client's numeric address. */
const char *admit_conn_client(const struct admit_conn *c);
/* The Connection Request as peeked (exactly its TPKT length, still unread
 * in the socket), *len set. */
const uint8_t *admit_conn_request(const struct admit_conn *c, size_t *len);
/* Microseconds since the connection was accepted. */
int64_t admit_conn_elapsed_us(const struct admit_conn *c);
/* Milliseconds left until the deadline (<= 0: past). */
int64_t admit_conn_left_ms(struct admit_conn *c);
/* A new deadline, ms from now. */
void admit_conn_set_deadline(struct admit_conn *c, int64_t ms);
/* 1 once admit_free has begun. */
int admit_conn_stopping(struct admit_conn *c);
/* 1 if the watchdog (deadline or stop) has shut the socket down. */
int admit_conn_timed_out(struct admit_conn *c);
/* on: the watchdog leaves the socket alone past the deadline (the handler
 * bounds its own time, e.g. while the core splices); off again after. */
void admit_conn_set_handoff(struct admit_conn *c, int on);
/* Reads and discards until the client closes, ms pass, or stop: the wait
 * that lets a last PDU reach the client before the close. */
void admit_conn_drain(struct admit_conn *c, int ms);

#endif
