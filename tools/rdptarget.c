/* rdptarget: a minimal RDP server on libfreerdp-server2 for tests. It takes
 * each client (TLS only) to the active state, records who came with which
 * cookie and routing token, and keeps a sessions file in the format the
 * agent's file: provider reads (wire_sessions_decode).
 *
 *   rdptarget --listen HOST:PORT --cert FILE --key FILE --sessions FILE
 *             --name NAME [--report FILE] [--restore] [--verbose]
 *
 * stdout, one line each, flushed (values percent-escaped, see esc()):
 *   LISTENING HOST:PORT
 *   CONNECT user=U domain=D token=T cookie=C client=IP session=ID
 *   DISCONNECT user=U domain=D session=ID
 *   FAIL client=IP reason=R
 * --report appends one JSON object per connection/disconnection.
 * A user is "active" while at least one of their connections is, then
 * "disconnected"; a later connection of the same user (case-insensitive,
 * same domain) reuses the session id. SIGTERM/SIGINT: exits 0 cleanly.
 * --restore starts with the sessions an existing sessions file lists (all
 * disconnected, same ids), as a terminal server whose RDP service restarts
 * keeps its users' sessions; without it the file starts empty. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <freerdp/freerdp.h>
#include <freerdp/listener.h>
#include <freerdp/peer.h>
#include <freerdp/settings.h>
#include <winpr/ssl.h>
#include <winpr/synch.h>
#include <winpr/wlog.h>
#include <jansson.h>

#include "broker/common/log.h"
#include "broker/common/net.h"
#include "broker/common/util.h"
#include "broker/front/frpeer.h"
#include "broker/front/x224.h"


#define HANDSHAKE_MS	30000	/* a client must be active within this */
#define PEM_MAX		(64 * 1024)
#define STR_MAX		512

struct tsession {
	char user[128];
	char domain[128];
	char id[64];
	int nconn;		/* connections currently active */
	int64_t since;		/* unix seconds of the first logon */
};

struct tpeer {
	struct target *t;
	int fd;
	int open;		/* fd not yet handed back to FreeRDP for closing */
	int finished;		/* thread done, ready to join */
	pthread_t thread;
	char client[64];
	char cookie[STR_MAX];
	char token[STR_MAX];
	int session;		/* index in t->sess, -1 until active */
	struct tpeer *next;
};

struct target {
	char name[64];
	const char *sessions_path;
	const char *report_path;
	char *cert;
	char *key;
	HANDLE stop_event;
	pthread_mutex_t lock;
	struct tsession *sess;
	size_t nsess, cap;
	int nextid;
	struct tpeer *peers;
};

static volatile sig_atomic_t stop_flag;
static int stop_pipe[2] = { -1, -1 };

static void
on_signal(int sig)
{
	int saved = errno;

	stop_flag = 1;
	if (stop_pipe[1] >= 0)
		(void)!write(stop_pipe[1], "x", 1);
	errno = saved;
}

/* Percent-escapes spaces, controls, non-ASCII and '%' so a value is one
 * whitespace-free token on the output line. */
static void
esc(const char *in, char *out, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	const unsigned char *p;

	for (p = (const unsigned char *)in; *p != '\0' && o + 4 < n; p++) {
		if (*p <= 0x20 || *p >= 0x7f || *p == '%') {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		} else
			out[o++] = (char)*p;
	}
	out[o] = '\0';
}

/* ---- sessions file ------------------------------------------------------- */

/* Writes the sessions file atomically (tmp + rename). Called with t->lock. */
static int
sessions_write(struct target *t)
{
	char tmp[4096];
	json_t *arr, *o;
	char *text = NULL;
	FILE *f = NULL;
	size_t i;
	int r = -1;

	if ((arr = json_array()) == NULL)
		return -1;
	for (i = 0; i < t->nsess; i++) {
		o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "user", t->sess[i].user,
		    "domain", t->sess[i].domain, "id", t->sess[i].id,
		    "state", t->sess[i].nconn > 0 ? "active" : "disconnected",
		    "since", (json_int_t)t->sess[i].since);
		if (o == NULL || json_array_append_new(arr, o) != 0)
			goto out;
	}
	if ((text = json_dumps(arr, JSON_COMPACT)) == NULL)
		goto out;
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", t->sessions_path, (int)getpid());
	if ((f = fopen(tmp, "w")) == NULL) {
		log_error("%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (fputs(text, f) < 0 || fputc('\n', f) < 0 || fflush(f) != 0 ||
	    fsync(fileno(f)) != 0) {
		log_error("%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (fclose(f) != 0) {
		f = NULL;
		goto out;
	}
	f = NULL;
	if (rename(tmp, t->sessions_path) != 0) {
		log_error("rename %s: %s", t->sessions_path, strerror(errno));
		goto out;
	}
	r = 0;
 out:
	if (f != NULL) {
		fclose(f);
		unlink(tmp);
	}
	free(text);
	json_decref(arr);
	return r;
}

/* --restore: takes the sessions of an existing file (a missing file is an
 * empty list), all disconnected, and numbers new ones after its ids. */
static int
sessions_load(struct target *t)
{
	json_error_t jerr;
	json_t *arr, *o;
	const char *user, *domain, *id, *dash;
	json_int_t since;
	size_t i;

	if (access(t->sessions_path, F_OK) != 0)
		return 0;
	if ((arr = json_load_file(t->sessions_path, 0, &jerr)) == NULL ||
	    !json_is_array(arr)) {
		log_error("%s: not a sessions list: %s", t->sessions_path, jerr.text);
		json_decref(arr);
		return -1;
	}
	if ((t->sess = calloc(json_array_size(arr) + 1, sizeof(*t->sess))) == NULL) {
		json_decref(arr);
		return -1;
	}
	t->cap = json_array_size(arr) + 1;
	json_array_foreach(arr, i, o) {
		struct tsession *s = &t->sess[t->nsess];

		since = 0;
		if (json_unpack(o, "{s:s, s:s, s:s, s?:I}", "user", &user, "domain", &domain,
		    "id", &id, "since", &since) != 0)
			continue;
		util_strlcpy(s->user, user, sizeof(s->user));
		util_strlcpy(s->domain, domain, sizeof(s->domain));
		util_strlcpy(s->id, id, sizeof(s->id));
		s->since = since;
		if ((dash = strrchr(id, '-')) != NULL && atoi(dash + 1) > t->nextid)
			t->nextid = atoi(dash + 1);
		t->nsess++;
	}
	json_decref(arr);
	return 0;
}

static void
report_append(struct target *t, const char *event, const struct tpeer *p,
    const struct tsession *s)
{
	json_t *o;
	char *text;
	FILE *f;

	if (t->report_path == NULL)
		return;
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "event", event,
	    "target", t->name, "user", s->user, "domain", s->domain,
	    "token", p->token, "cookie", p->cookie, "client", p->client,
	    "session", s->id, "time_ms", (json_int_t)util_now_ms());
	if (o == NULL)
		return;
	if ((text = json_dumps(o, JSON_COMPACT)) != NULL) {
		if ((f = fopen(t->report_path, "a")) != NULL) {
			fprintf(f, "%s\n", text);
			fclose(f);
		} else
			log_error("%s: %s", t->report_path, strerror(errno));
		free(text);
	}
	json_decref(o);
}

/* A user reached the active state: find or create their session. */
static void
session_connect(struct target *t, struct tpeer *p, const char *user, const char *domain)
{
	char eu[STR_MAX], ed[STR_MAX], et[STR_MAX * 3], ec[STR_MAX * 3];
	struct tsession *s = NULL, *ns;
	size_t i;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->nsess; i++) {
		if (strcasecmp(t->sess[i].user, user) == 0 &&
		    strcasecmp(t->sess[i].domain, domain) == 0) {
			s = &t->sess[i];
			break;
		}
	}
	if (s == NULL) {
		if (t->nsess == t->cap) {
			size_t cap = t->cap ? t->cap * 2 : 16;

			if ((ns = realloc(t->sess, cap * sizeof(*ns))) == NULL) {
				pthread_mutex_unlock(&t->lock);
				log_error("out of memory");
				return;
			}
			t->sess = ns;
			t->cap = cap;
		}
		s = &t->sess[t->nsess++];
		memset(s, 0, sizeof(*s));
		util_strlcpy(s->user, user, sizeof(s->user));
		util_strlcpy(s->domain, domain, sizeof(s->domain));
		snprintf(s->id, sizeof(s->id), "%.40s-%d", t->name, ++t->nextid);
		s->since = util_now_ms() / 1000;
	}
	s->nconn++;
	p->session = (int)(s - t->sess);
	sessions_write(t);
	esc(user, eu, sizeof(eu));
	esc(domain, ed, sizeof(ed));
	esc(p->token, et, sizeof(et));
	esc(p->cookie, ec, sizeof(ec));
	printf("CONNECT user=%s domain=%s token=%s cookie=%s client=%s session=%s\n",
	    eu, ed, et, ec, p->client, s->id);
	fflush(stdout);
	report_append(t, "connect", p, s);
	pthread_mutex_unlock(&t->lock);
}

static void
session_disconnect(struct target *t, struct tpeer *p)
{
	char eu[STR_MAX], ed[STR_MAX];
	struct tsession *s;

	pthread_mutex_lock(&t->lock);
	s = &t->sess[p->session];
	if (s->nconn > 0)
		s->nconn--;
	sessions_write(t);
	esc(s->user, eu, sizeof(eu));
	esc(s->domain, ed, sizeof(ed));
	printf("DISCONNECT user=%s domain=%s session=%s\n", eu, ed, s->id);
	fflush(stdout);
	report_append(t, "disconnect", p, s);
	pthread_mutex_unlock(&t->lock);
	p->session = -1;
}

static void
peer_fail(struct tpeer *p, const char *reason)
{
	char er[STR_MAX];

	esc(reason, er, sizeof(er));
	pthread_mutex_lock(&p->t->lock);
	printf("FAIL client=%s reason=%s\n", p->client, er);
	fflush(stdout);
	pthread_mutex_unlock(&p->t->lock);
}

/* ---- the X.224 request, peeked before FreeRDP reads it ---------------------- */

/* Peeks the whole Connection Request into buf. 0, or -1 (EOF, timeout, error)
 * or a negative x224 error less than -1 for a header that is not TPKT. */
static int
peek_request(int fd, int64_t deadline_ms, uint8_t *buf, size_t *len)
{
	size_t want = X224_TPKT_HEADER_LEN, need;
	ssize_t n;
	int r;

	for (;;) {
		int64_t left = deadline_ms - util_mono_ms();

		if (left <= 0)
			return -1;
		net_set_timeouts(fd, (long)left, -1);
		n = recv(fd, buf, want, MSG_PEEK | MSG_WAITALL);
		if (n == 0)
			return -1;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if ((size_t)n < want) {
			usleep(5000);
			continue;
		}
		if (want == X224_TPKT_HEADER_LEN) {
			if ((r = x224_packet_length(buf, (size_t)n, &need)) != 0)
				return r < -1 ? r : -2;
			want = need;
			continue;
		}
		net_set_timeouts(fd, 0, -1);
		*len = (size_t)n;
		return 0;
	}
}

static void
peek_identity(struct tpeer *p, int64_t deadline)
{
	uint8_t buf[X224_PACKET_MAX];
	struct x224_request req;
	size_t len;

	if (peek_request(p->fd, deadline, buf, &len) != 0)
		return;		/* FreeRDP will fail on it and say why */
	if (x224_parse_request(buf, len, &req) != 0)
		return;
	x224_copy(p->cookie, sizeof(p->cookie), req.cookie, req.cookie_len);
	x224_copy(p->token, sizeof(p->token), req.token, req.token_len);
}

/* ---- FreeRDP peer ------------------------------------------------------------ */

static BOOL
on_post_connect(freerdp_peer *peer)
{
	return TRUE;
}

static BOOL
on_activate(freerdp_peer *peer)
{
	struct tpeer *p = peer->ContextExtra;
	rdpSettings *s = peer->settings;

	if (p->session < 0)
		session_connect(p->t, p, s->Username ? s->Username : "",
		    s->Domain ? s->Domain : "");
	return TRUE;
}

static void *
peer_main(void *arg)
{
	struct tpeer *p = arg;
	struct target *t = p->t;
	freerdp_peer *peer = NULL;
	int64_t deadline = util_mono_ms() + HANDSHAKE_MS;
	const char *why = NULL;
	enum frpeer_step st;

	peek_identity(p, deadline);
	if ((peer = frpeer_new(p->fd, t->cert, t->key, p, &why)) == NULL)
		goto out;	/* the fd is closed */
	peer->PostConnect = on_post_connect;
	peer->Activate = on_activate;
	if (!peer->Initialize(peer)) {
		why = "peer initialize failed";
		goto out;
	}
	for (;;) {
		int64_t left = p->session < 0 ? deadline - util_mono_ms() : 1000;

		if (left <= 0) {
			why = "handshake timeout";
			break;
		}
		if ((st = frpeer_step(peer, t->stop_event, (DWORD)left)) == FRPEER_TIMEOUT)
			continue;
		if (st == FRPEER_ENOHANDLES)
			why = "no event handles";
		else if (st == FRPEER_EWAIT)
			why = "wait failed";
		else if (st == FRPEER_CLOSED && p->session < 0)
			why = "handshake failed";
		if (st != FRPEER_READY)
			break;
	}
 out:
	if (why != NULL)
		peer_fail(p, why);
	if (p->session >= 0)
		session_disconnect(t, p);
	pthread_mutex_lock(&t->lock);
	p->open = 0;		/* FreeRDP closes the fd from here on */
	pthread_mutex_unlock(&t->lock);
	frpeer_free(peer);
	pthread_mutex_lock(&t->lock);
	p->finished = 1;
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/* Joins the threads that are done. */
static void
peers_reap(struct target *t, int all)
{
	struct tpeer **pp = &t->peers, *p;
	int done;

	for (;;) {
		pthread_mutex_lock(&t->lock);
		if ((p = *pp) == NULL) {
			pthread_mutex_unlock(&t->lock);
			return;
		}
		done = p->finished;
		if (done || all)
			*pp = p->next;
		else
			pp = &p->next;
		pthread_mutex_unlock(&t->lock);
		if (done || all) {
			pthread_join(p->thread, NULL);
			free(p);
		}
	}
}

static void
usage(void)
{
	fprintf(stderr, "usage: rdptarget --listen HOST:PORT --cert FILE --key FILE "
	    "--sessions FILE --name NAME [--report FILE] [--restore] [--verbose]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "sessions", required_argument, NULL, 's' },
		{ "name", required_argument, NULL, 'n' },
		{ "report", required_argument, NULL, 'r' },
		{ "restore", no_argument, NULL, 'R' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen_addr = NULL, *cert_path = NULL, *key_path = NULL;
	struct target t;
	struct sigaction sa;
	struct pollfd pfd[2];
	char bound[300], err[300];
	size_t len;
	int c, lfd, verbose = 0, restore = 0;

	memset(&t, 0, sizeof(t));
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen_addr = optarg; break;
		case 'c': cert_path = optarg; break;
		case 'k': key_path = optarg; break;
		case 's': t.sessions_path = optarg; break;
		case 'n': util_strlcpy(t.name, optarg, sizeof(t.name)); break;
		case 'r': t.report_path = optarg; break;
		case 'R': restore = 1; break;
		case 'v': verbose = 1; break;
		default: usage();
		}
	}
	if (optind != argc || listen_addr == NULL || cert_path == NULL ||
	    key_path == NULL || t.sessions_path == NULL || t.name[0] == '\0')
		usage();
	log_init("rdptarget", verbose ? LOG_DEBUG : LOG_INFO);
	if (util_file_read(cert_path, PEM_MAX, &t.cert, &len) != 0 ||
	    util_file_read(key_path, PEM_MAX, &t.key, &len) != 0) {
		log_error("cannot read %s or %s", cert_path, key_path);
		return 1;
	}
	frpeer_wlog_setup(verbose ? WLOG_INFO : WLOG_FATAL);
	winpr_InitializeSSL(WINPR_SSL_INIT_DEFAULT);
	pthread_mutex_init(&t.lock, NULL);
	if ((t.stop_event = CreateEvent(NULL, TRUE, FALSE, NULL)) == NULL)
		return 1;
	if ((restore && sessions_load(&t) != 0) || sessions_write(&t) != 0)
		return 1;
	if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
		return 1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((lfd = net_listen(err, sizeof(err), listen_addr, 128)) < 0 ||
	    net_local_name(lfd, bound, sizeof(bound)) != 0) {
		log_error("%s", lfd < 0 ? err : "getsockname failed");
		return 1;
	}
	printf("LISTENING %s\n", bound);
	fflush(stdout);

	pfd[0].fd = lfd;
	pfd[0].events = POLLIN;
	pfd[1].fd = stop_pipe[0];
	pfd[1].events = POLLIN;
	while (!stop_flag) {
		char client[NET_ADDR_MAX];
		struct tpeer *p;
		int fd;

		if (poll(pfd, 2, 1000) < 0 && errno != EINTR)
			break;
		peers_reap(&t, 0);
		if (stop_flag || !(pfd[0].revents & POLLIN))
			continue;
		if ((fd = net_accept(lfd, client, sizeof(client))) < 0)
			continue;
		if ((p = calloc(1, sizeof(*p))) == NULL) {
			close(fd);
			continue;
		}
		p->t = &t;
		p->fd = fd;
		p->open = 1;
		p->session = -1;
		util_strlcpy(p->client, client, sizeof(p->client));
		pthread_mutex_lock(&t.lock);
		p->next = t.peers;
		t.peers = p;
		if (pthread_create(&p->thread, NULL, peer_main, p) != 0) {
			t.peers = p->next;
			pthread_mutex_unlock(&t.lock);
			close(fd);
			free(p);
			continue;
		}
		pthread_mutex_unlock(&t.lock);
	}
	close(lfd);
	/* wake every peer: the stop event for the FreeRDP loop, shutdown()
	 * for anything blocked in a read (the TLS handshake, the peek) */
	SetEvent(t.stop_event);
	pthread_mutex_lock(&t.lock);
	for (struct tpeer *p = t.peers; p != NULL; p = p->next)
		if (p->open)
			shutdown(p->fd, SHUT_RDWR);
	pthread_mutex_unlock(&t.lock);
	peers_reap(&t, 1);
	CloseHandle(t.stop_event);
	free(t.sess);
	free(t.cert);
	free(t.key);
	return 0;
}
