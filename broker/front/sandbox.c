/* sandbox: the front's seccomp filter. See sandbox.h. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include <seccomp.h>

#include "broker/front/sandbox.h"

/* What a set-up front calls: glibc's pthreads and malloc, OpenSSL's TLS
 * (getrandom), the lean engine's epoll loops, the admission engine's poll
 * and watchdog, the seam's SEQPACKET sockets, the log (write to stderr).
 * The sanitizers' runtimes (make asan, tsan) need a few more. */
static const char *const allowed[] = {
	"read", "write", "readv", "writev", "close", "fstat", "newfstatat",
	"recvfrom", "sendto", "recvmsg", "sendmsg", "shutdown", "getsockopt", "setsockopt",
	"getsockname", "getpeername",
	"poll", "ppoll", "epoll_wait", "epoll_pwait", "epoll_ctl", "epoll_create1",
	"eventfd2", "pipe2", "fcntl", "dup",
	"futex", "set_robust_list", "rseq", "sched_yield",
	"sched_getaffinity", "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "sigaltstack",
	"mmap", "munmap", "mprotect", "mremap", "madvise", "brk",
	"clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "getrandom",
	"getpid", "gettid", "getuid", "geteuid", "getgid", "getegid", "prctl", "tgkill",
	"exit", "exit_group", "restart_syscall",
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	"readlink", "getrlimit", "prlimit64", "sched_getparam", "pread64",
	"getdents64", "uname", "statx", "process_vm_readv",
#endif
};

int
sandbox_enter(int allow_files, char *err, size_t n)
{
	scmp_filter_ctx ctx;
	int rc = 0;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	allow_files = 1;	/* the sanitizers write their reports */
#endif
	if ((ctx = seccomp_init(SCMP_ACT_KILL_PROCESS)) == NULL) {
		snprintf(err, n, "seccomp_init failed");
		return -1;
	}
	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]) && rc == 0; i++) {
		int nr = seccomp_syscall_resolve_name(allowed[i]);

		if (nr != __NR_SCMP_ERROR)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
	}
	/* threads only, no processes; clone3's flags are out of reach:
	 * ENOSYS makes glibc fall back to clone */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
		    SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	/* files: refused, not fatal (glibc reads /sys for its malloc arenas
	 * on a new thread, and copes) */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, allow_files ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(EACCES),
		    SCMP_SYS(openat), 0);
	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc != 0) {
		snprintf(err, n, "seccomp: %s", strerror(-rc));
		return -1;
	}
	return 0;
}
