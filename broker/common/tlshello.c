/* tlshello: ClientHello parsing. See tlshello.h. */
#include <string.h>

#include "broker/common/tlshello.h"

#define HS_CLIENT_HELLO		1
#define EXT_SUPPORTED_VERSIONS	43

/* GREASE values (RFC 8701): 0x?a?a with both bytes equal */
static int
grease(uint16_t v)
{
	return (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff);
}

static uint16_t
be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

const char *
tlshello_version_name(uint16_t v)
{
	switch (v) {
	case 0x0300: return "SSLv3";
	case 0x0301: return "TLSv1.0";
	case 0x0302: return "TLSv1.1";
	case 0x0303: return "TLSv1.2";
	case 0x0304: return "TLSv1.3";
	default: return NULL;
	}
}

/* The supported_versions extension's list into h. */
static int
parse_versions(const uint8_t *p, size_t len, struct tlshello *h)
{
	size_t n;

	if (len < 1 || (n = p[0]) + 1 > len || n % 2 != 0)
		return TLSHELLO_EINVAL;
	h->nversions = 0;
	for (size_t i = 1; i + 1 < n + 1; i += 2)
		if (!grease(be16(p + i)) && h->nversions < TLSHELLO_VERSIONS_MAX)
			h->versions[h->nversions++] = be16(p + i);
	return 0;
}

int
tlshello_parse(const uint8_t *buf, size_t len, struct tlshello *out)
{
	struct tlshello h;
	size_t off = 0, n, end;

	memset(&h, 0, sizeof(h));
	/* with its handshake header: type 1 and a 3-byte length */
	if (len >= 4 && buf[0] == HS_CLIENT_HELLO &&
	    ((size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3]) == len - 4)
		off = 4;
	/* legacy_version, random */
	if (len < off + 2 + 32 + 1)
		return TLSHELLO_EINVAL;
	h.versions[h.nversions++] = be16(buf + off);
	off += 2 + 32;
	/* legacy_session_id */
	off += 1 + buf[off];
	if (off + 2 > len || off + 2 + (n = be16(buf + off)) > len || n % 2 != 0)
		return TLSHELLO_EINVAL;
	off += 2;
	for (size_t i = 0; i < n; i += 2) {
		if (grease(be16(buf + off + i)))
			continue;
		if (h.nsuites < TLSHELLO_SUITES_MAX)
			h.suites[h.nsuites++] = be16(buf + off + i);
		else
			h.more_suites = 1;
	}
	off += n;
	/* legacy_compression_methods */
	if (off + 1 > len || off + 1 + buf[off] > len)
		return TLSHELLO_EINVAL;
	off += 1 + buf[off];
	/* extensions (none before TLS 1.0's) */
	if (off + 2 <= len) {
		if (off + 2 + (n = be16(buf + off)) > len)
			return TLSHELLO_EINVAL;
		off += 2;
		for (end = off + n; off + 4 <= end; off += 4 + be16(buf + off + 2)) {
			if (off + 4 + be16(buf + off + 2) > end)
				return TLSHELLO_EINVAL;
			if (be16(buf + off) == EXT_SUPPORTED_VERSIONS &&
			    parse_versions(buf + off + 4, be16(buf + off + 2), &h) != 0)
				return TLSHELLO_EINVAL;
		}
	}
	*out = h;
	return 0;
}
