/* rdpload: an RDP load generator for the broker's redirect path. A minimal
 * protocol client (no FreeRDP): per connection
 *
 *   TCP connect, X.224 Connection Request (Cookie: mstshash=USER,
 *   RDP_NEG_REQ offering TLS), Connection Confirm, TLS (OpenSSL), MCS
 *   Connect Initial with a GCC Conference Create Request (client core,
 *   security, network and cluster data), Connect Response, Erect Domain,
 *   Attach User, Channel Joins (user channel, I/O channel, static
 *   channels), Client Info PDU with user and domain (Security Exchange is
 *   skipped under TLS), licensing (the server's licence PDU), then PDUs
 *   until the Server Redirection PDU (or a Set Error Info refusal).
 *
 * The client closes as soon as the redirection PDU is read, as a real client
 * does before it reconnects. Threads, one blocking connection each; a rate
 * limit paces the connection starts (offered load) if given.
 *
 *   rdpload --host H --port P [--mode rdp|tls] [--concurrency N]
 *           [--duration S | --count N] [--rate R] [--user-prefix P]
 *           [--user-start N] [--domain D] [--channels a,b] [--timeout S]
 *           [--out FILE] [--label L]
 *
 * --mode tls: TCP connect and TLS handshake only, then one byte read from
 * the server (bench/tlsref writes one): the reference of the same work
 * without RDP. --out writes one line per connection:
 *   ok USER TARGET LBINFO US      (TARGET "-" without an address)
 *   err USER REASON US
 * stdout: one JSON object with the totals (see summary()).
 * Exit 0 when it ran (errors are counted, not fatal), 2 for usage. */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench/benchutil.h"

#define PDU_MAX		16384		/* largest TPKT we accept */
#define NAME_MAX_LEN	64
#define CHANNELS_MAX	8
#define REASON_MAX	96
#define LB_MAX		256
#define TARGET_MAX	128

struct opts {
	const char *host;
	int port;
	int tls_only;
	int concurrency;
	double duration;
	long count;
	double rate;
	const char *user_prefix;
	long user_start;
	const char *domain;
	char channels[CHANNELS_MAX][8];
	int nchannels;
	int timeout_ms;
	const char *out;
	const char *label;
};

static struct opts o;
static struct addrinfo *target_ai;
static SSL_CTX *ssl_ctx;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out_fp;
static long next_ticket;		/* atomic: connections started */
static int64_t t_start_us, t_end_us;

/* per thread results */
struct worker {
	pthread_t th;
	struct lat_vec lat;		/* ok connections, microseconds */
	long ok, err;
	long err_kind[8];
};

enum { E_CONNECT, E_X224, E_TLS, E_MCS, E_REFUSED, E_CLOSED, E_PROTO, E_TIMEOUT };
static const char *err_names[] = { "connect", "x224", "tls", "mcs", "refused", "closed",
	"protocol", "timeout" };

/* ---- a connection ---------------------------------------------------------- */

struct conn {
	int fd;
	SSL *ssl;
	uint8_t buf[PDU_MAX];
	size_t len;			/* of the last PDU in buf */
	uint16_t user_id;		/* MCS user channel */
	uint16_t io_channel;
	uint16_t channel_ids[CHANNELS_MAX];
	int nchannel_ids;
	char reason[REASON_MAX];
	int kind;			/* E_* on failure */
	char target[TARGET_MAX];
	char lbinfo[LB_MAX];
	char redir_user[NAME_MAX_LEN];
};

static int
fail(struct conn *c, int kind, const char *fmt, ...)
{
	va_list ap;

	c->kind = kind;
	va_start(ap, fmt);
	vsnprintf(c->reason, sizeof(c->reason), fmt, ap);
	va_end(ap);
	return -1;
}

static int
io_write(struct conn *c, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w;

		if (c->ssl != NULL) {
			int r = SSL_write(c->ssl, p, (int)n);
			if (r <= 0)
				return fail(c, E_CLOSED, "TLS write failed");
			w = r;
		} else {
			w = send(c->fd, p, n, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return fail(c, errno == EAGAIN ? E_TIMEOUT : E_CLOSED,
				    "send: %s", strerror(errno));
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int
io_read(struct conn *c, uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t r;

		if (c->ssl != NULL) {
			int k = SSL_read(c->ssl, p, (int)n);
			if (k <= 0) {
				int e = SSL_get_error(c->ssl, k);
				if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL &&
				    errno == 0))
					return fail(c, E_CLOSED, "server closed");
				return fail(c, errno == EAGAIN ? E_TIMEOUT : E_CLOSED,
				    "TLS read failed (%d)", e);
			}
			r = k;
		} else {
			r = recv(c->fd, p, n, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r == 0)
				return fail(c, E_CLOSED, "server closed");
			if (r < 0)
				return fail(c, errno == EAGAIN ? E_TIMEOUT : E_CLOSED,
				    "recv: %s", strerror(errno));
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Reads one TPKT into c->buf. */
static int
read_tpkt(struct conn *c)
{
	size_t n;

	if (io_read(c, c->buf, 4) != 0)
		return -1;
	if (c->buf[0] != 3)
		return fail(c, E_PROTO, "not a TPKT (0x%02x)", c->buf[0]);
	n = ((size_t)c->buf[2] << 8) | c->buf[3];
	if (n < 7 || n > sizeof(c->buf))
		return fail(c, E_PROTO, "TPKT length %zu", n);
	if (io_read(c, c->buf + 4, n - 4) != 0)
		return -1;
	c->len = n;
	return 0;
}

/* ---- encoding helpers ---- */

struct wbuf {
	uint8_t p[PDU_MAX];
	size_t n;
};

static void w8(struct wbuf *b, unsigned v) { if (b->n < sizeof(b->p)) b->p[b->n++] = (uint8_t)v; }
static void w16le(struct wbuf *b, unsigned v) { w8(b, v & 0xff); w8(b, (v >> 8) & 0xff); }
static void w16be(struct wbuf *b, unsigned v) { w8(b, (v >> 8) & 0xff); w8(b, v & 0xff); }
static void w32le(struct wbuf *b, uint32_t v) { w16le(b, v & 0xffff); w16le(b, v >> 16); }
static void
wbytes(struct wbuf *b, const void *p, size_t n)
{
	if (b->n + n <= sizeof(b->p)) {
		memcpy(b->p + b->n, p, n);
		b->n += n;
	}
}
static void wzero(struct wbuf *b, size_t n) { while (n-- > 0) w8(b, 0); }
/* ASCII as UTF-16LE, padded/truncated to bytes (0: exactly its length) */
static void
wutf16(struct wbuf *b, const char *s, int nul)
{
	for (; *s != '\0'; s++)
		w16le(b, (unsigned char)*s);
	if (nul)
		w16le(b, 0);
}
static void
wutf16_fixed(struct wbuf *b, const char *s, size_t bytes)
{
	size_t start = b->n;

	for (; *s != '\0' && b->n - start + 2 <= bytes - 2; s++)
		w16le(b, (unsigned char)*s);
	wzero(b, bytes - (b->n - start));
}
/* PER length, always the two-byte form (FreeRDP and Windows read both) */
static void wper_len(struct wbuf *b, size_t n) { w16be(b, 0x8000 | (unsigned)n); }
/* BER length */
static void
wber_len(struct wbuf *b, size_t n)
{
	if (n < 0x80)
		w8(b, (unsigned)n);
	else if (n < 0x100) {
		w8(b, 0x81);
		w8(b, (unsigned)n);
	} else {
		w8(b, 0x82);
		w16be(b, (unsigned)n);
	}
}

/* Sends b (whose first 7 bytes are reserved) as TPKT + X.224 Data TPDU. */
static int
send_x224_data(struct conn *c, struct wbuf *b)
{
	b->p[0] = 3;
	b->p[1] = 0;
	b->p[2] = (uint8_t)(b->n >> 8);
	b->p[3] = (uint8_t)b->n;
	b->p[4] = 2;
	b->p[5] = 0xf0;
	b->p[6] = 0x80;
	if (b->n >= sizeof(b->p))
		return fail(c, E_PROTO, "PDU too large");
	return io_write(c, b->p, b->n);
}

/* ---- the phases ---- */

static int
x224_connect(struct conn *c, const char *user)
{
	struct wbuf b = { .n = 0 };
	char cookie[NAME_MAX_LEN + 32];
	int n = snprintf(cookie, sizeof(cookie), "Cookie: mstshash=%s\r\n", user);
	size_t li = 6 + (size_t)n + 8;

	w8(&b, 3); w8(&b, 0); w16be(&b, (unsigned)(4 + 1 + li));
	w8(&b, (unsigned)li); w8(&b, 0xe0); w16be(&b, 0); w16be(&b, 0); w8(&b, 0);
	wbytes(&b, cookie, (size_t)n);
	w8(&b, 1); w8(&b, 0); w16le(&b, 8); w32le(&b, 1);	/* RDP_NEG_REQ: TLS */
	if (io_write(c, b.p, b.n) != 0 || read_tpkt(c) != 0)
		return c->kind = E_X224, -1;
	/* LI, CC 0xD0, dst, src, class, then RDP_NEG_RSP (2) or FAILURE (3) */
	if (c->len < 11 || (c->buf[5] & 0xf0) != 0xd0)
		return fail(c, E_X224, "no Connection Confirm");
	if (c->len >= 19 && c->buf[11] == 3)
		return fail(c, E_X224, "RDP_NEG_FAILURE %u", c->buf[15]);
	if (c->len < 19 || c->buf[11] != 2 || (c->buf[15] & 1) == 0)
		return fail(c, E_X224, "server did not select TLS");
	return 0;
}

static int
tls_connect(struct conn *c)
{
	if ((c->ssl = SSL_new(ssl_ctx)) == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
		return fail(c, E_TLS, "SSL_new");
	if (SSL_connect(c->ssl) != 1) {
		unsigned long e = ERR_get_error();
		char eb[120];

		ERR_error_string_n(e, eb, sizeof(eb));
		ERR_clear_error();
		return fail(c, errno == EAGAIN ? E_TIMEOUT : E_TLS, "TLS: %s", eb);
	}
	return 0;
}

static void
client_data(struct wbuf *u)
{
	/* CS_CORE */
	w16le(u, 0xc001); w16le(u, 216);
	w32le(u, 0x00080004);			/* RDP 5+ */
	w16le(u, 1024); w16le(u, 768);
	w16le(u, 0xca01); w16le(u, 0xaa03);	/* colorDepth, SASSequence */
	w32le(u, 0x409); w32le(u, 2600);	/* keyboard layout, client build */
	wutf16_fixed(u, "rdpload", 32);
	w32le(u, 4); w32le(u, 0); w32le(u, 12);	/* keyboard type, subtype, F-keys */
	wzero(u, 64);				/* imeFileName */
	w16le(u, 0xca01); w16le(u, 1);		/* postBeta2ColorDepth, productId */
	w32le(u, 0);				/* serialNumber */
	w16le(u, 24); w16le(u, 0x0f);		/* highColorDepth, supported depths */
	w16le(u, 0x0001);			/* earlyCapabilityFlags: ERRINFO_PDU */
	wzero(u, 64);				/* clientDigProductId */
	w8(u, 0); w8(u, 0);			/* connectionType, pad */
	w32le(u, 1);				/* serverSelectedProtocol: TLS */
	/* CS_SECURITY */
	w16le(u, 0xc002); w16le(u, 12); w32le(u, 0); w32le(u, 0);
	/* CS_NET */
	w16le(u, 0xc003); w16le(u, (unsigned)(8 + 12 * o.nchannels));
	w32le(u, (uint32_t)o.nchannels);
	for (int i = 0; i < o.nchannels; i++) {
		char name[8] = { 0 };

		memcpy(name, o.channels[i], strnlen(o.channels[i], 7));
		wbytes(u, name, 8);
		w32le(u, 0x80000000);		/* CHANNEL_OPTION_INITIALIZED */
	}
	/* CS_CLUSTER: redirection supported, version 4 */
	w16le(u, 0xc004); w16le(u, 12); w32le(u, 0x0d); w32le(u, 0);
}

static const uint8_t domain_params[3][27] = {
	{ 0x30, 0x19, 0x02, 0x01, 0x22, 0x02, 0x01, 0x02, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01,
	  0x02, 0x01, 0x00, 0x02, 0x01, 0x01, 0x02, 0x02, 0xff, 0xff, 0x02, 0x01, 0x02 },
	{ 0x30, 0x19, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01,
	  0x02, 0x01, 0x00, 0x02, 0x01, 0x01, 0x02, 0x02, 0x04, 0x20, 0x02, 0x01, 0x02 },
};
static const uint8_t domain_max[30] = { 0x30, 0x1c, 0x02, 0x02, 0xff, 0xff, 0x02, 0x02, 0xfc,
	0x17, 0x02, 0x02, 0xff, 0xff, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01,
	0x02, 0x02, 0xff, 0xff, 0x02, 0x01, 0x02 };

/* Finds the SC_NET block in the Connect Response: I/O and static channel ids. */
static int
parse_connect_response(struct conn *c)
{
	const uint8_t *p = c->buf, *end = c->buf + c->len;
	const uint8_t *k = NULL;

	if (c->len < 10 || p[7] != 0x7f || p[8] != 0x66)
		return fail(c, E_MCS, "no MCS Connect Response");
	for (const uint8_t *q = p + 9; q + 4 <= end; q++)
		if (memcmp(q, "McDn", 4) == 0) {
			k = q + 4;
			break;
		}
	if (k == NULL || k >= end)
		return fail(c, E_MCS, "no GCC Conference Create Response");
	k += (*k & 0x80) ? 2 : 1;		/* PER length of the user data */
	while (k + 4 <= end) {
		unsigned type = k[0] | (k[1] << 8), blen = k[2] | (k[3] << 8);

		if (blen < 4 || k + blen > end)
			break;
		if (type == 0x0c03 && blen >= 8) {
			unsigned n = k[6] | (k[7] << 8);

			c->io_channel = (uint16_t)(k[4] | (k[5] << 8));
			if (n > CHANNELS_MAX || 8 + 2 * n > blen)
				return fail(c, E_MCS, "SC_NET with %u channels", n);
			for (unsigned i = 0; i < n; i++)
				c->channel_ids[i] = (uint16_t)(k[8 + 2 * i] | (k[9 + 2 * i] << 8));
			c->nchannel_ids = (int)n;
			return 0;
		}
		k += blen;
	}
	return fail(c, E_MCS, "no SC_NET block");
}

static int
mcs_connect(struct conn *c)
{
	struct wbuf u = { .n = 0 }, g = { .n = 0 }, b = { .n = 7 };
	size_t inner;

	client_data(&u);
	/* GCC Conference Create Request (PER), around the client data */
	w8(&g, 0); w8(&g, 5); wbytes(&g, "\x00\x14\x7c\x00\x01", 5);	/* T.124 OID */
	wper_len(&g, 14 + u.n);
	wbytes(&g, "\x00\x08\x00\x10\x00\x01\xc0\x00" "Duca", 12);
	wper_len(&g, u.n);
	wbytes(&g, u.p, u.n);
	/* MCS Connect Initial (BER) */
	inner = 3 + 3 + 3 + 27 + 27 + 30 + 1 + (g.n < 0x80 ? 1 : g.n < 0x100 ? 2 : 3) + g.n;
	w8(&b, 0x7f); w8(&b, 0x65); wber_len(&b, inner);
	wbytes(&b, "\x04\x01\x01\x04\x01\x01\x01\x01\xff", 9);
	wbytes(&b, domain_params[0], 27);
	wbytes(&b, domain_params[1], 27);
	wbytes(&b, domain_max, 30);
	w8(&b, 0x04); wber_len(&b, g.n); wbytes(&b, g.p, g.n);
	if (send_x224_data(c, &b) != 0 || read_tpkt(c) != 0)
		return c->kind = c->kind == E_TIMEOUT ? E_TIMEOUT : E_MCS, -1;
	return parse_connect_response(c);
}

static int
mcs_domain_and_user(struct conn *c)
{
	struct wbuf b = { .n = 7 };

	wbytes(&b, "\x04\x01\x00\x01\x00", 5);	/* Erect Domain Request */
	if (send_x224_data(c, &b) != 0)
		return -1;
	b.n = 7;
	w8(&b, 0x28);				/* Attach User Request */
	if (send_x224_data(c, &b) != 0 || read_tpkt(c) != 0)
		return -1;
	if (c->len < 11 || c->buf[7] != 0x2e || c->buf[8] != 0)
		return fail(c, E_MCS, "Attach User refused");
	c->user_id = (uint16_t)(1001 + ((c->buf[9] << 8) | c->buf[10]));
	return 0;
}

static int
mcs_join(struct conn *c, uint16_t channel)
{
	struct wbuf b = { .n = 7 };

	w8(&b, 0x38); w16be(&b, c->user_id - 1001u); w16be(&b, channel);
	if (send_x224_data(c, &b) != 0 || read_tpkt(c) != 0)
		return -1;
	if (c->len < 12 || c->buf[7] != 0x3e || c->buf[8] != 0)
		return fail(c, E_MCS, "Channel Join %u refused", channel);
	return 0;
}

static int
mcs_joins(struct conn *c)
{
	if (mcs_join(c, c->user_id) != 0 || mcs_join(c, c->io_channel) != 0)
		return -1;
	for (int i = 0; i < c->nchannel_ids; i++)
		if (c->channel_ids[i] != 0 && mcs_join(c, c->channel_ids[i]) != 0)
			return -1;
	return 0;
}

static int
client_info(struct conn *c, const char *user, const char *domain)
{
	struct wbuf d = { .n = 0 }, b = { .n = 7 };
	const char *addr = "127.0.0.1", *dir = "C:\\rdpload\\rdpload.exe";

	w16le(&d, 0x0040); w16le(&d, 0);	/* basic security header: SEC_INFO_PKT */
	w32le(&d, 0);				/* codePage */
	w32le(&d, 0x1 | 0x2 | 0x10 | 0x20 | 0x40 | 0x100 | 0x10000 | 0x20000);
	w16le(&d, (unsigned)(2 * strlen(domain)));
	w16le(&d, (unsigned)(2 * strlen(user)));
	w16le(&d, 0); w16le(&d, 0); w16le(&d, 0);
	wutf16(&d, domain, 1);
	wutf16(&d, user, 1);
	w16le(&d, 0); w16le(&d, 0); w16le(&d, 0);	/* password, shell, dir */
	/* extended info */
	w16le(&d, 2);				/* AF_INET */
	w16le(&d, (unsigned)(2 * strlen(addr) + 2)); wutf16(&d, addr, 1);
	w16le(&d, (unsigned)(2 * strlen(dir) + 2)); wutf16(&d, dir, 1);
	wzero(&d, 172);				/* clientTimeZone */
	w32le(&d, 0); w32le(&d, 0);		/* clientSessionId, performanceFlags */
	w16le(&d, 0);				/* cbAutoReconnectLen */
	/* MCS Send Data Request on the I/O channel */
	w8(&b, 0x64); w16be(&b, c->user_id - 1001u); w16be(&b, c->io_channel);
	w8(&b, 0x70); wper_len(&b, d.n); wbytes(&b, d.p, d.n);
	return send_x224_data(c, &b);
}

static void
utf16_ascii(const uint8_t *p, size_t bytes, char *out, size_t n)
{
	size_t o2 = 0;

	for (size_t i = 0; i + 1 < bytes && o2 + 1 < n; i += 2) {
		if (p[i] == 0 && p[i + 1] == 0)
			break;
		out[o2++] = p[i + 1] == 0 && p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
	}
	out[o2] = '\0';
}

static uint32_t
rd32(const uint8_t *p)
{
	return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The Server Redirection PDU body (after the share control header). */
static int
parse_redirect(struct conn *c, const uint8_t *p, const uint8_t *end)
{
	uint32_t flags;

	if (end - p < 14 || (p[2] | (p[3] << 8)) != 0x0400)
		return fail(c, E_PROTO, "bad redirection packet");
	flags = rd32(p + 10);
	p += 14;
	for (uint32_t bit = 1; bit <= 0x100; bit <<= 1) {
		uint32_t len;

		if (!(flags & bit) || (bit & (0x20 | 0x40 | 0x80)))
			continue;
		if (end - p < 4 || (len = rd32(p)) > (uint32_t)(end - p - 4))
			return fail(c, E_PROTO, "truncated redirection field 0x%x", bit);
		p += 4;
		if (bit == 0x1)
			utf16_ascii(p, len, c->target, sizeof(c->target));
		else if (bit == 0x2) {
			size_t n = len < sizeof(c->lbinfo) - 1 ? len : sizeof(c->lbinfo) - 1;
			memcpy(c->lbinfo, p, n);
			c->lbinfo[n] = '\0';
			while (n > 0 && (c->lbinfo[n - 1] == '\r' || c->lbinfo[n - 1] == '\n'))
				c->lbinfo[--n] = '\0';
		} else if (bit == 0x4)
			utf16_ascii(p, len, c->redir_user, sizeof(c->redir_user));
		p += len;
	}
	return 0;
}

/* Reads PDUs after Client Info until the redirection PDU: 0, or -1. */
static int
await_redirect(struct conn *c)
{
	int licensed = 0;

	for (int pdus = 0; pdus < 16; pdus++) {
		const uint8_t *p, *end;
		size_t len;

		if (read_tpkt(c) != 0)
			return -1;
		p = c->buf + 7;
		end = c->buf + c->len;
		if (p < end && (*p >> 2) == 8)
			return fail(c, E_REFUSED, "Disconnect Provider Ultimatum");
		if (end - p < 7 || *p != 0x68)
			return fail(c, E_PROTO, "unexpected MCS PDU 0x%02x", p < end ? *p : 0);
		p += 6;
		len = (*p & 0x80) ? (size_t)(((p[0] & 0x7f) << 8) | p[1]) : *p;
		p += (*p & 0x80) ? 2 : 1;
		if (len > (size_t)(end - p))
			return fail(c, E_PROTO, "truncated MCS data");
		end = p + len;
		if (!licensed && end - p >= 4 && ((p[0] | (p[1] << 8)) & 0x0080)) {
			licensed = 1;		/* the licensing PDU (valid client) */
			continue;
		}
		if (end - p < 6)
			return fail(c, E_PROTO, "short share control PDU");
		switch ((p[2] | (p[3] << 8)) & 0xf) {
		case 0xa:			/* PDUTYPE_SERVER_REDIR_PKT */
			return parse_redirect(c, p + 6, end);
		case 0x7:			/* data PDU: Set Error Info? */
			if (end - p >= 22 && p[14] == 0x2f)
				return fail(c, E_REFUSED, "errinfo 0x%x", rd32(p + 18));
			continue;
		case 0x6:
			return fail(c, E_REFUSED, "Deactivate All");
		default:
			continue;		/* e.g. Demand Active: no redirect */
		}
	}
	return fail(c, E_PROTO, "no redirection within 16 PDUs");
}

static int
tcp_open(struct conn *c)
{
	struct timeval tv = { o.timeout_ms / 1000, (o.timeout_ms % 1000) * 1000 };
	int one = 1;

	if ((c->fd = socket(target_ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return fail(c, E_CONNECT, "socket: %s", strerror(errno));
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, target_ai->ai_addr, target_ai->ai_addrlen) != 0)
		return fail(c, E_CONNECT, "connect: %s", strerror(errno));
	return 0;
}

static int
run_one(struct conn *c, const char *user)
{
	uint8_t one;

	if (tcp_open(c) != 0)
		return -1;
	if (o.tls_only)
		return tls_connect(c) != 0 || io_read(c, &one, 1) != 0 ? -1 : 0;
	if (x224_connect(c, user) != 0 || tls_connect(c) != 0 || mcs_connect(c) != 0 ||
	    mcs_domain_and_user(c) != 0 || mcs_joins(c) != 0 ||
	    client_info(c, user, o.domain) != 0 || await_redirect(c) != 0)
		return -1;
	return 0;
}

static void
conn_close(struct conn *c)
{
	if (c->ssl != NULL)
		SSL_free(c->ssl);	/* no close_notify: the client just leaves */
	if (c->fd >= 0)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct conn *c = calloc(1, sizeof(*c));
	char user[NAME_MAX_LEN];

	if (c == NULL)
		return NULL;
	for (;;) {
		long t = __atomic_fetch_add(&next_ticket, 1, __ATOMIC_RELAXED);
		int64_t start, now;
		int rc;

		if (o.count > 0 && t >= o.count)
			break;
		if (o.rate > 0) {
			int64_t at = t_start_us + (int64_t)((double)t * 1e6 / o.rate);
			if ((now = bench_mono_us()) < at)
				bench_sleep_us(at - now);
		}
		if (o.duration > 0 && bench_mono_us() >= t_end_us)
			break;
		snprintf(user, sizeof(user), "%s%ld", o.user_prefix, o.user_start + t);
		memset(c, 0, sizeof(*c));
		c->fd = -1;
		start = bench_mono_us();
		rc = run_one(c, user);
		now = bench_mono_us();
		conn_close(c);
		if (rc == 0) {
			w->ok++;
			lat_push(&w->lat, now - start);
		} else {
			w->err++;
			w->err_kind[c->kind]++;
		}
		if (out_fp != NULL) {
			pthread_mutex_lock(&out_lock);
			if (rc == 0)
				fprintf(out_fp, "ok %s %s %s %lld\n", user,
				    c->target[0] ? c->target : "-",
				    c->lbinfo[0] ? c->lbinfo : "-", (long long)(now - start));
			else {
				for (char *q = c->reason; *q; q++)
					if (*q == ' ')
						*q = '_';
				fprintf(out_fp, "err %s %s:%s %lld\n", user, err_names[c->kind],
				    c->reason, (long long)(now - start));
			}
			pthread_mutex_unlock(&out_lock);
		}
	}
	free(c);
	return NULL;
}

static void
usage(void)
{
	fprintf(stderr, "usage: rdpload --host H --port P [--mode rdp|tls] [--concurrency N] "
	    "[--duration S | --count N] [--rate R] [--user-prefix P] [--user-start N] "
	    "[--domain D] [--channels a,b] [--timeout S] [--out FILE] [--label L]\n");
	exit(2);
}

static void
parse_channels(const char *s)
{
	char tmp[128], *save = NULL, *t;

	snprintf(tmp, sizeof(tmp), "%s", s);
	o.nchannels = 0;
	for (t = strtok_r(tmp, ",", &save); t != NULL && o.nchannels < CHANNELS_MAX;
	    t = strtok_r(NULL, ",", &save))
		snprintf(o.channels[o.nchannels++], sizeof(o.channels[0]), "%.7s", t);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "host", 1, NULL, 'h' }, { "port", 1, NULL, 'p' }, { "mode", 1, NULL, 'm' },
		{ "concurrency", 1, NULL, 'c' }, { "duration", 1, NULL, 'd' },
		{ "count", 1, NULL, 'n' }, { "rate", 1, NULL, 'r' },
		{ "user-prefix", 1, NULL, 'u' }, { "user-start", 1, NULL, 's' },
		{ "domain", 1, NULL, 'D' }, { "channels", 1, NULL, 'C' },
		{ "timeout", 1, NULL, 't' }, { "out", 1, NULL, 'o' }, { "label", 1, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	struct worker *ws;
	struct rusage ru0, ru1;
	char port[16];
	int ch;

	o.concurrency = 16;
	o.user_prefix = "user";
	o.domain = "BENCH";
	o.timeout_ms = 10000;
	o.label = "rdpload";
	parse_channels("rdpdr,cliprdr");
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'h': o.host = optarg; break;
		case 'p': o.port = atoi(optarg); break;
		case 'm':
			if (strcmp(optarg, "tls") == 0)
				o.tls_only = 1;
			else if (strcmp(optarg, "rdp") != 0)
				usage();
			break;
		case 'c': o.concurrency = atoi(optarg); break;
		case 'd': o.duration = atof(optarg); break;
		case 'n': o.count = atol(optarg); break;
		case 'r': o.rate = atof(optarg); break;
		case 'u': o.user_prefix = optarg; break;
		case 's': o.user_start = atol(optarg); break;
		case 'D': o.domain = optarg; break;
		case 'C': parse_channels(optarg); break;
		case 't': o.timeout_ms = (int)(atof(optarg) * 1000); break;
		case 'o': o.out = optarg; break;
		case 'l': o.label = optarg; break;
		default: usage();
		}
	}
	if (o.host == NULL || o.port <= 0 || o.port > 65535 || o.concurrency < 1 ||
	    o.concurrency > 4096 || (o.duration <= 0 && o.count <= 0) || o.timeout_ms <= 0 ||
	    strlen(o.user_prefix) > 40)
		usage();
	signal(SIGPIPE, SIG_IGN);
	snprintf(port, sizeof(port), "%d", o.port);
	if (getaddrinfo(o.host, port, &hints, &target_ai) != 0) {
		fprintf(stderr, "rdpload: cannot resolve %s\n", o.host);
		return 2;
	}
	if ((ssl_ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return 2;
	SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);	/* full handshakes */
	if (o.out != NULL && (out_fp = fopen(o.out, "w")) == NULL) {
		fprintf(stderr, "rdpload: %s: %s\n", o.out, strerror(errno));
		return 2;
	}
	if ((ws = calloc((size_t)o.concurrency, sizeof(*ws))) == NULL)
		return 2;
	getrusage(RUSAGE_SELF, &ru0);
	t_start_us = bench_mono_us();
	t_end_us = t_start_us + (int64_t)(o.duration * 1e6);
	for (int i = 0; i < o.concurrency; i++) {
		pthread_attr_t a;

		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 256 * 1024);
		if (pthread_create(&ws[i].th, &a, worker_main, &ws[i]) != 0) {
			fprintf(stderr, "rdpload: cannot start thread %d\n", i);
			return 2;
		}
		pthread_attr_destroy(&a);
	}
	struct lat_vec all = { 0 };
	long ok = 0, err = 0, kinds[8] = { 0 };

	for (int i = 0; i < o.concurrency; i++) {
		pthread_join(ws[i].th, NULL);
		ok += ws[i].ok;
		err += ws[i].err;
		for (int k = 0; k < 8; k++)
			kinds[k] += ws[i].err_kind[k];
		lat_merge(&all, &ws[i].lat);
	}
	double wall = (double)(bench_mono_us() - t_start_us) / 1e6;
	getrusage(RUSAGE_SELF, &ru1);
	double cpu = bench_tv_s(&ru1.ru_utime) - bench_tv_s(&ru0.ru_utime) +
	    bench_tv_s(&ru1.ru_stime) - bench_tv_s(&ru0.ru_stime);
	lat_sort(&all);
	printf("{\"label\": \"%s\", \"mode\": \"%s\", \"concurrency\": %d, \"ok\": %ld, "
	    "\"errors\": %ld, \"wall_s\": %.3f, \"rate\": %.1f, \"p50_us\": %lld, "
	    "\"p99_us\": %lld, \"max_us\": %lld, \"client_cpu_s\": %.3f, "
	    "\"client_cpu_us_per_conn\": %.1f, \"error_kinds\": {", o.label,
	    o.tls_only ? "tls" : "rdp", o.concurrency, ok, err, wall, (double)ok / wall,
	    (long long)lat_pct(&all, 50), (long long)lat_pct(&all, 99),
	    (long long)lat_pct(&all, 100), cpu, ok + err > 0 ? cpu * 1e6 / (double)(ok + err) : 0);
	for (int k = 0, first = 1; k < 8; k++)
		if (kinds[k] > 0) {
			printf("%s\"%s\": %ld", first ? "" : ", ", err_names[k], kinds[k]);
			first = 0;
		}
	printf("}}\n");
	if (out_fp != NULL)
		fclose(out_fp);
	freeaddrinfo(target_ai);
	SSL_CTX_free(ssl_ctx);
	return 0;
}
