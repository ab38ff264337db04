/* Unit tests for broker/front/splice.c on real loopback TCP sockets (the
 * connect to the server is broker/common/net.c's). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "broker/common/log.h"
#include "broker/common/net.h"
#include "broker/common/util.h"
#include "broker/front/relay.h"
#include "broker/front/splice.h"

static char err[160];	/* net_connect's reason */

static int
listener(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* Reads exactly n bytes within 5 s. */
static void
read_n(int fd, char *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd p = { fd, POLLIN, 0 };
		assert_int_equal(poll(&p, 1, 5000), 1);
		ssize_t r = read(fd, buf + got, n - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
}

static void
expect_eof(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	char c;

	assert_int_equal(poll(&p, 1, 5000), 1);
	assert_int_equal(read(fd, &c, 1), 0);
}

static void
wait_idle(struct splice *s)
{
	int64_t end = util_mono_ms() + 5000;

	while (splice_active(s) != 0 && util_mono_ms() < end)
		usleep(1000);
	assert_int_equal(splice_active(s), 0);
}

static void
test_connect(void **state)
{
	int port, lfd = listener(&port), fd;

	fd = net_connect(err, sizeof(err), "127.0.0.1", port, 1000);
	assert_true(fd >= 0);
	close(fd);
	close(lfd);
	assert_int_equal(net_connect(err, sizeof(err), "127.0.0.1", port, 1000), -1);
	assert_int_equal(errno, ECONNREFUSED);
}

static void
test_relay_and_half_close(void **state)
{
	struct metrics_relay m = { { 0 }, { 0 } };
	struct splice_conf c = { .idle_timeout_ms = 5000, .max = 4, .m = &m };
	struct splice *s = splice_new(&c);
	int port, lfd = listener(&port), cl[2], srv, up;
	char buf[70000], big[70000];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, cl), 0);
	up = net_connect(err, sizeof(err), "127.0.0.1", port, 1000);
	assert_true(up >= 0);
	srv = accept(lfd, NULL, NULL);
	assert_int_equal(splice_start(s, cl[1], up, "HELLO", 5), 0);
	read_n(srv, buf, 5);
	assert_memory_equal(buf, "HELLO", 5);
	/* more than one buffer each way, unchanged */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7);
	assert_int_equal(write(cl[0], big, sizeof(big)), sizeof(big));
	read_n(srv, buf, sizeof(big));
	assert_memory_equal(buf, big, sizeof(big));
	assert_int_equal(write(srv, "pong", 4), 4);
	read_n(cl[0], buf, 4);
	assert_memory_equal(buf, "pong", 4);
	/* the client half-closes: the server sees EOF and can still answer */
	shutdown(cl[0], SHUT_WR);
	expect_eof(srv);
	assert_int_equal(write(srv, "bye", 3), 3);
	read_n(cl[0], buf, 3);
	assert_memory_equal(buf, "bye", 3);
	close(srv);
	expect_eof(cl[0]);
	wait_idle(s);
	assert_int_equal(m.bytes[0], 5 + sizeof(big));
	assert_int_equal(m.bytes[1], 4 + 3);
	assert_int_equal(m.closed[RELAY_CLOSE_DONE], 1);
	close(cl[0]);
	close(lfd);
	splice_free(s);
}

static void
test_idle_timeout_and_cap(void **state)
{
	struct metrics_relay m = { { 0 }, { 0 } };
	struct splice_conf c = { .idle_timeout_ms = 200, .max = 1, .m = &m };
	struct splice *s = splice_new(&c);
	int port, lfd = listener(&port), a[2], b[2], srv, up;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
	up = net_connect(err, sizeof(err), "127.0.0.1", port, 1000);
	srv = accept(lfd, NULL, NULL);
	assert_int_equal(splice_start(s, a[1], up, NULL, 0), 0);
	/* at the cap: refused, the fds stay the caller's */
	assert_int_equal(splice_start(s, b[1], b[0], NULL, 0), -1);
	assert_int_equal(write(b[0], "x", 1), 1);
	/* nothing moves for 200 ms: both sides are closed */
	expect_eof(a[0]);
	expect_eof(srv);
	wait_idle(s);
	assert_int_equal(m.closed[RELAY_CLOSE_IDLE], 1);
	close(a[0]);
	close(b[0]);
	close(b[1]);
	close(srv);
	close(lfd);
	splice_free(s);
}

static void
test_free_stops_pairs(void **state)
{
	struct metrics_relay m = { { 0 }, { 0 } };
	struct splice_conf c = { .idle_timeout_ms = 60000, .max = 4, .m = &m };
	struct splice *s = splice_new(&c);
	int port, lfd = listener(&port), a[2], srv, up;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
	up = net_connect(err, sizeof(err), "127.0.0.1", port, 1000);
	srv = accept(lfd, NULL, NULL);
	assert_int_equal(splice_start(s, a[1], up, NULL, 0), 0);
	splice_free(s);		/* returns once the pair has ended */
	assert_int_equal(m.closed[RELAY_CLOSE_STOP], 1);
	expect_eof(a[0]);
	expect_eof(srv);
	close(a[0]);
	close(srv);
	close(lfd);
}


/* ---- relay.c: the pure rules ---- */

static void
test_relay_dir_accounting(void **state)
{
	struct relay_dir d = { 0 };
	char big[RELAY_BUF];

	memset(big, 'x', sizeof(big));
	assert_false(relay_dir_waiting(&d));
	relay_dir_passed(&d, 10);
	assert_int_equal(d.bytes, 10);
	assert_null(d.pend);			/* nothing waits: no buffer */
	assert_int_equal(relay_dir_keep(&d, "abcdef", 6), RELAY_OK);
	assert_true(relay_dir_waiting(&d));
	relay_dir_sent(&d, 2);
	assert_int_equal(d.len - d.off, 4);
	assert_memory_equal(d.pend + d.off, "cdef", 4);
	assert_int_equal(relay_dir_keep(&d, "gh", 2), RELAY_OK);	/* appended */
	assert_memory_equal(d.pend + d.off, "cdefgh", 6);
	/* bounded: the wait never grows past RELAY_BUF */
	assert_int_equal(relay_dir_keep(&d, big, sizeof(big)), RELAY_EFULL);
	assert_int_equal(d.len - d.off, 6);
	relay_dir_sent(&d, 6);
	assert_false(relay_dir_waiting(&d));
	assert_null(d.pend);			/* freed once drained */
	assert_int_equal(d.bytes, 10 + 2 + 6);
	assert_int_equal(relay_dir_keep(&d, big, sizeof(big)), RELAY_OK);
	relay_dir_clear(&d);
	assert_null(d.pend);
}

static void
test_relay_dir_piped(void **state)
{
	struct relay_dir dir[2] = { { 0 }, { 0 } };

	/* bytes in the pipe wait like buffered ones: back-pressure, EOF held */
	relay_dir_piped(&dir[0], 100);
	assert_true(relay_dir_waiting(&dir[0]));
	assert_null(dir[0].pend);
	assert_int_equal(relay_events(dir, 0), 0);
	assert_int_equal(relay_events(dir, 1), EPOLLIN | EPOLLOUT);
	relay_dir_eof(&dir[0]);
	relay_dir_unpiped(&dir[0], 60);
	assert_false(relay_dir_shut_due(&dir[0]));
	relay_dir_unpiped(&dir[0], 40);
	assert_false(relay_dir_waiting(&dir[0]));
	assert_true(relay_dir_shut_due(&dir[0]));
	assert_int_equal(dir[0].bytes, 100);
}

static void
test_relay_states(void **state)
{
	struct relay_dir dir[2] = { { 0 }, { 0 } };

	/* both open, nothing waits: both read */
	assert_int_equal(relay_events(dir, 0), EPOLLIN);
	assert_int_equal(relay_events(dir, 1), EPOLLIN);
	/* client->server bytes wait: the client is not read (back-pressure),
	 * the server waits to be writable */
	assert_int_equal(relay_dir_keep(&dir[0], "req", 3), RELAY_OK);
	assert_int_equal(relay_events(dir, 0), 0);
	assert_int_equal(relay_events(dir, 1), EPOLLIN | EPOLLOUT);
	/* the client's EOF: the server is shut only once drained */
	relay_dir_eof(&dir[0]);
	assert_false(relay_dir_shut_due(&dir[0]));
	relay_dir_sent(&dir[0], 3);
	assert_true(relay_dir_shut_due(&dir[0]));
	relay_dir_shut(&dir[0]);
	assert_false(relay_dir_shut_due(&dir[0]));
	assert_false(relay_done(dir));
	/* half-closed: the server's way still flows */
	assert_int_equal(relay_events(dir, 0), 0);
	assert_int_equal(relay_events(dir, 1), EPOLLIN);
	relay_dir_eof(&dir[1]);
	assert_int_equal(relay_events(dir, 1), 0);
	relay_dir_eof(&dir[1]);			/* twice: no change */
	assert_true(relay_dir_shut_due(&dir[1]));
	relay_dir_shut(&dir[1]);
	assert_true(relay_done(dir));
}

/* A server that stops reading: the relay stops reading the client (the
 * kernel's buffers fill, the client's writes block), holds at most
 * RELAY_BUF, and spins no CPU; once the server reads, every byte arrives. */
static void
test_back_pressure(void **state)
{
	struct splice_conf c = { .idle_timeout_ms = 10000, .max = 4, .threads = 1 };
	struct splice *s = splice_new(&c);
	int port, lfd = listener(&port), cl[2], srv, up;
	size_t sent = 0, got = 0;
	char buf[65536];
	clock_t cpu0;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, cl), 0);
	up = net_connect(err, sizeof(err), "127.0.0.1", port, 1000);
	srv = accept(lfd, NULL, NULL);
	assert_int_equal(splice_start(s, cl[1], up, NULL, 0), 0);
	assert_int_equal(net_set_nonblock(cl[0], 1), 0);
	memset(buf, 'b', sizeof(buf));
	/* write until the client's socket takes no more for 200 ms */
	for (int64_t quiet = util_mono_ms(); util_mono_ms() - quiet < 200; ) {
		ssize_t w = write(cl[0], buf, sizeof(buf));
		if (w > 0) {
			sent += (size_t)w;
			quiet = util_mono_ms();
		} else
			usleep(1000);
		assert_true(sent < (size_t)256 << 20);	/* bounded */
	}
	/* stalled: no CPU burnt by the relay while it waits */
	cpu0 = clock();
	usleep(300000);
	assert_true((double)(clock() - cpu0) / CLOCKS_PER_SEC < 0.1);
	assert_int_equal(splice_active(s), 1);
	/* the server reads it all, in order */
	assert_int_equal(net_set_nonblock(cl[0], 0), 0);
	shutdown(cl[0], SHUT_WR);
	for (;;) {
		struct pollfd p = { srv, POLLIN, 0 };
		assert_int_equal(poll(&p, 1, 5000), 1);
		ssize_t r = read(srv, buf, sizeof(buf));
		assert_true(r >= 0);
		if (r == 0)
			break;
		for (ssize_t i = 0; i < r; i++)
			assert_int_equal(buf[i], 'b');
		got += (size_t)r;
	}
	assert_int_equal(got, sent);
	close(srv);
	expect_eof(cl[0]);
	wait_idle(s);
	close(cl[0]);
	close(lfd);
	splice_free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect),
		cmocka_unit_test(test_relay_and_half_close),
		cmocka_unit_test(test_idle_timeout_and_cap),
		cmocka_unit_test(test_free_stops_pairs),
		cmocka_unit_test(test_relay_dir_accounting),
		cmocka_unit_test(test_relay_states),
		cmocka_unit_test(test_relay_dir_piped),
		cmocka_unit_test(test_back_pressure),
	};
	log_init("test_splice", LOG_ERROR);
	return cmocka_run_group_tests_name("splice", tests, NULL, NULL);
}
