#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "broker/front/relay.h"

int
relay_dir_keep(struct relay_dir *d, const void *buf, size_t n)
{
	size_t have = d->len - d->off;
	char *p;

	if (n == 0)
		return RELAY_OK;
	if (have + n > RELAY_BUF)
		return RELAY_EFULL;
	if (d->pend == NULL) {
		if ((d->pend = malloc(n)) == NULL)
			return RELAY_ENOMEM;
		memcpy(d->pend, buf, n);
		d->off = 0;
		d->len = n;
		return RELAY_OK;
	}
	if ((p = malloc(have + n)) == NULL)
		return RELAY_ENOMEM;
	memcpy(p, d->pend + d->off, have);
	memcpy(p + have, buf, n);
	free(d->pend);
	d->pend = p;
	d->off = 0;
	d->len = have + n;
	return RELAY_OK;
}

void
relay_dir_sent(struct relay_dir *d, size_t n)
{
	d->off += n;
	d->bytes += n;
	if (d->off >= d->len) {
		free(d->pend);
		d->pend = NULL;
		d->off = d->len = 0;
	}
}

void
relay_dir_piped(struct relay_dir *d, size_t n)
{
	d->piped += n;
}

void
relay_dir_unpiped(struct relay_dir *d, size_t n)
{
	d->piped -= n < d->piped ? n : d->piped;
	d->bytes += n;
}

void
relay_dir_passed(struct relay_dir *d, size_t n)
{
	d->bytes += n;
}

void
relay_dir_eof(struct relay_dir *d)
{
	if (d->state == RELAY_OPEN)
		d->state = RELAY_EOF;
}

int
relay_dir_shut_due(const struct relay_dir *d)
{
	return d->state == RELAY_EOF && !relay_dir_waiting(d);
}

void
relay_dir_shut(struct relay_dir *d)
{
	d->state = RELAY_SHUT;
}

int
relay_dir_waiting(const struct relay_dir *d)
{
	return (d->pend != NULL && d->off < d->len) || d->piped > 0;
}

void
relay_dir_clear(struct relay_dir *d)
{
	free(d->pend);
	d->pend = NULL;
	d->off = d->len = 0;
	d->piped = 0;
}

uint32_t
relay_events(const struct relay_dir dir[2], int side)
{
	uint32_t ev = 0;

	if (dir[side].state == RELAY_OPEN && !relay_dir_waiting(&dir[side]))
		ev |= EPOLLIN;
	if (relay_dir_waiting(&dir[1 - side]))
		ev |= EPOLLOUT;
	return ev;
}

int
relay_done(const struct relay_dir dir[2])
{
	return dir[0].state == RELAY_SHUT && dir[1].state == RELAY_SHUT;
}
