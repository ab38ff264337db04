/* Unit tests for broker/front/x224.c: every real capture in
 * tests/fuzz/seeds/fuzz_x224/ (or $X224_SEEDS), then truncations, bad
 * lengths and malformed fields built from them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/front/x224.h"

#define SEED_DIR "tests/fuzz/seeds/fuzz_x224"

struct capture {
	uint8_t buf[X224_PACKET_MAX + 64];
	size_t len;
};

static void
load(const char *name, struct capture *c)
{
	const char *dir = getenv("X224_SEEDS");
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir ? dir : SEED_DIR, name);
	f = fopen(path, "rb");
	if (f == NULL)
		fail_msg("cannot open %s (run from the repository root)", path);
	c->len = fread(c->buf, 1, sizeof(c->buf), f);
	fclose(f);
	assert_true(c->len >= X224_CR_MIN_LEN);
}

static int
parse(const struct capture *c, struct x224_request *req)
{
	return x224_parse_request(c->buf, c->len, req);
}

static void
assert_str(const uint8_t *p, size_t len, const char *want)
{
	char got[X224_PACKET_MAX + 1];

	assert_non_null(p);
	assert_int_equal(x224_copy(got, sizeof(got), p, len), 0);
	assert_string_equal(got, want);
}

/* Rewrites the TPKT length and LI after changing the packet's size. */
static void
set_len(struct capture *c, size_t len)
{
	c->len = len;
	c->buf[2] = (uint8_t)(len >> 8);
	c->buf[3] = (uint8_t)len;
	c->buf[4] = (uint8_t)(len - 5);
}

static void
append(struct capture *c, const void *data, size_t n)
{
	memcpy(c->buf + c->len, data, n);
	set_len(c, c->len + n);
}

/* ---- the captures -------------------------------------------------------- */

static void
test_default_alice(void **state)
{
	struct x224_request req;
	struct capture c;

	load("xfreerdp-default-alice.bin", &c);
	assert_int_equal(parse(&c, &req), 0);
	assert_int_equal(req.length, 43);
	assert_str(req.cookie, req.cookie_len, "alice");
	assert_int_equal(req.token_kind, X224_TOKEN_NONE);
	assert_null(req.token);
	assert_true(req.has_neg_req);
	assert_int_equal(req.neg_flags, 0);
	assert_int_equal(req.requested_protocols, X224_PROTOCOL_SSL | X224_PROTOCOL_HYBRID);
	assert_false(req.has_correlation);
}

static void
test_tls_alice(void **state)
{
	struct x224_request req;
	struct capture c;

	load("xfreerdp-tls-alice.bin", &c);
	assert_int_equal(parse(&c, &req), 0);
	assert_str(req.cookie, req.cookie_len, "alice");
	assert_true(req.has_neg_req);
	assert_int_equal(req.requested_protocols, X224_PROTOCOL_SSL);
}

static void
test_nla_domain(void **state)
{
	struct x224_request req;
	struct capture c;

	load("xfreerdp-nla-domain.bin", &c);
	assert_int_equal(parse(&c, &req), 0);
	assert_str(req.cookie, req.cookie_len, "bob");
	assert_true(req.has_neg_req);
	assert_true(req.requested_protocols & X224_PROTOCOL_HYBRID);
}

static void
test_no_user(void **state)
{
	struct x224_request req;
	struct capture c;

	load("xfreerdp-no-user.bin", &c);
	assert_int_equal(parse(&c, &req), 0);
	assert_str(req.cookie, req.cookie_len, "root");
}

static void
test_long_user(void **state)
{
	struct x224_request req;
	struct capture c;
	char small[10];

	load("xfreerdp-long-user.bin", &c);
	assert_int_equal(parse(&c, &req), 0);
	assert_str(req.cookie, req.cookie_len, "averyveryverylongusername");
	/* copying into a short buffer truncates and says so */
	assert_int_equal(x224_copy(small, sizeof(small), req.cookie, req.cookie_len), -1);
	assert_string_equal(small, "averyvery");
}

static void
test_lbinfo_tsv(void **state)
{
	struct x224_request req;
	struct capture c;

	load("xfreerdp-lbinfo-tsv.bin", &c);
	assert_int_equal(parse(&c, &req), 0);
	assert_null(req.cookie);
	assert_int_equal(req.token_kind, X224_TOKEN_OTHER);
	assert_str(req.token, req.token_len, "tsv://MS Terminal Services Plugin.1.Sessions");
	assert_null(req.msts);
	assert_true(req.has_neg_req);
	assert_int_equal(req.requested_protocols, 3);
}

static void
test_lbinfo_msts(void **state)
{
	struct x224_request req;
	struct capture c;

	load("xfreerdp-lbinfo-msts.bin", &c);
	assert_int_equal(parse(&c, &req), 0);
	assert_null(req.cookie);
	assert_int_equal(req.token_kind, X224_TOKEN_MSTS);
	assert_str(req.token, req.token_len, "Cookie: msts=3640205228.15629.0000");
	assert_str(req.msts, req.msts_len, "3640205228.15629.0000");
	assert_true(req.has_neg_req);
}

static void
test_rdp_sec(void **state)
{
	struct x224_request req;
	struct capture c;

	load("xfreerdp-rdp-sec.bin", &c);
	assert_int_equal(parse(&c, &req), 0);
	assert_str(req.cookie, req.cookie_len, "alice");
	assert_false(req.has_neg_req);
	assert_int_equal(req.requested_protocols, X224_PROTOCOL_RDP);
}

static const char *const captures[] = {
	"xfreerdp-default-alice.bin", "xfreerdp-tls-alice.bin",
	"xfreerdp-nla-domain.bin", "xfreerdp-no-user.bin",
	"xfreerdp-long-user.bin", "xfreerdp-lbinfo-tsv.bin",
	"xfreerdp-lbinfo-msts.bin", "xfreerdp-rdp-sec.bin",
};
#define NCAPTURES (sizeof(captures) / sizeof(captures[0]))

/* ---- truncations and lengths ---------------------------------------------- */

/* Every prefix of every capture: the reader's view while bytes arrive. */
static void
test_truncated_reads(void **state)
{
	struct x224_request req;
	struct capture c;
	size_t i, n, need;

	for (i = 0; i < NCAPTURES; i++) {
		load(captures[i], &c);
		for (n = 0; n < c.len; n++) {
			assert_int_equal(x224_parse_request(c.buf, n, &req), X224_ETRUNCATED);
			if (n < X224_TPKT_HEADER_LEN)
				assert_int_equal(x224_packet_length(c.buf, n, &need),
				    X224_ETRUNCATED);
			else {
				assert_int_equal(x224_packet_length(c.buf, n, &need), 0);
				assert_int_equal(need, c.len);
			}
		}
		/* bytes after the packet (the next PDU) are not ours */
		c.buf[c.len] = 0xAA;
		assert_int_equal(x224_parse_request(c.buf, c.len + 1, &req), 0);
		assert_int_equal(req.length, c.len);
	}
}

/* Every consistent truncation (TPKT length and LI rewritten): the parser
 * either accepts a shorter valid request or names the broken part. */
static void
test_consistent_truncations(void **state)
{
	struct x224_request req;
	struct capture c;
	size_t i, n;
	int r;

	for (i = 0; i < NCAPTURES; i++) {
		for (n = X224_CR_MIN_LEN; n < 64; n++) {
			load(captures[i], &c);
			if (n >= c.len)
				break;
			set_len(&c, n);
			r = parse(&c, &req);
			assert_true(r == 0 || r == X224_ETOKEN_UNTERMINATED ||
			    r == X224_ENEG_LENGTH || r == X224_ECOOKIE_EMPTY);
		}
	}
	/* cut just before the RDP_NEG_REQ: valid, standard RDP security */
	load("xfreerdp-tls-alice.bin", &c);
	set_len(&c, c.len - 8);
	assert_int_equal(parse(&c, &req), 0);
	assert_false(req.has_neg_req);
	assert_str(req.cookie, req.cookie_len, "alice");
	/* cut inside it */
	load("xfreerdp-tls-alice.bin", &c);
	set_len(&c, c.len - 3);
	assert_int_equal(parse(&c, &req), X224_ENEG_LENGTH);
	/* cut inside the cookie: CRLF lost */
	load("xfreerdp-tls-alice.bin", &c);
	set_len(&c, 20);
	assert_int_equal(parse(&c, &req), X224_ETOKEN_UNTERMINATED);
	/* cut between CR and LF */
	load("xfreerdp-rdp-sec.bin", &c);
	set_len(&c, c.len - 1);
	assert_int_equal(parse(&c, &req), X224_ETOKEN_UNTERMINATED);
}

static void
test_minimal_request(void **state)
{
	static const uint8_t min[] = { 3, 0, 0, 11, 6, 0xE0, 0, 0, 0, 0, 0 };
	struct x224_request req;

	assert_int_equal(x224_parse_request(min, sizeof(min), &req), 0);
	assert_int_equal(req.length, 11);
	assert_null(req.cookie);
	assert_null(req.token);
	assert_false(req.has_neg_req);
	assert_false(req.has_correlation);
}

static void
test_tpkt_header(void **state)
{
	uint8_t h[4] = { 3, 0, 0, 43 };
	struct x224_request req;
	struct capture c;
	size_t need = 12345;

	assert_int_equal(x224_packet_length(h, 4, &need), 0);
	assert_int_equal(need, 43);
	h[0] = 4;
	assert_int_equal(x224_packet_length(h, 4, &need), X224_ETPKT_VERSION);
	h[0] = 'G';	/* "GET " from an HTTP client */
	assert_int_equal(x224_packet_length(h, 4, &need), X224_ETPKT_VERSION);
	h[0] = 3;
	h[3] = 10;
	need = 7;
	assert_int_equal(x224_packet_length(h, 4, &need), X224_ETPKT_LENGTH);
	assert_int_equal(need, 7);	/* untouched on error */
	h[2] = 0x01;
	h[3] = 0x05;	/* 261 */
	assert_int_equal(x224_packet_length(h, 4, &need), X224_ETPKT_LENGTH);
	h[2] = 0x01;
	h[3] = 0x04;	/* 260 is the limit */
	assert_int_equal(x224_packet_length(h, 4, &need), 0);
	assert_int_equal(need, X224_PACKET_MAX);
	h[2] = 0xFF;
	h[3] = 0xFF;
	assert_int_equal(x224_packet_length(h, 4, &need), X224_ETPKT_LENGTH);
	assert_int_equal(x224_packet_length(NULL, 4, &need), X224_EINVAL);
	assert_int_equal(x224_packet_length(h, 4, NULL), X224_EINVAL);

	load("xfreerdp-default-alice.bin", &c);
	c.buf[0] = 2;
	assert_int_equal(parse(&c, &req), X224_ETPKT_VERSION);
	assert_int_equal(x224_parse_request(NULL, 4, &req), X224_EINVAL);
	assert_int_equal(x224_parse_request(c.buf, c.len, NULL), X224_EINVAL);
}

static void
test_length_indicator(void **state)
{
	struct x224_request req;
	struct capture c;

	load("xfreerdp-default-alice.bin", &c);
	c.buf[4]++;
	assert_int_equal(parse(&c, &req), X224_ELI);
	c.buf[4] -= 2;
	assert_int_equal(parse(&c, &req), X224_ELI);
	c.buf[4] = 0xFF;
	assert_int_equal(parse(&c, &req), X224_ELI);
	c.buf[4] = 0;
	assert_int_equal(parse(&c, &req), X224_ELI);
}

static void
test_tpdu_code(void **state)
{
	struct x224_request req;
	struct capture c;

	load("xfreerdp-default-alice.bin", &c);
	c.buf[5] = 0xD0;	/* Connection Confirm */
	assert_int_equal(parse(&c, &req), X224_ECODE);
	c.buf[5] = 0xF0;	/* Data */
	assert_int_equal(parse(&c, &req), X224_ECODE);
	c.buf[5] = 0xE1;	/* CR with a credit nibble: accepted like FreeRDP does */
	assert_int_equal(parse(&c, &req), 0);
}

/* ---- tokens and cookies ------------------------------------------------- */

static void
build(struct capture *c, const char *token, const void *tail, size_t tail_len)
{
	static const uint8_t hdr[] = { 3, 0, 0, 0, 0, 0xE0, 0, 0, 0, 0, 0 };

	memcpy(c->buf, hdr, sizeof(hdr));
	set_len(c, sizeof(hdr));
	if (token != NULL)
		append(c, token, strlen(token));
	if (tail_len > 0)
		append(c, tail, tail_len);
}

static const uint8_t neg_tls[] = { 1, 0, 8, 0, 1, 0, 0, 0 };

static void
test_tokens(void **state)
{
	struct x224_request req;
	struct capture c;

	build(&c, "Cookie: mstshash=\r\n", neg_tls, sizeof(neg_tls));
	assert_int_equal(parse(&c, &req), X224_ECOOKIE_EMPTY);
	build(&c, "Cookie: mstshash=alXce\r\n", neg_tls, sizeof(neg_tls));
	c.buf[11 + 19] = 0;
	assert_int_equal(parse(&c, &req), X224_ETOKEN_CHAR);
	build(&c, "Cookie: mstshash=al\nce\r\n", neg_tls, sizeof(neg_tls));
	assert_int_equal(parse(&c, &req), X224_ETOKEN_CHAR);
	build(&c, "Cookie: mstshash=al\rce\r\n", neg_tls, sizeof(neg_tls));
	assert_int_equal(parse(&c, &req), X224_ETOKEN_CHAR);
	build(&c, "Cookie: mstshash=alice", neg_tls, sizeof(neg_tls));
	assert_int_equal(parse(&c, &req), X224_ETOKEN_CHAR);	/* NEG_REQ bytes inside the line */
	build(&c, "Cookie: mstshash=alice", NULL, 0);
	assert_int_equal(parse(&c, &req), X224_ETOKEN_UNTERMINATED);
	/* non-ASCII user hint (an ANSI code page byte) passes through */
	build(&c, "Cookie: mstshash=J\xf6rg\r\n", neg_tls, sizeof(neg_tls));
	assert_int_equal(parse(&c, &req), 0);
	assert_str(req.cookie, req.cookie_len, "J\xf6rg");
	/* "Cookie: msts=" with an empty value is still a token */
	build(&c, "Cookie: msts=\r\n", NULL, 0);
	assert_int_equal(parse(&c, &req), 0);
	assert_int_equal(req.token_kind, X224_TOKEN_MSTS);
	assert_int_equal(req.msts_len, 0);
	/* prefixes compare exactly: another case is an opaque token */
	build(&c, "cookie: mstshash=alice\r\n", neg_tls, sizeof(neg_tls));
	assert_int_equal(parse(&c, &req), 0);
	assert_null(req.cookie);
	assert_int_equal(req.token_kind, X224_TOKEN_OTHER);
	/* an empty line: CR is no token character, so it is read as a NEG type */
	build(&c, "\r\n", neg_tls, sizeof(neg_tls));
	assert_int_equal(parse(&c, &req), X224_ENEG_TYPE);	/* '\r' < 0x20: not a line */
	/* the longest possible token */
	{
		static char big[X224_PACKET_MAX];
		size_t n = X224_PACKET_MAX - 11 - 2 - sizeof(neg_tls);

		memset(big, 'x', n);
		memcpy(big + n, "\r\n", 3);
		build(&c, big, neg_tls, sizeof(neg_tls));
		assert_int_equal(c.len, X224_PACKET_MAX);
		assert_int_equal(parse(&c, &req), 0);
		assert_int_equal(req.token_len, n);
		assert_true(req.has_neg_req);
	}
}

/* ---- negotiation and correlation ----------------------------------------- */

static void
test_neg_req(void **state)
{
	uint8_t neg[8] = { 1, 0x03, 8, 0, 0x0B, 0, 0, 0 };
	struct x224_request req;
	struct capture c;

	build(&c, NULL, neg, sizeof(neg));
	assert_int_equal(parse(&c, &req), 0);
	assert_int_equal(req.neg_flags, 0x03);
	assert_int_equal(req.requested_protocols, 0x0B);
	neg[0] = 2;	/* a response */
	build(&c, NULL, neg, sizeof(neg));
	assert_int_equal(parse(&c, &req), X224_ENEG_TYPE);
	neg[0] = 1;
	neg[2] = 9;
	build(&c, NULL, neg, sizeof(neg));
	assert_int_equal(parse(&c, &req), X224_ENEG_LENGTH);
	neg[2] = 8;
	neg[3] = 1;
	build(&c, NULL, neg, sizeof(neg));
	assert_int_equal(parse(&c, &req), X224_ENEG_LENGTH);
	neg[3] = 0;
	build(&c, NULL, neg, 7);
	assert_int_equal(parse(&c, &req), X224_ENEG_LENGTH);
	build(&c, NULL, neg, 1);
	assert_int_equal(parse(&c, &req), X224_ENEG_LENGTH);
	/* trailing bytes that are not a correlation info */
	build(&c, "Cookie: mstshash=a\r\n", neg, sizeof(neg));
	append(&c, "\0\0\0", 3);
	assert_int_equal(parse(&c, &req), X224_ECORR);
}

static void
test_correlation(void **state)
{
	uint8_t neg[8] = { 1, X224_NEG_CORRELATION_INFO, 8, 0, 1, 0, 0, 0 };
	uint8_t corr[36] = { 6, 0, 36, 0 };
	struct x224_request req;
	struct capture c;
	int i;

	for (i = 0; i < 16; i++)
		corr[4 + i] = (uint8_t)(0x10 + i);
	build(&c, "Cookie: mstshash=alice\r\n", neg, sizeof(neg));
	append(&c, corr, sizeof(corr));
	assert_int_equal(parse(&c, &req), 0);
	assert_true(req.has_correlation);
	assert_int_equal(req.correlation_id[0], 0x10);
	assert_int_equal(req.correlation_id[15], 0x1F);
	/* the flag without the structure */
	build(&c, "Cookie: mstshash=alice\r\n", neg, sizeof(neg));
	assert_int_equal(parse(&c, &req), X224_ECORR);
	/* truncated */
	build(&c, NULL, neg, sizeof(neg));
	append(&c, corr, 35);
	assert_int_equal(parse(&c, &req), X224_ECORR);
	/* wrong type, wrong length */
	corr[0] = 5;
	build(&c, NULL, neg, sizeof(neg));
	append(&c, corr, sizeof(corr));
	assert_int_equal(parse(&c, &req), X224_ECORR);
	corr[0] = 6;
	corr[2] = 35;
	build(&c, NULL, neg, sizeof(neg));
	append(&c, corr, sizeof(corr));
	assert_int_equal(parse(&c, &req), X224_ECORR);
	corr[2] = 36;
	/* without the flag, as FreeRDP tolerates */
	neg[1] = 0;
	build(&c, NULL, neg, sizeof(neg));
	append(&c, corr, sizeof(corr));
	assert_int_equal(parse(&c, &req), 0);
	assert_true(req.has_correlation);
	/* anything after it */
	append(&c, "x", 1);
	assert_int_equal(parse(&c, &req), X224_ETRAILING);
}

/* ---- helpers -------------------------------------------------------------- */

static void
test_strerror(void **state)
{
	int e, f;

	for (e = X224_EINVAL; e <= X224_OK; e++) {
		assert_non_null(x224_strerror(e));
		assert_string_not_equal(x224_strerror(e), "unknown error");
		for (f = X224_EINVAL; f < e; f++)
			assert_string_not_equal(x224_strerror(e), x224_strerror(f));
	}
	assert_string_equal(x224_strerror(-100), "unknown error");
	assert_string_equal(x224_strerror(1), "unknown error");
}

static void
test_copy(void **state)
{
	char buf[4];

	assert_int_equal(x224_copy(buf, sizeof(buf), (const uint8_t *)"abc", 3), 0);
	assert_string_equal(buf, "abc");
	assert_int_equal(x224_copy(buf, sizeof(buf), (const uint8_t *)"abcd", 4), -1);
	assert_string_equal(buf, "abc");
	assert_int_equal(x224_copy(buf, sizeof(buf), NULL, 0), 0);
	assert_string_equal(buf, "");
	assert_int_equal(x224_copy(buf, 0, (const uint8_t *)"a", 1), -1);
}

static void
test_neg_failure(void **state)
{
	static const uint8_t want[X224_NEG_FAILURE_LEN] = {
		3, 0, 0, 19, 14, 0xD0, 0, 0, 0, 0, 0,
		3, 0, 8, 0, 1, 0, 0, 0,
	};
	uint8_t out[X224_NEG_FAILURE_LEN];

	assert_int_equal(x224_build_neg_failure(out, sizeof(out),
	    X224_FAILURE_SSL_REQUIRED_BY_SERVER), X224_NEG_FAILURE_LEN);
	assert_memory_equal(out, want, sizeof(want));
	assert_int_equal(x224_build_neg_failure(out, sizeof(out) - 1, 1), -1);
	assert_int_equal(x224_build_neg_failure(NULL, 100, 1), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_alice),
		cmocka_unit_test(test_tls_alice),
		cmocka_unit_test(test_nla_domain),
		cmocka_unit_test(test_no_user),
		cmocka_unit_test(test_long_user),
		cmocka_unit_test(test_lbinfo_tsv),
		cmocka_unit_test(test_lbinfo_msts),
		cmocka_unit_test(test_rdp_sec),
		cmocka_unit_test(test_truncated_reads),
		cmocka_unit_test(test_consistent_truncations),
		cmocka_unit_test(test_minimal_request),
		cmocka_unit_test(test_tpkt_header),
		cmocka_unit_test(test_length_indicator),
		cmocka_unit_test(test_tpdu_code),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_neg_req),
		cmocka_unit_test(test_correlation),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_copy),
		cmocka_unit_test(test_neg_failure),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
