/* benchutil: clocks and latency vectors shared by the bench tools
 * (header only; every function static). */
#ifndef TS_BENCHUTIL_H
#define TS_BENCHUTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static inline int64_t
bench_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t
bench_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void
bench_sleep_us(int64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static inline double
bench_tv_s(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* A growing vector of latencies (any unit). Out of memory: values dropped. */
struct lat_vec {
	int64_t *v;
	size_t n, cap;
};

static inline void
lat_push(struct lat_vec *l, int64_t x)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		int64_t *nv = realloc(l->v, cap * sizeof(*nv));

		if (nv == NULL)
			return;
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n++] = x;
}

static inline void
lat_merge(struct lat_vec *dst, struct lat_vec *src)
{
	for (size_t i = 0; i < src->n; i++)
		lat_push(dst, src->v[i]);
	free(src->v);
	memset(src, 0, sizeof(*src));
}

static inline int
lat_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static inline void
lat_sort(struct lat_vec *l)
{
	if (l->n > 1)
		qsort(l->v, l->n, sizeof(*l->v), lat_cmp);
}

/* Percentile p (0..100) of a sorted vector, nearest rank; 0 if empty. */
static inline int64_t
lat_pct(const struct lat_vec *l, double p)
{
	size_t i;

	if (l->n == 0)
		return 0;
	i = (size_t)(p / 100.0 * (double)l->n + 0.999999);
	if (i < 1)
		i = 1;
	if (i > l->n)
		i = l->n;
	return l->v[i - 1];
}

#endif
