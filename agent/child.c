/* child.c: running a program with a timeout (see child.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/child.h"
#include "broker/common/util.h"

extern char **environ;

#define ERR(...) do { snprintf(err, errlen, __VA_ARGS__); goto out; } while (0)

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

const char *
child_first_line(char *buf, size_t len)
{
	size_t i;

	buf[len] = '\0';
	for (i = 0; i < len && buf[i] != '\n'; i++)
		if (!isprint((unsigned char)buf[i]))
			buf[i] = '?';
	buf[i] = '\0';
	return buf;
}

int
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
		    child_first_line(ebuf, elen));
	if (WEXITSTATUS(status) != 0)
		ERR("command exited with status %d: %s", WEXITSTATUS(status),
		    child_first_line(ebuf, elen));
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
