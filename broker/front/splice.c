#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/common/log.h"
#include "broker/common/net.h"
#include "broker/common/util.h"
#include "broker/front/splice.h"

#define BUF 65536

struct pair {
	struct splice *s;
	int fd[2];		/* 0 client, 1 server */
	struct pair *next;
};

struct splice {
	struct splice_conf c;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	struct pair *pairs;
	int active;
	int stopping;
};

struct splice *
splice_new(const struct splice_conf *c)
{
	struct splice *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->c = *c;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->idle, NULL);
	return s;
}

void
splice_free(struct splice *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = 1;
	for (struct pair *p = s->pairs; p != NULL; p = p->next) {
		shutdown(p->fd[0], SHUT_RDWR);	/* wakes its thread */
		shutdown(p->fd[1], SHUT_RDWR);
	}
	while (s->active > 0)
		pthread_cond_wait(&s->idle, &s->lock);
	pthread_mutex_unlock(&s->lock);
	pthread_cond_destroy(&s->idle);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int
splice_active(struct splice *s)
{
	int n;

	pthread_mutex_lock(&s->lock);
	n = s->active;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* Writes all of buf; the socket has a send timeout. 0 or -1. */
static int
write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Takes p off the list and counts it out (lock not held). */
static void
pair_unlink(struct splice *s, struct pair *p)
{
	pthread_mutex_lock(&s->lock);
	for (struct pair **pp = &s->pairs; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	if (--s->active == 0)
		pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
}

static void *
pair_main(void *arg)
{
	struct pair *p = arg;
	struct splice *s = p->s;
	char *buf = malloc(BUF);
	int open[2] = { 1, 1 };	/* direction i: fd[i] -> fd[1-i] still open */

	while (buf != NULL && (open[0] || open[1])) {
		struct pollfd pfd[2];
		int n = 0, idx[2], r;

		for (int i = 0; i < 2; i++) {
			if (!open[i])
				continue;
			pfd[n].fd = p->fd[i];
			pfd[n].events = POLLIN;
			idx[n++] = i;
		}
		if ((r = poll(pfd, (nfds_t)n, s->c.idle_timeout_ms)) == 0) {
			log_info("spliced connection idle for %d s: closed",
			    s->c.idle_timeout_ms / 1000);
			break;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		for (int k = 0; k < n; k++) {
			int i = idx[k];
			ssize_t got;

			if (pfd[k].revents == 0)
				continue;
			got = recv(p->fd[i], buf, BUF, 0);
			if (got < 0 && errno == EINTR)
				continue;
			if (got > 0 && write_all(p->fd[1 - i], buf, (size_t)got) == 0)
				continue;
			/* EOF: pass the half-close on; an error ends both ways */
			open[i] = 0;
			shutdown(p->fd[1 - i], SHUT_WR);
			if (got != 0)
				open[0] = open[1] = 0;
		}
	}
	free(buf);
	/* off the list before the fds are closed, so that splice_free never
	 * shuts down a descriptor number already reused elsewhere; s is not
	 * touched after this (splice_free may free it) */
	pair_unlink(s, p);
	close(p->fd[0]);
	close(p->fd[1]);
	free(p);
	return NULL;
}

int
splice_start(struct splice *s, int client, int server, const void *first, size_t n)
{
	pthread_attr_t attr;
	pthread_t t;
	struct pair *p;
	int r;

	pthread_mutex_lock(&s->lock);
	if (s->stopping || s->active >= s->c.max) {
		pthread_mutex_unlock(&s->lock);
		return -1;
	}
	s->active++;
	pthread_mutex_unlock(&s->lock);
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		pair_unlink(s, NULL);
		return -1;
	}
	p->s = s;
	p->fd[0] = client;
	p->fd[1] = server;
	/* a peer that stops reading cannot hold a thread longer than the idle time */
	net_set_timeouts(client, -1, s->c.idle_timeout_ms);
	net_set_timeouts(server, -1, s->c.idle_timeout_ms);
	pthread_mutex_lock(&s->lock);
	p->next = s->pairs;
	s->pairs = p;
	pthread_mutex_unlock(&s->lock);
	if (n > 0 && write_all(server, first, n) != 0)
		goto fail;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	r = pthread_create(&t, &attr, pair_main, p);
	pthread_attr_destroy(&attr);
	if (r == 0)
		return 0;
 fail:
	pair_unlink(s, p);
	free(p);
	return -1;
}
