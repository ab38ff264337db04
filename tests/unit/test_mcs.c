/* Unit tests for broker/front/mcs.c on the real PDUs of three clients
 * (lean_fx.h) and MS-RDPBCGR section 4.1's annotated dumps (Microsoft's
 * client, standard RDP security: its Connect Initial is not encrypted),
 * then truncations, bad lengths and the builders' bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "broker/front/door.h"
#include "broker/front/mcs.h"
#include "broker/front/utf16.h"
#include "lean_fx.h"

static void
load_pdu(const char *client, const char *pdu, struct lean_fx *fx)
{
	char name[128];

	snprintf(name, sizeof(name), "%s-%s.bin", client, pdu);
	lean_fx_load(name, fx);
}

static void
test_connect_initial_real(void **state)
{
	struct mcs_client_data cd;
	struct lean_fx fx;
	size_t i;

	for (i = 0; i < 3; i++) {
		load_pdu(lean_fx_clients[i], "00-connect-initial", &fx);
		assert_int_equal(mcs_parse_connect_initial(fx.buf, fx.len, &cd), 0);
		assert_true(cd.version >= 0x00080001);
		assert_true(cd.has_cluster);
		assert_true(cd.cluster_flags & DOOR_CLUSTER_REDIRECTION_SUPPORTED);
		assert_true(cd.channel_count <= MCS_CHANNELS_MAX);
		assert_true(cd.client_name[0] != '\0');
	}
	/* xfreerdp asks for four static channels, rdesktop five (it joins its
	 * user channel, the I/O channel and these) */
	load_pdu("xfreerdp", "00-connect-initial", &fx);
	assert_int_equal(mcs_parse_connect_initial(fx.buf, fx.len, &cd), 0);
	assert_int_equal(cd.channel_count, 4);
	load_pdu("rdesktop", "00-connect-initial", &fx);
	assert_int_equal(mcs_parse_connect_initial(fx.buf, fx.len, &cd), 0);
	assert_int_equal(cd.channel_count, 5);
}

/* MS-RDPBCGR 4.1.3: mstsc's Connect Initial (clientName ELTONS-DEV2, three
 * channels, cluster flags 0x0d), 4.1.8.2.1 a Channel Join, and the confirms
 * of 4.1.7 and 4.1.9 byte for byte from the builders */
static void
test_msrdpbcgr_examples(void **state)
{
	static const uint8_t auc[] = { 3, 0, 0, 11, 2, 0xf0, 0x80, 0x2e, 0, 0, 6 };
	static const uint8_t cjc[] = { 3, 0, 0, 15, 2, 0xf0, 0x80, 0x3e, 0, 0, 6, 0x03, 0xef,
	    0x03, 0xef };
	struct mcs_client_data cd;
	struct mcs_domain_pdu d;
	uint8_t out[16];
	struct lean_fx fx;

	lean_fx_load("msrdpbcgr-4.1.3-connect-initial.bin", &fx);
	assert_int_equal(mcs_parse_connect_initial(fx.buf, fx.len, &cd), 0);
	assert_string_equal(cd.client_name, "ELTONS-DEV2");
	assert_int_equal(cd.version, 0x00080004);
	assert_int_equal(cd.channel_count, 3);
	assert_true(cd.has_cluster);
	assert_int_equal(cd.cluster_flags, 0x0d);
	assert_int_equal(cd.encryption_methods, 0x1b);
	lean_fx_load("msrdpbcgr-4.1.8.2.1-channel-join.bin", &fx);
	assert_int_equal(mcs_parse_domain(fx.buf, fx.len, &d), 0);
	assert_int_equal(d.type, MCS_CHANNEL_JOIN_REQUEST);
	assert_int_equal(d.initiator, 1007);
	assert_int_equal(d.channel, 1003);
	assert_int_equal(mcs_build_attach_confirm(out, sizeof(out), 1007), sizeof(auc));
	assert_memory_equal(out, auc, sizeof(auc));
	assert_int_equal(mcs_build_join_confirm(out, sizeof(out), 1007, 1007), sizeof(cjc));
	assert_memory_equal(out, cjc, sizeof(cjc));
}

/* Every shorter prefix, with the TPKT length fixed up or not, is refused
 * (never read past len: ASan in make asan-test). */
static void
test_connect_initial_truncated(void **state)
{
	struct mcs_client_data cd;
	struct lean_fx fx, cut;
	size_t i, n;

	for (i = 0; i < 3; i++) {
		load_pdu(lean_fx_clients[i], "00-connect-initial", &fx);
		for (n = 0; n < fx.len; n++) {
			memcpy(&cut, &fx, sizeof(fx));
			cut.len = n;
			assert_int_not_equal(mcs_parse_connect_initial(cut.buf, cut.len, &cd), 0);
			if (n >= 7) {
				lean_fx_set_len(&cut, n);
				assert_int_not_equal(mcs_parse_connect_initial(cut.buf, cut.len, &cd), 0);
			}
		}
	}
}

static void
test_connect_initial_bad_fields(void **state)
{
	struct mcs_client_data cd;
	struct lean_fx fx, bad;

	load_pdu("xfreerdp", "00-connect-initial", &fx);
	memcpy(&bad, &fx, sizeof(fx));
	bad.buf[0] = 0x30;			/* fast-path, not TPKT */
	assert_int_equal(mcs_parse_connect_initial(bad.buf, bad.len, &cd), MCS_ETPKT);
	memcpy(&bad, &fx, sizeof(fx));
	bad.buf[5] = 0xE0;			/* not a Data TPDU */
	assert_int_equal(mcs_parse_connect_initial(bad.buf, bad.len, &cd), MCS_EX224);
	memcpy(&bad, &fx, sizeof(fx));
	bad.buf[8] = 0x66;			/* Connect Response's tag */
	assert_int_equal(mcs_parse_connect_initial(bad.buf, bad.len, &cd), MCS_EBER);
	/* a PDU longer than its TPKT says */
	memcpy(&bad, &fx, sizeof(fx));
	bad.len = fx.len + 1;
	assert_int_equal(mcs_parse_connect_initial(bad.buf, bad.len, &cd), MCS_ETPKT);
	assert_int_equal(mcs_parse_connect_initial(NULL, 0, &cd), MCS_EINVAL);
}

static void
test_tpkt_length(void **state)
{
	uint8_t b[4] = { 3, 0, 0x01, 0x59 };
	size_t need = 0;

	assert_int_equal(mcs_tpkt_length(b, 3, &need), MCS_ETRUNCATED);
	assert_int_equal(mcs_tpkt_length(b, 4, &need), 0);
	assert_int_equal(need, 0x159);
	b[2] = 0x40;				/* 16384 + 0x59: over MCS_PDU_MAX */
	assert_int_equal(mcs_tpkt_length(b, 4, &need), MCS_ETPKT);
	b[2] = 0; b[3] = 6;
	assert_int_equal(mcs_tpkt_length(b, 4, &need), MCS_ETPKT);
	b[0] = 0x44;
	assert_int_equal(mcs_tpkt_length(b, 1, &need), MCS_ETPKT);
}

static void
test_domain_real(void **state)
{
	static const char *const seq[] = { "01-erect-domain", "02-attach-user", "03-channel-join" };
	static const enum mcs_domain_type want[] = { MCS_ERECT_DOMAIN_REQUEST,
	    MCS_ATTACH_USER_REQUEST, MCS_CHANNEL_JOIN_REQUEST };
	struct mcs_domain_pdu d;
	struct lean_fx fx;
	size_t i, k;

	for (i = 0; i < 3; i++)
		for (k = 0; k < 3; k++) {
			load_pdu(lean_fx_clients[i], seq[k], &fx);
			assert_int_equal(mcs_parse_domain(fx.buf, fx.len, &d), 0);
			assert_int_equal(d.type, want[k]);
		}
	/* the first join is for the user channel the confirm assigned */
	load_pdu("xfreerdp", "03-channel-join", &fx);
	assert_int_equal(mcs_parse_domain(fx.buf, fx.len, &d), 0);
	assert_int_equal(d.initiator, 1008);
	assert_int_equal(d.channel, 1008);
	/* Client Info rides a Send Data Request on the I/O channel */
	lean_fx_load("rdesktop-client-info.bin", &fx);
	assert_int_equal(mcs_parse_domain(fx.buf, fx.len, &d), 0);
	assert_int_equal(d.type, MCS_SEND_DATA_REQUEST);
	assert_int_equal(d.channel, MCS_GLOBAL_CHANNEL);
	assert_ptr_equal(d.data + d.data_len, fx.buf + fx.len);
}

/* rdesktop 1.9's Erect Domain Request (16-bit subHeight and subInterval,
 * which FreeRDP's server refuses) and FreeRDP's (PER integers) */
static void
test_erect_domain_both_encodings(void **state)
{
	static const uint8_t rdesktop[] = { 3, 0, 0, 12, 2, 0xF0, 0x80, 0x04, 0, 1, 0, 1 };
	static const uint8_t freerdp[] = { 3, 0, 0, 12, 2, 0xF0, 0x80, 0x04, 1, 0, 1, 0 };
	struct mcs_domain_pdu d;
	struct lean_fx fx;

	assert_int_equal(mcs_parse_domain(rdesktop, sizeof(rdesktop), &d), 0);
	assert_int_equal(d.type, MCS_ERECT_DOMAIN_REQUEST);
	assert_int_equal(mcs_parse_domain(freerdp, sizeof(freerdp), &d), 0);
	lean_fx_load("rdesktop-01-erect-domain.bin", &fx);
	assert_memory_equal(fx.buf, rdesktop, sizeof(rdesktop));
}

static void
test_domain_bad(void **state)
{
	uint8_t join[] = { 3, 0, 0, 12, 2, 0xF0, 0x80, 0x38, 0, 7, 0x03 };
	uint8_t sdrq[] = { 3, 0, 0, 16, 2, 0xF0, 0x80, 0x64, 0, 7, 0x03, 0xEB, 0x70, 0x02, 0xAA, 0xBB };
	uint8_t other[] = { 3, 0, 0, 8, 2, 0xF0, 0x80, 0x2C };	/* Attach User Confirm */
	struct mcs_domain_pdu d;

	join[3] = sizeof(join);
	assert_int_equal(mcs_parse_domain(join, sizeof(join), &d), MCS_ETRUNCATED);
	assert_int_equal(mcs_parse_domain(sdrq, sizeof(sdrq), &d), 0);
	assert_int_equal(d.data_len, 2);
	sdrq[13] = 3;				/* longer than what is there */
	assert_int_equal(mcs_parse_domain(sdrq, sizeof(sdrq), &d), MCS_ETRUNCATED);
	sdrq[13] = 1;				/* shorter: a byte left over */
	assert_int_equal(mcs_parse_domain(sdrq, sizeof(sdrq), &d), MCS_ETPKT);
	assert_int_equal(mcs_parse_domain(other, sizeof(other), &d), MCS_ETYPE);
}

static void
test_builders(void **state)
{
	static const uint8_t attach[] = { 3, 0, 0, 11, 2, 0xF0, 0x80, 0x2E, 0, 0, 7 };
	static const uint8_t join[] = { 3, 0, 0, 15, 2, 0xF0, 0x80, 0x3E, 0, 0, 7, 0x03, 0xEB,
	    0x03, 0xEB };
	uint8_t out[MCS_CONNECT_RESPONSE_MAX];
	struct mcs_client_data cd;
	int n;

	assert_int_equal(mcs_build_attach_confirm(out, sizeof(out), 1008), 11);
	assert_memory_equal(out, attach, sizeof(attach));
	assert_int_equal(mcs_build_join_confirm(out, sizeof(out), 1008, 1003), 15);
	assert_memory_equal(out, join, sizeof(join));
	assert_int_equal(mcs_build_join_confirm(out, 14, 1008, 1003), MCS_ESPACE);
	memset(&cd, 0, sizeof(cd));
	cd.channel_count = 3;
	n = mcs_build_connect_response(out, sizeof(out), &cd, 0x3);
	assert_true(n > 0 && n < MCS_CONNECT_RESPONSE_MAX);
	assert_int_equal(out[2] << 8 | out[3], n);
	assert_int_equal(out[7], 0x7F);
	assert_int_equal(out[8], 0x66);
	/* SC_NET: the I/O channel, three channels 1004..1006 and the pad */
	{
		static const uint8_t net[] = { 0x03, 0x0C, 16, 0, 0xEB, 0x03, 3, 0, 0xEC, 0x03,
		    0xED, 0x03, 0xEE, 0x03, 0, 0 };
		int i, found = 0;

		for (i = 0; i + (int)sizeof(net) <= n; i++)
			if (memcmp(out + i, net, sizeof(net)) == 0)
				found = 1;
		assert_true(found);
	}
	assert_int_equal(mcs_build_connect_response(out, 100, &cd, 3), MCS_ESPACE);
	assert_int_equal(mcs_build_send_data_header(out, 20, 1003, 6), MCS_ESPACE);
	assert_int_equal(mcs_build_send_data_header(out, 21, 1003, 6), 21);
	assert_string_equal(mcs_strerror(MCS_EGCC), "malformed GCC Conference Create Request");
}

/* xfreerdp's Connect Initial with its clientName's 32 bytes replaced by
 * name (UTF-16LE code units, n of them, the rest zero), parsed. */
static int
parse_with_name(const uint16_t *name, size_t n, struct mcs_client_data *cd)
{
	static const uint8_t core[] = { 0x01, 0xc0 };	/* CS_CORE, little-endian */
	struct lean_fx fx;
	uint8_t *p = NULL;

	load_pdu("xfreerdp", "00-connect-initial", &fx);
	for (size_t i = 0; i + 2 < fx.len; i++)
		if (memcmp(fx.buf + i, core, 2) == 0 && fx.buf[i + 2] >= 128) {
			p = fx.buf + i + 4 + 20;	/* header, then clientName at 20 */
			break;
		}
	assert_non_null(p);
	memset(p, 0, 32);
	for (size_t i = 0; i < n && i < 16; i++) {
		p[2 * i] = (uint8_t)name[i];
		p[2 * i + 1] = (uint8_t)(name[i] >> 8);
	}
	return mcs_parse_connect_initial(fx.buf, fx.len, cd);
}

/* Odd client names: empty, all 16 code units (no terminator), control
 * characters (C0, DEL, C1) replaced, non-ASCII and markup kept as they
 * are (escaping is the edges' job), an unpaired surrogate U+FFFD. */
static void
test_client_name_odd(void **state)
{
	static const uint16_t full[16] = { 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J',
	    'K', 'L', 'M', 'N', 'O', 'P' };
	static const uint16_t ctl[] = { 'A', 0x01, 'B', 0x1b, '[', '2', 'J', 0x7f, 0x85, 'C' };
	static const uint16_t uni[] = { 0x041f, 0x041a, '-', 0xe9, 0xd83d, 0xde00 };
	static const uint16_t tag[] = { '<', 'b', '>', '&', '"', '\'' };
	static const uint16_t bad[] = { 'A', 0xd800, 'B' };
	struct mcs_client_data cd;

	assert_int_equal(parse_with_name(NULL, 0, &cd), 0);
	assert_string_equal(cd.client_name, "");
	assert_int_equal(parse_with_name(full, 16, &cd), 0);
	assert_string_equal(cd.client_name, "ABCDEFGHIJKLMNOP");
	assert_int_equal(parse_with_name(ctl, sizeof(ctl) / 2, &cd), 0);
	assert_string_equal(cd.client_name, "A?B?[2J??C");
	assert_int_equal(parse_with_name(uni, sizeof(uni) / 2, &cd), 0);
	assert_string_equal(cd.client_name, "\xd0\x9f\xd0\x9a-\xc3\xa9\xf0\x9f\x98\x80");
	assert_int_equal(parse_with_name(tag, sizeof(tag) / 2, &cd), 0);
	assert_string_equal(cd.client_name, "<b>&\"'");
	assert_int_equal(parse_with_name(bad, sizeof(bad) / 2, &cd), 0);
	assert_string_equal(cd.client_name, "A\xef\xbf\xbd" "B");
	assert_int_equal(parse_with_name(&bad[1], 1, &cd), 0);	/* the last unit too */
	assert_string_equal(cd.client_name, "\xef\xbf\xbd");
}

/* utf8_name_clean (FreeRDP's ClientHostname goes through it too):
 * malformed bytes replaced, a cut only between characters. */
static void
test_name_clean(void **state)
{
	char out[8];

	assert_int_equal(utf8_name_clean("ok", out, sizeof(out)), 2);
	assert_string_equal(out, "ok");
	assert_int_equal(utf8_name_clean("a\xff\xc3" "b", out, sizeof(out)), 4);
	assert_string_equal(out, "a??b");
	assert_int_equal(utf8_name_clean("\xc2\x9b" "1m\t", out, sizeof(out)), 4);
	assert_string_equal(out, "?1m?");
	/* 7 bytes fit: the third 3-byte character does not */
	assert_int_equal(utf8_name_clean("\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", out,
	    sizeof(out)), 6);
	assert_string_equal(out, "\xe2\x82\xac\xe2\x82\xac");
	assert_int_equal(utf8_name_clean("", out, 1), 0);
	assert_string_equal(out, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect_initial_real),
		cmocka_unit_test(test_msrdpbcgr_examples),
		cmocka_unit_test(test_connect_initial_truncated),
		cmocka_unit_test(test_connect_initial_bad_fields),
		cmocka_unit_test(test_tpkt_length),
		cmocka_unit_test(test_domain_real),
		cmocka_unit_test(test_erect_domain_both_encodings),
		cmocka_unit_test(test_domain_bad),
		cmocka_unit_test(test_builders),
		cmocka_unit_test(test_client_name_odd),
		cmocka_unit_test(test_name_clean),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
