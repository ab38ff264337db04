/* probe: the load of this machine (from a proc tree) and whether its RDP
 * port accepts connections. Nothing here allocates. */
#ifndef TS_AGENT_PROBE_H
#define TS_AGENT_PROBE_H

#include <stddef.h>
#include <stdint.h>

struct probe_load {
	int ncpu;
	double cpu_percent;	/* busy share since the previous call, 0..100 */
	double load1;
	int64_t mem_total_kb;
	int64_t mem_available_kb;
};

/* Keeps the previous /proc/stat sample for cpu_percent. */
struct probe {
	char root[1024];	/* "/proc", or a fixture tree in tests */
	unsigned long long prev_busy, prev_total;
	int have_prev;
};

/* 0, or -1 if root is too long. */
int probe_init(struct probe *p, const char *root);

/* Reads <root>/stat, loadavg and meminfo into *out. The first call gives the
 * average since boot, later calls the share since the previous call.
 * 0, or -1 with the reason in err (*out untouched). */
int probe_load_read(struct probe *p, struct probe_load *out, char *err,
    size_t errlen);

/* The same from the three files' contents (NUL-terminated, borrowed for
 * the call), for tests and the fuzzer; updates p's previous sample. */
int probe_load_parse(struct probe *p, const char *stat, const char *loadavg,
    const char *meminfo, struct probe_load *out, char *err, size_t errlen);

/* 1 if a TCP connection to host:port completes within timeout_ms (for each
 * address the name has), else 0. host may be a name or an address; empty
 * means 127.0.0.1. */
int probe_rdp_accepting(const char *host, int port, int timeout_ms);

#endif
