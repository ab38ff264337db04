/* clientinfo: pure parser of the Client Info PDU's payload, the data of an
 * MCS Send Data Request on the I/O channel ([MS-RDPBCGR] 2.2.1.11): the
 * basic security header (flags with SEC_INFO_PKT) and TS_INFO_PACKET up to
 * the working directory (the extended info is not read).
 *
 * The password is not copied anywhere: ci->password_off and password_len
 * tell where it lies in the caller's buffer, so the caller can wipe it
 * (clientinfo_wipe_password) at once. Strings in UTF-16 (INFO_UNICODE) are
 * converted to UTF-8; ANSI ones taken as Latin-1. No I/O, no allocation:
 * fuzzable. Every length is checked against the buffer. */
#ifndef TS_CLIENTINFO_H
#define TS_CLIENTINFO_H

#include <stddef.h>
#include <stdint.h>

#define CLIENTINFO_NAME_MAX	256	/* user, domain: UTF-8 bytes with the NUL */
#define CLIENTINFO_FIELD_MAX	512	/* cbDomain, cbUserName, cbPassword: bytes, at most */

enum clientinfo_error {
	CLIENTINFO_OK = 0,
	CLIENTINFO_ETRUNCATED = -1,	/* a length past the buffer */
	CLIENTINFO_ENOT_INFO = -2,	/* the security header lacks SEC_INFO_PKT */
	CLIENTINFO_ELENGTH = -3,	/* a cb* field odd (UTF-16) or over CLIENTINFO_FIELD_MAX */
	CLIENTINFO_ENAME = -4,		/* a name not valid UTF-16, or too long in UTF-8 */
	CLIENTINFO_EINVAL = -5,
};

struct clientinfo {
	uint32_t code_page;
	uint32_t flags;			/* INFO_* */
	char user[CLIENTINFO_NAME_MAX];	/* UTF-8 */
	char domain[CLIENTINFO_NAME_MAX];
	size_t password_off;		/* where the password lies in the buffer */
	size_t password_len;		/* its bytes (the terminator included) */
};

/* Parses buf[0..len) (the Send Data Request's user data). 0 or a negative
 * enum clientinfo_error; *ci filled on success only, apart from
 * password_off/len, which are set as soon as they are known (so the caller
 * can wipe even after an error: both 0 if unknown). */
int clientinfo_parse(const uint8_t *buf, size_t len, struct clientinfo *ci);
/* Overwrites the password's bytes in buf (as located by clientinfo_parse)
 * with zeros, lengths kept. */
void clientinfo_wipe_password(uint8_t *buf, size_t len, const struct clientinfo *ci);
/* A static English description of an error code. */
const char *clientinfo_strerror(int err);

#endif
