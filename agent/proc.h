/* proc: what the agent reads of a proc root ("/proc", or a fixture tree in
 * tests): small files, each process's stat and owner, the process table,
 * and waiting for a process to go. No allocation but the table's (freed
 * by ptable_free); errors are -1, nothing is logged. */
#ifndef TS_AGENT_PROC_H
#define TS_AGENT_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Reads <root>/<rel> (at most n - 1 bytes, NUL-terminated; *len if not
 * NULL). 0 or -1. */
int proc_read(const char *root, const char *rel, char *buf, size_t n, size_t *len);

/* What /proc/PID/stat tells: the command name, parent and start time. */
struct proc_stat {
	char comm[32];
	long ppid;
	unsigned long long start;	/* clock ticks after boot */
};
int proc_stat_read(const char *root, long pid, struct proc_stat *ps);
/* The real uid in /proc/PID/status (the owner of the process). */
int proc_uid_read(const char *root, long pid, uid_t *uid);
/* The boot time (unix seconds) from <root>/stat, 0 if unknown. */
long long proc_btime(const char *root);
/* Calls fn on every numeric entry of the proc root; stops when fn returns
 * non-zero and returns that. -1 if the root cannot be read. */
int proc_each(const char *root, int (*fn)(const char *, long, void *), void *arg);

/* The processes of a proc root: pid, parent, name (one walk). */
struct ptable {
	struct { long pid, ppid; char comm[32]; } *v;	/* owned */
	size_t n, cap;
};
int ptable_read(const char *root, struct ptable *t);
void ptable_free(struct ptable *t);
/* Signals sig to the descendants of top, but not to skip and what runs
 * under it (nor top itself); how many were signalled. */
int ptable_signal_below(const struct ptable *t, long top, long skip, int sig);

/* 1 once pid is gone (or a zombie), polled until timeout_ms; else 0. */
int proc_wait_gone(const char *root, long pid, int timeout_ms);

#endif
