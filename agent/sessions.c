#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>
#include <utmpx.h>

#include <systemd/sd-login.h>

#include "agent/child.h"
#include "agent/proc.h"
#include "agent/sessions.h"
#include "broker/common/log.h"
#include "broker/common/util.h"

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
	if (ptable_read(s->proc_root, &t) != 0) {
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
	ptable_free(&t);
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
		snprintf(detail, n, "%s", olen > 0 ? child_first_line(out, olen) : "done");
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
