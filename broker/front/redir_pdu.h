/* redir_pdu: pure builders of what a redirecting server sends after Client
 * Info ([MS-RDPBCGR]): the licensing "valid client" Error Alert (2.2.1.12,
 * STATUS_VALID_CLIENT), the Enhanced Security Server Redirection PDU
 * (2.2.13.3.1) and the Set Error Info PDU (2.2.5.1.1), each a whole TPKT
 * packet in an MCS Send Data Indication on the I/O channel, unencrypted (TLS
 * carries them). Strings go out as UTF-16LE with the terminator counted in
 * their lengths, for any name. No I/O, no allocation, fuzzable. */
#ifndef TS_REDIR_PDU_H
#define TS_REDIR_PDU_H

#include <stddef.h>
#include <stdint.h>

#define REDIR_PDU_MAX		4096	/* any PDU built here fits */
/* what FreeRDP 2.11's client accepts, in bytes with the terminator */
#define REDIR_ADDRESS_MAX	80
#define REDIR_USER_MAX		512
#define REDIR_DOMAIN_MAX	52
#define REDIR_FQDN_MAX		512

enum redir_error {
	REDIR_OK = 0,
	REDIR_ESPACE = -1,	/* out too small */
	REDIR_ENAME = -2,	/* a string not valid UTF-8 */
	REDIR_ETOO_LONG = -3,	/* address, token, user or FQDN over its limit */
	REDIR_ENOTARGET = -4,	/* neither an address nor a routing token */
	REDIR_EINVAL = -5,
};

/* Where the client goes. Strings are UTF-8, NULL or "" when absent. */
struct redir_target {
	uint32_t session_id;		/* SessionID (0: none) */
	const char *address;		/* TargetNetAddress, also the one TargetNetAddresses entry */
	const char *routing_token;	/* token mode: LoadBalanceInfo "Cookie: msts=<this>\r\n" */
	const char *user;		/* LB_USERNAME, required ("" allowed) */
	const char *domain;		/* LB_DOMAIN, required ("" allowed); left out if over
					 * REDIR_DOMAIN_MAX: FreeRDP's client then keeps its
					 * own, rdesktop 1.9 crashes (it needs both) */
	const char *fqdn;		/* LB_TARGET_FQDN */
};

/* Each returns the packet's length or a negative enum redir_error. */
int redir_build_license_valid(uint8_t *out, size_t n);
int redir_build_redirect(uint8_t *out, size_t n, const struct redir_target *t);
int redir_build_error_info(uint8_t *out, size_t n, uint32_t errinfo);
/* A static English description of an error code. */
const char *redir_strerror(int err);

/* The redirection's flags (RedirFlags), for tests and the fuzz target. */
#define REDIR_LB_TARGET_NET_ADDRESS	0x00000001u
#define REDIR_LB_LOAD_BALANCE_INFO	0x00000002u
#define REDIR_LB_USERNAME		0x00000004u
#define REDIR_LB_DOMAIN			0x00000008u
#define REDIR_LB_TARGET_FQDN		0x00000100u
#define REDIR_LB_TARGET_NET_ADDRESSES	0x00000800u

#endif
