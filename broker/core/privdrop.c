#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/core/privdrop.h"

/* The directory part of path into out ("." for a bare name). */
static void
dir_of(const char *path, char *out, size_t n)
{
	char tmp[1024];

	util_strlcpy(tmp, path, sizeof(tmp));
	util_strlcpy(out, dirname(tmp), n);
}

/* 1 if the user may reach, write and search dir (ancestors, modes and ACLs
 * as the kernel sees them: access() asked with the user's real and
 * effective ids, root kept as the saved ids to come back). Called before
 * any thread starts. */
static int
dir_writable_by(const struct privdrop *pd, const char *dir)
{
	gid_t groups[1] = { pd->gid };
	int ok;

	if (setgroups(1, groups) != 0 || setresgid(pd->gid, pd->gid, 0) != 0 ||
	    setresuid(pd->uid, pd->uid, 0) != 0)
		return 0;
	ok = access(dir, W_OK | X_OK) == 0;
	if (setresuid(0, 0, 0) != 0 || setresgid(0, 0, 0) != 0)
		ok = 0;
	return ok;
}

int
privdrop_prepare(struct privdrop *pd, const char *user, const char *state_path,
    char *err, size_t errlen)
{
	struct passwd *pw = NULL;
	struct stat st;
	char dir[1024];

	memset(pd, 0, sizeof(*pd));
	if (user != NULL && user[0] != '\0') {
		errno = 0;
		if ((pw = getpwnam(user)) == NULL) {
			snprintf(err, errlen, "[broker] user '%s': %s", user,
			    errno ? strerror(errno) : "no such user");
			return -1;
		}
		if (geteuid() != 0 && pw->pw_uid != geteuid()) {
			snprintf(err, errlen, "[broker] user '%s': changing user needs root "
			    "(running as uid %u)", user, (unsigned)geteuid());
			return -1;
		}
		if (geteuid() == 0 && pw->pw_uid != 0) {
			pd->active = 1;
			util_strlcpy(pd->user, user, sizeof(pd->user));
			pd->uid = pw->pw_uid;
			pd->gid = pw->pw_gid;
		}
	}
	dir_of(state_path, dir, sizeof(dir));
	if (stat(dir, &st) != 0) {
		if (errno != ENOENT || mkdir(dir, 0700) != 0) {
			snprintf(err, errlen, "state directory '%s': %s", dir, strerror(errno));
			return -1;
		}
		if (pd->active && chown(dir, pd->uid, pd->gid) != 0) {
			snprintf(err, errlen, "state directory '%s': chown to %s: %s", dir,
			    pd->user, strerror(errno));
			return -1;
		}
		log_info("created the state directory %s (0700%s%s)", dir,
		    pd->active ? ", owner " : "", pd->active ? pd->user : "");
		if (stat(dir, &st) != 0) {
			snprintf(err, errlen, "state directory '%s': %s", dir, strerror(errno));
			return -1;
		}
	} else if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "state directory '%s' is not a directory", dir);
		return -1;
	}
	if (pd->active && !dir_writable_by(pd, dir)) {
		snprintf(err, errlen, "state directory '%s' is not writable by user '%s' "
		    "(owner uid %u, mode %04o; its parents must let the user in): chown it "
		    "to that user, or let tsbroker create it", dir, pd->user,
		    (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		return -1;
	}
	return 0;
}

int
privdrop_own_state(const struct privdrop *pd, const char *state_path, char *err,
    size_t errlen)
{
	static const char *suffixes[] = { "", "-wal", "-shm" };
	char path[1100];
	struct stat st;

	if (!pd->active)
		return 0;
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", state_path, suffixes[i]);
		if (lstat(path, &st) != 0) {
			if (errno == ENOENT)
				continue;
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			return -1;
		}
		if (!S_ISREG(st.st_mode)) {
			snprintf(err, errlen, "%s is not a regular file", path);
			return -1;
		}
		if ((st.st_uid != pd->uid || st.st_gid != pd->gid) &&
		    lchown(path, pd->uid, pd->gid) != 0) {
			snprintf(err, errlen, "%s: chown to %s: %s", path, pd->user,
			    strerror(errno));
			return -1;
		}
	}
	return 0;
}

#define SETID_CAPS	((1u << CAP_SETUID) | (1u << CAP_SETGID))

/* This process's effective capabilities (the first 32), or 0. */
static uint32_t
caps_effective(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	return syscall(SYS_capget, &h, d) == 0 ? d[0].effective : 0;
}

/* Sets the permitted and effective capabilities to CAP_SETUID and
 * CAP_SETGID only (inheritable none). 0 or -1. */
static int
caps_setid_only(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	d[0].permitted = d[0].effective = SETID_CAPS;
	return syscall(SYS_capset, &h, d) == 0 ? 0 : -1;
}

int
privdrop_drop(const struct privdrop *pd, char *err, size_t errlen)
{
	if (!pd->active)
		return 0;
	if ((pd->keep_setid && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) ||
	    setgroups(1, &pd->gid) != 0 || setgid(pd->gid) != 0 || setuid(pd->uid) != 0 ||
	    (pd->keep_setid && (caps_setid_only() != 0 ||
	    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0))) {
		snprintf(err, errlen, "cannot become user '%s': %s", pd->user, strerror(errno));
		return -1;
	}
	/* with CAP_SETUID kept the way back exists by design: only checked
	 * to be the only capability left */
	if ((!pd->keep_setid && setuid(0) == 0) ||
	    (pd->keep_setid && caps_effective() != SETID_CAPS) ||
	    geteuid() != pd->uid || getegid() != pd->gid) {
		snprintf(err, errlen, "still privileged after becoming user '%s'", pd->user);
		return -1;
	}
	log_info("running as user %s (uid %u, gid %u)", pd->user, (unsigned)pd->uid,
	    (unsigned)pd->gid);
	return 0;
}

int
privdrop_cli_prepare(struct privdrop *pd, const char *user, const char *state_path,
    char *err, size_t errlen)
{
	struct stat st;
	char dir[1024];

	memset(pd, 0, sizeof(*pd));
	if (geteuid() != 0)
		return 0;
	if (user != NULL && user[0] != '\0')
		return privdrop_prepare(pd, user, state_path, err, errlen);
	dir_of(state_path, dir, sizeof(dir));
	if (stat(dir, &st) == 0 && st.st_uid != 0) {
		pd->active = 1;
		snprintf(pd->user, sizeof(pd->user), "uid %u", (unsigned)st.st_uid);
		pd->uid = st.st_uid;
		pd->gid = st.st_gid;
	}
	return 0;
}

int
privdrop_front_prepare(struct privdrop_front *pf, const char *user, char *err,
    size_t errlen)
{
	const char *name = user != NULL && user[0] != '\0' ? user : "tsbroker-front";
	struct passwd *pw;

	memset(pf, 0, sizeof(*pf));
	if ((pw = getpwnam(name)) == NULL && (user == NULL || user[0] == '\0')) {
		log_warn("[rdp] front_user: no user tsbroker-front: the fronts run as nobody "
		    "(create a system user tsbroker-front, or set front_user)");
		pw = getpwnam(name = "nobody");
	}
	if (pw == NULL) {
		snprintf(err, errlen, "[rdp] front_user '%s': no such user", name);
		return -1;
	}
	if (pw->pw_uid == 0) {
		snprintf(err, errlen, "[rdp] front_user '%s' is root", name);
		return -1;
	}
	util_strlcpy(pf->user, name, sizeof(pf->user));
	pf->uid = pw->pw_uid;
	pf->gid = pw->pw_gid;
	pf->change = pf->uid != geteuid() || pf->gid != getegid();
	if (pf->change && geteuid() != 0 && (caps_effective() & SETID_CAPS) != SETID_CAPS) {
		log_warn("[rdp] front_user '%s': cannot change user (not root, no CAP_SETUID and "
		    "CAP_SETGID): the fronts run as uid %u", name, (unsigned)geteuid());
		pf->change = 0;
		pf->uid = geteuid();
		pf->gid = getegid();
		snprintf(pf->user, sizeof(pf->user), "uid %u", (unsigned)pf->uid);
	}
	return 0;
}

int
privdrop_front_child(const struct privdrop_front *pf)
{
	if (pf->change && (setgroups(1, &pf->gid) != 0 || setresgid(pf->gid, pf->gid,
	    pf->gid) != 0 || setresuid(pf->uid, pf->uid, pf->uid) != 0))
		return -1;
	if (getuid() == 0 || geteuid() == 0 ||
	    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    chdir("/") != 0)
		return -1;
	return 0;
}
