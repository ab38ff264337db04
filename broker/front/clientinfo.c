/* clientinfo: the Client Info PDU. See clientinfo.h. */
#include <string.h>

#include "broker/front/clientinfo.h"
#include "broker/front/le.h"
#include "broker/front/utf16.h"

#define SEC_INFO_PKT		0x0040
#define INFO_UNICODE		0x00000010u
#define INFO_FIXED_LEN		18	/* CodePage .. cbWorkingDir */

/* A name of cb bytes (without its terminator) into out. */
static int
take_name(const uint8_t *p, size_t cb, int unicode, char *out, size_t n)
{
	size_t i, at = 0;

	if (unicode)
		return utf16_to_utf8(p, cb, out, n) < 0 ? CLIENTINFO_ENAME : 0;
	for (i = 0; i < cb && p[i] != '\0'; i++) {	/* Latin-1 */
		if (at + (p[i] < 0x80 ? 1 : 2) + 1 > n)
			return CLIENTINFO_ENAME;
		if (p[i] < 0x80)
			out[at++] = (char)p[i];
		else {
			out[at++] = (char)(0xc0 | p[i] >> 6);
			out[at++] = (char)(0x80 | (p[i] & 0x3f));
		}
	}
	out[at] = '\0';
	return 0;
}

int
clientinfo_parse(const uint8_t *buf, size_t len, struct clientinfo *ci)
{
	size_t cb[5], at, term, i;
	uint32_t flags;
	int unicode, r;

	if (buf == NULL || ci == NULL)
		return CLIENTINFO_EINVAL;
	ci->password_off = ci->password_len = 0;
	if (len < 4 + INFO_FIXED_LEN)
		return CLIENTINFO_ETRUNCATED;
	if (!(le_get16(buf) & SEC_INFO_PKT))
		return CLIENTINFO_ENOT_INFO;
	flags = le_get32(buf + 8);
	unicode = (flags & INFO_UNICODE) != 0;
	term = unicode ? 2 : 1;
	/* cbDomain, cbUserName, cbPassword, cbAlternateShell, cbWorkingDir */
	for (i = 0; i < 5; i++) {
		cb[i] = le_get16(buf + 12 + 2 * i);
		if ((unicode && cb[i] % 2 != 0) || (i < 3 && cb[i] > CLIENTINFO_FIELD_MAX))
			return CLIENTINFO_ELENGTH;
	}
	at = 4 + INFO_FIXED_LEN;
	/* domain, user, password: each followed by its terminator */
	if (cb[0] + term > len - at || cb[1] + term > len - at - cb[0] - term ||
	    cb[2] + term > len - at - cb[0] - cb[1] - 2 * term)
		return CLIENTINFO_ETRUNCATED;
	ci->password_off = at + cb[0] + cb[1] + 2 * term;
	ci->password_len = cb[2] + term;
	if (cb[3] + cb[4] + 2 * term > len - ci->password_off - ci->password_len)
		return CLIENTINFO_ETRUNCATED;
	if ((r = take_name(buf + at, cb[0], unicode, ci->domain, sizeof(ci->domain))) != 0 ||
	    (r = take_name(buf + at + cb[0] + term, cb[1], unicode, ci->user,
	    sizeof(ci->user))) != 0)
		return r;
	ci->code_page = le_get32(buf + 4);
	ci->flags = flags;
	return 0;
}

void
clientinfo_wipe_password(uint8_t *buf, size_t len, const struct clientinfo *ci)
{
	volatile uint8_t *p;
	size_t i;

	if (buf == NULL || ci == NULL || ci->password_off > len ||
	    ci->password_len > len - ci->password_off)
		return;
	p = buf + ci->password_off;
	for (i = 0; i < ci->password_len; i++)
		p[i] = 0;
}

const char *
clientinfo_strerror(int err)
{
	switch (err) {
	case CLIENTINFO_OK: return "success";
	case CLIENTINFO_ETRUNCATED: return "Client Info truncated";
	case CLIENTINFO_ENOT_INFO: return "not a Client Info PDU";
	case CLIENTINFO_ELENGTH: return "Client Info field length out of bounds";
	case CLIENTINFO_ENAME: return "user or domain name invalid or too long";
	case CLIENTINFO_EINVAL: return "invalid argument";
	default: return "unknown error";
	}
}
