#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/common/util.h"
#include "broker/core/crypto.h"
#include "broker/front/token.h"

#define MAC_LEN 16	/* bytes of the HMAC kept: 128 bits */
#define MAC_B64 22	/* base64url characters for MAC_LEN bytes, unpadded */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void
b64url(const uint8_t *in, size_t n, char *out)
{
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;

	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = b64[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[o++] = b64[(acc << (6 - bits)) & 63];
	out[o] = '\0';
}

int
token_key_load(const char *path, struct token_key *key, char *err, size_t errlen)
{
	struct stat sb;
	ssize_t r;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT) {
		if (util_random(key->k, sizeof(key->k)) != 0 ||
		    (fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0 ||
		    write(fd, key->k, sizeof(key->k)) != (ssize_t)sizeof(key->k) ||
		    fsync(fd) != 0) {
			snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
		return 0;
	}
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) != 0 || (sb.st_mode & 077) != 0 ||
	    sb.st_size != TOKEN_KEY_LEN) {
		snprintf(err, errlen, "%s: must be %d bytes and readable by its owner "
		    "only (chmod 600)", path, TOKEN_KEY_LEN);
		close(fd);
		return -1;
	}
	r = read(fd, key->k, sizeof(key->k));
	close(fd);
	if (r != (ssize_t)sizeof(key->k)) {
		snprintf(err, errlen, "%s: short read", path);
		return -1;
	}
	return 0;
}

static int
mac(const struct token_key *key, const char *msg, size_t len, char out[MAC_B64 + 1])
{
	uint8_t h[32];

	if (crypto_hmac_sha256(key->k, sizeof(key->k), msg, len, h) != 0)
		return -1;
	b64url(h, MAC_LEN, out);
	return 0;
}

int
token_issue(const struct token_key *key, int64_t session, int64_t expires,
    char *out, size_t n)
{
	char body[TOKEN_MAX], m[MAC_B64 + 1];
	int len;

	len = snprintf(body, sizeof(body), "tsb1.%lld.%lld", (long long)session,
	    (long long)expires);
	if (session < 1 || expires < 0 || len < 0 || (size_t)len >= sizeof(body) ||
	    mac(key, body, (size_t)len, m) != 0)
		return -1;
	if ((size_t)snprintf(out, n, "%s.%s", body, m) >= n)
		return -1;
	return 0;
}

/* Parses a decimal field of at most 19 digits ending at `end`. */
static int
field(const char **p, const char *end, char stop, int64_t *out)
{
	int64_t v = 0;
	int digits = 0;

	while (*p < end && **p >= '0' && **p <= '9' && digits < 19) {
		v = v * 10 + (**p - '0');
		(*p)++;
		digits++;
	}
	if (digits == 0 || *p >= end || **p != stop)
		return -1;
	(*p)++;
	*out = v;
	return 0;
}

int
token_verify(const struct token_key *key, const char *tok, size_t len, int64_t now,
    int64_t *session)
{
	const char *p = tok, *end = tok + len;
	char want[MAC_B64 + 1];
	int64_t sid, exp;
	size_t body;

	if (len >= TOKEN_MAX || len < 5 || memcmp(tok, "tsb1.", 5) != 0)
		return TOKEN_MALFORMED;
	p += 5;
	if (field(&p, end, '.', &sid) != 0 || field(&p, end, '.', &exp) != 0 ||
	    end - p != MAC_B64 || sid < 1)
		return TOKEN_MALFORMED;
	body = (size_t)(p - 1 - tok);
	if (mac(key, tok, body, want) != 0 || !crypto_equal(want, p, MAC_B64))
		return TOKEN_FORGED;
	if (now > exp)
		return TOKEN_EXPIRED;
	*session = sid;
	return 0;
}

const char *
token_strerror(int r)
{
	switch (r) {
	case 0: return "valid";
	case TOKEN_MALFORMED: return "malformed routing token";
	case TOKEN_FORGED: return "forged routing token";
	case TOKEN_EXPIRED: return "expired routing token";
	default: return "invalid routing token";
	}
}
