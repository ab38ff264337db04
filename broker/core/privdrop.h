/* privdrop: the broker's state directory and its change to an unprivileged
 * user ([broker] user, docs/security.md "Privileges and files").
 *
 * Started as root with a user set, the broker binds its ports and reads its
 * keys as root, then becomes that user for good (supplementary groups
 * dropped, then gid, then uid; a way back is checked not to exist). The
 * state directory, created if missing (0700), and the database's files must
 * belong to that user: the directory when it is created here, the files
 * (state.db, -wal, -shm) after the store is opened; an existing directory
 * the user cannot write is an error at start, never a surprise later.
 * Without a user nothing changes; with one, as that user already, neither;
 * as anyone else it is an error. Errors: -1 with the reason in err. */
#ifndef TS_PRIVDROP_H
#define TS_PRIVDROP_H

#include <stddef.h>
#include <sys/types.h>

struct privdrop {
	int active;			/* root, and a user to become */
	/* set before privdrop_drop: keep CAP_SETUID and CAP_SETGID (only
	 * those) to start front processes as their user (privdrop_front) */
	int keep_setid;
	char user[64];
	uid_t uid;
	gid_t gid;
};

/* Resolves user ("" = none) and makes the directory of state_path (0700,
 * the user's when active) if it is missing. */
int privdrop_prepare(struct privdrop *pd, const char *user, const char *state_path,
    char *err, size_t errlen);
/* Gives the database's files (state_path, -wal, -shm) to the user. */
int privdrop_own_state(const struct privdrop *pd, const char *state_path, char *err,
    size_t errlen);
/* Becomes the user for good. No-op when not active. */
int privdrop_drop(const struct privdrop *pd, char *err, size_t errlen);

/* The command line (cli.h) as root on a SQLite state: pd for the user the
 * broker runs as ([broker] user, else the owner of the state directory
 * when it is not root: a unit's User=), so that privdrop_own_state gives
 * it the files the command creates (the database, -wal, -shm), never
 * leaving root's it could not open. Inactive for anyone else. */
int privdrop_cli_prepare(struct privdrop *pd, const char *user, const char *state_path,
    char *err, size_t errlen);

/* The front processes' user (front/fronts.h). */
struct privdrop_front {
	int change;			/* 1: the child becomes uid/gid */
	char user[64];
	uid_t uid;
	gid_t gid;
};
/* Resolves user ("": tsbroker-front; that missing, nobody, logged). A
 * process that cannot change its user (not root, no CAP_SETUID and
 * CAP_SETGID) runs its fronts as itself: logged, change 0. */
int privdrop_front_prepare(struct privdrop_front *pf, const char *user, char *err,
    size_t errlen);
/* In the forked child, before it execs the front: becomes the user for
 * good (groups, gid, uid), drops every ambient capability (so the exec
 * leaves none), sets no_new_privs, and / (read-only under the unit) as
 * the working directory.
 * Async-signal-safe calls only; 0 or -1 (the child exits). */
int privdrop_front_child(const struct privdrop_front *pf);

#endif
