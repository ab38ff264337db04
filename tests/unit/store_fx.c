#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/state/placement.h"
#include "tests/unit/store_fx.h"

struct store *
fx_open(struct fx *f)
{
	char err[256];
	struct store *st = store_open_engine(f->engine, f->path, err, sizeof(err));

	if (st == NULL)
		fail_msg("store_open_engine %s: %s", f->path, err);
	return st;
}

int
fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *loc = getenv("TSB_STORE_LOCATION");
	const char *reset = getenv("TSB_STORE_RESET");

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/tsb-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	if (loc != NULL && loc[0] != '\0')
		snprintf(f->path, sizeof(f->path), "%s", loc);
	else
		snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
	f->engine = getenv("TSB_STORE_ENGINE");
	if (reset != NULL && reset[0] != '\0')
		assert_int_equal(system(reset), 0);
	f->st = fx_open(f);
	conf_defaults(&f->c);
	f->c.pending_ttl = 10;
	f->c.down_after = 15;
	f->c.quarantine_after = 3;
	f->c.quarantine_time = 60;
	*state = f;
	return 0;
}

int
fx_teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	store_close(f->st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

void
fx_add(struct fx *f, const char *name, int max)
{
	struct store_server s = { 0 };
	char hash[65];

	snprintf(s.name, sizeof(s.name), "%s", name);
	snprintf(s.address, sizeof(s.address), "10.0.0.%zu", strlen(name));
	snprintf(hash, sizeof(hash), "%064zx", (size_t)name[strlen(name) - 1]);
	s.port = 3389;
	s.weight = 100;
	s.max_sessions = max;
	assert_int_equal(store_server_add(f->st, &s, hash, T0), 0);
}

void
fx_farm(struct fx *f, size_t n, int max)
{
	char name[2] = "a";

	for (size_t i = 0; i < n; i++) {
		name[0] = (char)('a' + i);
		fx_add(f, name, max);
	}
	for (size_t i = 0; i < n; i++) {
		name[0] = (char)('a' + i);
		fx_beat(f, name, 1, T0, NULL, 0, 1);
	}
}

int64_t
fx_id(struct fx *f, const char *name)
{
	struct store_server s;

	assert_int_equal(store_server_get(f->st, name, &s), 0);
	return s.id;
}

void
fx_beat(struct fx *f, const char *name, int accepting, int64_t now, const char **users,
    size_t n, int known)
{
	(void)fx_beat_on(f, f->st, name, accepting, now, users, n, known);
}

int
fx_beat_on(struct fx *f, struct store *st, const char *name, int accepting, int64_t now,
    const char **users, size_t n, int known)
{
	struct wire_heartbeat hb = { 0 };
	struct store_heartbeat_result res;
	struct wire_session s[16];

	assert_true(n <= 16);
	snprintf(hb.name, sizeof(hb.name), "%s", name);
	hb.rdp_port = 3389;
	hb.rdp_accepting = accepting;
	hb.ncpu = 2;
	hb.sessions_known = known;
	for (size_t i = 0; i < n; i++) {
		memset(&s[i], 0, sizeof(s[i]));
		snprintf(s[i].user, sizeof(s[i].user), "%s", users[i]);
		snprintf(s[i].id, sizeof(s[i].id), "id-%s", users[i]);
		s[i].state = WIRE_ACTIVE;
	}
	hb.sessions = s;
	hb.nsessions = n;
	assert_int_equal(store_heartbeat_apply(st, fx_id(f, name), &hb, now, &res), 0);
	return res.draining;
}

int
fx_place(struct fx *f, const char *user, int64_t now, struct store_place_result *res)
{
	struct store_place_request r = { NULL, user, "", "127.0.0.9", now, 10000, 1,
	    NULL };
	char norm[64];

	assert_int_equal(placement_user_normalise(user, norm, sizeof(norm)), 0);
	r.user = norm;
	return store_placement_commit(f->st, &r, res);
}

int
fx_count(struct fx *f, const char *server, const char *state)
{
	struct store_session_filter flt = { NULL, server, NULL, NULL };
	struct store_session *list = NULL;
	enum session_state want;
	size_t n = 0;

	if (state != NULL) {
		assert_int_equal(session_state_parse(state, &want), 0);
		flt.state = &want;
	}
	assert_int_equal(store_session_list(f->st, &flt, &list, &n), 0);
	free(list);
	return (int)n;
}

int
fx_server_in(struct fx *f, const char *name, const char *state)
{
	struct store_server s;

	assert_int_equal(store_server_get(f->st, name, &s), 0);
	return strcmp(server_state_str(s.state), state) == 0;
}
