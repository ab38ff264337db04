/* net: TCP socket set-up. See net.h. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "broker/common/net.h"
#include "broker/common/util.h"

/* util_hostport_parse, plus port 0 (any free port) for listeners. */
static int
hostport_parse(const char *s, char *host, size_t n, int *port)
{
	char tmp[300];
	size_t len = strlen(s);

	if (util_hostport_parse(s, host, n, port) == 0)
		return 0;
	if (len < 2 || len >= sizeof(tmp) || strcmp(s + len - 2, ":0") != 0)
		return -1;
	memcpy(tmp, s, len + 1);
	tmp[len - 1] = '1';
	if (util_hostport_parse(tmp, host, n, port) != 0)
		return -1;
	*port = 0;
	return 0;
}

int
net_listen(char *err, size_t n, const char *hostport, int backlog)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256], port[16];
	int p, fd = NET_ERR, one = 1, e = EINVAL;

	if (hostport_parse(hostport, host, sizeof(host), &p) != 0) {
		snprintf(err, n, "listen '%s' is not host:port", hostport);
		errno = EINVAL;
		return NET_ERR;
	}
	snprintf(port, sizeof(port), "%d", p);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((e = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, n, "listen '%s': %s", hostport, gai_strerror(e));
		errno = EADDRNOTAVAIL;
		return NET_ERR;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0)
			break;
		e = errno;
		close(fd);
		fd = NET_ERR;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, n, "listen '%s': %s", hostport, strerror(e));
		errno = e;
	}
	return fd;
}

/* "ip:port" or "[ip]:port" of sa. */
static int
addr_format(const struct sockaddr *sa, socklen_t len, char *out, size_t n, int with_port)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
	    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return NET_ERR;
	if (!with_port)
		return util_strlcpy(out, host, n) == 0 ? NET_OK : NET_ERR;
	if (snprintf(out, n, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host,
	    serv) >= (int)n)
		return NET_ERR;
	return NET_OK;
}

int
net_local_name(int fd, char *out, size_t outn)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return NET_ERR;
	return addr_format((struct sockaddr *)&ss, len, out, outn, 1);
}

int
net_accept(int lfd, char *ip, size_t ipn)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd;

	if ((fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC)) < 0)
		return NET_ERR;
	if (ip != NULL && addr_format((struct sockaddr *)&ss, len, ip, ipn, 0) != 0)
		ip[0] = '\0';
	return fd;
}

/* Connects fd to a within timeout_ms. 0 or an errno value. */
static int
connect_one(int fd, const struct addrinfo *a, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	int64_t end = util_mono_ms() + timeout_ms, left;
	socklen_t len = sizeof(int);
	int e = 0, r;

	if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return errno;
	while ((left = end - util_mono_ms()) > 0) {
		if ((r = poll(&pfd, 1, (int)left)) < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			break;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0)
			return errno;
		return e;
	}
	return ETIMEDOUT;
}

int
net_connect(char *err, size_t n, const char *host, int port, int timeout_ms)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_NUMERICSERV }, *ai = NULL, *a;
	char ports[8];
	int fd = NET_ERR, e = ECONNREFUSED, g;

	snprintf(ports, sizeof(ports), "%d", port);
	if ((g = getaddrinfo(host, ports, &hints, &ai)) != 0) {
		snprintf(err, n, "%s:%d: %s", host, port, gai_strerror(g));
		errno = EHOSTUNREACH;
		return NET_ERR;
	}
	for (a = ai; a != NULL; a = a->ai_next) {
		if ((fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    0)) < 0) {
			e = errno;
			continue;
		}
		if ((e = connect_one(fd, a, timeout_ms)) == 0) {
			net_set_nonblock(fd, 0);
			net_set_nodelay(fd);
			break;
		}
		close(fd);
		fd = NET_ERR;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		snprintf(err, n, "%s:%d: %s", host, port, strerror(e));
		errno = e;
	}
	return fd;
}

static int
set_timeo(int fd, int opt, long ms)
{
	struct timeval tv;

	if (ms < 0)
		return NET_OK;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	return setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv)) == 0 ? NET_OK : NET_ERR;
}

int
net_set_timeouts(int fd, long recv_ms, long send_ms)
{
	if (set_timeo(fd, SO_RCVTIMEO, recv_ms) != 0 || set_timeo(fd, SO_SNDTIMEO, send_ms) != 0)
		return NET_ERR;
	return NET_OK;
}

int
net_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return NET_ERR;
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) == 0 ? NET_OK : NET_ERR;
}

int
net_set_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 ?
	    NET_OK : NET_ERR;
}

int
net_set_keepalive(int fd, int idle_s, int user_timeout_s)
{
	int one = 1, intvl = idle_s / 4 > 0 ? idle_s / 4 : 1, cnt = 4;
	unsigned int ut = (unsigned int)user_timeout_s * 1000U;

	if (idle_s > 0 &&
	    (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) != 0))
		return NET_ERR;
	if (user_timeout_s > 0 &&
	    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut)) != 0)
		return NET_ERR;
	return NET_OK;
}

long
net_send_fd(int sock, const void *msg, size_t n, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { (void *)msg, n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
	    .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return (long)sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
}

long
net_recv_fd(int sock, void *msg, size_t n, int *fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { msg, n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
	    .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	ssize_t r;

	*fd = -1;
	if ((r = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) <= 0)
		return (long)r;
	cm = CMSG_FIRSTHDR(&mh);
	if (cm != NULL && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
	    cm->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(fd, CMSG_DATA(cm), sizeof(int));
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		errno = EMSGSIZE;
		return -1;
	}
	return (long)r;
}
