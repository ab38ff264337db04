/* utf16: UTF-16LE <-> UTF-8. See utf16.h. */
#include <string.h>

#include "broker/front/utf16.h"

static int
put_utf8(uint32_t cp, char *out, size_t outlen, size_t *at)
{
	uint8_t b[4];
	size_t n, i;

	if (cp < 0x80) {
		b[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (uint8_t)(0xc0 | (cp >> 6));
		b[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (uint8_t)(0xe0 | (cp >> 12));
		b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (uint8_t)(0xf0 | (cp >> 18));
		b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 4;
	}
	if (*at + n + 1 > outlen)
		return UTF16_ESPACE;
	for (i = 0; i < n; i++)
		out[(*at)++] = (char)b[i];
	return 0;
}

int
utf16_to_utf8(const uint8_t *in, size_t n, char *out, size_t outlen)
{
	size_t i, at = 0;
	uint32_t u, lo;
	int r;

	if (outlen == 0)
		return UTF16_ESPACE;
	out[0] = '\0';
	if (n % 2 != 0)
		return UTF16_EINVAL;
	for (i = 0; i + 1 < n; i += 2) {
		u = (uint32_t)in[i] | (uint32_t)in[i + 1] << 8;
		if (u == 0)
			break;
		if (u >= 0xdc00 && u <= 0xdfff)
			goto bad;
		if (u >= 0xd800 && u <= 0xdbff) {
			if (i + 3 >= n)
				goto bad;
			lo = (uint32_t)in[i + 2] | (uint32_t)in[i + 3] << 8;
			if (lo < 0xdc00 || lo > 0xdfff)
				goto bad;
			u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
			i += 2;
		}
		if ((r = put_utf8(u, out, outlen, &at)) != 0) {
			out[0] = '\0';
			return r;
		}
	}
	out[at] = '\0';
	return (int)at;
 bad:
	out[0] = '\0';
	return UTF16_EINVAL;
}

/* One code point from s[*i]; UTF16_EINVAL for a malformed sequence. */
static int
get_utf8(const unsigned char *s, size_t *i, uint32_t *cp)
{
	unsigned char c = s[*i];
	uint32_t u, min;
	size_t n, k;

	if (c < 0x80) {
		*cp = c;
		(*i)++;
		return 0;
	}
	if ((c & 0xe0) == 0xc0) {
		n = 1; u = c & 0x1f; min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		n = 2; u = c & 0x0f; min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		n = 3; u = c & 0x07; min = 0x10000;
	} else
		return UTF16_EINVAL;
	for (k = 1; k <= n; k++) {
		if ((s[*i + k] & 0xc0) != 0x80)	/* a NUL stops here too */
			return UTF16_EINVAL;
		u = u << 6 | (s[*i + k] & 0x3f);
	}
	if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff))
		return UTF16_EINVAL;
	*i += n + 1;
	*cp = u;
	return 0;
}

static int
put_unit(uint32_t u, uint8_t *out, size_t outlen, size_t *at)
{
	if (out != NULL) {
		if (*at + 2 > outlen)
			return UTF16_ESPACE;
		out[*at] = (uint8_t)u;
		out[*at + 1] = (uint8_t)(u >> 8);
	}
	*at += 2;
	return 0;
}

int
utf8_to_utf16(const char *s, uint8_t *out, size_t outlen)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, at = 0;
	uint32_t cp;
	int r;

	while (p[i] != '\0') {
		if ((r = get_utf8(p, &i, &cp)) != 0)
			return r;
		if (cp >= 0x10000) {
			cp -= 0x10000;
			if ((r = put_unit(0xd800 | (cp >> 10), out, outlen, &at)) != 0 ||
			    (r = put_unit(0xdc00 | (cp & 0x3ff), out, outlen, &at)) != 0)
				return r;
		} else if ((r = put_unit(cp, out, outlen, &at)) != 0)
			return r;
		if (at > 0x7ffffff0)
			return UTF16_ESPACE;
	}
	if ((r = put_unit(0, out, outlen, &at)) != 0)
		return r;
	return (int)at;
}

size_t
utf8_name_clean(const char *s, char *out, size_t outlen)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, at = 0, n;
	uint32_t cp;

	while (p[i] != '\0') {
		size_t from = i;

		if (get_utf8(p, &i, &cp) != 0) {
			i = from + 1;
			cp = '?';
		}
		if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
			cp = '?';
		n = cp == '?' ? 1 : i - from;
		if (at + n + 1 > outlen)
			break;
		if (cp == '?')
			out[at] = '?';
		else
			memcpy(out + at, p + from, n);
		at += n;
	}
	out[at] = '\0';
	return at;
}
