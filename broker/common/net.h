/* net: all TCP socket set-up of the broker, the agent and the test peers
 * (the model is Redis's anet.c): listen, accept, connect with a timeout,
 * socket options. Every function that can fail returns NET_ERR with errno
 * set and, where it takes one, a one-line reason in err (never NULL, size n;
 * the reason names the address, never a secret). Descriptors returned are
 * the caller's, close-on-exec, and blocking unless said otherwise. */
#ifndef TS_NET_H
#define TS_NET_H

#include <stddef.h>

#define NET_OK		0
#define NET_ERR		(-1)

/* numeric host, or "[v6]:port" / "a.b.c.d:port" */
#define NET_ADDR_MAX	64

/* Listens on hostport ("host:port", "[v6]:port"; port 0 picks a free one),
 * trying each address getaddrinfo gives until one binds (SO_REUSEADDR).
 * The socket is non-blocking (for a poll loop). The socket, or NET_ERR. */
int net_listen(char *err, size_t n, const char *hostport, int backlog);

/* "ip:port" ("[v6]:port") the socket is bound to, into out (size outn).
 * NET_OK or NET_ERR. */
int net_local_name(int fd, char *out, size_t outn);

/* Accepts one connection (blocking, close-on-exec). ip (size ipn, at least
 * NET_ADDR_MAX; may be NULL) gets the client's numeric address. The socket,
 * or NET_ERR with errno from accept4 (EAGAIN on a non-blocking listener with
 * nothing pending). */
int net_accept(int lfd, char *ip, size_t ipn);

/* Connects to host:port (a name or an address, each address tried in turn)
 * within timeout_ms for each. The connected socket (blocking, TCP_NODELAY),
 * or NET_ERR with errno ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH (the name does
 * not resolve) or as connect(2) says, and the reason in err. */
int net_connect(char *err, size_t n, const char *host, int port, int timeout_ms);

/* Receive and send timeouts in ms: 0 for none, negative to leave one as it
 * is. NET_OK or NET_ERR. */
int net_set_timeouts(int fd, long recv_ms, long send_ms);
/* O_NONBLOCK on (1) or off (0). NET_OK or NET_ERR. */
int net_set_nonblock(int fd, int on);
/* TCP_NODELAY on. NET_OK or NET_ERR. */
int net_set_nodelay(int fd);
/* TCP keepalive: the first probe after idle_s silent seconds, then every
 * idle_s/4 (at least 1), 4 unanswered ones drop the connection; and
 * TCP_USER_TIMEOUT: data or probes unacknowledged for user_timeout_s drop it
 * (Linux then ends a probing connection at that bound, not after 4 probes).
 * 0 leaves either off. NET_OK or NET_ERR. */
int net_set_keepalive(int fd, int idle_s, int user_timeout_s);

/* One message of n bytes on a local (AF_UNIX) socket with fd passed beside
 * it (SCM_RIGHTS), without blocking. The bytes sent, or -1 with errno. */
long net_send_fd(int sock, const void *msg, size_t n, int fd);
/* One such message into msg (n bytes at most), without blocking; *fd is
 * the descriptor that came with it (close-on-exec) or -1. The bytes
 * received (0: the peer closed), or -1 with errno; a message or control
 * data cut short counts as -1 with EMSGSIZE (*fd closed). */
long net_recv_fd(int sock, void *msg, size_t n, int *fd);

#endif
