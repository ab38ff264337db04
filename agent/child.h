/* child: runs a program for the agent's providers (sessions.c: command:
 * and the logoff/disconnect commands), without a shell of its own, bounded
 * in time and output. Nothing is logged; errors are in err. */
#ifndef TS_AGENT_CHILD_H
#define TS_AGENT_CHILD_H

#include <stddef.h>

/* Runs argv[0] (searched in PATH) with argv in its own process group,
 * stdin from /dev/null, default signal mask and dispositions, for at most
 * timeout_ms, its stdout kept in obuf (omax bytes at most, NUL-terminated:
 * obuf has omax + 1 bytes) and *olen. 0 if it exited 0, else -1 with why
 * in err (its stderr's first line; "command printed more than ..." when
 * its output overflowed). Whatever it left running in its group is
 * killed. */
int child_run(char *const argv[], int timeout_ms, char *obuf, size_t omax, size_t *olen,
    char *err, size_t errlen);

/* The first line of buf (len bytes, buf[len] writable), unprintable bytes
 * as '?': buf itself, cut there. */
const char *child_first_line(char *buf, size_t len);

#endif
