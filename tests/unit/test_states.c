/* Unit tests for broker/state/states.c: the one table of the states' text
 * against its edges, read as text: the CHECK lists of the shipped schema
 * (schema/NNN_*.sql, never edited; the last CREATE TABLE of a table wins)
 * and the strings the page compares states with (web/app.js). Run from the
 * top of the tree (make unit). */
#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/state/states.h"

/* One kind of state: its table through states.h. */
struct kind {
	const char *name;
	int count;
	const char *(*str)(int v);
	int (*parse)(const char *text);
};

static const char *server_str(int v) { return server_state_str((enum server_state)v); }
static const char *admin_str(int v) { return admin_state_str((enum admin_state)v); }
static const char *session_str(int v) { return session_state_str((enum session_state)v); }
static int server_parse(const char *t) { enum server_state s; return server_state_parse(t, &s); }
static int admin_parse(const char *t) { enum admin_state s; return admin_state_parse(t, &s); }
static int session_parse(const char *t) { enum session_state s; return session_state_parse(t, &s); }
static const char *command_str(int v) { return command_state_str((enum command_state)v); }
static int command_parse(const char *t) { enum command_state s; return command_state_parse(t, &s); }

static const struct kind servers = { "server", SERVER_STATE_COUNT, server_str, server_parse };
static const struct kind admins = { "admin", ADMIN_STATE_COUNT, admin_str, admin_parse };
static const struct kind sessions = { "session", SESSION_STATE_COUNT, session_str,
	session_parse };
static const struct kind commands = { "command", COMMAND_STATE_COUNT, command_str,
	command_parse };

static char *
slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf;
	long n;

	if (fp == NULL)
		fail_msg("%s: cannot open (run from the top of the tree)", path);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	assert_non_null(buf = calloc(1, (size_t)n + 1));
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	return buf;
}

/* Every schema file, in order, as one text (the caller frees). */
static char *
schema_text(void)
{
	glob_t g;
	char *all = calloc(1, 1);

	assert_int_equal(glob("schema/[0-9][0-9][0-9]_*.sql", 0, NULL, &g), 0);
	for (size_t i = 0; i < g.gl_pathc; i++) {
		char *t = slurp(g.gl_pathv[i]);

		assert_non_null(all = realloc(all, strlen(all) + strlen(t) + 1));
		strcat(all, t);
		free(t);
	}
	globfree(&g);
	return all;
}

/* The quoted list after "CHECK (column IN (" in the last CREATE TABLE of
 * table, into out[] (at most 16, each copied); their number. */
static int
check_list(const char *sql, const char *table, const char *column, char out[][32])
{
	char head[64], check[96];
	const char *t = NULL, *p, *end;
	int n = 0;

	snprintf(head, sizeof(head), "CREATE TABLE %s (", table);
	for (p = sql; (p = strstr(p, head)) != NULL; p++)
		t = p;
	assert_non_null(t);
	end = strstr(t, ");");
	snprintf(check, sizeof(check), "CHECK (%s IN (", column);
	assert_non_null(p = strstr(t, check));
	assert_true(p < end);
	for (p += strlen(check); *p != ')' && n < 16; ) {
		const char *q = strchr(p, '\''), *e;

		assert_non_null(q);
		assert_non_null(e = strchr(q + 1, '\''));
		snprintf(out[n++], 32, "%.*s", (int)(e - q - 1), q + 1);
		p = e + 1;
		while (*p == ',' || *p == ' ')
			p++;
	}
	return n;
}

/* The table is exactly list (in any order), and round-trips. */
static void
expect_table(const struct kind *k, char list[][32], int n)
{
	assert_int_equal(n, k->count);
	for (int i = 0; i < n; i++)
		if (k->parse(list[i]) != 0)
			fail_msg("%s state '%s' of the schema is not in the table", k->name,
			    list[i]);
	for (int v = 0; v < k->count; v++)
		assert_int_equal(k->parse(k->str(v)), 0);
}

static void
test_table_round_trip(void **state)
{
	const struct kind *all[] = { &servers, &admins, &sessions, &commands };

	for (size_t i = 0; i < 4; i++) {
		for (int v = 0; v < all[i]->count; v++) {
			const char *t = all[i]->str(v);

			assert_int_equal(all[i]->parse(t), 0);
			for (int w = v + 1; w < all[i]->count; w++)
				assert_string_not_equal(t, all[i]->str(w));
		}
		assert_string_equal(all[i]->str(all[i]->count), "?");
		assert_string_equal(all[i]->str(-1), "?");
		assert_int_not_equal(all[i]->parse("Up"), 0);
		assert_int_not_equal(all[i]->parse(""), 0);
		assert_int_not_equal(all[i]->parse(NULL), 0);
	}
	assert_string_equal(server_state_str(SERVER_UP), "up");
	assert_string_equal(admin_state_str(ADMIN_DRAINING), "draining");
	assert_string_equal(session_state_str(SESSION_DISCONNECTED), "disconnected");
}

static void
test_schema_checks_match(void **state)
{
	char *sql = schema_text(), list[16][32];
	int n;

	n = check_list(sql, "servers", "state", list);
	expect_table(&servers, list, n);
	n = check_list(sql, "servers", "admin_state", list);
	expect_table(&admins, list, n);
	n = check_list(sql, "sessions", "state", list);
	expect_table(&sessions, list, n);
	n = check_list(sql, "IF NOT EXISTS commands", "state", list);
	expect_table(&commands, list, n);
	free(sql);
}

/* Every string the page compares a state with ("X.state === 'up'") is one
 * of the table's, and its session badge map names every session state. */
static void
test_page_strings_match(void **state)
{
	static const struct { const char *pat; const struct kind *k; } uses[] = {
		{ "s.state === '", &servers }, { "s.state !== '", &servers },
		{ "s.admin_state === '", &admins }, { "s.admin_state !== '", &admins },
		{ "e.state === '", &sessions }, { "e.state !== '", &sessions },
	};
	char *js = slurp("web/app.js"), *p, *end, word[32];
	int found = 0, keys = 0;

	for (size_t i = 0; i < sizeof(uses) / sizeof(uses[0]); i++) {
		for (p = js; (p = strstr(p, uses[i].pat)) != NULL; p = end) {
			p += strlen(uses[i].pat);
			assert_non_null(end = strchr(p, '\''));
			snprintf(word, sizeof(word), "%.*s", (int)(end - p), p);
			if (uses[i].k->parse(word) != 0)
				fail_msg("web/app.js compares a %s state with '%s'",
				    uses[i].k->name, word);
			found++;
		}
	}
	assert_true(found >= 4);
	assert_non_null(p = strstr(js, "STATE_KIND = {"));
	end = strchr(p, '}');
	for (p += strlen("STATE_KIND = {"); p < end; p++) {
		char *colon = strchr(p, ':');

		if (colon == NULL || colon > end)
			break;
		while (*p == ' ')
			p++;
		snprintf(word, sizeof(word), "%.*s", (int)(colon - p), p);
		if (session_state_parse(word, &(enum session_state){ 0 }) != 0)
			fail_msg("web/app.js STATE_KIND has '%s', not a session state", word);
		keys++;
		p = strchr(colon, ',');
		if (p == NULL || p > end)
			break;
	}
	assert_int_equal(keys, SESSION_STATE_COUNT);
	free(js);
}

static void
test_takes_new_users(void **state)
{
	for (int s = 0; s < SERVER_STATE_COUNT; s++)
		for (int a = 0; a < ADMIN_STATE_COUNT; a++)
			for (int q = 0; q <= 1; q++)
				assert_int_equal(states_takes_new_users((enum server_state)s,
				    (enum admin_state)a, q), s == SERVER_UP &&
				    a == ADMIN_ENABLED && !q);
	for (int e = 0; e < SESSION_STATE_COUNT; e++)
		assert_int_equal(states_session_live((enum session_state)e),
		    e == SESSION_ACTIVE || e == SESSION_DISCONNECTED);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_round_trip),
		cmocka_unit_test(test_schema_checks_match),
		cmocka_unit_test(test_page_strings_match),
		cmocka_unit_test(test_takes_new_users),
	};
	return cmocka_run_group_tests_name("states", tests, NULL, NULL);
}
