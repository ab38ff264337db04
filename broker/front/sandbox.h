/* sandbox: the front process's seccomp filter (the one module that
 * includes seccomp.h). An allow-list of what a front needs once it is set
 * up: its threads (futex, clone), epoll and poll, socket I/O (recv/send,
 * recvmsg for the passed sockets, shutdown, close), memory (mmap, brk,
 * madvise), time and random bytes (TLS), writing its log, exit. Anything
 * else kills the whole front process (SCMP_ACT_KILL_PROCESS): no socket
 * made or connected, no process started, nothing ptraced. openat fails
 * with EACCES (libraries probe files, e.g. glibc's malloc /sys): no file
 * is opened. */
#ifndef TS_SANDBOX_H
#define TS_SANDBOX_H

#include <stddef.h>

/* Installs the filter on the calling process (every thread: TSYNC).
 * allow_files: openat allowed (the TSBROKER_LEAN_DUMP debug switch
 * writes files). 0, or -1 with the reason in err. */
int sandbox_enter(int allow_files, char *err, size_t n);

#endif
