/* relay: the pure rules of one spliced pair (no I/O): what each direction
 * holds and owes, and which events each socket waits for. splice.c does the
 * reads, writes and epoll around it.
 *
 * A direction (client->server or server->client) reads from its source and
 * writes to its sink. Bytes a write could not take wait in the direction's
 * pending buffer (at most RELAY_BUF bytes, allocated only while bytes wait:
 * an idle pair holds no buffer), or in a pipe when the bytes went through
 * splice(2) (splice.c's choice for bulk reads); while any wait, the source
 * is not read (back-pressure). An EOF at the source becomes a shutdown(SHUT_WR) of the
 * sink once nothing waits (the half-close carried across). */
#ifndef TS_RELAY_H
#define TS_RELAY_H

#include <stddef.h>
#include <stdint.h>

#define RELAY_BUF	(256 * 1024)	/* the most one read moves, and one
					 * direction holds */

/* Returns of relay_dir_keep. */
#define RELAY_OK	0
#define RELAY_ENOMEM	(-1)
#define RELAY_EFULL	(-2)		/* more than RELAY_BUF would wait */

enum relay_state {
	RELAY_OPEN = 0,		/* reading the source */
	RELAY_EOF,		/* source ended: shut the sink once drained */
	RELAY_SHUT		/* sink shut down for writing: done */
};

struct relay_dir {
	enum relay_state state;
	char *pend;		/* owned; NULL when nothing waits */
	size_t off, len;	/* waiting: pend[off .. len) */
	size_t piped;		/* waiting in the direction's pipe */
	uint64_t bytes;		/* delivered to the sink */
};

/* Why a pair was closed (the index of /metrics' closed counters). */
enum relay_close {
	RELAY_CLOSE_DONE = 0,	/* both sides ended (FIN both ways) */
	RELAY_CLOSE_RESET,	/* a side reset or failed */
	RELAY_CLOSE_LOST,	/* keepalive or user timeout: a peer vanished */
	RELAY_CLOSE_IDLE,	/* no progress for the idle timeout */
	RELAY_CLOSE_STOP,	/* the relay was stopped */
	RELAY_CLOSE_REASONS
};

/* Keeps n bytes (not taken by a write) waiting after what already waits.
 * RELAY_OK, RELAY_ENOMEM, or RELAY_EFULL; d unchanged on error. */
int relay_dir_keep(struct relay_dir *d, const void *buf, size_t n);
/* n bytes of what waits were written: counted, the buffer freed when empty. */
void relay_dir_sent(struct relay_dir *d, size_t n);
/* n bytes were read into the pipe (nothing else waits): waiting. */
void relay_dir_piped(struct relay_dir *d, size_t n);
/* n bytes of the pipe's were written to the sink: counted. */
void relay_dir_unpiped(struct relay_dir *d, size_t n);
/* n bytes went straight through (nothing waited): counted. */
void relay_dir_passed(struct relay_dir *d, size_t n);
/* The source ended (EOF). */
void relay_dir_eof(struct relay_dir *d);
/* 1 if the sink is due for shutdown(SHUT_WR) now: EOF seen and drained.
 * The caller shuts it down and calls relay_dir_shut. */
int relay_dir_shut_due(const struct relay_dir *d);
void relay_dir_shut(struct relay_dir *d);
/* 1 if bytes wait. */
int relay_dir_waiting(const struct relay_dir *d);
/* Frees what waits (the pair is closed). */
void relay_dir_clear(struct relay_dir *d);

/* The epoll events (EPOLLIN / EPOLLOUT bits) socket `side` (0 client, 1
 * server) waits for: IN while its outgoing direction is open with nothing
 * waiting, OUT while its incoming direction has bytes waiting. dir[i] is
 * the direction from side i. */
uint32_t relay_events(const struct relay_dir dir[2], int side);
/* 1 when both directions are shut: the pair is done. */
int relay_done(const struct relay_dir dir[2]);

#endif
