/* x224: pure parser of the first packet an RDP client sends, the X.224
 * Connection Request ([MS-RDPBCGR] 2.2.1.1):
 *
 *   TPKT header (4)  version 3, reserved, length (big endian, whole packet)
 *   X.224 CR (7)     LI (= packet length - 5), code 0xE0, dst-ref, src-ref, class
 *   token line       optional, CRLF-terminated: "Cookie: mstshash=USER" (a user
 *                    hint), "Cookie: msts=..." or any other routing token
 *                    ("tsv://MS Terminal Services Plugin.1.Sessions")
 *   RDP_NEG_REQ (8)  optional: type 1, flags, length 8, requestedProtocols
 *   RDP_CORRELATION_INFO (36)  optional: type 6, flags 0, length 36, id, reserved
 *
 * No I/O, no allocation, no global state: safe from any thread and fuzzable.
 * Every length is checked against the buffer; nothing past len is read. */
#ifndef TS_X224_H
#define TS_X224_H

#include <stddef.h>
#include <stdint.h>

#define X224_TPKT_HEADER_LEN	4	/* bytes needed by x224_packet_length */
#define X224_CR_MIN_LEN		11	/* TPKT header + fixed CR header */
/* The length indicator is one byte (LI = length - 5), so no valid request
 * is longer than 260 bytes; FreeRDP's server rejects longer ones too. */
#define X224_PACKET_MAX		260	/* largest Connection Request accepted */

/* requestedProtocols bits */
#define X224_PROTOCOL_RDP	0x00000000u	/* standard RDP security (no bit) */
#define X224_PROTOCOL_SSL	0x00000001u
#define X224_PROTOCOL_HYBRID	0x00000002u
#define X224_PROTOCOL_RDSTLS	0x00000004u
#define X224_PROTOCOL_HYBRID_EX	0x00000008u
#define X224_PROTOCOL_RDSAAD	0x00000010u

/* RDP_NEG_REQ flags */
#define X224_NEG_RESTRICTED_ADMIN	0x01
#define X224_NEG_REDIRECTED_AUTH	0x02
#define X224_NEG_CORRELATION_INFO	0x08

/* RDP_NEG_FAILURE failureCode values, for a server's refusal */
#define X224_FAILURE_SSL_REQUIRED_BY_SERVER	0x00000001u
#define X224_FAILURE_SSL_NOT_ALLOWED_BY_SERVER	0x00000002u
#define X224_FAILURE_SSL_CERT_NOT_ON_SERVER	0x00000003u
#define X224_FAILURE_INCONSISTENT_FLAGS		0x00000004u
#define X224_FAILURE_HYBRID_REQUIRED_BY_SERVER	0x00000005u

/* Errors: 0 is success, every error is negative. */
enum x224_error {
	X224_OK = 0,
	X224_ETRUNCATED = -1,		/* fewer bytes than the TPKT length says */
	X224_ETPKT_VERSION = -2,	/* TPKT version is not 3 */
	X224_ETPKT_LENGTH = -3,		/* TPKT length below the minimum or above X224_PACKET_MAX */
	X224_ELI = -4,			/* X.224 length indicator disagrees with the TPKT length */
	X224_ECODE = -5,		/* not a Connection Request TPDU */
	X224_ETOKEN_UNTERMINATED = -6,	/* token/cookie without CRLF */
	X224_ETOKEN_CHAR = -7,		/* control character or NUL in the token/cookie */
	X224_ECOOKIE_EMPTY = -8,	/* "Cookie: mstshash=" with no user */
	X224_ENEG_TYPE = -9,		/* negotiation structure is not an RDP_NEG_REQ */
	X224_ENEG_LENGTH = -10,		/* RDP_NEG_REQ truncated or its length field is not 8 */
	X224_ECORR = -11,		/* RDP_CORRELATION_INFO malformed or missing */
	X224_ETRAILING = -12,		/* bytes left after the last structure */
	X224_EINVAL = -13,		/* NULL argument */
};

enum x224_token_kind {
	X224_TOKEN_NONE = 0,
	X224_TOKEN_MSTS,		/* "Cookie: msts=..." */
	X224_TOKEN_OTHER,		/* any other line, e.g. "tsv://..." */
};

/* A parsed request. The pointers point into the caller's buffer (valid as
 * long as it is) and are NOT NUL-terminated; use x224_copy to get a string. */
struct x224_request {
	size_t length;			/* whole packet (= TPKT length) */
	uint16_t dst_ref;
	uint16_t src_ref;
	uint8_t class_option;

	/* Cookie: mstshash=USER: the user hint, NULL/0 if absent. */
	const uint8_t *cookie;
	size_t cookie_len;

	/* Routing token: the whole line without CRLF, NULL/0 if absent.
	 * For X224_TOKEN_MSTS, msts points after "Cookie: msts=". */
	enum x224_token_kind token_kind;
	const uint8_t *token;
	size_t token_len;
	const uint8_t *msts;
	size_t msts_len;

	int has_neg_req;		/* 0: no RDP_NEG_REQ, i.e. standard RDP security only */
	uint8_t neg_flags;
	uint32_t requested_protocols;	/* X224_PROTOCOL_* bits, 0 without a NEG_REQ */

	int has_correlation;
	uint8_t correlation_id[16];
};

/* Tells from the first bytes how long the whole TPKT packet is, so a reader
 * can read (or MSG_PEEK) exactly that much. Needs X224_TPKT_HEADER_LEN bytes:
 * returns X224_ETRUNCATED with fewer, X224_ETPKT_VERSION or X224_ETPKT_LENGTH
 * for a header that cannot start a Connection Request, else 0 with *need set. */
int x224_packet_length(const uint8_t *buf, size_t len, size_t *need);

/* Parses one Connection Request in buf[0..len). len may exceed the packet
 * (extra bytes are ignored; req->length tells where it ended). On success
 * returns 0 and fills *req; on error returns a negative enum x224_error and
 * leaves *req unspecified. */
int x224_parse_request(const uint8_t *buf, size_t len, struct x224_request *req);

/* A static English description of an error code ("unknown error" for others). */
const char *x224_strerror(int err);

/* Copies src[0..len) into dst (size n) as a NUL-terminated string.
 * Returns 0, or -1 if it had to truncate (dst still terminated) or n is 0. */
int x224_copy(char *dst, size_t n, const uint8_t *src, size_t len);

/* Writes an X.224 Connection Confirm carrying an RDP_NEG_FAILURE with
 * failure_code (X224_FAILURE_*) into out (at least X224_NEG_FAILURE_LEN
 * bytes). Returns the number of bytes written, or -1 if n is too small. */
#define X224_NEG_FAILURE_LEN	19
int x224_build_neg_failure(uint8_t *out, size_t n, uint32_t failure_code);
/* The same with an RDP_NEG_RSP: the server selects selected_protocol
 * (X224_PROTOCOL_*), flags X224_RSP_* . Same length and returns. */
#define X224_RSP_EXTENDED_CLIENT_DATA	0x01
int x224_build_neg_response(uint8_t *out, size_t n, uint32_t selected_protocol, uint8_t flags);

#endif
