/* proc.c: reading a proc root (see proc.h). */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/proc.h"
#include "broker/common/util.h"

#define PROC_POLL_MS	100

/* Reads a small file below the proc root ("%s/<rel>"). */
int
proc_read(const char *root, const char *rel, char *buf, size_t n, size_t *len)
{
	char path[1024];
	ssize_t r;
	size_t used = 0;
	int fd;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, rel) >= sizeof(path))
		return -1;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	while (used + 1 < n && (r = read(fd, buf + used, n - 1 - used)) > 0)
		used += (size_t)r;
	close(fd);
	buf[used] = '\0';
	if (len != NULL)
		*len = used;
	return 0;
}

int
proc_stat_read(const char *root, long pid, struct proc_stat *ps)
{
	char rel[64], buf[1024], *open_paren, *close_paren, *p, *end;
	size_t clen;
	int field;

	snprintf(rel, sizeof(rel), "%ld/stat", pid);
	if (proc_read(root, rel, buf, sizeof(buf), NULL) != 0)
		return -1;
	/* "pid (comm) S ppid ...": comm may hold spaces and parentheses */
	if ((open_paren = strchr(buf, '(')) == NULL ||
	    (close_paren = strrchr(buf, ')')) == NULL || close_paren < open_paren)
		return -1;
	clen = (size_t)(close_paren - open_paren - 1);
	if (clen >= sizeof(ps->comm))
		clen = sizeof(ps->comm) - 1;
	memcpy(ps->comm, open_paren + 1, clen);
	ps->comm[clen] = '\0';
	/* fields after comm: 3 state, 4 ppid, ..., 22 starttime */
	p = close_paren + 1;
	for (field = 3; field <= 22; field++) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return -1;
		if (field == 4)
			ps->ppid = strtol(p, NULL, 10);
		if (field == 22) {
			ps->start = strtoull(p, &end, 10);
			if (end == p)
				return -1;
		}
		while (*p != ' ' && *p != '\0')
			p++;
	}
	return 0;
}

/* The real uid in /proc/PID/status (the owner of the process). */
int
proc_uid_read(const char *root, long pid, uid_t *uid)
{
	char rel[64], buf[4096], *p;

	snprintf(rel, sizeof(rel), "%ld/status", pid);
	if (proc_read(root, rel, buf, sizeof(buf), NULL) != 0 ||
	    (p = strstr(buf, "\nUid:")) == NULL)
		return -1;
	*uid = (uid_t)strtoul(p + 5, NULL, 10);
	return 0;
}

/* The boot time (unix seconds) from <root>/stat, 0 if unknown. */
long long
proc_btime(const char *root)
{
	char buf[65536], *p;

	if (proc_read(root, "stat", buf, sizeof(buf), NULL) != 0 ||
	    (p = strstr(buf, "\nbtime ")) == NULL)
		return 0;
	return strtoll(p + 7, NULL, 10);
}

/* Calls fn on every numeric entry of the proc root; stops when fn returns
 * non-zero and returns that. -1 if the root cannot be read. */
int
proc_each(const char *root, int (*fn)(const char *, long, void *), void *arg)
{
	struct dirent *de;
	DIR *d;
	int r = 0;

	if ((d = opendir(root)) == NULL)
		return -1;
	while (r == 0 && (de = readdir(d)) != NULL) {
		char *end;
		long pid;

		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		pid = strtol(de->d_name, &end, 10);
		if (*end != '\0' || pid <= 0)
			continue;
		r = fn(root, pid, arg);
	}
	closedir(d);
	return r;
}

static int
ptable_one(const char *root, long pid, void *arg)
{
	struct ptable *t = arg;
	struct proc_stat ps;

	if (proc_stat_read(root, pid, &ps) != 0)
		return 0;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 256;
		void *v = realloc(t->v, cap * sizeof(*t->v));

		if (v == NULL)
			return -1;
		t->v = v;
		t->cap = cap;
	}
	t->v[t->n].pid = pid;
	t->v[t->n].ppid = ps.ppid;
	util_strlcpy(t->v[t->n].comm, ps.comm, sizeof(t->v[0].comm));
	t->n++;
	return 0;
}

int
ptable_read(const char *root, struct ptable *t)
{
	memset(t, 0, sizeof(*t));
	if (proc_each(root, ptable_one, t) != 0) {
		ptable_free(t);
		return -1;
	}
	return 0;
}

void
ptable_free(struct ptable *t)
{
	free(t->v);
	memset(t, 0, sizeof(*t));
}

/* Signals the descendants of top but skip (and not top itself); the number
 * signalled. */
int
ptable_signal_below(const struct ptable *t, long top, long skip, int sig)
{
	long *stack, pid;
	size_t sp = 0;
	int count = 0;

	if ((stack = calloc(t->n + 1, sizeof(*stack))) == NULL)
		return 0;
	stack[sp++] = top;
	while (sp > 0) {
		pid = stack[--sp];
		for (size_t i = 0; i < t->n; i++) {
			if (t->v[i].ppid != pid || t->v[i].pid == skip)
				continue;
			stack[sp++] = t->v[i].pid;
			if (kill((pid_t)t->v[i].pid, sig) == 0)
				count++;
		}
	}
	free(stack);
	return count;
}

/* 1 once pid is gone (or a zombie), polled until timeout_ms. */
int
proc_wait_gone(const char *root, long pid, int timeout_ms)
{
	int64_t until = util_mono_ms() + timeout_ms;
	struct timespec ts = { 0, PROC_POLL_MS * 1000000L };
	char rel[64], buf[512], *p;

	snprintf(rel, sizeof(rel), "%ld/stat", pid);
	for (;;) {
		if (proc_read(root, rel, buf, sizeof(buf), NULL) != 0 ||
		    ((p = strrchr(buf, ')')) != NULL && p[1] == ' ' && p[2] == 'Z'))
			return 1;
		if (util_mono_ms() >= until)
			return 0;
		nanosleep(&ts, NULL);
	}
}
