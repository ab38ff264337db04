/* libFuzzer target: the admin API's request handling (broker/http/api_admin.c)
 * with everything it parses from a request: the path (server names and
 * actions, session ids), query arguments (limit, since, user, server,
 * state), the Cookie, Authorization and X-CSRF-Token headers, Content-Type
 * and the JSON bodies, against a real in-memory store with a server and
 * sessions, and GET /metrics (broker/http/metrics.c), served through the
 * route table http.c serves with (broker/http/http_routes.c) by the unit
 * tests' stand-in for http.c (tests/unit/http_fx.h: no libmicrohttpd).
 *
 * Input: a flags byte, then lines "METHOD", "PATH[?QUERY]", header lines
 * "Name: value" up to an empty line, then the body. A path no route has
 * is answered 404/405 like any other.
 *   flags & 1: add a valid bearer token (Authorization)
 *   flags & 2: add a valid session cookie
 *   flags & 4: add that session's CSRF token
 * The credentials are random per process, so a corpus cannot hold them.
 *
 * Properties checked: the answer is a valid status with a body; JSON
 * answers parse; without the flags no request but GET /metrics succeeds
 * (2xx); a state-changing request with the cookie but without the CSRF
 * flag never succeeds; no answer holds the bearer token, cookie or CSRF
 * token except the login's own. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker/http/api_admin.h"
#include "broker/http/metrics.h"
#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/common/wire.h"
#include "broker/core/admin_token.h"
#include "broker/core/conf.h"
#include "broker/core/crypto.h"
#include "broker/core/metrics.h"
#include "broker/http/http.h"
#include "broker/state/store.h"
#include "tests/unit/http_fx.h"

#define MAX_FIELDS 32

static struct store *st;
static struct conf conf;
static struct metrics metrics;
static struct metrics_page mpage;
static struct api_admin admin;
static char bearer[128], cookie[128], csrf[CRYPTO_TOKEN_LEN + 1];
static struct store_admin_session session0;
static unsigned long runs;

/* ---- set-up ---- */

static void
init(void)
{
	struct store_server s = { 0 };
	struct wire_heartbeat hb = { 0 };
	struct wire_session sess[2] = { 0 };
	struct store_heartbeat_result hr;
	char err[256], name[WIRE_NAME_MAX], hash[CRYPTO_HASH_HEX], id[CRYPTO_TOKEN_LEN + 1];
	int64_t sid;

	log_init("fuzz", LOG_ERROR);
	conf_defaults(&conf);
	if ((st = store_open(":memory:", err, sizeof(err))) == NULL)
		abort();
	strcpy(s.name, "ts1");
	strcpy(s.address, "127.0.0.2");
	s.port = 3389;
	s.weight = 100;
	s.max_sessions = 100;
	if (store_server_add(st, &s, "hash1", 1) != 0 ||
	    store_server_auth(st, "hash1", &sid, name, sizeof(name)) != 0)
		abort();
	strcpy(hb.name, "ts1");
	strcpy(hb.version, "fuzz");
	strcpy(hb.rdp_address, "127.0.0.2");
	hb.rdp_port = 3389;
	hb.rdp_accepting = 1;
	hb.ncpu = 2;
	hb.sessions_known = 1;
	strcpy(sess[0].user, "alice");
	strcpy(sess[0].id, "1");
	sess[0].state = WIRE_ACTIVE;
	strcpy(sess[1].user, "CORP\\bob");
	strcpy(sess[1].id, "2");
	sess[1].state = WIRE_DISCONNECTED;
	hb.sessions = sess;
	hb.nsessions = 2;
	if (store_heartbeat_apply(st, sid, &hb, util_now_ms(), &hr) != 0)
		abort();
	mpage.m = &metrics;
	mpage.st = st;
	if (api_admin_init(&admin, st, &conf, &metrics.logins) != 0 ||
	    api_admin_register(&admin, NULL) != 0 || metrics_register(&mpage, NULL) != 0)
		abort();
	/* a bearer token, and a browser session with its CSRF token */
	if (admin_token_new(bearer, sizeof(bearer), hash) != 0 ||
	    store_admin_token_add(st, "fuzz", hash, 1) != 0)
		abort();
	if (crypto_token_new(id, sizeof(id)) != 0 ||
	    auth_session_csrf(id, csrf) != 0 ||
	    crypto_sha256_hex(id, CRYPTO_TOKEN_LEN, session0.id_hash) != 0)
		abort();
	snprintf(cookie, sizeof(cookie), "%s", id);
	session0.created = session0.last_used = util_now_ms();
	if (store_admin_session_add(st, &session0, AUTH_SESSIONS) != 0)
		abort();
	/* one day: the fuzzer must not see the session expire */
	conf.admin_session_idle = conf.admin_session_max = 86400;
}

/* Splits the next line off *p (NUL-terminated in place). */
static char *
next_line(char **p, char *end)
{
	char *s = *p, *nl;

	if (s >= end)
		return NULL;
	nl = memchr(s, '\n', (size_t)(end - s));
	if (nl == NULL)
		nl = end;
	*nl = '\0';
	*p = nl + 1;
	return s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *headers[MAX_FIELDS + 1];
	struct http_response res;
	char *buf, *p, *end, *line, *method, *path;
	char cookie_hdr[160], bearer_hdr[160], csrf_hdr[160];
	uint8_t flags;
	int n = 0, authed, csrf_ok, changes;

	if (st == NULL)
		init();
	if (size < 1 || size > 65536)
		return 0;
	flags = data[0];
	if ((buf = malloc(size)) == NULL)
		return 0;
	memcpy(buf, data + 1, size - 1);
	buf[size - 1] = '\0';
	p = buf;
	end = buf + size - 1;
	method = next_line(&p, end);
	path = next_line(&p, end);
	if (method == NULL || path == NULL) {
		free(buf);
		return 0;
	}
	if (flags & 1) {
		snprintf(bearer_hdr, sizeof(bearer_hdr), "Authorization: Bearer %s", bearer);
		headers[n++] = bearer_hdr;
	}
	if (flags & 2) {
		snprintf(cookie_hdr, sizeof(cookie_hdr), "Cookie: %s=%s", AUTH_COOKIE_NAME, cookie);
		headers[n++] = cookie_hdr;
	}
	if (flags & 4) {
		snprintf(csrf_hdr, sizeof(csrf_hdr), "X-CSRF-Token: %s", csrf);
		headers[n++] = csrf_hdr;
	}
	while ((line = next_line(&p, end)) != NULL && line[0] != '\0' && n < MAX_FIELDS)
		if (strchr(line, ':') != NULL)
			headers[n++] = line;
	headers[n] = NULL;
	http_fx_call_n(method, path, headers, p < end ? p : "", p < end ? (size_t)(end - p) : 0,
	    &res);
	path = strtok(path, "?");	/* the path alone, for the checks */
	if (path == NULL)
		path = "";
	if (getenv("FUZZ_ADMIN_VERBOSE") != NULL)
		fprintf(stderr, "flags %d %s %s -> %d %.120s\n", flags, method, path, res.status,
		    res.body ? res.body : "(null)");
	if (res.status < 200 || res.status > 599 || res.body == NULL)
		abort();
	if (res.content_type != NULL && strcmp(res.content_type, "application/json") == 0) {
		json_t *j = json_loads(res.body, 0, NULL);
		if (j == NULL)
			abort();
		json_decref(j);
	}
	authed = (flags & 1) || (flags & 2);
	changes = strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
	csrf_ok = (flags & 1) || (flags & 4);
	if (res.status < 300 && !(strcmp(method, "GET") == 0 && strcmp(path, "/metrics") == 0)) {
		if (!authed)
			abort();	/* unauthenticated success */
		if (changes && !csrf_ok && strcmp(path, "/api/v1/login") != 0)
			abort();	/* a cookie without its CSRF token changed state */
	}
	if (strstr(res.body, bearer) != NULL || strstr(res.body, cookie) != NULL ||
	    strstr(res.body, csrf) != NULL) {
		/* only the session endpoint shows its own CSRF token */
		if (!(strcmp(path, "/api/v1/session") == 0 && strstr(res.body, bearer) == NULL &&
		    strstr(res.body, cookie) == NULL))
			abort();
	}
	free(res.body);
	/* a bounded store: events and ended sessions pruned now and then */
	if (++runs % 1000 == 0 && store_event_prune(st, 0, 100) != 0)
		abort();
	/* the browser session as it was (a logout ends it; logins may push
	 * it out): made again, the most recently used */
	(void)store_admin_session_remove(st, session0.id_hash);
	session0.last_used = util_now_ms();
	if (store_admin_session_add(st, &session0, AUTH_SESSIONS) != 0)
		abort();
	free(buf);
	return 0;
}
