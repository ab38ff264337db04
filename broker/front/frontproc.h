/* frontproc: a front process (tsbroker --front, started by fronts.c with
 * fork+exec). It holds the RDP certificate and key and nothing else of
 * the core's: its configuration, certificate and key arrive in the hello on
 * its door socket (frontmsg.h). It runs the lean engine on the client
 * sockets the core passes it, asks the core through the seam over the
 * door socket, then installs its seccomp filter (sandbox.h) and serves
 * until the core goes away (its sockets close: it exits).
 *
 * Test switch (compiled in, honoured only with TSBROKER_TEST_SECCOMP=1 in
 * its environment): SIGUSR1 makes the front call socket(2), which the
 * filter forbids. */
#ifndef TS_FRONTPROC_H
#define TS_FRONTPROC_H

/* The front's main: does not return (exit status 0 when the core went,
 * 1 on a set-up error, logged). */
int frontproc_main(void);

#endif
