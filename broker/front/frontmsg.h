/* frontmsg: what the core (broker/core/fronts.c) and a front process
 * (broker/front/frontproc.c) say to each other: the front-door seam's
 * structs as they are (door.h), each behind a header whose version and
 * size are checked. Types and constants only.
 *
 * Two SOCK_SEQPACKET socket pairs per front, so every message is whole:
 *   the door socket (the front's fd FRONTMSG_DOOR_FD), both ways:
 *     core -> front  FRONTMSG_HELLO   struct frontmsg_hello, once, first
 *     front -> core  FRONTMSG_ASK     struct door_request (id: the connection)
 *     core -> front  FRONTMSG_ANSWER  struct door_answer (id: the same)
 *     front -> core  FRONTMSG_DONE    struct frontmsg_done (door_ops.done)
 *     front -> core  FRONTMSG_END     nothing: the front is done with id
 *   the connection socket (FRONTMSG_CONN_FD), core -> front only:
 *     FRONTMSG_CONN  struct frontmsg_conn, the client's socket by SCM_RIGHTS
 * An ASK at DOOR_CONNECT is carried out by the core, which holds the
 * client's socket too: it splices itself (the answer says DOOR_SPLICE only
 * once it has) and the front never relays. */
#ifndef TS_FRONTMSG_H
#define TS_FRONTMSG_H

#include <stdint.h>

#include "broker/front/door.h"
#include "broker/front/rdp.h"

#define FRONTMSG_VERSION	1
#define FRONTMSG_DOOR_FD	3
#define FRONTMSG_CONN_FD	4
/* a connection's messages from the front: ASK twice, DONE, END */
#define FRONTMSG_PER_CONN	4

enum frontmsg_type {
	FRONTMSG_HELLO = 1,
	FRONTMSG_CONN,
	FRONTMSG_ASK,
	FRONTMSG_ANSWER,
	FRONTMSG_DONE,
	FRONTMSG_END,
};

struct frontmsg_hdr {
	uint32_t version;		/* FRONTMSG_VERSION */
	uint32_t type;			/* enum frontmsg_type */
	uint32_t size;			/* of the whole message, header included */
	uint32_t seq;			/* front -> core: the connection's nth message, from 0 */
	uint64_t id;			/* the connection (the core's slot), 0: none */
};

/* The front's configuration, then its certificate chain and key (PEM,
 * cert_len + key_len bytes) right after the struct. */
struct frontmsg_hello {
	struct frontmsg_hdr h;
	struct rdp_conf conf;
	uint32_t cert_len;
	uint32_t key_len;
};

struct frontmsg_conn {
	struct frontmsg_hdr h;
	char client[DOOR_ADDR_MAX];	/* numeric address */
};

struct frontmsg_ask {
	struct frontmsg_hdr h;
	struct door_request req;
};

struct frontmsg_answer {
	struct frontmsg_hdr h;
	struct door_answer ans;
};

struct frontmsg_done {
	struct frontmsg_hdr h;
	struct door_request req;
	uint32_t outcome;		/* enum door_outcome */
	uint32_t has_ans;		/* ans is set (DOOR_REDIRECTED) */
	struct door_answer ans;
	char reason[DOOR_REASON_MAX];
};

/* The largest message but a hello (a receive buffer for any of them). */
#define FRONTMSG_MAX	sizeof(struct frontmsg_done)

/* 1 if h says it is a whole message of type t and exactly size bytes long
 * (n: as received). */
static inline int
frontmsg_ok(const struct frontmsg_hdr *h, size_t n, enum frontmsg_type t, size_t size)
{
	return n == size && h->version == FRONTMSG_VERSION && h->type == (uint32_t)t &&
	    h->size == size;
}

#endif
