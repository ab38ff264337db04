/* x224: pure parser of the X.224 Connection Request. See x224.h. */
#include <string.h>

#include "broker/front/x224.h"

#define TPKT_VERSION		3
#define X224_FIXED_LEN		7	/* LI, code, dst-ref, src-ref, class */
#define X224_CODE_CR		0xE0
#define X224_CODE_CC		0xD0
#define NEG_TYPE_REQ		0x01
#define NEG_TYPE_RSP		0x02
#define NEG_TYPE_FAILURE	0x03
#define NEG_TYPE_CORRELATION	0x06
#define NEG_REQ_LEN		8
#define CORRELATION_LEN		36

static const char COOKIE_PREFIX[] = "Cookie: mstshash=";
static const char MSTS_PREFIX[] = "Cookie: msts=";

static uint16_t
get_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint16_t
get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	    ((uint32_t)p[3] << 24);
}

static int
has_prefix(const uint8_t *p, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && memcmp(p, prefix, n) == 0;
}

int
x224_packet_length(const uint8_t *buf, size_t len, size_t *need)
{
	size_t n;

	if (buf == NULL || need == NULL)
		return X224_EINVAL;
	if (len < X224_TPKT_HEADER_LEN)
		return X224_ETRUNCATED;
	if (buf[0] != TPKT_VERSION)
		return X224_ETPKT_VERSION;
	n = get_be16(buf + 2);
	if (n < X224_CR_MIN_LEN || n > X224_PACKET_MAX)
		return X224_ETPKT_LENGTH;
	*need = n;
	return 0;
}

/* The token line: starts at p (len bytes left in the packet), ends at CRLF.
 * Sets *line_len (without CRLF). Rejects NUL and control characters other
 * than the final CRLF, which FreeRDP and the routing code treat as strings. */
static int
parse_token_line(const uint8_t *p, size_t len, size_t *line_len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (p[i] == '\r') {
			if (i + 1 == len)
				break;		/* CR as the last byte: LF missing */
			if (p[i + 1] != '\n')
				return X224_ETOKEN_CHAR;
			*line_len = i;
			return 0;
		}
		if (p[i] < 0x20 || p[i] == 0x7f)
			return X224_ETOKEN_CHAR;
	}
	return X224_ETOKEN_UNTERMINATED;
}

static int
parse_token(const uint8_t *p, size_t len, struct x224_request *req, size_t *used)
{
	size_t line_len, plen;
	int r;

	if ((r = parse_token_line(p, len, &line_len)) != 0)
		return r;
	*used = line_len + 2;
	if (has_prefix(p, line_len, COOKIE_PREFIX)) {
		plen = strlen(COOKIE_PREFIX);
		if (line_len == plen)
			return X224_ECOOKIE_EMPTY;
		req->cookie = p + plen;
		req->cookie_len = line_len - plen;
		return 0;
	}
	req->token = p;
	req->token_len = line_len;
	if (has_prefix(p, line_len, MSTS_PREFIX)) {
		plen = strlen(MSTS_PREFIX);
		req->token_kind = X224_TOKEN_MSTS;
		req->msts = p + plen;
		req->msts_len = line_len - plen;
	} else
		req->token_kind = X224_TOKEN_OTHER;
	return 0;
}

static int
parse_neg_req(const uint8_t *p, size_t len, struct x224_request *req)
{
	if (p[0] != NEG_TYPE_REQ)
		return X224_ENEG_TYPE;
	if (len < NEG_REQ_LEN || get_le16(p + 2) != NEG_REQ_LEN)
		return X224_ENEG_LENGTH;
	req->has_neg_req = 1;
	req->neg_flags = p[1];
	req->requested_protocols = get_le32(p + 4);
	return 0;
}

/* [MS-RDPBCGR] 2.2.1.1.2: type 6, flags 0, length 36, 16-byte id, 16 reserved. */
static int
parse_correlation(const uint8_t *p, size_t len, struct x224_request *req)
{
	if (len < CORRELATION_LEN || p[0] != NEG_TYPE_CORRELATION ||
	    get_le16(p + 2) != CORRELATION_LEN)
		return X224_ECORR;
	req->has_correlation = 1;
	memcpy(req->correlation_id, p + 4, sizeof(req->correlation_id));
	return 0;
}

int
x224_parse_request(const uint8_t *buf, size_t len, struct x224_request *req)
{
	const uint8_t *p;
	size_t plen, left, used;
	int r;

	if (buf == NULL || req == NULL)
		return X224_EINVAL;
	if ((r = x224_packet_length(buf, len, &plen)) != 0)
		return r;
	if (len < plen)
		return X224_ETRUNCATED;
	memset(req, 0, sizeof(*req));
	req->length = plen;

	p = buf + X224_TPKT_HEADER_LEN;
	left = plen - X224_TPKT_HEADER_LEN;	/* >= X224_FIXED_LEN by the minimum */
	if (p[0] != left - 1)
		return X224_ELI;
	if ((p[1] & 0xF0) != X224_CODE_CR)
		return X224_ECODE;
	req->dst_ref = get_be16(p + 2);
	req->src_ref = get_be16(p + 4);
	req->class_option = p[6];
	p += X224_FIXED_LEN;
	left -= X224_FIXED_LEN;

	/* A token line starts with a printable byte; the negotiation structures
	 * start with a small type byte, so the two cannot be confused. */
	if (left > 0 && p[0] >= 0x20) {
		if ((r = parse_token(p, left, req, &used)) != 0)
			return r;
		p += used;
		left -= used;
	}
	if (left > 0) {
		if ((r = parse_neg_req(p, left, req)) != 0)
			return r;
		p += NEG_REQ_LEN;
		left -= NEG_REQ_LEN;
	}
	/* FreeRDP skips 36 trailing bytes whatever the flag says; accept a
	 * well-formed structure without the flag, require it with the flag. */
	if (left > 0 || (req->neg_flags & X224_NEG_CORRELATION_INFO)) {
		if ((r = parse_correlation(p, left, req)) != 0)
			return r;
		p += CORRELATION_LEN;
		left -= CORRELATION_LEN;
	}
	if (left != 0)
		return X224_ETRAILING;
	return 0;
}

const char *
x224_strerror(int err)
{
	switch (err) {
	case X224_OK:
		return "success";
	case X224_ETRUNCATED:
		return "truncated packet";
	case X224_ETPKT_VERSION:
		return "not a TPKT packet (version is not 3)";
	case X224_ETPKT_LENGTH:
		return "TPKT length out of range for a Connection Request";
	case X224_ELI:
		return "X.224 length indicator disagrees with the TPKT length";
	case X224_ECODE:
		return "not an X.224 Connection Request";
	case X224_ETOKEN_UNTERMINATED:
		return "routing token or cookie not terminated by CRLF";
	case X224_ETOKEN_CHAR:
		return "control character in routing token or cookie";
	case X224_ECOOKIE_EMPTY:
		return "empty mstshash cookie";
	case X224_ENEG_TYPE:
		return "negotiation data is not an RDP_NEG_REQ";
	case X224_ENEG_LENGTH:
		return "RDP_NEG_REQ truncated or with a bad length";
	case X224_ECORR:
		return "RDP_CORRELATION_INFO malformed or missing";
	case X224_ETRAILING:
		return "trailing bytes after the Connection Request";
	case X224_EINVAL:
		return "invalid argument";
	}
	return "unknown error";
}

int
x224_copy(char *dst, size_t n, const uint8_t *src, size_t len)
{
	int r = 0;

	if (dst == NULL || n == 0)
		return -1;
	if (src == NULL)
		len = 0;
	if (len >= n) {
		len = n - 1;
		r = -1;
	}
	if (len > 0)
		memcpy(dst, src, len);
	dst[len] = '\0';
	return r;
}

/* A Connection Confirm carrying one negotiation structure of type and
 * flags with a 32-bit value (RDP_NEG_RSP, RDP_NEG_FAILURE). */
static int
build_confirm(uint8_t *out, size_t n, uint8_t type, uint8_t flags, uint32_t value)
{
	uint8_t *p = out;

	if (out == NULL || n < X224_NEG_FAILURE_LEN)
		return -1;
	/* TPKT */
	*p++ = TPKT_VERSION;
	*p++ = 0;
	*p++ = 0;
	*p++ = X224_NEG_FAILURE_LEN;
	/* X.224 Connection Confirm */
	*p++ = X224_NEG_FAILURE_LEN - 5;
	*p++ = X224_CODE_CC;
	*p++ = 0; *p++ = 0;	/* dst-ref */
	*p++ = 0; *p++ = 0;	/* src-ref */
	*p++ = 0;		/* class 0 */
	/* RDP_NEG_RSP or RDP_NEG_FAILURE */
	*p++ = type;
	*p++ = flags;
	*p++ = NEG_REQ_LEN;
	*p++ = 0;
	*p++ = (uint8_t)(value);
	*p++ = (uint8_t)(value >> 8);
	*p++ = (uint8_t)(value >> 16);
	*p++ = (uint8_t)(value >> 24);
	return X224_NEG_FAILURE_LEN;
}

int
x224_build_neg_failure(uint8_t *out, size_t n, uint32_t failure_code)
{
	return build_confirm(out, n, NEG_TYPE_FAILURE, 0, failure_code);
}

int
x224_build_neg_response(uint8_t *out, size_t n, uint32_t selected_protocol, uint8_t flags)
{
	return build_confirm(out, n, NEG_TYPE_RSP, flags, selected_protocol);
}
