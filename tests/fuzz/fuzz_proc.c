/* libFuzzer target for the agent's /proc parsers (agent/probe.c): the input
 * is the contents of stat, loadavg and meminfo separated by NUL bytes (a
 * missing part is empty). Parsed twice, so the second sample takes the
 * previous-sample path. What is accepted must be a load the agent can send:
 * at least one CPU, cpu_percent within 0..100, a finite load average and
 * memory figures not negative;
 * every refusal says why. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/probe.h"

/* The next NUL-separated part of data[*off..size) as a new string. */
static char *
part(const uint8_t *data, size_t size, size_t *off)
{
	const uint8_t *start = data + *off, *nul;
	size_t len = size - *off;
	char *s;

	if ((nul = memchr(start, '\0', len)) != NULL)
		len = (size_t)(nul - start);
	if ((s = malloc(len + 1)) == NULL)
		abort();
	memcpy(s, start, len);
	s[len] = '\0';
	*off += len + (nul != NULL);
	return s;
}

static void
check(int r, const struct probe_load *l, const char *err, size_t errlen)
{
	if (r != 0) {
		if (err[0] == '\0' || strnlen(err, errlen) == errlen)
			abort();
		return;
	}
	if (l->ncpu < 1 || !(l->cpu_percent >= 0 && l->cpu_percent <= 100) ||
	    !isfinite(l->load1) || l->load1 < 0 ||
	    l->mem_total_kb < 0 || l->mem_available_kb < 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct probe p;
	struct probe_load l;
	char *stat, *loadavg, *meminfo, err[256];
	size_t off = 0;
	int r;

	stat = part(data, size, &off);
	loadavg = part(data, size, &off);
	meminfo = part(data, size, &off);
	if (probe_init(&p, "/proc") != 0)
		abort();
	for (int i = 0; i < 2; i++) {
		err[0] = '\0';
		r = probe_load_parse(&p, stat, loadavg, meminfo, &l, err, sizeof(err));
		check(r, &l, err, sizeof(err));
	}
	free(stat);
	free(loadavg);
	free(meminfo);
	return 0;
}
