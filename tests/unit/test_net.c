/* Unit tests for broker/common/net.c on real loopback sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "broker/common/log.h"
#include "broker/common/net.h"
#include "broker/common/util.h"

/* The port of "host:port" / "[v6]:port". */
static int
port_of(const char *name)
{
	const char *c = strrchr(name, ':');

	assert_non_null(c);
	return atoi(c + 1);
}

/* Listens on hostport, connects to it by host, accepts: the whole path. */
static void
round_trip(const char *hostport, const char *host, const char *want_prefix)
{
	char err[256] = "", name[NET_ADDR_MAX], ip[NET_ADDR_MAX];
	int lfd, fd, sfd, port;

	lfd = net_listen(err, sizeof(err), hostport, 8);
	assert_true(lfd >= 0);
	assert_int_equal(net_local_name(lfd, name, sizeof(name)), NET_OK);
	assert_int_equal(strncmp(name, want_prefix, strlen(want_prefix)), 0);
	port = port_of(name);
	assert_true(port > 0);
	assert_true(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(lfd, F_GETFL) & O_NONBLOCK);

	fd = net_connect(err, sizeof(err), host, port, 1000);
	assert_true(fd >= 0);
	assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
	for (int i = 0; i < 500 && (sfd = net_accept(lfd, ip, sizeof(ip))) < 0; i++) {
		assert_int_equal(errno, EAGAIN);
		usleep(2000);
	}
	assert_true(sfd >= 0);
	assert_string_equal(ip, host);
	assert_true(fcntl(sfd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(write(fd, "x", 1), 1);
	char c;
	assert_int_equal(read(sfd, &c, 1), 1);
	assert_int_equal(c, 'x');
	close(sfd);
	close(fd);
	close(lfd);
}

static void
test_listen_ipv4(void **state)
{
	round_trip("127.0.0.1:0", "127.0.0.1", "127.0.0.1:");
}

static int
ipv6_loopback(void)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd = socket(AF_INET6, SOCK_STREAM, 0), ok;

	if (fd < 0)
		return 0;
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

static void
test_listen_ipv6(void **state)
{
	if (!ipv6_loopback())
		skip();
	round_trip("[::1]:0", "::1", "[::1]:");
}

static void
test_listen_bad(void **state)
{
	static const char *bad[] = { "", "nohost", "127.0.0.1", "127.0.0.1:99999",
	    "127.0.0.1:x", "[::1", "::1:80", ":80", "no-such-host.invalid:80" };
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(net_listen(err, sizeof(err), bad[i], 8), NET_ERR);
		assert_non_null(strstr(err, "listen '"));
		assert_non_null(strstr(err, bad[i]));
	}
}

static void
test_listen_in_use(void **state)
{
	char err[256], name[NET_ADDR_MAX], again[NET_ADDR_MAX + 8];
	int lfd = net_listen(err, sizeof(err), "127.0.0.1:0", 8);

	assert_true(lfd >= 0);
	assert_int_equal(net_local_name(lfd, name, sizeof(name)), NET_OK);
	snprintf(again, sizeof(again), "%s", name);
	assert_int_equal(net_listen(err, sizeof(err), again, 8), NET_ERR);
	assert_int_equal(errno, EADDRINUSE);
	assert_non_null(strstr(err, strerror(EADDRINUSE)));
	close(lfd);
}

static void
test_connect_refused(void **state)
{
	char err[256], name[NET_ADDR_MAX];
	int lfd = net_listen(err, sizeof(err), "127.0.0.1:0", 8), port;
	int64_t t0;

	assert_true(lfd >= 0);
	assert_int_equal(net_local_name(lfd, name, sizeof(name)), NET_OK);
	port = port_of(name);
	close(lfd);		/* nobody listens there now */
	t0 = util_mono_ms();
	assert_int_equal(net_connect(err, sizeof(err), "127.0.0.1", port, 5000), NET_ERR);
	assert_int_equal(errno, ECONNREFUSED);
	assert_true(util_mono_ms() - t0 < 2000);	/* refused at once, not timed out */
	assert_non_null(strstr(err, "127.0.0.1:"));
}

static void
test_connect_unresolvable(void **state)
{
	char err[256] = "";

	assert_int_equal(net_connect(err, sizeof(err), "no-such-host.invalid", 3389, 500),
	    NET_ERR);
	assert_int_equal(errno, EHOSTUNREACH);
	assert_non_null(strstr(err, "no-such-host.invalid"));
}

/* A listener whose accept queue is full drops further SYNs: connecting to
 * it can only time out. */
static void
test_connect_timeout(void **state)
{
	char err[256], name[NET_ADDR_MAX];
	int lfd = net_listen(err, sizeof(err), "127.0.0.1:0", 0), port, fill[4];
	int64_t t0, took;

	assert_true(lfd >= 0);
	assert_int_equal(net_local_name(lfd, name, sizeof(name)), NET_OK);
	port = port_of(name);
	for (int i = 0; i < 4; i++) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
		    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		(void)!connect(fill[i], (struct sockaddr *)&sa, sizeof(sa));
		usleep(20000);
	}
	t0 = util_mono_ms();
	assert_int_equal(net_connect(err, sizeof(err), "127.0.0.1", port, 300), NET_ERR);
	took = util_mono_ms() - t0;
	assert_int_equal(errno, ETIMEDOUT);
	assert_true(took >= 290 && took < 3000);
	assert_non_null(strstr(err, strerror(ETIMEDOUT)));
	for (int i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
}

static void
test_timeouts(void **state)
{
	int sv[2];
	char c;
	int64_t t0, took;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(net_set_timeouts(sv[0], 200, 200), NET_OK);
	t0 = util_mono_ms();
	assert_int_equal(recv(sv[0], &c, 1, 0), -1);
	took = util_mono_ms() - t0;
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	assert_true(took >= 190 && took < 2000);
	/* negative leaves it, 0 clears it: a byte still arrives */
	assert_int_equal(net_set_timeouts(sv[0], -1, -1), NET_OK);
	assert_int_equal(net_set_timeouts(sv[0], 0, -1), NET_OK);
	assert_int_equal(write(sv[1], "y", 1), 1);
	assert_int_equal(recv(sv[0], &c, 1, 0), 1);
	/* non-blocking: nothing there, at once */
	assert_int_equal(net_set_nonblock(sv[0], 1), NET_OK);
	assert_int_equal(recv(sv[0], &c, 1, 0), -1);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	assert_int_equal(net_set_nonblock(sv[0], 0), NET_OK);
	assert_false(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
	assert_int_equal(net_set_timeouts(-1, 10, 10), NET_ERR);
	assert_int_equal(net_set_nonblock(-1, 1), NET_ERR);
	assert_int_equal(net_set_nodelay(sv[0]), NET_ERR);	/* not TCP */
	close(sv[0]);
	close(sv[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listen_ipv4),
		cmocka_unit_test(test_listen_ipv6),
		cmocka_unit_test(test_listen_bad),
		cmocka_unit_test(test_listen_in_use),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_connect_unresolvable),
		cmocka_unit_test(test_connect_timeout),
		cmocka_unit_test(test_timeouts),
	};
	log_init("test_net", LOG_ERROR);
	return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
