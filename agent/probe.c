#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/probe.h"
#include "broker/common/net.h"
#include "broker/common/util.h"

#define PROBE_FILE_MAX	(1024 * 1024)

int
probe_init(struct probe *p, const char *root)
{
	memset(p, 0, sizeof(*p));
	return util_strlcpy(p->root, root, sizeof(p->root));
}

/* Reads <root>/<name> into a new buffer. */
static int
probe_file(const struct probe *p, const char *name, char **buf, char *err,
    size_t errlen)
{
	char path[1100];
	int r;

	snprintf(path, sizeof(path), "%s/%s", p->root, name);
	if ((r = util_file_read(path, PROBE_FILE_MAX, buf, NULL)) != 0) {
		snprintf(err, errlen, "cannot read %s: %s", path,
		    r == UTIL_FILE_TOO_LARGE ? "too large" : strerror(errno));
		return -1;
	}
	return 0;
}

/* /proc/stat: the aggregate "cpu" line and the number of "cpuN" lines. */
static int
probe_stat_parse(const char *buf, unsigned long long *busy,
    unsigned long long *total, int *ncpu)
{
	unsigned long long v[8] = { 0 };
	const char *line;
	int n = 0, fields;

	if (strncmp(buf, "cpu ", 4) != 0)
		return -1;
	/* user nice system idle iowait irq softirq steal (guest is in user) */
	fields = sscanf(buf + 4, "%llu %llu %llu %llu %llu %llu %llu %llu",
	    &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
	if (fields < 4)
		return -1;
	*total = 0;
	for (int i = 0; i < 8; i++)
		*total += v[i];
	*busy = *total - v[3] - v[4];
	for (line = buf; line != NULL; line = strchr(line, '\n')) {
		if (*line == '\n')
			line++;
		if (strncmp(line, "cpu", 3) == 0 && line[3] >= '0' && line[3] <= '9')
			n++;
	}
	*ncpu = n;
	return n > 0 ? 0 : -1;
}

/* The value of "Key:  N kB" in /proc/meminfo, or -1. */
static int64_t
probe_meminfo(const char *buf, const char *key)
{
	size_t klen = strlen(key);

	for (const char *line = buf; line != NULL; line = strchr(line, '\n')) {
		if (*line == '\n')
			line++;
		if (strncmp(line, key, klen) == 0 && line[klen] == ':')
			return strtoll(line + klen + 1, NULL, 10);
	}
	return -1;
}

int
probe_load_parse(struct probe *p, const char *stat, const char *loadavg,
    const char *meminfo, struct probe_load *out, char *err, size_t errlen)
{
	unsigned long long busy, total;
	struct probe_load l;

	if (probe_stat_parse(stat, &busy, &total, &l.ncpu) != 0) {
		snprintf(err, errlen, "%s/stat: no cpu lines", p->root);
		return -1;
	}
	if (sscanf(loadavg, "%lf", &l.load1) != 1 || !isfinite(l.load1) || l.load1 < 0) {
		snprintf(err, errlen, "%s/loadavg: no load average", p->root);
		return -1;
	}
	l.mem_total_kb = probe_meminfo(meminfo, "MemTotal");
	l.mem_available_kb = probe_meminfo(meminfo, "MemAvailable");
	if (l.mem_total_kb < 0 || l.mem_available_kb < 0) {
		snprintf(err, errlen, "%s/meminfo: no MemTotal or MemAvailable", p->root);
		return -1;
	}
	/* counters only grow; a smaller one (a fixture swap) restarts */
	if (p->have_prev && total > p->prev_total && busy >= p->prev_busy)
		l.cpu_percent = 100.0 * (double)(busy - p->prev_busy) /
		    (double)(total - p->prev_total);
	else
		l.cpu_percent = total > 0 ? 100.0 * (double)busy / (double)total : 0;
	if (l.cpu_percent > 100)
		l.cpu_percent = 100;
	p->prev_busy = busy;
	p->prev_total = total;
	p->have_prev = 1;
	*out = l;
	return 0;
}

int
probe_load_read(struct probe *p, struct probe_load *out, char *err, size_t errlen)
{
	char *stat = NULL, *loadavg = NULL, *meminfo = NULL;
	int r = -1;

	if (probe_file(p, "stat", &stat, err, errlen) != 0 ||
	    probe_file(p, "loadavg", &loadavg, err, errlen) != 0 ||
	    probe_file(p, "meminfo", &meminfo, err, errlen) != 0)
		goto out;
	r = probe_load_parse(p, stat, loadavg, meminfo, out, err, errlen);
 out:
	free(stat);
	free(loadavg);
	free(meminfo);
	return r;
}

int
probe_rdp_accepting(const char *host, int port, int timeout_ms)
{
	char err[128];
	int fd;

	if ((fd = net_connect(err, sizeof(err), host[0] ? host : "127.0.0.1", port,
	    timeout_ms)) < 0)
		return 0;
	close(fd);
	return 1;
}
