/* mcs: the MCS layer of the connection sequence, server side. See mcs.h. */
#include <string.h>

#include <freerdp/crypto/ber.h>
#include <freerdp/crypto/per.h>
#include <winpr/stream.h>

#include "broker/front/le.h"
#include "broker/front/mcs.h"
#include "broker/front/utf16.h"

#define TPKT_VERSION		3
#define X224_DATA_LEN		3		/* LI 2, code 0xF0 (DT), EOT 0x80 */
#define MCS_CONNECT_INITIAL	101		/* BER application tags */
#define MCS_CONNECT_RESPONSE	102
#define MCS_BASE_CHANNEL	1001		/* PER integer16 minimum of user ids */
#define MCS_SERVER_USER		1002		/* initiator of the server's PDUs */

/* client and server data block types, [MS-RDPBCGR] 2.2.1.3.1 */
#define CS_CORE			0xC001
#define CS_SECURITY		0xC002
#define CS_NET			0xC003
#define CS_CLUSTER		0xC004
#define SC_CORE			0x0C01
#define SC_SECURITY		0x0C02
#define SC_NET			0x0C03
#define CORE_NAME_OFF		20		/* clientName in the core data (after its header) */
#define CORE_NAME_LEN		32
#define CORE_MIN_LEN		128		/* up to imeFileName: RDP 4.0 */
#define CORE_EARLY_OFF		140		/* earlyCapabilityFlags */
#define RDP_VERSION_5_PLUS	0x00080004u

static BYTE t124_oid[6] = { 0, 0, 20, 124, 0, 1 };
static BYTE h221_cs_key[4] = { 'D', 'u', 'c', 'a' };
static BYTE h221_sc_key[4] = { 'M', 'c', 'D', 'n' };

static void
put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

int
mcs_tpkt_length(const uint8_t *buf, size_t len, size_t *need)
{
	size_t n;

	if (buf == NULL || need == NULL)
		return MCS_EINVAL;
	if (len >= 1 && buf[0] != TPKT_VERSION)
		return MCS_ETPKT;
	if (len < MCS_TPKT_HEADER_LEN)
		return MCS_ETRUNCATED;
	n = (size_t)buf[2] << 8 | buf[3];
	if (n < MCS_TPKT_HEADER_LEN + X224_DATA_LEN || n > MCS_PDU_MAX)
		return MCS_ETPKT;
	*need = n;
	return 0;
}

/* The TPKT and X.224 Data headers of a whole PDU: where its MCS part
 * starts (*body) and how long it is. */
static int
frame_open(const uint8_t *pdu, size_t len, const uint8_t **body, size_t *blen)
{
	size_t need;
	int r;

	if (pdu == NULL)
		return MCS_EINVAL;
	if ((r = mcs_tpkt_length(pdu, len, &need)) != 0)
		return r;
	if (need > len)
		return MCS_ETRUNCATED;
	if (need != len)
		return MCS_ETPKT;
	if (pdu[4] != 2 || pdu[5] != 0xF0 || pdu[6] != 0x80)
		return MCS_EX224;
	*body = pdu + MCS_TPKT_HEADER_LEN + X224_DATA_LEN;
	*blen = len - MCS_TPKT_HEADER_LEN - X224_DATA_LEN;
	return 0;
}

static void
frame_close(uint8_t *out, size_t len)
{
	out[0] = TPKT_VERSION;
	out[1] = 0;
	put_be16(out + 2, (uint16_t)len);
	out[4] = 2;
	out[5] = 0xF0;
	out[6] = 0x80;
}

/* Skips n bytes of s, checked. */
static BOOL
stream_skip(wStream *s, size_t n)
{
	if (Stream_GetRemainingLength(s) < n)
		return FALSE;
	Stream_Seek(s, n);
	return TRUE;
}

/* clientName's n bytes of UTF-16LE with each unpaired surrogate made
 * U+FFFD (as FreeRDP reads it): a name is shown, not trusted. */
static void
name_units(const uint8_t *p, size_t n, uint8_t *out)
{
	uint16_t u, next;

	memcpy(out, p, n);
	for (size_t i = 0; i + 1 < n; i += 2) {
		u = le_get16(out + i);
		next = i + 3 < n ? le_get16(out + i + 2) : 0;
		if (u >= 0xd800 && u <= 0xdbff && next >= 0xdc00 && next <= 0xdfff)
			i += 2;		/* a pair */
		else if (u >= 0xd800 && u <= 0xdfff) {
			out[i] = 0xfd;
			out[i + 1] = 0xff;
		}
	}
}

static int
block_core(const uint8_t *p, size_t n, struct mcs_client_data *cd)
{
	uint8_t units[CORE_NAME_LEN];
	char name[sizeof(cd->client_name)];

	if (n < CORE_MIN_LEN)
		return MCS_EBLOCK;
	cd->version = le_get32(p);
	/* all 32 bytes may be name (no U+0000): 16 code units */
	name_units(p + CORE_NAME_OFF, CORE_NAME_LEN, units);
	if (utf16_to_utf8(units, CORE_NAME_LEN, name, sizeof(name)) < 0)
		name[0] = '\0';
	utf8_name_clean(name, cd->client_name, sizeof(cd->client_name));
	if (n >= CORE_EARLY_OFF + 2)
		cd->early_flags = le_get16(p + CORE_EARLY_OFF);
	return 0;
}

/* The client data blocks (TS_UD_HEADER type and length, then the data),
 * [MS-RDPBCGR] 2.2.1.3. Unknown blocks are skipped; CS_CORE is required. */
static int
client_blocks(const uint8_t *p, size_t n, struct mcs_client_data *cd)
{
	uint16_t type, blen;
	int r, core = 0;

	while (n > 0) {
		if (n < 4)
			return MCS_EBLOCK;
		type = le_get16(p);
		blen = le_get16(p + 2);
		if (blen < 4 || blen > n)
			return MCS_EBLOCK;
		switch (type) {
		case CS_CORE:
			if ((r = block_core(p + 4, blen - 4u, cd)) != 0)
				return r;
			core = 1;
			break;
		case CS_SECURITY:
			if (blen < 12)
				return MCS_EBLOCK;
			cd->encryption_methods = le_get32(p + 4);
			break;
		case CS_NET:
			if (blen < 8)
				return MCS_EBLOCK;
			cd->channel_count = le_get32(p + 4);
			if (cd->channel_count > MCS_CHANNELS_MAX ||
			    8u + 12u * cd->channel_count > blen)
				return MCS_EBLOCK;
			break;
		case CS_CLUSTER:
			if (blen < 12)
				return MCS_EBLOCK;
			cd->has_cluster = 1;
			cd->cluster_flags = le_get32(p + 4);
			cd->redirected_session_id = le_get32(p + 8);
			break;
		default:
			break;
		}
		p += blen;
		n -= blen;
	}
	return core ? 0 : MCS_EBLOCK;
}

/* The GCC Conference Create Request (T.124 ConnectData, PER) around the
 * client data blocks. */
static int
gcc_request(wStream *s, struct mcs_client_data *cd)
{
	BYTE choice, selection, sets;
	UINT16 len;

	if (!per_read_choice(s, &choice) || choice != 0 ||
	    !per_read_object_identifier(s, t124_oid) ||
	    !per_read_length(s, &len) ||		/* connectPDU: ignored, as Windows does */
	    !per_read_choice(s, &choice) || choice != 0 ||	/* conferenceCreateRequest */
	    !per_read_selection(s, &selection) || !(selection & 0x08) ||	/* userData present */
	    !per_read_numeric_string(s, 1) ||	/* conferenceName */
	    !per_read_padding(s, 1) ||
	    !per_read_number_of_sets(s, &sets) || sets != 1 ||
	    !per_read_choice(s, &choice) || choice != 0xC0 ||	/* value present, h221NonStandard */
	    !per_read_octet_string(s, h221_cs_key, 4, 4) ||
	    !per_read_length(s, &len))
		return MCS_EGCC;
	if (len > Stream_GetRemainingLength(s))
		return MCS_ETRUNCATED;
	return client_blocks(Stream_Pointer(s), len, cd);
}

int
mcs_parse_connect_initial(const uint8_t *pdu, size_t len, struct mcs_client_data *cd)
{
	const uint8_t *body;
	size_t blen, l;
	wStream s;
	BOOL upward;
	int r, i;

	if (cd == NULL)
		return MCS_EINVAL;
	if ((r = frame_open(pdu, len, &body, &blen)) != 0)
		return r;
	memset(cd, 0, sizeof(*cd));
	Stream_StaticInit(&s, (BYTE *)body, blen);
	if (!ber_read_application_tag(&s, MCS_CONNECT_INITIAL, &l))
		return MCS_EBER;
	if (l > Stream_GetRemainingLength(&s))
		return MCS_ETRUNCATED;
	Stream_SetLength(&s, Stream_GetPosition(&s) + l);
	/* callingDomainSelector, calledDomainSelector, upwardFlag */
	if (!ber_read_octet_string_tag(&s, &l) || !stream_skip(&s, l) ||
	    !ber_read_octet_string_tag(&s, &l) || !stream_skip(&s, l) ||
	    !ber_read_BOOL(&s, &upward))
		return MCS_EBER;
	/* targetParameters, minimumParameters, maximumParameters: not used */
	for (i = 0; i < 3; i++)
		if (!ber_read_sequence_tag(&s, &l) || !stream_skip(&s, l))
			return MCS_EBER;
	if (!ber_read_octet_string_tag(&s, &l))
		return MCS_EBER;
	if (l > Stream_GetRemainingLength(&s))
		return MCS_ETRUNCATED;
	Stream_SetLength(&s, Stream_GetPosition(&s) + l);
	return gcc_request(&s, cd);
}

static void
put_block_header(wStream *s, uint16_t type, uint16_t len)
{
	Stream_Write_UINT16(s, type);
	Stream_Write_UINT16(s, len);
}

int
mcs_build_connect_response(uint8_t *out, size_t n, const struct mcs_client_data *cd,
    uint32_t requested_protocols)
{
	BYTE blocks[128], gcc[192], mcs[320];
	wStream sb, sg, sm;
	size_t nb, ng, nm, len;
	uint32_t i, count;

	if (out == NULL || cd == NULL)
		return MCS_EINVAL;
	if (n < MCS_CONNECT_RESPONSE_MAX)
		return MCS_ESPACE;
	count = cd->channel_count <= MCS_CHANNELS_MAX ? cd->channel_count : 0;
	/* server data blocks: core, network, security (FreeRDP's order) */
	Stream_StaticInit(&sb, blocks, sizeof(blocks));
	put_block_header(&sb, SC_CORE, 16);
	Stream_Write_UINT32(&sb, RDP_VERSION_5_PLUS);
	Stream_Write_UINT32(&sb, requested_protocols);	/* clientRequestedProtocols */
	Stream_Write_UINT32(&sb, 0);			/* earlyCapabilityFlags */
	put_block_header(&sb, SC_NET, (uint16_t)(8 + 2 * count + (count % 2 ? 2 : 0)));
	Stream_Write_UINT16(&sb, MCS_GLOBAL_CHANNEL);
	Stream_Write_UINT16(&sb, (uint16_t)count);
	for (i = 0; i < count; i++)
		Stream_Write_UINT16(&sb, (uint16_t)(MCS_GLOBAL_CHANNEL + 1 + i));
	if (count % 2)
		Stream_Write_UINT16(&sb, 0);
	put_block_header(&sb, SC_SECURITY, 12);
	Stream_Write_UINT32(&sb, 0);			/* ENCRYPTION_METHOD_NONE: TLS */
	Stream_Write_UINT32(&sb, 0);			/* ENCRYPTION_LEVEL_NONE */
	nb = Stream_GetPosition(&sb);
	/* GCC Conference Create Response */
	Stream_StaticInit(&sg, gcc, sizeof(gcc));
	per_write_choice(&sg, 0);
	per_write_object_identifier(&sg, t124_oid);
	per_write_length(&sg, 0x2A);		/* connectPDU: MUST be ignored by the client */
	per_write_choice(&sg, 0x14);		/* conferenceCreateResponse */
	per_write_integer16(&sg, 0x79F3, MCS_BASE_CHANNEL);	/* nodeID */
	per_write_integer(&sg, 1);		/* tag */
	per_write_enumerated(&sg, 0, 0);	/* result: success */
	per_write_number_of_sets(&sg, 1);
	per_write_choice(&sg, 0xC0);
	per_write_octet_string(&sg, h221_sc_key, 4, 4);
	per_write_octet_string(&sg, blocks, (int)nb, 0);
	ng = Stream_GetPosition(&sg);
	/* MCS Connect Response (BER) */
	Stream_StaticInit(&sm, mcs, sizeof(mcs));
	ber_write_enumerated(&sm, 0, 16);	/* result: rt-successful */
	ber_write_integer(&sm, 0);		/* calledConnectId */
	ber_write_sequence_tag(&sm, 26);	/* domainParameters: 8 integers */
	ber_write_integer(&sm, 34);		/* maxChannelIds */
	ber_write_integer(&sm, 3);		/* maxUserIds */
	ber_write_integer(&sm, 0);		/* maxTokenIds */
	ber_write_integer(&sm, 1);		/* numPriorities */
	ber_write_integer(&sm, 0);		/* minThroughput */
	ber_write_integer(&sm, 1);		/* maxHeight */
	ber_write_integer(&sm, 65528);		/* maxMCSPDUsize */
	ber_write_integer(&sm, 2);		/* protocolVersion */
	ber_write_octet_string(&sm, gcc, ng);
	nm = Stream_GetPosition(&sm);
	/* framing, then the application tag in front of the body */
	{
		wStream so;

		Stream_StaticInit(&so, out + 7, n - 7);
		ber_write_application_tag(&so, MCS_CONNECT_RESPONSE, nm);
		Stream_Write(&so, mcs, nm);
		len = 7 + Stream_GetPosition(&so);
	}
	frame_close(out, len);
	return (int)len;
}

int
mcs_parse_domain(const uint8_t *pdu, size_t len, struct mcs_domain_pdu *d)
{
	const uint8_t *p;
	size_t n, dl;
	int r;

	if (d == NULL)
		return MCS_EINVAL;
	if ((r = frame_open(pdu, len, &p, &n)) != 0)
		return r;
	if (n < 1)
		return MCS_ETRUNCATED;
	memset(d, 0, sizeof(*d));
	d->type = (enum mcs_domain_type)(p[0] >> 2);
	switch (d->type) {
	case MCS_ERECT_DOMAIN_REQUEST:
		/* subHeight, subInterval: not read (rdesktop 1.9 sends them as
		 * 16-bit fields, FreeRDP as PER integers) */
	case MCS_ATTACH_USER_REQUEST:
	case MCS_DISCONNECT_PROVIDER_ULTIMATUM:
		return 0;
	case MCS_CHANNEL_JOIN_REQUEST:
		if (n < 5)
			return MCS_ETRUNCATED;
		d->initiator = (uint16_t)(MCS_BASE_CHANNEL + (p[1] << 8 | p[2]));
		d->channel = (uint16_t)(p[3] << 8 | p[4]);
		return 0;
	case MCS_SEND_DATA_REQUEST:
		if (n < 7)
			return MCS_ETRUNCATED;
		d->initiator = (uint16_t)(MCS_BASE_CHANNEL + (p[1] << 8 | p[2]));
		d->channel = (uint16_t)(p[3] << 8 | p[4]);
		/* p[5]: dataPriority, segmentation; then a PER length */
		if (p[6] & 0x80) {
			if (n < 8)
				return MCS_ETRUNCATED;
			dl = (size_t)(p[6] & 0x7f) << 8 | p[7];
			p += 8;
			n -= 8;
		} else {
			dl = p[6];
			p += 7;
			n -= 7;
		}
		if (dl > n)
			return MCS_ETRUNCATED;
		if (dl != n)
			return MCS_ETPKT;
		d->data = p;
		d->data_len = dl;
		return 0;
	default:
		return MCS_ETYPE;
	}
}

int
mcs_build_attach_confirm(uint8_t *out, size_t n, uint16_t user_id)
{
	if (out == NULL || n < 11 || user_id < MCS_BASE_CHANNEL)
		return MCS_ESPACE;
	frame_close(out, 11);
	out[7] = 11 << 2 | 2;		/* attachUserConfirm, initiator present */
	out[8] = 0;			/* rt-successful */
	put_be16(out + 9, (uint16_t)(user_id - MCS_BASE_CHANNEL));
	return 11;
}

int
mcs_build_join_confirm(uint8_t *out, size_t n, uint16_t user_id, uint16_t channel)
{
	if (out == NULL || n < 15 || user_id < MCS_BASE_CHANNEL)
		return MCS_ESPACE;
	frame_close(out, 15);
	out[7] = 15 << 2 | 2;		/* channelJoinConfirm, channelId present */
	out[8] = 0;
	put_be16(out + 9, (uint16_t)(user_id - MCS_BASE_CHANNEL));
	put_be16(out + 11, channel);	/* requested */
	put_be16(out + 13, channel);	/* joined */
	return 15;
}

int
mcs_build_send_data_header(uint8_t *out, size_t n, uint16_t channel, size_t len)
{
	size_t total = MCS_SDIN_HEADER_LEN + len;

	if (out == NULL || len > 0x3fff || total > n)
		return MCS_ESPACE;
	frame_close(out, total);
	out[7] = 26 << 2;		/* sendDataIndication */
	put_be16(out + 8, MCS_SERVER_USER - MCS_BASE_CHANNEL);
	put_be16(out + 10, channel);
	out[12] = 0x70;			/* high priority, begin and end of segment */
	put_be16(out + 13, (uint16_t)(len | 0x8000));	/* always 2 bytes, as FreeRDP */
	return (int)total;
}

const char *
mcs_strerror(int err)
{
	switch (err) {
	case MCS_OK: return "success";
	case MCS_ETRUNCATED: return "truncated";
	case MCS_ETPKT: return "bad TPKT header or length";
	case MCS_EX224: return "not an X.224 Data TPDU";
	case MCS_EBER: return "malformed MCS Connect Initial";
	case MCS_EGCC: return "malformed GCC Conference Create Request";
	case MCS_EBLOCK: return "malformed client data block";
	case MCS_ETYPE: return "unexpected MCS PDU";
	case MCS_ESPACE: return "output buffer too small";
	case MCS_EINVAL: return "invalid argument";
	default: return "unknown error";
	}
}
