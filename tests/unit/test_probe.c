/* Unit tests of agent/probe.c: the /proc parsers against fixture trees and
 * the RDP port check against loopback sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/probe.h"
#include "broker/common/util.h"

#define FIX "tests/unit/fixtures/"

static void
test_load_first_and_delta(void **state)
{
	struct probe p;
	struct probe_load l;
	char err[256];

	assert_int_equal(probe_init(&p, FIX "load-a"), 0);
	assert_int_equal(probe_load_read(&p, &l, err, sizeof(err)), 0);
	assert_int_equal(l.ncpu, 4);
	/* first call: busy share since boot, (1000+500)/10000 */
	assert_float_equal(l.cpu_percent, 15.0, 0.001);
	assert_float_equal(l.load1, 1.25, 0.0001);
	assert_int_equal(l.mem_total_kb, 8000000);
	assert_int_equal(l.mem_available_kb, 2000000);

	/* next call: the share between the two samples, 900 of 1500 ticks */
	util_strlcpy(p.root, FIX "load-b", sizeof(p.root));
	assert_int_equal(probe_load_read(&p, &l, err, sizeof(err)), 0);
	assert_float_equal(l.cpu_percent, 60.0, 0.001);
	assert_int_equal(l.mem_available_kb, 1500000);

	/* counters that went back (another machine's sample): since boot */
	util_strlcpy(p.root, FIX "load-a", sizeof(p.root));
	assert_int_equal(probe_load_read(&p, &l, err, sizeof(err)), 0);
	assert_float_equal(l.cpu_percent, 15.0, 0.001);
}

static void
test_load_real_proc(void **state)
{
	struct probe p;
	struct probe_load l;
	char err[256];

	assert_int_equal(probe_init(&p, "/proc"), 0);
	assert_int_equal(probe_load_read(&p, &l, err, sizeof(err)), 0);
	assert_true(l.ncpu >= 1);
	assert_int_equal(l.ncpu, (int)sysconf(_SC_NPROCESSORS_ONLN));
	assert_true(l.cpu_percent >= 0 && l.cpu_percent <= 100);
	assert_true(l.mem_total_kb > 0);
	assert_true(l.mem_available_kb > 0 && l.mem_available_kb <= l.mem_total_kb);
}

static void
test_load_missing(void **state)
{
	struct probe p;
	struct probe_load l = { .ncpu = 77 };
	char err[256] = "";

	assert_int_equal(probe_init(&p, FIX "no-such-dir"), 0);
	assert_int_equal(probe_load_read(&p, &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no-such-dir/stat"));
	assert_int_equal(l.ncpu, 77);		/* untouched on failure */

	/* a tree without meminfo/loadavg (the xrdp fixture) */
	assert_int_equal(probe_init(&p, FIX "xrdp-mixed"), 0);
	assert_int_equal(probe_load_read(&p, &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "loadavg"));
}

/* A listening loopback socket; its port in *port. */
static int
listener(int *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

static void
test_rdp_accepting(void **state)
{
	int port, fd = listener(&port);
	int64_t t0;

	assert_int_equal(probe_rdp_accepting("127.0.0.1", port, 1000), 1);
	assert_int_equal(probe_rdp_accepting("", port, 1000), 1);	/* default */
	assert_int_equal(probe_rdp_accepting("localhost", port, 1000), 1);
	close(fd);
	/* the port is closed now: refused at once */
	t0 = util_mono_ms();
	assert_int_equal(probe_rdp_accepting("127.0.0.1", port, 1000), 0);
	assert_true(util_mono_ms() - t0 < 900);
	/* a name that does not resolve */
	assert_int_equal(probe_rdp_accepting("no-such-host.invalid", 3389, 500), 0);
	/* an address that does not answer: bounded by the timeout */
	t0 = util_mono_ms();
	assert_int_equal(probe_rdp_accepting("192.0.2.1", 3389, 300), 0);
	assert_true(util_mono_ms() - t0 < 1500);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_first_and_delta),
		cmocka_unit_test(test_load_real_proc),
		cmocka_unit_test(test_load_missing),
		cmocka_unit_test(test_rdp_accepting),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
