/* Unit tests for broker/front/redir_pdu.c and utf16.c: the Server
 * Redirection PDU read back field by field (any name: UTF-16 lengths right,
 * TargetNetAddresses' length counting its count), token mode, the licensing
 * and error info PDUs byte for byte, UTF-16 conversions both ways. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "broker/front/le.h"
#include "broker/front/mcs.h"
#include "broker/front/redir_pdu.h"
#include "broker/front/utf16.h"

/* Reads one UTF-16 string field at *p: its UTF-8 into out. */
static void
read_wstr(const uint8_t **p, char *out, size_t n)
{
	uint32_t len = le_get32(*p);

	assert_true(len >= 2 && len % 2 == 0);
	assert_int_equal((*p)[4 + len - 2], 0);	/* terminated, and counted */
	assert_int_equal((*p)[4 + len - 1], 0);
	assert_true(utf16_to_utf8(*p + 4, len, out, n) >= 0);
	assert_int_equal(strlen(out) > 0 ? (size_t)utf8_to_utf16(out, NULL, 0) : 2, len);
	*p += 4 + len;
}

struct parsed {
	uint32_t flags, session;
	char address[128], user[256], domain[128], fqdn[256], addresses0[128];
	uint32_t addresses_len, addresses_count;
	char lbinfo[300];
};

/* A reference reader of what redir_build_redirect wrote. */
static void
parse(const uint8_t *b, int n, struct parsed *r)
{
	const uint8_t *p = b + MCS_SDIN_HEADER_LEN, *start, *end = b + n;
	const uint8_t *q;
	uint32_t len;

	memset(r, 0, sizeof(*r));
	assert_int_equal(b[2] << 8 | b[3], n);
	assert_int_equal(le_get16(p), n - MCS_SDIN_HEADER_LEN);	/* totalLength */
	assert_int_equal(le_get16(p + 2), 0x1A);		/* server redirection | version */
	p += 8;						/* pduSource, pad2Octets */
	start = p;
	assert_int_equal(le_get16(p), 0x0400);
	r->session = le_get32(p + 4);
	r->flags = le_get32(p + 8);
	p += 12;
	if (r->flags & REDIR_LB_TARGET_NET_ADDRESS)
		read_wstr(&p, r->address, sizeof(r->address));
	if (r->flags & REDIR_LB_LOAD_BALANCE_INFO) {
		len = le_get32(p);
		assert_true(len < sizeof(r->lbinfo));
		memcpy(r->lbinfo, p + 4, len);
		p += 4 + len;
	}
	if (r->flags & REDIR_LB_USERNAME)
		read_wstr(&p, r->user, sizeof(r->user));
	if (r->flags & REDIR_LB_DOMAIN)
		read_wstr(&p, r->domain, sizeof(r->domain));
	if (r->flags & REDIR_LB_TARGET_FQDN)
		read_wstr(&p, r->fqdn, sizeof(r->fqdn));
	if (r->flags & REDIR_LB_TARGET_NET_ADDRESSES) {
		r->addresses_len = le_get32(p);
		r->addresses_count = le_get32(p + 4);
		q = p + 8;
		read_wstr(&q, r->addresses0, sizeof(r->addresses0));
		assert_int_equal(q - (p + 4), r->addresses_len);
		p = q;
	}
	assert_int_equal(le_get16(start + 2), p - start);	/* Length */
	assert_int_equal(end - p, 8);			/* Pad */
}

/* Builds t's redirect and reads it back into *r. */
static void
build_parsed(const struct redir_target *t, struct parsed *r)
{
	uint8_t out[REDIR_PDU_MAX];
	int n;

	n = redir_build_redirect(out, sizeof(out), t);
	assert_true(n > 0);
	parse(out, n, r);
}

static void
test_address_mode_non_ascii_names(void **state)
{
	struct redir_target t = { .session_id = 0, .address = "127.0.0.2", .user = "Jürgen",
	    .domain = "DOMÄNE", .fqdn = "ts1.example" };
	struct parsed r;

	build_parsed(&t, &r);
	assert_int_equal(r.flags, REDIR_LB_TARGET_NET_ADDRESS | REDIR_LB_TARGET_NET_ADDRESSES |
	    REDIR_LB_TARGET_FQDN | REDIR_LB_USERNAME | REDIR_LB_DOMAIN);
	assert_string_equal(r.address, "127.0.0.2");
	assert_string_equal(r.user, "Jürgen");
	assert_string_equal(r.domain, "DOMÄNE");
	assert_string_equal(r.fqdn, "ts1.example");
	assert_int_equal(r.addresses_count, 1);
	assert_string_equal(r.addresses0, "127.0.0.2");
	/* 4 (count) + 4 (length) + 20 ("127.0.0.2" and U+0000) */
	assert_int_equal(r.addresses_len, 28);
}

static void
test_token_mode(void **state)
{
	struct redir_target t = { .routing_token = "abc.def", .user = "Müller", .domain = "CORP" };
	struct parsed r;

	build_parsed(&t, &r);
	assert_int_equal(r.flags, REDIR_LB_LOAD_BALANCE_INFO | REDIR_LB_USERNAME | REDIR_LB_DOMAIN);
	assert_string_equal(r.lbinfo, "Cookie: msts=abc.def\r\n");
	assert_string_equal(r.user, "Müller");
}

static void
test_limits(void **state)
{
	char long_domain[40], long_addr[60];
	struct redir_target t = { .address = "10.0.0.1", .user = "u", .domain = "" };
	uint8_t out[REDIR_PDU_MAX];
	struct parsed r;
	int n;

	/* an empty domain is sent (rdesktop needs it) */
	n = redir_build_redirect(out, sizeof(out), &t);
	parse(out, n, &r);
	assert_true(r.flags & REDIR_LB_DOMAIN);
	assert_string_equal(r.domain, "");
	/* a domain over what FreeRDP's client takes is left out */
	memset(long_domain, 'D', 26);
	long_domain[26] = '\0';
	t.domain = long_domain;
	n = redir_build_redirect(out, sizeof(out), &t);
	parse(out, n, &r);
	assert_false(r.flags & REDIR_LB_DOMAIN);
	long_domain[25] = '\0';			/* 25 characters: 52 bytes, taken */
	n = redir_build_redirect(out, sizeof(out), &t);
	parse(out, n, &r);
	assert_true(r.flags & REDIR_LB_DOMAIN);
	memset(long_addr, '1', 40);
	long_addr[40] = '\0';
	t.address = long_addr;
	assert_int_equal(redir_build_redirect(out, sizeof(out), &t), REDIR_ETOO_LONG);
	t.address = "10.0.0.1";
	t.user = "\xc3\x28";			/* invalid UTF-8 */
	assert_int_equal(redir_build_redirect(out, sizeof(out), &t), REDIR_ENAME);
	t.user = "u";
	assert_int_equal(redir_build_redirect(out, 40, &t), REDIR_ESPACE);
	t.domain = NULL;
	assert_int_equal(redir_build_redirect(out, sizeof(out), &t), REDIR_EINVAL);
	t.domain = "";
	t.address = NULL;
	assert_int_equal(redir_build_redirect(out, sizeof(out), &t), REDIR_ENOTARGET);
}

static void
test_license_and_error_info(void **state)
{
	static const uint8_t license[] = { 3, 0, 0, 35, 2, 0xF0, 0x80, 0x68, 0, 1, 0x03, 0xEB,
	    0x70, 0x80, 20, 0x80, 0, 0, 0, 0xFF, 0x03, 16, 0, 7, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0 };
	uint8_t out[64];
	int n;

	assert_int_equal(redir_build_license_valid(out, sizeof(out)), sizeof(license));
	assert_memory_equal(out, license, sizeof(license));
	n = redir_build_error_info(out, sizeof(out), 0x408);
	assert_int_equal(n, MCS_SDIN_HEADER_LEN + 22);
	assert_int_equal(le_get16(out + 17), 0x17);		/* data PDU */
	assert_int_equal(out[MCS_SDIN_HEADER_LEN + 14], 0x2F);	/* Set Error Info */
	assert_int_equal(le_get32(out + n - 4), 0x408);
	assert_int_equal(redir_build_license_valid(out, 20), REDIR_ESPACE);
}

static void
test_utf16(void **state)
{
	uint8_t w[64];
	char s[64];
	int n;

	/* U+1F600 as a surrogate pair, both ways */
	n = utf8_to_utf16("a\xf0\x9f\x98\x80", w, sizeof(w));
	assert_int_equal(n, 8);
	assert_int_equal(le_get16(w + 2), 0xD83D);
	assert_int_equal(le_get16(w + 4), 0xDE00);
	assert_int_equal(utf16_to_utf8(w, (size_t)n, s, sizeof(s)), 5);
	assert_string_equal(s, "a\xf0\x9f\x98\x80");
	assert_int_equal(utf8_to_utf16("\xc0\xaf", w, sizeof(w)), UTF16_EINVAL);	/* overlong */
	assert_int_equal(utf8_to_utf16("\xed\xa0\x80", w, sizeof(w)), UTF16_EINVAL);	/* surrogate */
	assert_int_equal(utf8_to_utf16("abc", w, 7), UTF16_ESPACE);
	assert_int_equal(utf8_to_utf16("abc", NULL, 0), 8);
	assert_int_equal(utf16_to_utf8(w, 3, s, sizeof(s)), UTF16_EINVAL);		/* odd */
	n = utf8_to_utf16("Jürgen", w, sizeof(w));
	assert_int_equal(utf16_to_utf8(w, (size_t)n, s, 4), UTF16_ESPACE);
	assert_string_equal(s, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_address_mode_non_ascii_names),
		cmocka_unit_test(test_token_mode),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_license_and_error_info),
		cmocka_unit_test(test_utf16),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
