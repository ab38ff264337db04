/* redir_pdu: licensing, redirection and error info PDUs. See redir_pdu.h. */
#include <string.h>

#include "broker/front/mcs.h"
#include "broker/front/redir_pdu.h"
#include "broker/front/utf16.h"

#define SEC_LICENSE_PKT		0x0080
#define SEC_REDIRECTION_PKT	0x0400
#define PDUTYPE_DATAPDU		0x7
#define PDUTYPE_SERVER_REDIR	0xA
#define TS_PROTOCOL_VERSION	0x10
#define PDUTYPE2_SET_ERROR_INFO	0x2F
#define LICENSE_ERROR_ALERT	0xFF
#define PREAMBLE_VERSION_3_0	0x03
#define STATUS_VALID_CLIENT	0x00000007u
#define ST_NO_TRANSITION	0x00000002u
#define BB_ERROR_BLOB		0x0004
#define SERVER_CHANNEL		1002	/* pduSource of the server's data PDUs */
#define SHARE_ID		0x000103EAu

/* A cursor over out with one overflow flag, so builders check once. */
struct wr {
	uint8_t *p;
	size_t n, at;
	int over;
};

static void
w8(struct wr *w, uint8_t v)
{
	if (w->at + 1 > w->n) {
		w->over = 1;
		return;
	}
	w->p[w->at++] = v;
}

static void
w16(struct wr *w, uint16_t v)
{
	w8(w, (uint8_t)v);
	w8(w, (uint8_t)(v >> 8));
}

static void
w32(struct wr *w, uint32_t v)
{
	w16(w, (uint16_t)v);
	w16(w, (uint16_t)(v >> 16));
}

static void
wbytes(struct wr *w, const void *b, size_t len)
{
	if (len > w->n - w->at) {
		w->over = 1;
		return;
	}
	memcpy(w->p + w->at, b, len);
	w->at += len;
}

/* The payload starts after the Send Data Indication header. */
static int
wr_open(struct wr *w, uint8_t *out, size_t n)
{
	if (out == NULL || n < MCS_SDIN_HEADER_LEN)
		return REDIR_ESPACE;
	w->p = out;
	w->n = n;
	w->at = MCS_SDIN_HEADER_LEN;
	w->over = 0;
	return 0;
}

static int
wr_close(struct wr *w)
{
	if (w->over || mcs_build_send_data_header(w->p, w->n, MCS_GLOBAL_CHANNEL,
	    w->at - MCS_SDIN_HEADER_LEN) < 0)
		return REDIR_ESPACE;
	return (int)w->at;
}

int
redir_build_license_valid(uint8_t *out, size_t n)
{
	struct wr w;
	int r;

	if ((r = wr_open(&w, out, n)) != 0)
		return r;
	w16(&w, SEC_LICENSE_PKT);		/* basic security header */
	w16(&w, 0);
	w8(&w, LICENSE_ERROR_ALERT);		/* preamble */
	w8(&w, PREAMBLE_VERSION_3_0);
	w16(&w, 16);				/* wMsgSize: preamble included */
	w32(&w, STATUS_VALID_CLIENT);
	w32(&w, ST_NO_TRANSITION);
	w16(&w, BB_ERROR_BLOB);			/* bbErrorInfo, empty */
	w16(&w, 0);
	return wr_close(&w);
}

int
redir_build_error_info(uint8_t *out, size_t n, uint32_t errinfo)
{
	struct wr w;
	int r;

	if ((r = wr_open(&w, out, n)) != 0)
		return r;
	w16(&w, 6 + 12 + 4);			/* share control header: totalLength */
	w16(&w, PDUTYPE_DATAPDU | TS_PROTOCOL_VERSION);
	w16(&w, SERVER_CHANNEL);
	w32(&w, SHARE_ID);			/* share data header */
	w8(&w, 0);				/* pad1 */
	w8(&w, 1);				/* STREAM_LOW */
	w16(&w, 4);				/* uncompressedLength (the body, as FreeRDP) */
	w8(&w, PDUTYPE2_SET_ERROR_INFO);
	w8(&w, 0);				/* compressedType */
	w16(&w, 0);				/* compressedLength */
	w32(&w, errinfo);
	return wr_close(&w);
}

/* A UTF-16 string field: its length (terminator included), then it. */
static int
wstring(struct wr *w, const char *s, int max)
{
	uint8_t buf[REDIR_FQDN_MAX];
	int len;

	if ((len = utf8_to_utf16(s, NULL, 0)) < 0)
		return REDIR_ENAME;
	if (len > max || len > (int)sizeof(buf))
		return REDIR_ETOO_LONG;
	len = utf8_to_utf16(s, buf, sizeof(buf));
	w32(w, (uint32_t)len);
	wbytes(w, buf, (size_t)len);
	return 0;
}

static int
present(const char *s)
{
	return s != NULL && s[0] != '\0';
}

int
redir_build_redirect(uint8_t *out, size_t n, const struct redir_target *t)
{
	static const char prefix[] = "Cookie: msts=";
	size_t len_at, start, tok;
	uint32_t flags = 0;
	struct wr w;
	int r, dlen;

	if (t == NULL)
		return REDIR_EINVAL;
	if (!present(t->address) && !present(t->routing_token))
		return REDIR_ENOTARGET;
	if ((r = wr_open(&w, out, n)) != 0)
		return r;
	if (present(t->routing_token))
		flags |= REDIR_LB_LOAD_BALANCE_INFO;
	else {
		flags |= REDIR_LB_TARGET_NET_ADDRESS | REDIR_LB_TARGET_NET_ADDRESSES;
		if (present(t->fqdn))
			flags |= REDIR_LB_TARGET_FQDN;
	}
	/* user and domain always, empty ones too: rdesktop 1.9 crashes on a
	 * redirect without either (as Windows, which always sends both) */
	if (t->user == NULL || t->domain == NULL)
		return REDIR_EINVAL;
	flags |= REDIR_LB_USERNAME;
	if ((dlen = utf8_to_utf16(t->domain, NULL, 0)) < 0)
		return REDIR_ENAME;
	if (dlen <= REDIR_DOMAIN_MAX)
		flags |= REDIR_LB_DOMAIN;
	w16(&w, 0);				/* share control header: totalLength, below */
	w16(&w, PDUTYPE_SERVER_REDIR | TS_PROTOCOL_VERSION);
	w16(&w, 0);				/* pduSource (as FreeRDP's server) */
	w16(&w, 0);				/* pad2Octets */
	start = w.at;
	w16(&w, SEC_REDIRECTION_PKT);
	len_at = w.at;
	w16(&w, 0);				/* Length, below */
	w32(&w, t->session_id);
	w32(&w, flags);
	if ((flags & REDIR_LB_TARGET_NET_ADDRESS) &&
	    (r = wstring(&w, t->address, REDIR_ADDRESS_MAX)) != 0)
		return r;
	if (flags & REDIR_LB_LOAD_BALANCE_INFO) {
		tok = strlen(t->routing_token);
		if (tok > 256)
			return REDIR_ETOO_LONG;
		w32(&w, (uint32_t)(sizeof(prefix) - 1 + tok + 2));
		wbytes(&w, prefix, sizeof(prefix) - 1);
		wbytes(&w, t->routing_token, tok);
		w8(&w, '\r');
		w8(&w, '\n');
	}
	if ((flags & REDIR_LB_USERNAME) && (r = wstring(&w, t->user, REDIR_USER_MAX)) != 0)
		return r;
	if ((flags & REDIR_LB_DOMAIN) && (r = wstring(&w, t->domain, REDIR_DOMAIN_MAX)) != 0)
		return r;
	if ((flags & REDIR_LB_TARGET_FQDN) && (r = wstring(&w, t->fqdn, REDIR_FQDN_MAX)) != 0)
		return r;
	if (flags & REDIR_LB_TARGET_NET_ADDRESSES) {
		/* TargetNetAddressesLength counts addressCount and the one
		 * TARGET_NET_ADDRESS: 4 + 4 + its bytes */
		w32(&w, (uint32_t)(8 + utf8_to_utf16(t->address, NULL, 0)));
		w32(&w, 1);
		if ((r = wstring(&w, t->address, REDIR_ADDRESS_MAX)) != 0)
			return r;
	}
	if (w.over || w.at - start > 0xffff)
		return REDIR_ESPACE;
	out[len_at] = (uint8_t)(w.at - start);
	out[len_at + 1] = (uint8_t)((w.at - start) >> 8);
	wbytes(&w, "\0\0\0\0\0\0\0\0", 8);	/* Pad */
	if (w.over)
		return REDIR_ESPACE;
	/* totalLength: the share control header and all that follows */
	out[MCS_SDIN_HEADER_LEN] = (uint8_t)(w.at - MCS_SDIN_HEADER_LEN);
	out[MCS_SDIN_HEADER_LEN + 1] = (uint8_t)((w.at - MCS_SDIN_HEADER_LEN) >> 8);
	return wr_close(&w);
}

const char *
redir_strerror(int err)
{
	switch (err) {
	case REDIR_OK: return "success";
	case REDIR_ESPACE: return "output buffer too small";
	case REDIR_ENAME: return "a name is not valid UTF-8";
	case REDIR_ETOO_LONG: return "address, token, user or FQDN too long for the redirect";
	case REDIR_ENOTARGET: return "no address and no routing token";
	case REDIR_EINVAL: return "invalid argument";
	default: return "unknown error";
	}
}
