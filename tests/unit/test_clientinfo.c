/* Unit tests for broker/front/clientinfo.c: the Client Info PDUs of three
 * real clients (lean_fx.h; their passwords zeroed by the dump), one built
 * with a known password, truncations and bad lengths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "broker/front/clientinfo.h"
#include "broker/front/mcs.h"
#include "lean_fx.h"

/* The Send Data Request's user data of a dumped Client Info PDU. */
static void
load_info(const char *client, struct lean_fx *fx, const uint8_t **data, size_t *len)
{
	struct mcs_domain_pdu d;
	char name[128];

	snprintf(name, sizeof(name), "%s-client-info.bin", client);
	lean_fx_load(name, fx);
	assert_int_equal(mcs_parse_domain(fx->buf, fx->len, &d), 0);
	*data = d.data;
	*len = d.data_len;
}

static void
test_real_clients(void **state)
{
	static const char *const user[] = { "Jürgen", "Müller", "probe" };
	static const char *const domain[] = { "DOMAIN", "DOMAIN", "" };
	struct clientinfo ci;
	struct lean_fx fx;
	const uint8_t *p;
	size_t n, i, k;

	for (i = 0; i < 3; i++) {
		load_info(lean_fx_clients[i], &fx, &p, &n);
		assert_int_equal(clientinfo_parse(p, n, &ci), 0);
		assert_string_equal(ci.user, user[i]);
		assert_string_equal(ci.domain, domain[i]);
		/* "pw" (zeroed by the dump) and its terminator */
		assert_int_equal(ci.password_len, 6);
		for (k = 0; k < ci.password_len; k++)
			assert_int_equal(p[ci.password_off + k], 0);
	}
}

static size_t
put16(uint8_t *p, const char *ascii)
{
	size_t i;

	for (i = 0; ascii[i] != '\0'; i++) {
		p[2 * i] = (uint8_t)ascii[i];
		p[2 * i + 1] = 0;
	}
	p[2 * i] = p[2 * i + 1] = 0;
	return 2 * i + 2;
}

/* A Client Info in UTF-16 with user, domain and password. */
static size_t
build(uint8_t *b, const char *dom, const char *user, const char *pw)
{
	size_t at = 22;

	memset(b, 0, 512);
	b[0] = 0x40;			/* SEC_INFO_PKT */
	b[8] = 0x10;			/* INFO_UNICODE */
	b[12] = (uint8_t)(2 * strlen(dom));
	b[14] = (uint8_t)(2 * strlen(user));
	b[16] = (uint8_t)(2 * strlen(pw));
	at += put16(b + at, dom);
	at += put16(b + at, user);
	at += put16(b + at, pw);
	at += put16(b + at, "");	/* alternate shell */
	at += put16(b + at, "");	/* working dir */
	return at;
}

static void
test_known_password_located_and_wiped(void **state)
{
	uint8_t b[512], pw16[32];
	struct clientinfo ci;
	size_t n, k;

	n = build(b, "CORP", "alice", "Tr0ub4dor&3");
	assert_int_equal(clientinfo_parse(b, n, &ci), 0);
	assert_string_equal(ci.user, "alice");
	assert_string_equal(ci.domain, "CORP");
	k = put16(pw16, "Tr0ub4dor&3");
	assert_int_equal(ci.password_len, k);
	assert_memory_equal(b + ci.password_off, pw16, k);
	clientinfo_wipe_password(b, n, &ci);
	for (k = 0; k < ci.password_len; k++)
		assert_int_equal(b[ci.password_off + k], 0);
	/* nothing of it in the result */
	assert_null(memmem(&ci, sizeof(ci), "Tr0ub", 5));
}

static void
test_truncated_and_bad_lengths(void **state)
{
	uint8_t b[512];
	struct clientinfo ci;
	size_t n, cut;

	n = build(b, "CORP", "alice", "secret");
	for (cut = 0; cut < n; cut++)
		assert_int_not_equal(clientinfo_parse(b, cut, &ci), 0);
	b[14] = 11;			/* odd UTF-16 length */
	assert_int_equal(clientinfo_parse(b, n, &ci), CLIENTINFO_ELENGTH);
	n = build(b, "CORP", "alice", "secret");
	b[16] = 0x02; b[17] = 0x02;	/* cbPassword 514 */
	assert_int_equal(clientinfo_parse(b, n, &ci), CLIENTINFO_ELENGTH);
	n = build(b, "CORP", "alice", "secret");
	b[0] = 0x08;			/* no SEC_INFO_PKT */
	assert_int_equal(clientinfo_parse(b, n, &ci), CLIENTINFO_ENOT_INFO);
	n = build(b, "CORP", "alice", "secret");
	b[22] = 0x00; b[23] = 0xDC;	/* a lone low surrogate in the domain */
	assert_int_equal(clientinfo_parse(b, n, &ci), CLIENTINFO_ENAME);
	assert_int_equal(clientinfo_parse(NULL, 0, &ci), CLIENTINFO_EINVAL);
}

/* ANSI (no INFO_UNICODE): taken as Latin-1 */
static void
test_ansi(void **state)
{
	uint8_t b[64];
	struct clientinfo ci;

	memset(b, 0, sizeof(b));
	b[0] = 0x40;
	b[12] = 1;			/* cbDomain */
	b[14] = 6;			/* cbUserName */
	memcpy(b + 22, "D\0M\xfcller\0\0\0\0", 13);
	assert_int_equal(clientinfo_parse(b, 22 + 13, &ci), 0);
	assert_string_equal(ci.domain, "D");
	assert_string_equal(ci.user, "Müller");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_clients),
		cmocka_unit_test(test_known_password_located_and_wiped),
		cmocka_unit_test(test_truncated_and_bad_lengths),
		cmocka_unit_test(test_ansi),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
