/* mcs: pure parsers and builders of the MCS layer of the RDP connection
 * sequence as a redirecting server sees it ([MS-RDPBCGR] 2.2.1.3-2.2.1.9,
 * T.125, T.124): TPKT and X.224 Data framing, the MCS Connect Initial with
 * its GCC Conference Create Request and client data blocks (core, security,
 * network, cluster), the Connect Response with the server data blocks, and
 * the domain PDUs (Erect Domain, Attach User, Channel Join, Send Data).
 * BER and PER through FreeRDP's exported codecs (freerdp/crypto/ber.h,
 * per.h) on winpr streams over the caller's buffers; the only lean-engine
 * file that includes FreeRDP.
 *
 * No I/O, no allocation, no global state: safe from any thread, fuzzable.
 * Every length is checked against the buffer and nothing past len is read.
 * Liberal where real clients deviate and the meaning is clear (the Erect
 * Domain Request's body is not read: rdesktop 1.9 encodes it in 16-bit
 * fields); strict on lengths. Pointers returned point into the caller's
 * buffer and live as long as it does. */
#ifndef TS_MCS_H
#define TS_MCS_H

#include <stddef.h>
#include <stdint.h>

#define MCS_PDU_MAX		16384	/* largest client PDU before the redirect */
#define MCS_TPKT_HEADER_LEN	4
#define MCS_GLOBAL_CHANNEL	1003	/* the I/O channel */
#define MCS_CHANNELS_MAX	31	/* static virtual channels (CS_NET) */
#define MCS_SDIN_HEADER_LEN	15	/* TPKT, X.224, Send Data Indication header */

enum mcs_error {
	MCS_OK = 0,
	MCS_ETRUNCATED = -1,	/* fewer bytes than a length says */
	MCS_ETPKT = -2,		/* not a TPKT header (version 3), or its length out of bounds */
	MCS_EX224 = -3,		/* not an X.224 Data TPDU */
	MCS_EBER = -4,		/* Connect Initial's BER malformed */
	MCS_EGCC = -5,		/* GCC Conference Create Request malformed */
	MCS_EBLOCK = -6,	/* a client data block malformed or missing (core) */
	MCS_ETYPE = -7,		/* a domain PDU this server does not take */
	MCS_ESPACE = -8,	/* output buffer too small */
	MCS_EINVAL = -9,	/* NULL argument */
};

/* What the client data blocks said (what the redirector needs of them). */
struct mcs_client_data {
	uint32_t version;		/* CS_CORE version */
	char client_name[64];		/* CS_CORE clientName, UTF-8, at most 16
					 * code units, control characters '?'
					 * (utf8_name_clean), an unpaired
					 * surrogate U+FFFD */
	uint16_t early_flags;		/* CS_CORE earlyCapabilityFlags (0 if absent) */
	uint32_t encryption_methods;	/* CS_SECURITY (0 if absent) */
	uint32_t channel_count;		/* CS_NET channelCount, <= MCS_CHANNELS_MAX */
	int has_cluster;		/* CS_CLUSTER present */
	uint32_t cluster_flags;		/* its Flags (door.h DOOR_CLUSTER_*) */
	uint32_t redirected_session_id;
};

/* How long the TPKT packet starting at buf is (its header needs
 * MCS_TPKT_HEADER_LEN bytes): 0 with *need set, MCS_ETRUNCATED with fewer
 * bytes, MCS_ETPKT for another first byte (e.g. a fast-path PDU) or a
 * length under 7 or over MCS_PDU_MAX. */
int mcs_tpkt_length(const uint8_t *buf, size_t len, size_t *need);

/* Parses one whole MCS Connect Initial PDU (TPKT included, len its TPKT
 * length) into *cd. 0 or a negative enum mcs_error (*cd unspecified). */
int mcs_parse_connect_initial(const uint8_t *pdu, size_t len, struct mcs_client_data *cd);

/* Writes the MCS Connect Response (TPKT included) for cd: result
 * rt-successful, the server core data echoing requested_protocols (the
 * X.224 request's), no RDP encryption (TLS), the I/O channel 1003 and
 * channels 1004.. for the client's static channels. Returns the length or
 * MCS_ESPACE (n below 512 always is). */
#define MCS_CONNECT_RESPONSE_MAX	512
int mcs_build_connect_response(uint8_t *out, size_t n, const struct mcs_client_data *cd,
    uint32_t requested_protocols);

/* Domain PDU types (DomainMCSPDU choice, T.125) */
enum mcs_domain_type {
	MCS_ERECT_DOMAIN_REQUEST = 1,
	MCS_DISCONNECT_PROVIDER_ULTIMATUM = 8,
	MCS_ATTACH_USER_REQUEST = 10,
	MCS_CHANNEL_JOIN_REQUEST = 14,
	MCS_SEND_DATA_REQUEST = 25,
};

struct mcs_domain_pdu {
	enum mcs_domain_type type;
	uint16_t initiator;		/* Channel Join, Send Data: the user id */
	uint16_t channel;		/* Channel Join: the channel asked for; Send Data: its channel */
	const uint8_t *data;		/* Send Data: the user data, NULL otherwise */
	size_t data_len;
};

/* Parses one whole domain PDU (TPKT included). 0, or a negative enum
 * mcs_error (MCS_ETYPE for a type not listed above). */
int mcs_parse_domain(const uint8_t *pdu, size_t len, struct mcs_domain_pdu *d);

/* Attach User Confirm (result successful, initiator user_id): 11 bytes.
 * Channel Join Confirm for channel: 15 bytes. Both return the length or
 * MCS_ESPACE. */
int mcs_build_attach_confirm(uint8_t *out, size_t n, uint16_t user_id);
int mcs_build_join_confirm(uint8_t *out, size_t n, uint16_t user_id, uint16_t channel);
/* Writes the TPKT, X.224 and Send Data Indication header for a payload of
 * len bytes on channel (the server's initiator) into out, which must hold
 * MCS_SDIN_HEADER_LEN + len; the payload itself goes at out +
 * MCS_SDIN_HEADER_LEN. Returns the whole length, or MCS_ESPACE. */
int mcs_build_send_data_header(uint8_t *out, size_t n, uint16_t channel, size_t len);

/* A static English description of an error code. */
const char *mcs_strerror(int err);

#endif
