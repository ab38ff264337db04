/* store_fx: the fixture of the store tests (test_store.c, the contract on any
 * engine, and test_store_sqlite.c): a fresh store per test and the helpers
 * that drive it through store.h. Failures are cmocka assertions. */
#ifndef TS_TEST_STORE_FX_H
#define TS_TEST_STORE_FX_H

#include <stdint.h>

#include "broker/core/conf.h"
#include "broker/state/store.h"

#define T0 INT64_C(1700000000000)

struct fx {
	char dir[64];			/* a new temporary directory, removed after */
	char path[512];			/* the store's location */
	const char *engine;		/* TSB_STORE_ENGINE; NULL: the default */
	struct store *st;
	struct conf c;			/* defaults, short times for health */
};

/* cmocka setup/teardown: *state is the struct fx. The location is
 * TSB_STORE_LOCATION if set (it must be empty: its engine's runner resets
 * it, e.g. with TSB_STORE_RESET, a shell command run before each test's
 * open: tests/pg/unit-pg.sh), else dir/state.db. */
int fx_setup(void **state);
int fx_teardown(void **state);
#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
/* Another store on f's location (a second broker, an admin command). */
struct store *fx_open(struct fx *f);

/* Adds server name (address 10.0.0.<len>, weight 100) with max sessions. */
void fx_add(struct fx *f, const char *name, int max);
int64_t fx_id(struct fx *f, const char *name);
/* fx_add of names a, b, ... (n of them, max sessions each), each then up by
 * a heartbeat at T0 without sessions. */
void fx_farm(struct fx *f, size_t n, int max);
/* A heartbeat of name with the given users (all active, agent ids "id-USER"). */
void fx_beat(struct fx *f, const char *name, int accepting, int64_t now,
    const char **users, size_t n, int known);
/* The same through st (another store on f's database): its draining answer. */
int fx_beat_on(struct fx *f, struct store *st, const char *name, int accepting, int64_t now,
    const char **users, size_t n, int known);
/* store_placement_commit of user (normalised here) from 127.0.0.9, pending
 * for 10 s, pending_penalty 1. */
int fx_place(struct fx *f, const char *user, int64_t now, struct store_place_result *res);
/* Sessions of server (NULL: any) in state (NULL: any but ended). */
int fx_count(struct fx *f, const char *server, const char *state);
/* 1 if server name is in state (its text), else 0. */
int fx_server_in(struct fx *f, const char *name, const char *state);

#endif
