/* tlshello: what a TLS ClientHello offers (RFC 8446 4.1.2): its versions
 * (supported_versions, else the legacy version) and cipher suites, for the
 * doors' tls_refused events. Pure, fuzzable; no TLS library. */
#ifndef TS_TLSHELLO_H
#define TS_TLSHELLO_H

#include <stddef.h>
#include <stdint.h>

#define TLSHELLO_VERSIONS_MAX	8
#define TLSHELLO_SUITES_MAX	128

enum tlshello_error {
	TLSHELLO_OK = 0,
	TLSHELLO_EINVAL = -1,		/* not a ClientHello, or cut short */
};

struct tlshello {
	uint16_t versions[TLSHELLO_VERSIONS_MAX];	/* as offered, GREASE left out (may be none) */
	int nversions;
	uint16_t suites[TLSHELLO_SUITES_MAX];		/* as offered, GREASE left out */
	int nsuites;
	int more_suites;				/* 1: more than TLSHELLO_SUITES_MAX */
};

/* Parses a ClientHello message body, with or without its 4-byte handshake
 * header. 0 or TLSHELLO_EINVAL; *h set only on success. */
int tlshello_parse(const uint8_t *buf, size_t len, struct tlshello *h);
/* "TLSv1.2" etc., or NULL for an unknown version. Static. */
const char *tlshello_version_name(uint16_t v);

#endif
