/* Unit tests for broker/front/admit.c, the admission engine, over real
 * loopback sockets: its limits (max_connections at accept, max_handshakes
 * slots, the handshake deadline of each stage), the waiting stage (a
 * partial request takes no slot) and a connection its handler keeps
 * (ADMIT_KEPT: its slot held until released, admit_free waits for it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "broker/common/log.h"
#include "broker/common/net.h"
#include "broker/common/util.h"
#include "broker/front/admit.h"

#define WAIT_MS	5000	/* upper bound of every polled condition */

/* What the handler saw; the handler holds its slot until released. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int handled;			/* handlers started */
	int running;			/* handlers not yet returned */
	int release;			/* handlers may return (each takes one) */
	int read_until_closed;		/* handler reads until EOF instead */
	int timed_out;			/* handlers that saw admit_conn_timed_out */
	int64_t handler_ms;		/* the last reading handler's time */
	uint8_t request[300];		/* the last handled request */
	size_t request_len;
	int dropped;
	char why[10][160];		/* dropped reasons, in order */
	int keep;			/* handlers keep the connection (ADMIT_KEPT) */
	struct admit_conn *kept;	/* the last kept one */
	int released;			/* kept ones released */
} seen;

static int
on_handle(void *ctx, struct admit_conn *c)
{
	const uint8_t *req;
	size_t len;

	req = admit_conn_request(c, &len);
	pthread_mutex_lock(&seen.lock);
	seen.handled++;
	if (seen.keep) {
		seen.kept = c;
		pthread_mutex_unlock(&seen.lock);
		return ADMIT_KEPT;
	}
	seen.running++;
	memcpy(seen.request, req, len < sizeof(seen.request) ? len : sizeof(seen.request));
	seen.request_len = len;
	if (seen.read_until_closed) {
		int64_t t0 = util_mono_ms();
		char buf[64];

		pthread_mutex_unlock(&seen.lock);
		while (recv(admit_conn_fd(c), buf, sizeof(buf), 0) > 0)
			;	/* the peeked request, then nothing until the watchdog */
		pthread_mutex_lock(&seen.lock);
		seen.handler_ms = util_mono_ms() - t0;
		seen.timed_out += admit_conn_timed_out(c);
	} else {
		while (seen.release == 0 && !admit_conn_stopping(c)) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 20 * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&seen.cond, &seen.lock, &ts);
		}
		if (seen.release > 0)
			seen.release--;
	}
	seen.running--;
	pthread_mutex_unlock(&seen.lock);
	return 0;
}

static void
on_dropped(void *ctx, struct admit_conn *c, const char *why)
{
	pthread_mutex_lock(&seen.lock);
	if (seen.dropped < 10)
		util_strlcpy(seen.why[seen.dropped], why, sizeof(seen.why[0]));
	seen.dropped++;
	pthread_mutex_unlock(&seen.lock);
}

static int
seen_get(const int *field)
{
	int v;

	pthread_mutex_lock(&seen.lock);
	v = *field;
	pthread_mutex_unlock(&seen.lock);
	return v;
}

/* Polls until *field == want (within WAIT_MS); returns the last value. */
static int
wait_for(const int *field, int want)
{
	int64_t end = util_mono_ms() + WAIT_MS;
	int v;

	while ((v = seen_get(field)) != want && util_mono_ms() < end)
		usleep(2000);
	return v;
}

static void
release_one(void)
{
	pthread_mutex_lock(&seen.lock);
	seen.release++;
	pthread_cond_broadcast(&seen.cond);
	pthread_mutex_unlock(&seen.lock);
}

static struct admit *
start(int handshake_timeout, int max_handshakes, int max_connections, int *port)
{
	struct admit_conf c = { "127.0.0.1:0", handshake_timeout, max_handshakes,
	    max_connections, 0, 0, NULL, NULL, NULL, -1 };
	struct admit_handler h = { on_handle, on_dropped, NULL };
	char err[256], name[NET_ADDR_MAX];
	struct admit *a;

	pthread_mutex_lock(&seen.lock);
	seen.handled = seen.running = seen.release = seen.read_until_closed = 0;
	seen.timed_out = seen.dropped = seen.keep = seen.released = 0;
	seen.kept = NULL;
	seen.request_len = 0;
	pthread_mutex_unlock(&seen.lock);
	a = admit_new(&c, &h, err, sizeof(err));
	assert_non_null(a);
	assert_int_equal(admit_start(a), 0);
	assert_int_equal(net_local_name(admit_listen_fd(a), name, sizeof(name)), NET_OK);
	*port = atoi(strrchr(name, ':') + 1);
	return a;
}

static int
dial(int port)
{
	char err[256];
	int fd = net_connect(err, sizeof(err), "127.0.0.1", port, 1000);

	assert_true(fd >= 0);
	return fd;
}

/* A Connection Request with a cookie for user, into buf; its length. */
static size_t
request(uint8_t *buf, const char *user)
{
	static const uint8_t neg[8] = { 1, 0, 8, 0, 3, 0, 0, 0 };
	size_t n = 11;

	n += (size_t)sprintf((char *)buf + 11, "Cookie: mstshash=%s\r\n", user);
	memcpy(buf + n, neg, sizeof(neg));
	n += sizeof(neg);
	buf[0] = 3;
	buf[1] = 0;
	buf[2] = (uint8_t)(n >> 8);
	buf[3] = (uint8_t)n;
	buf[4] = (uint8_t)(n - 5);
	buf[5] = 0xe0;
	memset(buf + 6, 0, 5);
	return n;
}

static void
send_request(int fd, const char *user)
{
	uint8_t buf[128];
	size_t n = request(buf, user);

	assert_int_equal(write(fd, buf, n), (ssize_t)n);
}

/* 1 if the peer closed fd within ms (EOF or reset), 0 if it stayed open. */
static int
closed_within(int fd, int ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	char c;

	if (poll(&p, 1, ms) != 1)
		return 0;
	return recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
}

/* With max_connections reached: 1 once the listener holds every
 * connection dialed so far (accepts are in order, so one more is closed
 * at accept only after all the earlier ones are the listener's). */
static int
accepted_all(int port)
{
	int fd = dial(port), closed = closed_within(fd, WAIT_MS);

	close(fd);
	return closed;
}

static void
test_max_connections_refused_at_accept(void **state)
{
	int port, fd[3];
	struct admit *a = start(5, 1, 2, &port);

	fd[0] = dial(port);
	fd[1] = dial(port);
	fd[2] = dial(port);		/* the third is closed at accept */
	assert_int_equal(closed_within(fd[2], WAIT_MS), 1);
	assert_int_equal(closed_within(fd[0], 300), 0);
	assert_int_equal(closed_within(fd[1], 0), 0);
	assert_int_equal(seen_get(&seen.dropped), 0);	/* counted, not dropped */
	close(fd[0]);			/* one open: room for one more */
	assert_int_equal(wait_for(&seen.dropped, 1), 1);
	fd[0] = dial(port);
	assert_int_equal(closed_within(fd[0], 300), 0);
	for (int i = 0; i < 3; i++)
		close(fd[i]);
	admit_free(a);
}

static void
test_max_handshakes_slots(void **state)
{
	int port, fd[3];
	struct admit *a = start(5, 2, 10, &port);

	for (int i = 0; i < 3; i++) {
		fd[i] = dial(port);
		send_request(fd[i], "slot");
	}
	assert_int_equal(wait_for(&seen.running, 2), 2);
	usleep(300000);
	assert_int_equal(seen_get(&seen.handled), 2);	/* the third waits */
	release_one();
	assert_int_equal(wait_for(&seen.handled, 3), 3);
	release_one();
	release_one();
	assert_int_equal(wait_for(&seen.running, 0), 0);
	assert_int_equal(seen_get(&seen.dropped), 0);
	for (int i = 0; i < 3; i++)
		close(fd[i]);
	admit_free(a);
}

static void
test_handshake_deadline(void **state)
{
	int port, fd, idle;
	int64_t t0;
	struct admit *a = start(1, 4, 10, &port);

	pthread_mutex_lock(&seen.lock);
	seen.read_until_closed = 1;
	pthread_mutex_unlock(&seen.lock);
	t0 = util_mono_ms();
	idle = dial(port);		/* sends nothing: the first stage's deadline */
	fd = dial(port);
	send_request(fd, "slow");	/* then nothing: the second stage's */
	assert_int_equal(wait_for(&seen.handled, 1), 1);
	assert_int_equal(wait_for(&seen.timed_out, 1), 1);
	assert_int_equal(wait_for(&seen.dropped, 1), 1);
	pthread_mutex_lock(&seen.lock);
	assert_true(seen.handler_ms >= 700 && seen.handler_ms < 3000);
	assert_string_equal(seen.why[0], "no Connection Request within 1 s");
	pthread_mutex_unlock(&seen.lock);
	assert_true(util_mono_ms() - t0 >= 900);
	assert_int_equal(closed_within(idle, WAIT_MS), 1);
	close(idle);
	close(fd);
	admit_free(a);
}

static void
test_no_slot_within_deadline(void **state)
{
	int port, fd[2];
	struct admit *a = start(1, 1, 10, &port);

	fd[0] = dial(port);
	send_request(fd[0], "holder");
	assert_int_equal(wait_for(&seen.running, 1), 1);
	fd[1] = dial(port);
	send_request(fd[1], "waiter");	/* complete, but the one slot is held */
	assert_int_equal(wait_for(&seen.dropped, 1), 1);
	pthread_mutex_lock(&seen.lock);
	assert_string_equal(seen.why[0], "no handshake slot within 1 s (max_handshakes)");
	pthread_mutex_unlock(&seen.lock);
	assert_int_equal(closed_within(fd[1], WAIT_MS), 1);
	release_one();
	assert_int_equal(wait_for(&seen.running, 0), 0);
	close(fd[0]);
	close(fd[1]);
	admit_free(a);
}

static void
test_partial_request_takes_no_slot(void **state)
{
	uint8_t full[128], mine[128];
	size_t n = request(full, "partial"), m = request(mine, "whole");
	int port, fd[2];
	struct admit *a = start(5, 1, 10, &port);

	fd[0] = dial(port);
	assert_int_equal(write(fd[0], full, 6), 6);	/* TPKT header and a little */
	usleep(100000);
	fd[1] = dial(port);
	assert_int_equal(write(fd[1], mine, m), (ssize_t)m);
	/* the one slot goes to the whole request, though it came second */
	assert_int_equal(wait_for(&seen.handled, 1), 1);
	pthread_mutex_lock(&seen.lock);
	assert_int_equal(seen.request_len, m);
	assert_memory_equal(seen.request, mine, m);
	pthread_mutex_unlock(&seen.lock);
	release_one();
	assert_int_equal(wait_for(&seen.running, 0), 0);
	/* the rest of the first: now it is handled, exactly its length */
	assert_int_equal(write(fd[0], full + 6, n - 6), (ssize_t)(n - 6));
	assert_int_equal(wait_for(&seen.handled, 2), 2);
	pthread_mutex_lock(&seen.lock);
	assert_int_equal(seen.request_len, n);
	assert_memory_equal(seen.request, full, n);
	pthread_mutex_unlock(&seen.lock);
	release_one();
	assert_int_equal(wait_for(&seen.running, 0), 0);
	assert_int_equal(seen_get(&seen.dropped), 0);
	close(fd[0]);
	close(fd[1]);
	admit_free(a);
}

static void
test_waiting_stage_drops(void **state)
{
	int port, fd[2];
	struct admit *a = start(5, 1, 10, &port);

	fd[0] = dial(port);
	assert_int_equal(write(fd[0], "GET / HTTP/1.0\r\n\r\n", 18), 18);
	assert_int_equal(wait_for(&seen.dropped, 1), 1);
	fd[1] = dial(port);
	assert_int_equal(write(fd[1], "\x03\x00", 2), 2);
	close(fd[1]);			/* closed before its request was whole */
	assert_int_equal(wait_for(&seen.dropped, 2), 2);
	pthread_mutex_lock(&seen.lock);
	assert_non_null(strstr(seen.why[0], "not an RDP client"));
	assert_string_equal(seen.why[1], "client closed before its Connection Request");
	pthread_mutex_unlock(&seen.lock);
	assert_int_equal(seen_get(&seen.handled), 0);
	close(fd[0]);
	admit_free(a);
}

static void
test_free_ends_everything(void **state)
{
	int port, fd[2];
	struct admit *a = start(30, 1, 2, &port);

	fd[0] = dial(port);
	send_request(fd[0], "busy");	/* in a handler that waits for release */
	fd[1] = dial(port);		/* waiting for its request */
	assert_int_equal(wait_for(&seen.running, 1), 1);
	assert_int_equal(accepted_all(port), 1);
	assert_int_equal(admit_free(a), 0);	/* the handler sees stopping */
	assert_int_equal(seen_get(&seen.running), 0);
	assert_int_equal(seen_get(&seen.dropped), 1);
	assert_string_equal(seen.why[0], "broker stopping");
	assert_int_equal(closed_within(fd[0], WAIT_MS), 1);
	assert_int_equal(closed_within(fd[1], WAIT_MS), 1);
	close(fd[0]);
	close(fd[1]);
}

/* What an engine's loop does with a kept connection: reads until the
 * socket is shut down (the watchdog at stop), then releases it, late. */
static void *
kept_releaser(void *arg)
{
	struct admit_conn *c = arg;
	char buf[64];

	while (recv(admit_conn_fd(c), buf, sizeof(buf), 0) > 0)
		;	/* the peeked request, then nothing until the shutdown */
	usleep(200 * 1000);
	pthread_mutex_lock(&seen.lock);
	seen.released++;
	pthread_mutex_unlock(&seen.lock);
	admit_conn_release(c);
	return NULL;
}

static void
test_kept_until_released(void **state)
{
	int port, fd[2];
	struct admit *a = start(30, 1, 2, &port);
	pthread_t t;

	pthread_mutex_lock(&seen.lock);
	seen.keep = 1;
	pthread_mutex_unlock(&seen.lock);
	fd[0] = dial(port);
	send_request(fd[0], "kept");
	assert_int_equal(wait_for(&seen.handled, 1), 1);	/* the handler returned */
	fd[1] = dial(port);
	send_request(fd[1], "second");	/* the one slot is the kept one's */
	assert_int_equal(accepted_all(port), 1);
	assert_int_equal(pthread_create(&t, NULL, kept_releaser, seen.kept), 0);
	/* stop shuts the kept socket down and waits for its release */
	assert_int_equal(admit_free(a), 0);
	assert_int_equal(seen_get(&seen.released), 1);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(seen_get(&seen.handled), 1);
	assert_int_equal(seen_get(&seen.dropped), 1);
	assert_string_equal(seen.why[0], "broker stopping");
	assert_int_equal(closed_within(fd[0], WAIT_MS), 1);
	assert_int_equal(closed_within(fd[1], WAIT_MS), 1);
	close(fd[0]);
	close(fd[1]);
}

static void
test_bad_listen(void **state)
{
	struct admit_conf c = { "127.0.0.1:99999", 1, 1, 1, 0, 0, NULL, NULL, NULL, -1 };
	struct admit_handler h = { on_handle, on_dropped, NULL };
	char err[256] = "";

	assert_null(admit_new(&c, &h, err, sizeof(err)));
	assert_non_null(strstr(err, "127.0.0.1:99999"));
	assert_int_equal(admit_free(NULL), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_max_connections_refused_at_accept),
		cmocka_unit_test(test_max_handshakes_slots),
		cmocka_unit_test(test_handshake_deadline),
		cmocka_unit_test(test_no_slot_within_deadline),
		cmocka_unit_test(test_partial_request_takes_no_slot),
		cmocka_unit_test(test_waiting_stage_drops),
		cmocka_unit_test(test_free_ends_everything),
		cmocka_unit_test(test_kept_until_released),
		cmocka_unit_test(test_bad_listen),
	};
	log_init("test_admit", LOG_ERROR);
	pthread_mutex_init(&seen.lock, NULL);
	pthread_cond_init(&seen.cond, NULL);
	return cmocka_run_group_tests_name("admit", tests, NULL, NULL);
}
