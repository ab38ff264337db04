/* sessions: who has a session on this terminal server, and is it connected.
 * One provider, chosen by the agent's "sessions =" key:
 *   xrdp         xrdp 0.9 sessions from /proc (Xvnc/Xorg children of
 *                xrdp-sesman; connected = their sockets, see docs/agent.md)
 *   utmp         USER_PROCESS entries with a remote host (all "active")
 *   logind       remote logind sessions (active/online = active,
 *                closing = disconnected); logind cannot see RDP disconnects
 *   file:PATH    a JSON list of sessions, re-read at every call
 *   command:CMD  `sh -c CMD` printing such a list; killed (its whole process
 *                group) after the timeout; non-zero exit or bad JSON = failure
 *   auto         xrdp while an xrdp-sesman process runs, else utmp
 * The same provider carries out an admin's commands (sessions_act): xrdp
 * logs off (as sesman ends a session) and disconnects (ends the xrdp
 * process serving the client: the session stays); command: runs
 * logoff_command/disconnect_command; the others answer "not supported".
 * A failure is an error, never an empty list: the caller then reports the
 * sessions as unknown and the broker keeps what it had. */
#ifndef TS_AGENT_SESSIONS_H
#define TS_AGENT_SESSIONS_H

#include <stddef.h>

#include "broker/common/wire.h"

#define SESSIONS_OUTPUT_MAX	(4 * 1024 * 1024)	/* file: and command: */

struct sessions_opts {
	const char *spec;	/* the "sessions =" value */
	const char *proc_root;	/* "/proc", or a fixture tree in tests */
	const char *utmp_path;	/* NULL: the system's utmp */
	int command_timeout_ms;		/* also bounds each sessions_act */
	/* command:'s programs for sessions_act, by enum wire_command_kind
	 * (NULL or "": not supported): split on blanks, run without a
	 * shell, the session id and user appended */
	const char *act[WIRE_COMMAND_KIND_COUNT];
};

struct sessions;

/* 0 if spec names a provider, else -1 with the reason in err. */
int sessions_spec_check(const char *spec, char *err, size_t errlen);

/* Copies what it needs from o. NULL if o->spec is invalid or on no memory. */
struct sessions *sessions_new(const struct sessions_opts *o);
void sessions_free(struct sessions *s);

/* Reads the sessions now. On success *out (owned by the caller, free()) holds
 * *n entries and 0 is returned. On failure returns -1 with the reason in
 * err; *out and *n are left alone. */
int sessions_collect(struct sessions *s, struct wire_session **out, size_t *n,
    char *err, size_t errlen);

#define SESSIONS_UNSUPPORTED	-2	/* sessions_act: this provider cannot */

/* Carries out kind on the session id (as sessions_collect reports it) of
 * user through the provider, waiting at most the command timeout (xrdp:
 * twice, then SIGKILL): 0 done, SESSIONS_UNSUPPORTED, or -1 failed; detail
 * (n bytes) says what happened in every case. Needs, for other users'
 * sessions, CAP_KILL (xrdp), and for xrdp's disconnect, which reads the
 * xrdp process's /proc/PID/fd, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE. */
int sessions_act(struct sessions *s, enum wire_command_kind kind, const char *id,
    const char *user, char *detail, size_t n);

/* The provider that the last sessions_collect used ("xrdp" under auto). */
const char *sessions_provider(const struct sessions *s);

#endif
