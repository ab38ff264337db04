/* Malloc-failure injection (tests/unit/faultalloc.h) over the store (its
 * open and migrations, server add, heartbeats and their reconciliation,
 * placements new and reconnecting, pending expiry, the admin API's tokens
 * and settings), the admin login's crypto (OpenSSL), the wire format
 * (heartbeat decode/encode, the answer, the admin API's JSON builder) and
 * the HTTPS handlers (the agents' heartbeat, the admin API's lists, drain,
 * a session action, login and logout) driven through their route table
 * (tests/unit/http_fx.h): an error answers 500 or 503 with a message.
 * For every N until the path completes: the Nth allocation fails; the path
 * returns an error or its full result, never a partial one; a store is
 * left as it was (PRAGMA integrity_check ok, the same servers, sessions and
 * events) and the same call on the same handle then answers as on a fresh
 * store. Leaks are LeakSanitizer's (make asan-test runs this binary too). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/core/admin_token.h"
#include "broker/core/crypto.h"
#include "broker/core/metrics.h"
#include "broker/http/api_admin.h"
#include "broker/http/api_agent.h"
#include "broker/common/wire.h"
#include "broker/state/placement.h"
#include "broker/state/states.h"
#include "tests/unit/faultalloc.h"
#include "tests/unit/http_fx.h"
#include "tests/unit/store_fx.h"

#define FAULT_MAX	5000	/* allocations tried per path */
#define HTTP_FAULT_MAX	3000	/* the same for an HTTPS request (each on a new copy) */
#define OPEN_FAULT_MAX	12000	/* the same for a store's open (every migration) */
#define DUMP_MAX	65536

/* ---- the store's observable state ---- */

static void
put(char *buf, size_t *off, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf + *off, DUMP_MAX - *off, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < DUMP_MAX - *off);
	*off += (size_t)n;
}

/* Servers, sessions (ended too) and events as text (unarmed). */
static void
dump(struct store *st, char *buf)
{
	static const enum session_state ended = SESSION_ENDED;
	struct store_session_filter live = { NULL, NULL, NULL, NULL }, gone = { NULL, NULL, &ended, NULL };
	const struct store_session_filter *flt[] = { &live, &gone };
	struct store_server *sv = NULL;
	struct store_session *ss = NULL;
	struct store_event *ev = NULL;
	size_t n, off = 0;

	buf[0] = '\0';
	assert_int_equal(store_server_list(st, &sv, &n), 0);
	for (size_t i = 0; i < n; i++)
		put(buf, &off, "server %s %s %s %s %lld %d %lld %lld %d/%d/%d/%d\n", sv[i].name,
		    server_state_str(sv[i].state), admin_state_str(sv[i].admin_state),
		    sv[i].state_reason, (long long)sv[i].state_since, sv[i].unconfirmed,
		    (long long)sv[i].last_confirmed, (long long)sv[i].last_heartbeat,
		    sv[i].active, sv[i].disconnected, sv[i].pending, sv[i].lost);
	free(sv);
	for (size_t k = 0; k < 2; k++) {
		assert_int_equal(store_session_list(st, flt[k], &ss, &n), 0);
		for (size_t i = 0; i < n; i++)
			put(buf, &off, "session %lld %s %s %s %s %lld %lld %lld\n",
			    (long long)ss[i].id, ss[i].server, ss[i].user,
			    session_state_str(ss[i].state), ss[i].remote_id,
			    (long long)ss[i].created, (long long)ss[i].updated,
			    (long long)ss[i].expires);
		free(ss);
		ss = NULL;
	}
	{
		struct store_admin_token *tk = NULL;
		char value[STORE_SETTING_MAX];
		int r;

		assert_int_equal(store_admin_token_list(st, &tk, &n), 0);
		for (size_t i = 0; i < n; i++)
			put(buf, &off, "token %s %lld\n", tk[i].name, (long long)tk[i].created);
		free(tk);
		r = store_setting_get(st, "fault_key", value, sizeof(value));
		assert_true(r == 0 || r == STORE_NOT_FOUND);
		put(buf, &off, "setting %s\n", r == 0 ? value : "(none)");
	}
	assert_int_equal(store_event_list(st, 0, 1000, &ev, &n), 0);
	for (size_t i = 0; i < n; i++)
		put(buf, &off, "event %lld %s %s %s %s\n", (long long)ev[i].id, ev[i].kind,
		    ev[i].server, ev[i].user, ev[i].detail);
	free(ev);
}

static void
integrity_ok(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "ok");
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* Where the copies live: tmpfs if there is one (thousands of opens and
 * commits: SQLite's fsyncs are free there). */
static char work_dir[64];

static void
copy_file(const char *from, const char *to)
{
	char buf[65536], side[700];
	ssize_t n;
	int in, out;

	for (const char *sfx = "-wal"; sfx != NULL; sfx = sfx[1] == 'w' ? "-shm" : NULL) {
		snprintf(side, sizeof(side), "%s%s", to, sfx);
		unlink(side);
	}
	assert_true((in = open(from, O_RDONLY)) >= 0);
	assert_true((out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_true(write(out, buf, (size_t)n) == n);
	assert_true(n == 0);
	close(in);
	close(out);
}

static struct store *
open_at(const char *path)
{
	char err[256];
	struct store *st = store_open(path, err, sizeof(err));

	if (st == NULL)
		fail_msg("store_open %s: %s", path, err);
	return st;
}

/* ---- the store paths ---- */

static const char *beat_users[] = { "p1", "u2", "u3" };

static int
op_server_add(struct store *st)
{
	struct store_server s = { 0 };
	char hash[65];

	snprintf(s.name, sizeof(s.name), "z");
	snprintf(s.address, sizeof(s.address), "10.0.0.26");
	memset(hash, 'f', 64);
	hash[64] = '\0';
	s.port = 3389;
	s.weight = 100;
	s.max_sessions = 10;
	return store_server_add(st, &s, hash, T0 + 1000);
}

static int
op_heartbeat(struct store *st)
{
	struct wire_heartbeat hb = { 0 };
	struct store_heartbeat_result res;
	struct wire_session s[3];
	struct store_server sv;
	int r;

	if ((r = store_server_get(st, "a", &sv)) != 0)
		return r;
	snprintf(hb.name, sizeof(hb.name), "a");
	hb.rdp_port = 3389;
	hb.rdp_accepting = 1;
	hb.ncpu = 2;
	hb.sessions_known = 1;
	for (size_t i = 0; i < 3; i++) {
		memset(&s[i], 0, sizeof(s[i]));
		snprintf(s[i].user, sizeof(s[i].user), "%s", beat_users[i]);
		snprintf(s[i].id, sizeof(s[i].id), "id-%s", beat_users[i]);
		s[i].state = i == 2 ? WIRE_DISCONNECTED : WIRE_ACTIVE;
	}
	hb.sessions = s;
	hb.nsessions = 3;
	return store_heartbeat_apply(st, sv.id, &hb, T0 + 2000, &res);
}

static int
place(struct store *st, const char *user)
{
	struct store_place_request r = { user, user, "", "127.0.0.9", T0 + 3000, 10000, 1, NULL };
	struct store_place_result res;

	return store_placement_commit(st, &r, &res);
}

static int
op_place_new(struct store *st)
{
	return place(st, "newbie");
}

static int
op_place_reconnect(struct store *st)
{
	return place(st, "p1");
}

static int
op_expire(struct store *st)
{
	int expired;

	return store_pending_expire(st, T0 + 60000, &expired);
}

static int
op_admin_token_add(struct store *st)
{
	char hash[CRYPTO_HASH_HEX];

	if (crypto_sha256_hex("a token", 7, hash) != 0)
		return CRYPTO_ERR;
	return store_admin_token_add(st, "ops", hash, T0 + 4000);
}

static int
op_setting_set(struct store *st)
{
	return store_setting_set(st, "fault_key", "a value", T0 + 5000);
}

/* The baseline: servers a and b up, p1 pending on one of them, q1 active on b. */
static void
baseline(struct fx *f)
{
	const char *q[] = { "q1" };
	struct store_place_result res;

	fx_farm(f, 2, 10);
	fx_beat(f, "b", 1, T0, q, 1, 1);
	assert_int_equal(fx_place(f, "p1", T0, &res), 0);
}

static void
fault_store_path(struct fx *f, const char *name, int (*op)(struct store *))
{
	char base[600], work[600], *before, *want, *got;
	struct store *st;
	long n;
	int r, errors = 0;

	before = malloc(DUMP_MAX);
	want = malloc(DUMP_MAX);
	got = malloc(DUMP_MAX);
	assert_true(before && want && got);
	baseline(f);
	store_close(f->st);
	f->st = NULL;
	snprintf(base, sizeof(base), "%s/base.db", work_dir);
	snprintf(work, sizeof(work), "%s/work.db", work_dir);
	copy_file(f->path, base);
	/* the reference: the path on a fresh copy */
	copy_file(base, work);
	st = open_at(work);
	dump(st, before);
	assert_int_equal(op(st), 0);
	dump(st, want);
	store_close(st);
	for (n = 1; n <= FAULT_MAX; n++) {
		copy_file(base, work);
		st = open_at(work);
		faultalloc_arm(n);
		r = op(st);
		faultalloc_arm(0);
		if (!faultalloc_fired()) {	/* the whole path ran */
			assert_int_equal(r, 0);
			dump(st, got);
			assert_string_equal(got, want);
			store_close(st);
			break;
		}
		dump(st, got);
		if (r == 0) {			/* the failure was absorbed: all done */
			assert_string_equal(got, want);
		} else {			/* an error: nothing done, and the next call works */
			errors++;
			assert_string_equal(got, before);
			assert_int_equal(op(st), 0);
			dump(st, got);
			assert_string_equal(got, want);
		}
		store_close(st);
		integrity_ok(work);
	}
	assert_true(n <= FAULT_MAX);
	print_message("%s: %ld allocations, each failed once: %d error(s), %ld absorbed "
	    "(the whole result)\n", name, n - 1, errors, n - 1 - errors);
	f->st = open_at(f->path);	/* for fx_teardown */
	free(before);
	free(want);
	free(got);
}

static void test_server_add(void **state) { fault_store_path(*state, "server add", op_server_add); }
static void test_heartbeat(void **state) { fault_store_path(*state, "heartbeat", op_heartbeat); }
static void test_place_new(void **state) { fault_store_path(*state, "placement", op_place_new); }
static void test_place_reconnect(void **state)
{
	fault_store_path(*state, "reconnect", op_place_reconnect);
}
static void test_expire(void **state) { fault_store_path(*state, "pending expiry", op_expire); }
static void test_admin_token(void **state)
{
	fault_store_path(*state, "admin token add", op_admin_token_add);
}
static void test_setting(void **state) { fault_store_path(*state, "setting set", op_setting_set); }

/* The admin login's check (OpenSSL's scrypt) and a session id's hash: a
 * failure is an error, never a match for a wrong password nor a wrong hash. */
static void
test_admin_login(void **state)
{
	char stored[CRYPTO_PWHASH_MAX], want[CRYPTO_HASH_HEX], got[CRYPTO_HASH_HEX];
	long n;
	int right, wrong, h, errors = 0;

	assert_int_equal(crypto_password_hash("s3cret", stored, sizeof(stored)), 0);
	assert_int_equal(crypto_sha256_hex("cookie", 6, want), 0);
	for (n = 1; n <= FAULT_MAX; n++) {
		faultalloc_arm(n);
		right = crypto_password_verify("s3cret", stored);
		wrong = crypto_password_verify("guess", stored);
		h = crypto_sha256_hex("cookie", 6, got);
		faultalloc_arm(0);
		assert_true(right == 0 || right < 0);
		assert_true(wrong != 0);
		assert_true(h == 0 || h == CRYPTO_ERR);
		if (h == 0)
			assert_string_equal(got, want);
		errors += right != 0 || h != 0;
		if (!faultalloc_fired())
			break;
	}
	assert_true(n <= FAULT_MAX);
	assert_int_equal(crypto_password_verify("s3cret", stored), 0);
	print_message("admin login: %ld allocations, each failed once: %d error(s)\n", n - 1,
	    errors);
}

/* store_open of a new file: NULL with a reason, and then the file opens
 * (migrated whole) and is intact. */
static void
test_open(void **state)
{
	struct fx *f = *state;
	char path[600], err[256], *want, *got;
	struct store *st;
	long n;

	want = malloc(DUMP_MAX);
	got = malloc(DUMP_MAX);
	assert_true(want && got);
	dump(f->st, want);		/* a fresh store's */
	snprintf(path, sizeof(path), "%s/open.db", work_dir);
	for (n = 1; n <= OPEN_FAULT_MAX; n++) {
		faultalloc_arm(n);
		st = store_open(path, err, sizeof(err));
		faultalloc_arm(0);
		if (st == NULL) {
			assert_true(faultalloc_fired());
			assert_true(err[0] != '\0');
			st = open_at(path);
		}
		dump(st, got);
		assert_string_equal(got, want);
		assert_int_equal(op_server_add(st), 0);
		store_close(st);
		integrity_ok(path);
		unlink(path);
		if (!faultalloc_fired())
			break;
	}
	assert_true(n <= OPEN_FAULT_MAX);
	print_message("store open: %ld allocations, each failed once\n", n - 1);
	free(want);
	free(got);
}

/* ---- the wire format ---- */

#define HB "{\"name\":\"ts1\",\"version\":\"1\",\"rdp\":{\"address\":\"10.0.0.1\"," \
	"\"port\":3389,\"accepting\":true},\"load\":{\"ncpu\":4,\"cpu_percent\":12.5," \
	"\"load1\":0.5,\"mem_total_kb\":1000,\"mem_available_kb\":500},\"sessions\":[" \
	"{\"user\":\"alice\",\"domain\":\"CORP\",\"id\":42,\"state\":\"disconnected\"," \
	"\"since\":1700000000},{\"user\":\"bob\",\"id\":\"7\",\"state\":\"active\"}]," \
	"\"results\":[]}"

/* wire_heartbeat_decode, then wire_heartbeat_encode of its result. */
static char *
wire_path(int *rc)
{
	struct wire_heartbeat hb;
	char err[256], *s;

	if ((*rc = wire_heartbeat_decode(HB, strlen(HB), &hb, err, sizeof(err))) != 0)
		return NULL;
	s = wire_heartbeat_encode(&hb);
	wire_heartbeat_clear(&hb);
	return s;
}

static char *
answer_path(int *rc)
{
	struct wire_answer a = { 0 };

	a.interval = 5;
	a.draining = 1;
	*rc = 0;
	return wire_answer_encode(&a);
}

/* An admin API answer as api_admin.c builds one. */
static char *
json_path(int *rc)
{
	struct wire_json *o = wire_json_object(), *list = wire_json_array();

	for (int i = 0; i < 3; i++) {
		struct wire_json *e = wire_json_object();

		wire_json_str(e, "name", i == 1 ? "caf\xc3\xa9" : "ts");
		wire_json_int(e, "sessions", i);
		wire_json_num(e, "cpu", 1.5 * i);
		wire_json_bool(e, "up", i & 1);
		wire_json_null(e, "fqdn");
		wire_json_add(list, NULL, e);
	}
	wire_json_add(o, "servers", list);
	wire_json_str(o, "bad", "\xff\xfe");
	*rc = 0;
	return wire_json_dump(o);
}

static void
fault_text_path(const char *name, char *(*path)(int *rc))
{
	char *want, *got;
	long n;
	int rc, errors = 0;

	want = path(&rc);
	assert_non_null(want);
	for (n = 1; n <= FAULT_MAX; n++) {
		faultalloc_arm(n);
		got = path(&rc);
		faultalloc_arm(0);
		if (got == NULL) {
			assert_true(faultalloc_fired());
			errors++;
		} else {
			assert_int_equal(rc, 0);
			assert_string_equal(got, want);	/* whole, never partial */
			free(got);
		}
		if (!faultalloc_fired())
			break;
	}
	assert_true(n <= FAULT_MAX);
	got = path(&rc);		/* and the next call answers as before */
	assert_string_equal(got, want);
	print_message("%s: %ld allocations, each failed once: %d error(s)\n", name, n - 1,
	    errors);
	free(got);
	free(want);
}

static void test_wire_heartbeat(void **state) { fault_text_path("heartbeat json", wire_path); }
static void test_wire_answer(void **state) { fault_text_path("answer json", answer_path); }
static void test_wire_json(void **state) { fault_text_path("admin json", json_path); }

/* ---- the HTTPS handlers ---- */

/* What the requests need of the baseline (made once, unarmed). */
static struct {
	char bearer[128], agent[CRYPTO_TOKEN_LEN + 1], session[64];
	char auth[160], agent_auth[160], cookie[200], csrf[200];
	char session_hash[CRYPTO_HASH_HEX];	/* of web_login's cookie; "" before */
	const char *admin_hdr[3], *agent_hdr[3], *login_hdr[2], *cookie_hdr[4];
} web;

/* Timestamps (and in an answer every number: ages move with the clock)
 * masked, so a run now compares with the reference run a moment before. */
static void
mask_digits(char *s, size_t min_run)
{
	char *w = s;

	for (char *r = s; *r != '\0';) {
		size_t n = strspn(r, "0123456789");

		if (n >= min_run && n > 0) {
			*w++ = '#';
			r += n;
		} else if (n > 0) {
			memmove(w, r, n);
			w += n;
			r += n;
		} else
			*w++ = *r++;
	}
	*w = '\0';
}

/* dump, and whether the browser session of web_login lives */
static void
dump_masked(struct store *st, char *buf)
{
	const struct store_session_limits lim = { INT64_C(1) << 50, INT64_C(1) << 50 };
	struct store_admin_session s;
	int r;

	dump(st, buf);
	if (web.session_hash[0] != '\0') {
		r = store_admin_session_use(st, web.session_hash, T0, &lim, &s);
		assert_true(r == 0 || r == STORE_NOT_FOUND);
		strcat(buf, r == 0 ? "browser session live\n" : "browser session gone\n");
	}
	mask_digits(buf, 12);
}

/* An admin password hash with scrypt's N = 16 (crypto_password_hash's
 * costs 50 ms a login, and the login path runs hundreds of times). */
static void
cheap_hash(const char *pw, char *out, size_t n)
{
	static const uint8_t salt[16] = "tsbroker-faults";
	uint8_t dk[32];
	char salt_hex[33], dk_hex[65];

	assert_int_equal(EVP_PBE_scrypt(pw, strlen(pw), salt, sizeof(salt), 16, 1, 1, 0, dk,
	    sizeof(dk)), 1);
	util_hex(salt, sizeof(salt), salt_hex);
	util_hex(dk, sizeof(dk), dk_hex);
	snprintf(out, n, "scrypt$16$1$1$%s$%s", salt_hex, dk_hex);
	assert_int_equal(crypto_password_verify(pw, out), 0);
}

/* server c with an agent token we know, an admin token, the admin password */
static void
web_baseline(struct fx *f)
{
	struct store_server s = { 0 };
	char hash[CRYPTO_HASH_HEX], pw[CRYPTO_PWHASH_MAX];
	const enum session_state active = SESSION_ACTIVE;
	struct store_session_filter flt = { NULL, NULL, &active, NULL };
	struct store_session *ss = NULL;
	size_t n;

	baseline(f);
	snprintf(s.name, sizeof(s.name), "c");
	snprintf(s.address, sizeof(s.address), "10.0.0.3");
	s.port = 3389;
	s.weight = 100;
	s.max_sessions = 10;
	assert_int_equal(crypto_token_new(web.agent, sizeof(web.agent)), 0);
	assert_int_equal(crypto_sha256_hex(web.agent, CRYPTO_TOKEN_LEN, hash), 0);
	assert_int_equal(store_server_add(f->st, &s, hash, T0), 0);
	assert_int_equal(admin_token_new(web.bearer, sizeof(web.bearer), hash), 0);
	assert_int_equal(store_admin_token_add(f->st, "ops", hash, T0), 0);
	cheap_hash("s3cret", pw, sizeof(pw));
	assert_int_equal(store_admin_password_set(f->st, pw, T0), 0);
	assert_int_equal(store_session_list(f->st, &flt, &ss, &n), 0);
	assert_int_equal(n, 1);		/* q1 on b */
	snprintf(web.session, sizeof(web.session), "/api/v1/sessions/%lld/logoff",
	    (long long)ss[0].id);
	free(ss);
	snprintf(web.auth, sizeof(web.auth), "Authorization: Bearer %s", web.bearer);
	snprintf(web.agent_auth, sizeof(web.agent_auth), "Authorization: Bearer %s", web.agent);
	web.admin_hdr[0] = web.auth;
	web.agent_hdr[0] = web.agent_auth;
	web.agent_hdr[1] = web.login_hdr[0] = "Content-Type: application/json";
}

/* One broker's HTTPS side on st, as main.c wires it. */
struct web_side {
	struct conf c;
	struct metrics m;
	struct api_admin admin;
	struct api_agent agent;
};

static void
web_up(struct web_side *w, struct store *st)
{
	memset(w, 0, sizeof(*w));
	conf_defaults(&w->c);
	w->agent.st = st;
	w->agent.c = &w->c;
	w->agent.m = &w->m.heartbeats;
	http_fx_reset();
	assert_int_equal(api_admin_init(&w->admin, st, &w->c, &w->m.logins), 0);
	assert_int_equal(api_admin_register(&w->admin, NULL), 0);
	assert_int_equal(http_route(NULL, "POST", "/api/v1/heartbeat", api_agent_heartbeat,
	    &w->agent), 0);
}

/* A login on w, unarmed: its cookie and CSRF token into web's headers. */
static void
web_login(void)
{
	struct http_response res;
	const char *c, *k;

	http_fx_call("POST", "/api/v1/login", web.login_hdr, "{\"password\":\"s3cret\"}", &res);
	assert_int_equal(res.status, 200);
	for (int i = 0; i < res.nheaders; i++)
		if (strcasecmp(res.headers[i][0], "Set-Cookie") == 0)
			snprintf(web.cookie, sizeof(web.cookie), "Cookie: %.*s", (int)strcspn(
			    res.headers[i][1], ";"), res.headers[i][1]);
	c = strchr(web.cookie, '=');
	assert_non_null(c);
	assert_int_equal(crypto_sha256_hex(c + 1, strlen(c + 1), web.session_hash), 0);
	assert_non_null(c = strstr(res.body, "\"csrf_token\""));
	assert_non_null(k = strchr(c + 12, '"'));
	snprintf(web.csrf, sizeof(web.csrf), "X-CSRF-Token: %.*s", (int)strcspn(k + 1, "\""),
	    k + 1);
	free(res.body);
	web.cookie_hdr[0] = web.cookie;
	web.cookie_hdr[1] = web.csrf;
}

struct web_call {
	const char *name, *method, *target, *body;
	const char *const *headers;
	int login_first;	/* a browser session first (unarmed) */
	int random_body;	/* the answer holds new secrets: compared by status */
};

static void
fault_web_path(struct fx *f, const struct web_call *wc)
{
	char base[600], work[600], *before, *want, *got, *want_body = NULL;
	struct http_response res;
	struct web_side *w;
	struct store *st;
	int want_status = 0, errors = 0, late = 0;
	long n;

	before = malloc(DUMP_MAX);
	want = malloc(DUMP_MAX);
	got = malloc(DUMP_MAX);
	w = malloc(sizeof(*w));
	assert_true(before && want && got && w);
	web_baseline(f);
	store_close(f->st);
	f->st = NULL;
	snprintf(base, sizeof(base), "%s/base.db", work_dir);
	snprintf(work, sizeof(work), "%s/work.db", work_dir);
	copy_file(f->path, base);
	web.session_hash[0] = '\0';
	for (n = 0; n <= HTTP_FAULT_MAX; n++) {	/* n = 0: the reference */
		copy_file(base, work);
		st = open_at(work);
		web_up(w, st);
		if (wc->login_first)
			web_login();
		dump_masked(st, n == 0 ? before : got);
		if (n > 0)
			assert_string_equal(got, before);
		faultalloc_arm(n);
		http_fx_call(wc->method, wc->target, wc->headers, wc->body, &res);
		faultalloc_arm(0);
		assert_non_null(res.body);	/* every answer says something */
		mask_digits(res.body, 1);
		if (n == 0) {
			want_status = res.status;
			assert_true(want_status >= 200 && want_status < 300);
			want_body = res.body;
			dump_masked(st, want);
		} else if (!faultalloc_fired() || res.status == want_status) {
			/* it ran whole, or the failure was absorbed: the whole result */
			assert_int_equal(res.status, want_status);
			if (!wc->random_body)
				assert_string_equal(res.body, want_body);
			dump_masked(st, got);
			assert_string_equal(got, want);
			free(res.body);
		} else {
			/* an error: 500 or 503 with a message, nothing done, and the
			 * next call answers as on a fresh store */
			if (res.status != 500 && res.status != 503)
				fail_msg("%s: allocation %ld failed: answered %d %s", wc->name, n,
				    res.status, res.body);
			assert_non_null(strstr(res.body, "\"error\""));
			free(res.body);
			dump_masked(st, got);
			if (strcmp(got, before) != 0) {
				/* the failure came after the commit (the answer could
				 * not be built): the whole change, never a part */
				assert_string_equal(got, want);
				late++;
				goto next;
			}
			errors++;
			http_fx_call(wc->method, wc->target, wc->headers, wc->body, &res);
			assert_int_equal(res.status, want_status);
			mask_digits(res.body, 1);
			if (!wc->random_body)
				assert_string_equal(res.body, want_body);
			free(res.body);
			dump_masked(st, got);
			assert_string_equal(got, want);
		}
 next:
		api_admin_cleanup(&w->admin);
		store_close(st);
		integrity_ok(work);
		if (n > 0 && !faultalloc_fired())
			break;
	}
	assert_true(n <= HTTP_FAULT_MAX);
	print_message("%s: %ld allocations, each failed once: %d error answer(s) with "
	    "nothing done, %d after the commit, %ld absorbed\n", wc->name, n - 1, errors, late,
	    n - 1 - errors - late);
	f->st = open_at(f->path);	/* for fx_teardown */
	free(want_body);
	free(before);
	free(want);
	free(got);
	free(w);
}

#define HB_C "{\"name\":\"c\",\"version\":\"1\",\"rdp\":{\"address\":\"10.0.0.3\"," \
	"\"port\":3389,\"accepting\":true},\"load\":{\"ncpu\":4,\"cpu_percent\":12.5," \
	"\"load1\":0.5,\"mem_total_kb\":1000,\"mem_available_kb\":500},\"sessions\":[" \
	"{\"user\":\"carol\",\"id\":\"9\",\"state\":\"active\"}]}"

static void
test_web_heartbeat(void **state)
{
	const struct web_call wc = { "POST /api/v1/heartbeat", "POST", "/api/v1/heartbeat",
	    HB_C, web.agent_hdr, 0, 0 };
	fault_web_path(*state, &wc);
}

static void
test_web_servers(void **state)
{
	const struct web_call wc = { "GET /api/v1/servers", "GET", "/api/v1/servers", NULL,
	    web.admin_hdr, 0, 0 };
	fault_web_path(*state, &wc);
}

static void
test_web_sessions(void **state)
{
	const struct web_call wc = { "GET /api/v1/sessions", "GET", "/api/v1/sessions?limit=50",
	    NULL, web.admin_hdr, 0, 0 };
	fault_web_path(*state, &wc);
}

static void
test_web_drain(void **state)
{
	const struct web_call wc = { "POST /api/v1/servers/a/drain", "POST",
	    "/api/v1/servers/a/drain", NULL, web.admin_hdr, 0, 0 };
	fault_web_path(*state, &wc);
}

static void
test_web_logoff(void **state)
{
	/* the target is web.session, known once the baseline is made */
	const struct web_call wc = { "POST /api/v1/sessions/ID/logoff", "POST", web.session,
	    NULL, web.admin_hdr, 0, 0 };
	fault_web_path(*state, &wc);
}

static void
test_web_login(void **state)
{
	const struct web_call wc = { "POST /api/v1/login", "POST", "/api/v1/login",
	    "{\"password\":\"s3cret\"}", web.login_hdr, 0, 1 };
	fault_web_path(*state, &wc);
}

static void
test_web_logout(void **state)
{
	const struct web_call wc = { "POST /api/v1/logout", "POST", "/api/v1/logout", NULL,
	    web.cookie_hdr, 1, 0 };
	fault_web_path(*state, &wc);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wire_heartbeat),
		cmocka_unit_test(test_wire_answer),
		cmocka_unit_test(test_wire_json),
		FX_TEST(test_open),
		FX_TEST(test_server_add),
		FX_TEST(test_heartbeat),
		FX_TEST(test_place_new),
		FX_TEST(test_place_reconnect),
		FX_TEST(test_expire),
		FX_TEST(test_admin_token),
		FX_TEST(test_setting),
		cmocka_unit_test(test_admin_login),
		FX_TEST(test_web_heartbeat),
		FX_TEST(test_web_servers),
		FX_TEST(test_web_sessions),
		FX_TEST(test_web_drain),
		FX_TEST(test_web_logoff),
		FX_TEST(test_web_login),
		FX_TEST(test_web_logout),
	};
	char cmd[128];
	int r;

	if (getenv("TSB_TEST_FILTER") != NULL)	/* e.g. "test_web_*" */
		cmocka_set_test_filter(getenv("TSB_TEST_FILTER"));
	if (faultalloc_install() != 0) {
		fprintf(stderr, "faultalloc_install: a library allocated before\n");
		return 1;
	}
	log_init("test_faults", LOG_ERROR);
	snprintf(work_dir, sizeof(work_dir), "/dev/shm/tsb-faults-XXXXXX");
	if (mkdtemp(work_dir) == NULL) {
		snprintf(work_dir, sizeof(work_dir), "/tmp/tsb-faults-XXXXXX");
		if (mkdtemp(work_dir) == NULL)
			return 1;
	}
	r = cmocka_run_group_tests(tests, NULL, NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", work_dir);
	if (system(cmd) != 0)
		r = 1;
	return r;
}
