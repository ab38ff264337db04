#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <utmpx.h>

#include <systemd/sd-login.h>

#include "agent/sessions.h"
#include "broker/common/log.h"
#include "broker/common/util.h"

extern char **environ;

enum sessions_kind {
	SESSIONS_AUTO, SESSIONS_XRDP, SESSIONS_UTMP, SESSIONS_LOGIND,
	SESSIONS_FILE, SESSIONS_COMMAND,
};

static const char *const sessions_names[] = {
	"auto", "xrdp", "utmp", "logind", "file", "command",
};

struct sessions {
	enum sessions_kind kind;
	enum sessions_kind last;	/* what auto chose last */
	char *arg;			/* PATH or CMD */
	char *act[WIRE_COMMAND_KIND_COUNT];	/* command:'s logoff, disconnect */
	char *proc_root;
	char *utmp_path;
	int command_timeout_ms;
};

/* A growing list of sessions, bounded by WIRE_SESSIONS_MAX. */
struct slist {
	struct wire_session *v;
	size_t n, cap;
};

#define ERR(...) do { snprintf(err, errlen, __VA_ARGS__); goto out; } while (0)

static int
sessions_spec_parse(const char *spec, enum sessions_kind *kind, const char **arg)
{
	static const struct { const char *name; enum sessions_kind kind; } plain[] = {
		{ "auto", SESSIONS_AUTO }, { "xrdp", SESSIONS_XRDP },
		{ "utmp", SESSIONS_UTMP }, { "logind", SESSIONS_LOGIND },
	};

	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		if (strcmp(spec, plain[i].name) == 0) {
			*kind = plain[i].kind;
			*arg = "";
			return 0;
		}
	}
	if (strncmp(spec, "file:", 5) == 0 && spec[5] != '\0') {
		*kind = SESSIONS_FILE;
		*arg = spec + 5;
		return 0;
	}
	if (strncmp(spec, "command:", 8) == 0 && spec[8] != '\0') {
		*kind = SESSIONS_COMMAND;
		*arg = spec + 8;
		return 0;
	}
	return -1;
}

int
sessions_spec_check(const char *spec, char *err, size_t errlen)
{
	enum sessions_kind kind;
	const char *arg;

	if (sessions_spec_parse(spec, &kind, &arg) == 0)
		return 0;
	snprintf(err, errlen, "'sessions' expects auto, xrdp, utmp, logind, "
	    "file:PATH or command:CMD");
	return -1;
}

struct sessions *
sessions_new(const struct sessions_opts *o)
{
	struct sessions *s;
	enum sessions_kind kind;
	const char *arg;

	if (sessions_spec_parse(o->spec, &kind, &arg) != 0)
		return NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->kind = s->last = kind;
	s->command_timeout_ms = o->command_timeout_ms > 0 ? o->command_timeout_ms : 5000;
	s->arg = strdup(arg);
	for (int k = 0; k < WIRE_COMMAND_KIND_COUNT; k++)
		if (o->act[k] != NULL && o->act[k][0] != '\0' &&
		    (s->act[k] = strdup(o->act[k])) == NULL)
			s->arg = (free(s->arg), NULL);
	s->proc_root = strdup(o->proc_root ? o->proc_root : "/proc");
	s->utmp_path = strdup(o->utmp_path ? o->utmp_path : _PATH_UTMPX);
	if (s->arg == NULL || s->proc_root == NULL || s->utmp_path == NULL) {
		sessions_free(s);
		return NULL;
	}
	return s;
}

void
sessions_free(struct sessions *s)
{
	if (s == NULL)
		return;
	free(s->arg);
	for (int k = 0; k < WIRE_COMMAND_KIND_COUNT; k++)
		free(s->act[k]);
	free(s->proc_root);
	free(s->utmp_path);
	free(s);
}

const char *
sessions_provider(const struct sessions *s)
{
	return sessions_names[s->last];
}

/* ---- helpers ------------------------------------------------------------ */

/* A new zeroed entry at the end of l, or NULL (full or no memory). */
static struct wire_session *
slist_add(struct slist *l)
{
	struct wire_session *v;
	size_t cap;

	if (l->n == l->cap) {
		if (l->cap >= WIRE_SESSIONS_MAX)
			return NULL;
		cap = l->cap ? l->cap * 2 : 16;
		if (cap > WIRE_SESSIONS_MAX)
			cap = WIRE_SESSIONS_MAX;
		if ((v = realloc(l->v, cap * sizeof(*v))) == NULL)
			return NULL;
		l->v = v;
		l->cap = cap;
	}
	memset(&l->v[l->n], 0, sizeof(l->v[0]));
	return &l->v[l->n++];
}

/* Hands the list over to the caller; an empty list still gets an array. */
static int
slist_finish(struct slist *l, struct wire_session **out, size_t *n)
{
	if (l->v == NULL && (l->v = calloc(1, sizeof(*l->v))) == NULL)
		return -1;
	*out = l->v;
	*n = l->n;
	l->v = NULL;
	return 0;
}

/* The user name of uid, or its number if it has none. */
static void
sessions_user_name(uid_t uid, char *buf, size_t n)
{
	struct passwd pw, *res = NULL;
	char tmp[4096];

	if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL &&
	    util_strlcpy(buf, res->pw_name, n) == 0)
		return;
	snprintf(buf, n, "%lu", (unsigned long)uid);
}

/* Reads a small file below the proc root ("%s/<rel>"). */
static int
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

/* What /proc/PID/stat tells: the command name, parent and start time. */
struct proc_stat {
	char comm[32];
	long ppid;
	unsigned long long start;	/* clock ticks after boot */
};

static int
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
static int
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
static long long
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
static int
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

/* ---- xrdp --------------------------------------------------------------- */

struct xrdp_session {
	long sid;		/* the sesman child's pid */
	long xpid;		/* the X server's (Xvnc, Xorg) */
	uid_t uid;
	int display;
	int vnc_port;		/* Xvnc: its RFB port; Xorg: 0 */
	int connected;
	unsigned long long start;
};

struct xrdp_scan {
	struct xrdp_session *v;
	size_t n, cap;
	int sesman;		/* an xrdp-sesman process was seen */
	int nomem;
};

static int
xrdp_is_sesman(const char *comm)
{
	return strcmp(comm, "xrdp-sesman") == 0;
}

/* Reads the display ":N" and Xvnc's "-rfbport P" from the command line. */
static int
xrdp_cmdline(const char *root, long pid, int *display, int *rfbport)
{
	char rel[64], buf[8192], *p, *end, *prev = NULL;
	size_t len;

	snprintf(rel, sizeof(rel), "%ld/cmdline", pid);
	if (proc_read(root, rel, buf, sizeof(buf), &len) != 0)
		return -1;
	*display = -1;
	*rfbport = 0;
	for (p = buf; p < buf + len; p += strlen(p) + 1) {
		if (p[0] == ':' && isdigit((unsigned char)p[1]) && *display < 0) {
			long d = strtol(p + 1, &end, 10);
			if (*end == '\0' && d < 10000)
				*display = (int)d;
		}
		if (prev != NULL && strcmp(prev, "-rfbport") == 0) {
			long port = strtol(p, &end, 10);
			if (*end == '\0' && port > 0 && port < 65536)
				*rfbport = (int)port;
		}
		prev = p;
	}
	return *display >= 0 ? 0 : -1;
}

static int
xrdp_scan_one(const char *root, long pid, void *arg)
{
	struct xrdp_scan *sc = arg;
	struct xrdp_session *x;
	struct proc_stat ps, parent;
	int display, rfbport, xvnc;
	uid_t uid;

	if (proc_stat_read(root, pid, &ps) != 0)
		return 0;		/* gone meanwhile */
	if (xrdp_is_sesman(ps.comm)) {
		sc->sesman = 1;
		return 0;
	}
	xvnc = strcmp(ps.comm, "Xvnc") == 0;
	if (!xvnc && strcmp(ps.comm, "Xorg") != 0)
		return 0;
	if (proc_stat_read(root, ps.ppid, &parent) != 0 || !xrdp_is_sesman(parent.comm) ||
	    proc_uid_read(root, pid, &uid) != 0 ||
	    xrdp_cmdline(root, pid, &display, &rfbport) != 0)
		return 0;
	if (sc->n == sc->cap) {
		size_t cap = sc->cap ? sc->cap * 2 : 16;
		struct xrdp_session *v;

		if (sc->cap >= WIRE_SESSIONS_MAX) {
			sc->nomem = 1;
			return 1;
		}
		if ((v = realloc(sc->v, cap * sizeof(*v))) == NULL) {
			sc->nomem = 1;
			return 1;
		}
		sc->v = v;
		sc->cap = cap;
	}
	x = &sc->v[sc->n++];
	x->sid = ps.ppid;
	x->xpid = pid;
	x->uid = uid;
	x->display = display;
	x->vnc_port = xvnc ? (rfbport ? rfbport : 5900 + display) : 0;
	x->connected = 0;
	x->start = parent.start;
	return 0;
}

/* Marks sessions whose backend port has an ESTABLISHED socket in
 * <root>/net/<file> ("tcp" or "tcp6"). */
static int
xrdp_mark_tcp(const char *root, const char *file, struct xrdp_scan *sc)
{
	char path[1024], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/net/%s", root, file);
	if ((f = fopen(path, "re")) == NULL)
		return errno == ENOENT && strcmp(file, "tcp6") == 0 ? 0 : -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		char local[64], remote[64], *colon;
		unsigned st;
		long port;

		/* "  0: 0100007F:1716 0100007F:D540 01 ..." */
		if (sscanf(line, " %*[0-9]: %63s %63s %x", local, remote, &st) != 3 ||
		    st != 0x01 || (colon = strrchr(local, ':')) == NULL)
			continue;
		port = strtol(colon + 1, NULL, 16);
		for (size_t i = 0; i < sc->n; i++)
			if (sc->v[i].vnc_port == port)
				sc->v[i].connected = 1;
	}
	fclose(f);
	return 0;
}

/* Marks sessions whose xrdp_chansrv_socket_N or xrdp_display_N is
 * connected (St 03) in <root>/net/unix. */
static int
xrdp_mark_unix(const char *root, struct xrdp_scan *sc)
{
	static const char *const names[] = { "xrdp_chansrv_socket_", "xrdp_display_" };
	char path[1024], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/net/unix", root);
	if ((f = fopen(path, "re")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		char sockpath[256], *base, *end;
		unsigned st;
		long display;

		/* "Num RefCount Protocol Flags Type St Inode Path" */
		if (sscanf(line, "%*s %*s %*s %*s %*s %x %*s %255s", &st, sockpath) != 2 ||
		    st != 0x03)
			continue;
		base = strrchr(sockpath, '/');
		base = base ? base + 1 : sockpath;
		for (size_t k = 0; k < 2; k++) {
			size_t len = strlen(names[k]);

			if (strncmp(base, names[k], len) != 0 ||
			    !isdigit((unsigned char)base[len]))
				continue;
			display = strtol(base + len, &end, 10);
			if (*end != '\0')
				continue;
			for (size_t i = 0; i < sc->n; i++)
				if (sc->v[i].display == display)
					sc->v[i].connected = 1;
		}
	}
	fclose(f);
	return 0;
}

static int
xrdp_scan(const char *root, struct xrdp_scan *sc, char *err, size_t errlen)
{
	if (proc_each(root, xrdp_scan_one, sc) < 0) {
		snprintf(err, errlen, "cannot read %s: %s", root, strerror(errno));
		return -1;
	}
	if (sc->nomem) {
		snprintf(err, errlen, "too many xrdp sessions or out of memory");
		return -1;
	}
	return 0;
}

static int
sessions_xrdp(struct sessions *s, struct xrdp_scan *sc, struct wire_session **out,
    size_t *n, char *err, size_t errlen)
{
	struct slist l = { NULL, 0, 0 };
	long long btime;
	long hz = sysconf(_SC_CLK_TCK);
	int r = -1;

	if (sc->n > 0 && (xrdp_mark_tcp(s->proc_root, "tcp", sc) != 0 ||
	    xrdp_mark_tcp(s->proc_root, "tcp6", sc) != 0 ||
	    xrdp_mark_unix(s->proc_root, sc) != 0))
		ERR("cannot read %s/net: %s", s->proc_root, strerror(errno));
	btime = proc_btime(s->proc_root);
	for (size_t i = 0; i < sc->n; i++) {
		struct wire_session *w;

		if ((w = slist_add(&l)) == NULL)
			ERR("out of memory");
		sessions_user_name(sc->v[i].uid, w->user, sizeof(w->user));
		snprintf(w->id, sizeof(w->id), "%ld", sc->v[i].sid);
		w->state = sc->v[i].connected ? WIRE_ACTIVE : WIRE_DISCONNECTED;
		w->since = btime > 0 && hz > 0 ?
		    btime + (int64_t)(sc->v[i].start / (unsigned long long)hz) : 0;
	}
	if (slist_finish(&l, out, n) != 0)
		ERR("out of memory");
	r = 0;
 out:
	free(l.v);
	return r;
}

/* ---- utmp --------------------------------------------------------------- */

static int
sessions_utmp(struct sessions *s, struct wire_session **out, size_t *n,
    char *err, size_t errlen)
{
	struct slist l = { NULL, 0, 0 };
	struct utmpx *u;
	char rel[1024];
	int r = -1, opened = 0;

	if (access(s->utmp_path, R_OK) != 0)
		ERR("cannot read %s: %s", s->utmp_path, strerror(errno));
	if (utmpxname(s->utmp_path) != 0)
		ERR("cannot use %s", s->utmp_path);
	setutxent();
	opened = 1;
	while ((u = getutxent()) != NULL) {
		struct wire_session *w;
		size_t len;

		if (u->ut_type != USER_PROCESS || u->ut_host[0] == '\0' ||
		    u->ut_host[0] == ':' || u->ut_user[0] == '\0')
			continue;	/* not a remote login */
		/* skip stale entries of processes that are gone */
		snprintf(rel, sizeof(rel), "%s/%ld", s->proc_root, (long)u->ut_pid);
		if (u->ut_pid <= 0 || access(rel, F_OK) != 0)
			continue;
		if ((w = slist_add(&l)) == NULL)
			ERR("out of memory");
		len = strnlen(u->ut_user, sizeof(u->ut_user));
		if (len >= sizeof(w->user))
			len = sizeof(w->user) - 1;
		memcpy(w->user, u->ut_user, len);
		len = strnlen(u->ut_line, sizeof(u->ut_line));
		if (len >= sizeof(w->id))
			len = sizeof(w->id) - 1;
		memcpy(w->id, u->ut_line, len);
		w->state = WIRE_ACTIVE;
		w->since = u->ut_tv.tv_sec;
	}
	if (slist_finish(&l, out, n) != 0)
		ERR("out of memory");
	r = 0;
 out:
	if (opened)
		endutxent();
	free(l.v);
	return r;
}

/* ---- logind ------------------------------------------------------------- */

static int
sessions_logind(struct sessions *s, struct wire_session **out, size_t *n,
    char *err, size_t errlen)
{
	struct slist l = { NULL, 0, 0 };
	char **ids = NULL, *state = NULL;
	int r = -1, count;

	if ((count = sd_get_sessions(&ids)) < 0)
		ERR("logind: %s", strerror(-count));
	for (int i = 0; i < count; i++) {
		struct wire_session *w;
		uid_t uid;

		free(state);
		state = NULL;
		if (sd_session_is_remote(ids[i]) <= 0 ||
		    sd_session_get_uid(ids[i], &uid) < 0 ||
		    sd_session_get_state(ids[i], &state) < 0)
			continue;	/* local, or gone meanwhile */
		if (strcmp(state, "active") != 0 && strcmp(state, "online") != 0 &&
		    strcmp(state, "closing") != 0)
			continue;
		if ((w = slist_add(&l)) == NULL)
			ERR("out of memory");
		sessions_user_name(uid, w->user, sizeof(w->user));
		util_strlcpy(w->id, ids[i], sizeof(w->id));
		w->state = strcmp(state, "closing") == 0 ? WIRE_DISCONNECTED : WIRE_ACTIVE;
	}
	if (slist_finish(&l, out, n) != 0)
		ERR("out of memory");
	r = 0;
 out:
	free(state);
	for (int i = 0; ids != NULL && i < count; i++)
		free(ids[i]);
	free(ids);
	free(l.v);
	return r;
}

/* ---- file: -------------------------------------------------------------- */

static int
sessions_file(struct sessions *s, struct wire_session **out, size_t *n,
    char *err, size_t errlen)
{
	char *buf = NULL, why[160];
	size_t len;
	int r;

	if ((r = util_file_read(s->arg, SESSIONS_OUTPUT_MAX, &buf, &len)) != 0) {
		snprintf(err, errlen, "%s: %s", s->arg, r == UTIL_FILE_TOO_LARGE ?
		    "larger than 4 MiB" : strerror(errno));
		return -1;
	}
	if ((r = wire_sessions_decode(buf, len, out, n, why, sizeof(why))) != 0)
		snprintf(err, errlen, "%s: %s", s->arg, why);
	free(buf);
	return r;
}

/* ---- command: ----------------------------------------------------------- */

/* Appends what fd has to (buf, *len) up to max bytes, dropping the rest.
 * Returns 1 at EOF, 0 if more may come, -1 on error. */
static int
pipe_drain(int fd, char *buf, size_t *len, size_t max, int *overflow)
{
	char tmp[4096];
	ssize_t r;

	for (;;) {
		if ((r = read(fd, tmp, sizeof(tmp))) == 0)
			return 1;
		if (r < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		if (*len + (size_t)r > max) {
			*overflow = 1;
			r = (ssize_t)(max - *len);
		}
		memcpy(buf + *len, tmp, (size_t)r);
		*len += (size_t)r;
	}
}

/* The first line of a child's stderr, for the error message. */
static const char *
first_line(char *buf, size_t len)
{
	size_t i;

	buf[len] = '\0';
	for (i = 0; i < len && buf[i] != '\n'; i++)
		if (!isprint((unsigned char)buf[i]))
			buf[i] = '?';
	buf[i] = '\0';
	return buf;
}

/* Runs argv[0] (searched in PATH; no shell) with argv in its own process
 * group, stdin from /dev/null, for at most timeout_ms, its stdout kept in
 * obuf (omax bytes at most, NUL-terminated: omax + 1 room) and *olen. 0 if
 * it exited 0, else -1 with why in err (its stderr's first line). Whatever
 * it left running in its group is killed. */
static int
child_run(char *const argv[], int timeout_ms, char *obuf, size_t omax, size_t *olen,
    char *err, size_t errlen)
{
	char ebuf[256];
	size_t elen = 0;
	int opipe[2] = { -1, -1 }, epipe[2] = { -1, -1 }, pidfd = -1;
	int oopen = 1, eopen = 1, exited = 0, status = 0, overflow = 0, eover = 0;
	int r = -1, spawned = 0, e;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	int64_t deadline;
	pid_t pid = -1;

	*olen = 0;
	/* only our ends are non-blocking: the child writes as usual */
	if (pipe2(opipe, O_CLOEXEC) != 0 || pipe2(epipe, O_CLOEXEC) != 0 ||
	    fcntl(opipe[0], F_SETFL, O_NONBLOCK) != 0 ||
	    fcntl(epipe[0], F_SETFL, O_NONBLOCK) != 0)
		ERR("pipe: %s", strerror(errno));
	/* the child: own process group (so it can be killed whole), stdin
	 * from /dev/null, default signal mask and dispositions */
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, opipe[1], 1);
	posix_spawn_file_actions_adddup2(&fa, epipe[1], 2);
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	sigfillset(&dfl);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
	    POSIX_SPAWN_SETSIGDEF);
	e = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (e != 0)
		ERR("cannot run %s: %s", argv[0], strerror(e));
	spawned = 1;
	close(opipe[1]);
	close(epipe[1]);
	opipe[1] = epipe[1] = -1;
	/* the child's exit wakes poll through a pidfd; without one (old
	 * kernels, seccomp, valgrind) poll wakes every 50 ms to look */
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);

	/* read until the child exits, then what it left in the pipes: a
	 * background child keeping them open does not hold us up */
	deadline = util_mono_ms() + timeout_ms;
	while (!exited) {
		struct pollfd pfd[3] = {
			{ oopen ? opipe[0] : -1, POLLIN, 0 },
			{ eopen ? epipe[0] : -1, POLLIN, 0 },
			{ pidfd, POLLIN, 0 },
		};
		int64_t left = deadline - util_mono_ms();

		if (left <= 0)
			ERR("command timed out after %d ms", timeout_ms);
		if (pidfd < 0 && left > 50)
			left = 50;
		if (poll(pfd, 3, (int)left) < 0 && errno != EINTR)
			ERR("poll: %s", strerror(errno));
		if ((pfd[2].revents || pidfd < 0) &&
		    waitpid(pid, &status, WNOHANG) == pid)
			exited = 1;
		if (oopen && (pfd[0].revents || exited) && pipe_drain(opipe[0],
		    obuf, olen, omax, &overflow) != 0)
			oopen = 0;
		if (overflow)
			ERR("command printed more than %zu %s", omax >> 20 ? omax >> 20 : omax,
			    omax >> 20 ? "MiB" : "bytes");
		if (eopen && (pfd[1].revents || exited) && pipe_drain(epipe[0],
		    ebuf, &elen, sizeof(ebuf) - 1, &eover) != 0)
			eopen = 0;
	}
	spawned = 0;		/* reaped */
	obuf[*olen] = '\0';
	if (WIFSIGNALED(status))
		ERR("command killed by signal %d: %s", WTERMSIG(status),
		    first_line(ebuf, elen));
	if (WEXITSTATUS(status) != 0)
		ERR("command exited with status %d: %s", WEXITSTATUS(status),
		    first_line(ebuf, elen));
	r = 0;
 out:
	if (pid > 0)
		kill(-pid, SIGKILL);	/* the group, including what it left */
	if (spawned)
		waitpid(pid, NULL, 0);
	for (int i = 0; i < 2; i++) {
		if (opipe[i] >= 0)
			close(opipe[i]);
		if (epipe[i] >= 0)
			close(epipe[i]);
	}
	if (pidfd >= 0)
		close(pidfd);
	return r;
}

static int
sessions_command(struct sessions *s, struct wire_session **out, size_t *n,
    char *err, size_t errlen)
{
	char *argv[] = { "/bin/sh", "-c", s->arg, NULL };
	char *obuf, why[160];
	size_t olen;
	int r = -1;

	if ((obuf = malloc(SESSIONS_OUTPUT_MAX + 1)) == NULL)
		ERR("out of memory");
	if (child_run(argv, s->command_timeout_ms, obuf, SESSIONS_OUTPUT_MAX, &olen, err,
	    errlen) != 0)
		goto out;
	if (wire_sessions_decode(obuf, olen, out, n, why, sizeof(why)) != 0)
		ERR("command output: %s", why);
	r = 0;
 out:
	free(obuf);
	return r;
}

/* ---- acting on sessions: log off, disconnect ----------------------------- */

#define ACT_POLL_MS	100

/* The processes of the proc root: pid, parent, name (one walk). */
struct ptable {
	struct { long pid, ppid; char comm[32]; } *v;
	size_t n, cap;
};

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

/* Signals the descendants of top but skip (and not top itself); the number
 * signalled. */
static int
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
static int
proc_wait_gone(const char *root, long pid, int timeout_ms)
{
	int64_t until = util_mono_ms() + timeout_ms;
	struct timespec ts = { 0, ACT_POLL_MS * 1000000L };
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

/* The xrdp session sid ("id" as the agent reports it) of user into *out:
 * 0, or -1 with why in detail. */
static int
xrdp_find(struct sessions *s, const char *id, const char *user, struct xrdp_scan *sc,
    struct xrdp_session *out, char *detail, size_t n)
{
	char owner[WIRE_USER_MAX], *end;
	long sid = strtol(id, &end, 10);

	if (*id == '\0' || *end != '\0' || sid <= 0) {
		snprintf(detail, n, "'%s' is not an xrdp session id", id);
		return -1;
	}
	if (xrdp_scan(s->proc_root, sc, detail, n) != 0)
		return -1;
	for (size_t i = 0; i < sc->n; i++) {
		if (sc->v[i].sid != sid)
			continue;
		sessions_user_name(sc->v[i].uid, owner, sizeof(owner));
		if (user[0] != '\0' && strcasecmp(owner, user) != 0) {
			snprintf(detail, n, "session %ld belongs to %s, not %s", sid, owner, user);
			return -1;
		}
		*out = sc->v[i];
		return 0;
	}
	snprintf(detail, n, "no xrdp session %ld (ended already?)", sid);
	return -1;
}

/* Log off as sesman ends a session: its window manager and what runs
 * under the session end (SIGTERM), then sesman stops the X server and
 * chansrv; what is left after half the timeout is ended by us, SIGKILL
 * last. Done when the X server is gone. */
static int
xrdp_logoff(struct sessions *s, const char *id, const char *user, char *detail, size_t n)
{
	struct xrdp_scan sc = { NULL, 0, 0, 0, 0 };
	struct ptable t = { NULL, 0, 0 };
	struct xrdp_session x;
	int r = -1, half = s->command_timeout_ms / 2;

	if (xrdp_find(s, id, user, &sc, &x, detail, n) != 0)
		goto out;
	if (proc_each(s->proc_root, ptable_one, &t) != 0) {
		snprintf(detail, n, "cannot read %s: %s", s->proc_root, strerror(errno));
		goto out;
	}
	if (ptable_signal_below(&t, x.sid, x.xpid, SIGTERM) == 0 &&
	    kill((pid_t)x.xpid, SIGTERM) != 0) {
		snprintf(detail, n, "cannot end session %ld's processes: %s", x.sid,
		    strerror(errno));
		goto out;
	}
	if (!proc_wait_gone(s->proc_root, x.xpid, half)) {
		(void)kill((pid_t)x.xpid, SIGTERM);
		(void)ptable_signal_below(&t, x.sid, 0, SIGTERM);
		if (!proc_wait_gone(s->proc_root, x.xpid, half)) {
			(void)ptable_signal_below(&t, x.sid, 0, SIGKILL);
			if (!proc_wait_gone(s->proc_root, x.xpid, 1000)) {
				snprintf(detail, n, "session %ld's X server (pid %ld) "
				    "outlived SIGKILL", x.sid, x.xpid);
				goto out;
			}
		}
	}
	snprintf(detail, n, "session %ld (display :%d) logged off", x.sid, x.display);
	r = 0;
 out:
	free(sc.v);
	free(t.v);
	return r;
}

/* The inode of an ESTABLISHED socket in <root>/net/<file> whose remote
 * port is port (xrdp's end of its link to Xvnc), or 0. */
static unsigned long
tcp_peer_inode(const char *root, const char *file, int port)
{
	char path[1024], line[512], remote[64], *colon;
	unsigned long inode = 0, ino;
	unsigned st;
	FILE *f;

	snprintf(path, sizeof(path), "%s/net/%s", root, file);
	if ((f = fopen(path, "re")) == NULL)
		return 0;
	while (inode == 0 && fgets(line, sizeof(line), f) != NULL) {
		/* sl local remote st tx:rx tr:when retrnsmt uid timeout inode */
		if (sscanf(line, " %*[0-9]: %*s %63s %x %*s %*s %*s %*s %*s %lu", remote, &st,
		    &ino) == 3 && st == 0x01 && (colon = strrchr(remote, ':')) != NULL &&
		    strtol(colon + 1, NULL, 16) == port)
			inode = ino;
	}
	fclose(f);
	return inode;
}

/* The process named "xrdp" that holds socket inode (another user's
 * /proc/PID/fd: listed with CAP_DAC_READ_SEARCH, its links read with
 * CAP_SYS_PTRACE): its pid, or 0. */
struct fd_owner {
	char link[64];
	long pid;
};

static int
xrdp_fd_owner(const char *root, long pid, void *arg)
{
	struct fd_owner *o = arg;
	struct proc_stat ps;
	char dir[1024], path[1300], target[64];
	struct dirent *de;
	ssize_t len;
	DIR *d;

	if (proc_stat_read(root, pid, &ps) != 0 || strcmp(ps.comm, "xrdp") != 0)
		return 0;
	snprintf(dir, sizeof(dir), "%s/%ld/fd", root, pid);
	if ((d = opendir(dir)) == NULL)
		return 0;
	while (o->pid == 0 && (de = readdir(d)) != NULL) {
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if ((len = readlink(path, target, sizeof(target) - 1)) > 0) {
			target[len] = '\0';
			if (strcmp(target, o->link) == 0)
				o->pid = pid;
		}
	}
	closedir(d);
	return o->pid != 0;
}

/* Disconnect: the xrdp process serving the client (the one connected to
 * the session's Xvnc) ends, the session stays; done once Xvnc has no
 * client. */
static int
xrdp_disconnect(struct sessions *s, const char *id, const char *user, char *detail,
    size_t n)
{
	struct xrdp_scan sc = { NULL, 0, 0, 0, 0 };
	struct fd_owner o = { "", 0 };
	struct xrdp_session x;
	struct proc_stat ps, parent;
	unsigned long inode;
	int r = -1;

	if (xrdp_find(s, id, user, &sc, &x, detail, n) != 0)
		goto out;
	if (x.vnc_port == 0) {
		snprintf(detail, n, "disconnect is not supported for an Xorg session");
		r = SESSIONS_UNSUPPORTED;
		goto out;
	}
	if ((inode = tcp_peer_inode(s->proc_root, "tcp", x.vnc_port)) == 0 &&
	    (inode = tcp_peer_inode(s->proc_root, "tcp6", x.vnc_port)) == 0) {
		snprintf(detail, n, "session %ld has no client connected", x.sid);
		goto out;
	}
	snprintf(o.link, sizeof(o.link), "socket:[%lu]", inode);
	(void)proc_each(s->proc_root, xrdp_fd_owner, &o);
	if (o.pid == 0) {
		snprintf(detail, n, "no xrdp process found holding session %ld's "
		    "connection (are CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE granted?)", x.sid);
		goto out;
	}
	/* never the listener (xrdp fork=false would serve every client) */
	if (proc_stat_read(s->proc_root, o.pid, &ps) != 0 ||
	    proc_stat_read(s->proc_root, ps.ppid, &parent) != 0 ||
	    strcmp(parent.comm, "xrdp") != 0) {
		snprintf(detail, n, "xrdp process %ld serves more than this client "
		    "(not forked per connection)", o.pid);
		goto out;
	}
	if (kill((pid_t)o.pid, SIGTERM) != 0) {
		snprintf(detail, n, "cannot end xrdp process %ld: %s", o.pid, strerror(errno));
		goto out;
	}
	if (!proc_wait_gone(s->proc_root, o.pid, s->command_timeout_ms)) {
		(void)kill((pid_t)o.pid, SIGKILL);
		(void)proc_wait_gone(s->proc_root, o.pid, 1000);
	}
	snprintf(detail, n, "session %ld (display :%d) disconnected: its client's xrdp "
	    "process %ld ended", x.sid, x.display, o.pid);
	r = 0;
 out:
	free(sc.v);
	return r;
}

/* command:'s logoff_command or disconnect_command, split on blanks (no
 * shell), with the session id and user as the last two arguments. */
static int
command_act(struct sessions *s, enum wire_command_kind kind, const char *id,
    const char *user, char *detail, size_t n)
{
	char *copy, *argv[34], *save = NULL, out[WIRE_DETAIL_MAX];
	size_t argc = 0, olen;
	int r = -1;

	if (s->act[kind] == NULL || s->act[kind][0] == '\0') {
		snprintf(detail, n, "not supported: no %s_command", wire_command_kind_str(kind));
		return SESSIONS_UNSUPPORTED;
	}
	if ((copy = strdup(s->act[kind])) == NULL) {
		snprintf(detail, n, "out of memory");
		return -1;
	}
	for (char *w = strtok_r(copy, " \t", &save); w != NULL && argc < 31;
	    w = strtok_r(NULL, " \t", &save))
		argv[argc++] = w;
	argv[argc++] = (char *)id;
	argv[argc++] = (char *)user;
	argv[argc] = NULL;
	if (child_run(argv, s->command_timeout_ms, out, sizeof(out) - 1, &olen, detail,
	    n) == 0) {
		snprintf(detail, n, "%s", olen > 0 ? first_line(out, olen) : "done");
		r = 0;
	} else if (strstr(detail, "printed more than") != NULL) {
		r = 0;		/* it ran and succeeded; its words were too many */
		snprintf(detail, n, "done");
	}
	free(copy);
	return r;
}

int
sessions_act(struct sessions *s, enum wire_command_kind kind, const char *id,
    const char *user, char *detail, size_t n)
{
	switch (s->kind == SESSIONS_AUTO ? s->last : s->kind) {
	case SESSIONS_XRDP:
		return kind == WIRE_LOGOFF ? xrdp_logoff(s, id, user, detail, n) :
		    xrdp_disconnect(s, id, user, detail, n);
	case SESSIONS_COMMAND:
		return command_act(s, kind, id, user, detail, n);
	default:
		snprintf(detail, n, "not supported by the %s provider",
		    sessions_names[s->kind == SESSIONS_AUTO ? s->last : s->kind]);
		return SESSIONS_UNSUPPORTED;
	}
}

/* ---- dispatch ----------------------------------------------------------- */

int
sessions_collect(struct sessions *s, struct wire_session **out, size_t *n,
    char *err, size_t errlen)
{
	struct xrdp_scan sc = { NULL, 0, 0, 0, 0 };
	enum sessions_kind kind = s->kind;
	int r = -1;

	if (kind == SESSIONS_XRDP || kind == SESSIONS_AUTO) {
		if (xrdp_scan(s->proc_root, &sc, err, errlen) != 0)
			goto out;
		if (kind == SESSIONS_AUTO) {
			kind = sc.sesman || sc.n > 0 ? SESSIONS_XRDP : SESSIONS_UTMP;
			if (kind != s->last)
				log_info("sessions = auto: now reading %s sessions",
				    sessions_names[kind]);
		}
	}
	s->last = kind;
	switch (kind) {
	case SESSIONS_XRDP:
		r = sessions_xrdp(s, &sc, out, n, err, errlen);
		break;
	case SESSIONS_UTMP:
		r = sessions_utmp(s, out, n, err, errlen);
		break;
	case SESSIONS_LOGIND:
		r = sessions_logind(s, out, n, err, errlen);
		break;
	case SESSIONS_FILE:
		r = sessions_file(s, out, n, err, errlen);
		break;
	case SESSIONS_COMMAND:
		r = sessions_command(s, out, n, err, errlen);
		break;
	case SESSIONS_AUTO:
		break;
	}
 out:
	free(sc.v);
	return r;
}
