/* Unit tests of agent/sessions.c: each provider's parsing. xrdp reads
 * fixture proc trees (two captured from a real xrdp 0.9.21 session, one made
 * up to cover both backends and the corner cases); utmp reads a file the
 * test writes; file: and command: run against temporary files and shells. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utmpx.h>

#include <cmocka.h>

#include "agent/sessions.h"
#include "broker/common/util.h"

#define FIX "tests/unit/fixtures/"

static char tmpdir[64];

static int
setup(void **state)
{
	strcpy(tmpdir, "/tmp/test_sessions.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct sessions *
open_spec(const char *spec, const char *root, const char *utmp, int timeout_ms)
{
	struct sessions_opts o = { .spec = spec, .proc_root = root, .utmp_path = utmp,
	    .command_timeout_ms = timeout_ms };
	struct sessions *s = sessions_new(&o);

	assert_non_null(s);
	return s;
}

static const struct wire_session *
find(const struct wire_session *v, size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].id, id) == 0)
			return &v[i];
	fail_msg("no session %s", id);
	return NULL;
}

static void
test_spec(void **state)
{
	static const char *good[] = { "auto", "xrdp", "utmp", "logind",
	    "file:/x", "command:echo []" };
	static const char *bad[] = { "", "XRDP", "file:", "command:", "wtmp",
	    "auto ", "file" };
	struct sessions_opts o = { .spec = "nope", .proc_root = "/proc" };
	char err[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(sessions_spec_check(good[i], err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(sessions_spec_check(bad[i], err, sizeof(err)), -1);
		assert_non_null(strstr(err, "'sessions' expects"));
	}
	assert_null(sessions_new(&o));
}

/* The real capture: the same session connected, then disconnected. */
static void
test_xrdp_real(void **state)
{
	struct wire_session *v = NULL;
	struct sessions *s;
	char err[128];
	size_t n = 99;
	long hz = sysconf(_SC_CLK_TCK);

	s = open_spec("xrdp", FIX "xrdp-real-connected", NULL, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_string_equal(v[0].user, "nobody");
	assert_string_equal(v[0].domain, "");
	assert_string_equal(v[0].id, "6181");	/* the sesman child */
	assert_int_equal(v[0].state, WIRE_ACTIVE);
	assert_int_equal(v[0].since, 1795613530 + 40464 / hz);
	assert_string_equal(sessions_provider(s), "xrdp");
	free(v);
	sessions_free(s);

	s = open_spec("xrdp", FIX "xrdp-real-disconnected", NULL, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_string_equal(v[0].id, "6181");
	assert_int_equal(v[0].state, WIRE_DISCONNECTED);
	free(v);
	sessions_free(s);
}

static void
test_xrdp_mixed(void **state)
{
	const struct wire_session *w;
	struct wire_session *v = NULL;
	struct sessions *s;
	char err[128];
	size_t n = 0;
	long hz = sysconf(_SC_CLK_TCK);

	s = open_spec("xrdp", FIX "xrdp-mixed", NULL, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 5);		/* not the user's own Xvnc :20 */

	w = find(v, n, "6181");		/* Xvnc :10, backend ESTABLISHED */
	assert_string_equal(w->user, "nobody");
	assert_int_equal(w->state, WIRE_ACTIVE);
	assert_int_equal(w->since, 1700000000 + 2000 / hz);

	w = find(v, n, "7001");		/* Xorg :11, xrdp_display_11 St 03 */
	assert_string_equal(w->user, "root");
	assert_int_equal(w->state, WIRE_ACTIVE);

	/* Xvnc :12 on -rfbport 6012: LISTEN, TIME_WAIT and a client-side
	 * socket only; a connected audio socket is not chansrv's */
	w = find(v, n, "7101");
	assert_string_equal(w->user, "4242424");	/* no passwd entry */
	assert_int_equal(w->state, WIRE_DISCONNECTED);

	w = find(v, n, "7201");		/* chansrv connected, old sockdir */
	assert_int_equal(w->state, WIRE_ACTIVE);

	w = find(v, n, "7301");		/* backend ESTABLISHED over tcp6 */
	assert_int_equal(w->state, WIRE_ACTIVE);
	free(v);
	sessions_free(s);
}

static void
test_xrdp_errors(void **state)
{
	struct wire_session *v = (struct wire_session *)0x1;
	struct sessions *s;
	char err[128] = "", root[128], cmd[512];
	size_t n = 42;

	s = open_spec("xrdp", FIX "no-such-dir", NULL, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no-such-dir"));
	assert_int_equal(n, 42);
	assert_ptr_equal(v, (struct wire_session *)0x1);
	sessions_free(s);

	/* sessions exist but their sockets cannot be read: unknown, not
	 * "all disconnected" */
	snprintf(root, sizeof(root), "%s/proc", tmpdir);
	snprintf(cmd, sizeof(cmd), "cp -r " FIX "xrdp-real-connected %s && rm %s/net/unix",
	    root, root);
	assert_int_equal(system(cmd), 0);
	s = open_spec("xrdp", root, NULL, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/net"));
	sessions_free(s);

	/* no xrdp at all: an empty list, not an error */
	s = open_spec("xrdp", FIX "load-a", NULL, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	assert_non_null(v);
	free(v);
	sessions_free(s);
}

static void
utmp_put(FILE *f, short type, pid_t pid, const char *line, const char *user,
    const char *host, long t)
{
	struct utmpx u;

	memset(&u, 0, sizeof(u));
	u.ut_type = type;
	u.ut_pid = pid;
	strncpy(u.ut_line, line, sizeof(u.ut_line));
	strncpy(u.ut_user, user, sizeof(u.ut_user));
	strncpy(u.ut_host, host, sizeof(u.ut_host));
	u.ut_tv.tv_sec = (int32_t)t;
	assert_int_equal(fwrite(&u, sizeof(u), 1, f), 1);
}

static void
test_utmp(void **state)
{
	struct wire_session *v = NULL;
	struct sessions *s;
	char path[128], err[128];
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/utmp", tmpdir);
	assert_non_null(f = fopen(path, "w"));
	/* pids 6181 and 6183 exist in the fixture proc tree, 999999 does not */
	utmp_put(f, BOOT_TIME, 0, "~", "reboot", "6.1.0", 1700000000);
	utmp_put(f, USER_PROCESS, 6181, "pts/1", "alice", "10.0.0.7", 1700000100);
	utmp_put(f, USER_PROCESS, 6183, "tty1", "bob", "", 1700000200);	/* local */
	utmp_put(f, USER_PROCESS, 6183, "pts/2", "carol", ":0", 1700000300); /* local X */
	utmp_put(f, USER_PROCESS, 999999, "pts/3", "dave", "10.0.0.8", 1700000400); /* stale */
	utmp_put(f, LOGIN_PROCESS, 6181, "tty2", "LOGIN", "", 1700000500);
	utmp_put(f, DEAD_PROCESS, 6181, "pts/4", "", "10.0.0.9", 1700000600);
	utmp_put(f, USER_PROCESS, 6183, "pts/5", "a-very-long-user-name-of-32-char", "h", 1700000700);
	fclose(f);

	s = open_spec("utmp", FIX "xrdp-real-connected", path, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].user, "alice");
	assert_string_equal(v[0].id, "pts/1");
	assert_int_equal(v[0].state, WIRE_ACTIVE);
	assert_int_equal(v[0].since, 1700000100);
	assert_string_equal(v[1].user, "a-very-long-user-name-of-32-char");
	free(v);
	sessions_free(s);

	/* no utmp file at all: a failure, not an empty list */
	snprintf(path, sizeof(path), "%s/no-utmp", tmpdir);
	s = open_spec("utmp", "/proc", path, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no-utmp"));
	sessions_free(s);
}

static void
test_auto(void **state)
{
	struct wire_session *v = NULL;
	struct sessions *s;
	char path[128], err[128];
	size_t n = 0;
	FILE *f;

	s = open_spec("auto", FIX "xrdp-mixed", NULL, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
	assert_string_equal(sessions_provider(s), "xrdp");
	assert_int_equal(n, 5);
	free(v);
	sessions_free(s);

	/* no xrdp-sesman: utmp */
	snprintf(path, sizeof(path), "%s/utmp-empty", tmpdir);
	assert_non_null(f = fopen(path, "w"));
	fclose(f);
	s = open_spec("auto", FIX "load-a", path, 0);
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
	assert_string_equal(sessions_provider(s), "utmp");
	assert_int_equal(n, 0);
	free(v);
	sessions_free(s);
}

static void
test_logind(void **state)
{
	struct wire_session *v = NULL;
	struct sessions *s;
	char err[128] = "";
	size_t n = 0;
	struct stat sb;

	s = open_spec("logind", "/proc", NULL, 0);
	if (stat("/run/systemd/sessions", &sb) != 0) {
		/* no logind here (as on CI): a failure, never an empty list */
		assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "logind"));
	} else {
		assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
		free(v);
	}
	sessions_free(s);
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
test_file(void **state)
{
	struct wire_session *v = NULL;
	struct sessions *s;
	char path[128], spec[160], err[128];
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/sessions.json", tmpdir);
	snprintf(spec, sizeof(spec), "file:%s", path);
	s = open_spec(spec, "/proc", NULL, 0);

	/* missing file */
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "sessions.json"));

	write_file(path, "[{\"user\":\"alice\",\"domain\":\"CORP\",\"id\":7,"
	    "\"state\":\"disconnected\",\"since\":1700000000},"
	    "{\"user\":\"bob\",\"state\":\"active\"}]");
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].user, "alice");
	assert_string_equal(v[0].domain, "CORP");
	assert_string_equal(v[0].id, "7");
	assert_int_equal(v[0].state, WIRE_DISCONNECTED);
	assert_int_equal(v[0].since, 1700000000);
	assert_int_equal(v[1].state, WIRE_ACTIVE);
	free(v);

	/* re-read at every call */
	write_file(path, "[]");
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(v);

	write_file(path, "[{\"user\":\"alice\"");
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "invalid JSON"));
	write_file(path, "[{\"user\":\"alice\",\"state\":\"asleep\"}]");
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "state"));
	write_file(path, "{\"sessions\":[]}");
	assert_int_equal(sessions_collect(s, &v, &n, err, sizeof(err)), -1);
	sessions_free(s);
}

static int
collect_cmd(const char *cmd, int timeout_ms, struct wire_session **v, size_t *n,
    char *err, size_t errlen)
{
	char spec[512];
	struct sessions *s;
	int r;

	snprintf(spec, sizeof(spec), "command:%s", cmd);
	s = open_spec(spec, "/proc", NULL, timeout_ms);
	r = sessions_collect(s, v, n, err, errlen);
	sessions_free(s);
	return r;
}

static void
test_command(void **state)
{
	struct wire_session *v = NULL;
	char err[128];
	size_t n = 0;

	assert_int_equal(collect_cmd("printf '[{\"user\":\"%s\",\"state\":\"active\",\"id\":\"x\"}]' \"$(echo alice)\"",
	    5000, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_string_equal(v[0].user, "alice");
	free(v);

	assert_int_equal(collect_cmd("echo '[]'", 5000, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(v);

	/* stdin is /dev/null */
	assert_int_equal(collect_cmd("cat; echo '[]'", 5000, &v, &n, err, sizeof(err)), 0);
	free(v);

	assert_int_equal(collect_cmd("echo '[]'; echo 'no broker' >&2; exit 3", 5000,
	    &v, &n, err, sizeof(err)), -1);
	assert_string_equal(err, "command exited with status 3: no broker");

	assert_int_equal(collect_cmd("echo '[{'", 5000, &v, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "command output: invalid JSON"));

	assert_int_equal(collect_cmd("echo", 5000, &v, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "invalid JSON"));

	assert_int_equal(collect_cmd("kill -9 $$", 5000, &v, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "signal 9"));

	assert_int_equal(collect_cmd("head -c 5000000 /dev/zero", 5000, &v, &n,
	    err, sizeof(err)), -1);
	assert_non_null(strstr(err, "more than 4 MiB"));

	/* lots of stderr does not block it */
	assert_int_equal(collect_cmd("head -c 1000000 /dev/zero >&2; echo '[]'", 5000,
	    &v, &n, err, sizeof(err)), 0);
	free(v);
}

/* Is pid gone (or a zombie waiting for its reaper)? */
static int
dead(pid_t pid)
{
	char path[64], buf[256];
	FILE *f;
	int zombie = 0;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 1;
	if (fgets(buf, sizeof(buf), f) != NULL) {
		char *p = strrchr(buf, ')');
		zombie = p != NULL && (p[2] == 'Z' || p[2] == 'X');
	}
	fclose(f);
	return zombie;
}

/* SIGKILL takes effect asynchronously: wait for it, up to 2 s. */
static int
gone(pid_t pid)
{
	int64_t deadline = util_mono_ms() + 2000;

	while (!dead(pid)) {
		if (util_mono_ms() > deadline)
			return 0;
		usleep(10000);
	}
	return 1;
}

static void
test_command_timeout(void **state)
{
	struct wire_session *v = NULL;
	char err[128], cmd[512], path[128], *text = NULL;
	size_t n = 0;
	int64_t t0;
	long pid;

	/* a child that runs on in the background with the pipe open, and its
	 * parent: both killed with the process group */
	snprintf(path, sizeof(path), "%s/bgpid", tmpdir);
	snprintf(cmd, sizeof(cmd), "sleep 30 & echo $! > %s; sleep 30", path);
	t0 = util_mono_ms();
	assert_int_equal(collect_cmd(cmd, 300, &v, &n, err, sizeof(err)), -1);
	assert_true(util_mono_ms() - t0 < 2000);
	assert_string_equal(err, "command timed out after 300 ms");
	assert_int_equal(util_file_read(path, 64, &text, NULL), 0);
	pid = strtol(text, NULL, 10);
	free(text);
	assert_true(pid > 0);
	assert_true(gone((pid_t)pid));

	/* exits but leaves a child holding stdout: its output counts, the
	 * child is killed with the group */
	snprintf(cmd, sizeof(cmd), "sleep 30 & echo $! > %s; echo '[]'", path);
	t0 = util_mono_ms();
	assert_int_equal(collect_cmd(cmd, 5000, &v, &n, err, sizeof(err)), 0);
	assert_true(util_mono_ms() - t0 < 2000);
	assert_int_equal(n, 0);
	free(v);
	assert_int_equal(util_file_read(path, 64, &text, NULL), 0);
	pid = strtol(text, NULL, 10);
	free(text);
	assert_true(gone((pid_t)pid));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec),
		cmocka_unit_test(test_xrdp_real),
		cmocka_unit_test(test_xrdp_mixed),
		cmocka_unit_test(test_xrdp_errors),
		cmocka_unit_test(test_utmp),
		cmocka_unit_test(test_auto),
		cmocka_unit_test(test_logind),
		cmocka_unit_test(test_file),
		cmocka_unit_test(test_command),
		cmocka_unit_test(test_command_timeout),
	};

	/* the agent runs with these blocked; children must not inherit that */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	return cmocka_run_group_tests(tests, setup, teardown);
}
