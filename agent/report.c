#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "agent/report.h"
#include "broker/common/util.h"

#define REPORT_ANSWER_MAX	65536

enum report_trust { TRUST_SYSTEM, TRUST_CA, TRUST_PIN };

struct report {
	CURL *curl;
	char url[BROKERS_URL_MAX + 32];	/* of the request under way */
	char ca[CONF_PATH_MAX];
	char pin[80];			/* "sha256//BASE64" when pinning is possible */
	enum report_trust trust;	/* what to try first: what worked last */
	char auth[600];			/* "Authorization: Bearer TOKEN" (secret) */
	int connect_timeout, timeout;
	int (*cancel)(void *);
	void *cancel_arg;
	char answer[REPORT_ANSWER_MAX + 1];
	size_t answer_len;
	int answer_truncated;
};

const char *
report_status_name(enum report_status st)
{
	switch (st) {
	case REPORT_OK:		return "ok";
	case REPORT_UNREACHABLE: return "unreachable";
	case REPORT_REJECTED:	return "token rejected";
	case REPORT_REFUSED:	return "refused";
	case REPORT_ERROR:	return "local error";
	}
	return "?";
}

/* If path holds exactly one certificate and it is self-signed, writes the
 * curl pin of its public key into pin. 1 if so, 0 if not, -1 on error. */
static int
report_pin_load(const char *path, char *pin, size_t n, char *err, size_t errlen)
{
	unsigned char *der = NULL, hash[SHA256_DIGEST_LENGTH];
	unsigned char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
	X509 *first = NULL, *x;
	int count = 0, len, r = -1;
	BIO *bio;

	if ((bio = BIO_new_file(path, "r")) == NULL) {
		snprintf(err, errlen, "cannot read %s", path);
		return -1;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (count++ == 0)
			first = x;
		else
			X509_free(x);
	}
	if (count == 0) {
		snprintf(err, errlen, "%s holds no PEM certificate", path);
		goto out;
	}
	r = 0;
	if (count != 1 || X509_check_issued(first, first) != X509_V_OK)
		goto out;
	if ((len = i2d_PUBKEY(X509_get0_pubkey(first), &der)) <= 0) {
		snprintf(err, errlen, "%s: cannot read its public key", path);
		r = -1;
		goto out;
	}
	SHA256(der, (size_t)len, hash);
	EVP_EncodeBlock(b64, hash, sizeof(hash));
	snprintf(pin, n, "sha256//%s", b64);
	r = 1;
 out:
	OPENSSL_free(der);
	X509_free(first);
	BIO_free(bio);
	return r;
}

static size_t
report_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct report *r = arg;
	size_t n = size * nmemb, room = REPORT_ANSWER_MAX - r->answer_len;

	if (n > room) {
		r->answer_truncated = 1;
		n = room;
	}
	memcpy(r->answer + r->answer_len, data, n);
	r->answer_len += n;
	r->answer[r->answer_len] = '\0';
	return size * nmemb;
}

static int
report_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
	struct report *r = arg;

	return r->cancel != NULL && r->cancel(r->cancel_arg) ? 1 : 0;
}

void
report_set_timeouts(struct report *r, const struct agent_conf *c)
{
	r->connect_timeout = c->connect_timeout;
	r->timeout = c->timeout;
}

struct report *
report_new(const struct agent_conf *c, int (*cancel)(void *), void *cancel_arg,
    char *err, size_t errlen)
{
	struct report *r;
	int pin;

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->cancel = cancel;
	r->cancel_arg = cancel_arg;
	r->connect_timeout = c->connect_timeout;
	r->timeout = c->timeout;
	r->trust = TRUST_SYSTEM;
	if ((size_t)snprintf(r->auth, sizeof(r->auth), "Authorization: Bearer %s",
	    c->token) >= sizeof(r->auth)) {
		snprintf(err, errlen, "token too long");
		goto fail;
	}
	if (c->ca[0] != '\0') {
		util_strlcpy(r->ca, c->ca, sizeof(r->ca));
		if ((pin = report_pin_load(c->ca, r->pin, sizeof(r->pin), err,
		    errlen)) < 0)
			goto fail;
		r->trust = pin ? TRUST_PIN : TRUST_CA;
	}
	if ((r->curl = curl_easy_init()) == NULL) {
		snprintf(err, errlen, "cannot start libcurl");
		goto fail;
	}
	return r;
 fail:
	report_free(r);
	return NULL;
}

void
report_free(struct report *r)
{
	if (r == NULL)
		return;
	if (r->curl != NULL)
		curl_easy_cleanup(r->curl);
	explicit_bzero(r->auth, sizeof(r->auth));
	free(r);
}

const char *
report_answer_text(const struct report *r)
{
	return r->answer;
}

/* One POST with the given trust. Returns the curl code; *http the status. */
static CURLcode
report_post(struct report *r, enum report_trust trust, const char *body,
    struct curl_slist *hdrs, long *http, char *cerr)
{
	CURL *c = r->curl;
	CURLcode rc;

	curl_easy_reset(c);
	r->answer_len = 0;
	r->answer[0] = '\0';
	r->answer_truncated = 0;
	*http = 0;
	cerr[0] = '\0';
	curl_easy_setopt(c, CURLOPT_URL, r->url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)r->connect_timeout);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)r->timeout);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "tsagent/" TS_VERSION);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, report_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, report_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, r);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	switch (trust) {
	case TRUST_SYSTEM:
		break;
	case TRUST_CA:
		curl_easy_setopt(c, CURLOPT_CAINFO, r->ca);
		curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
		break;
	case TRUST_PIN:
		/* the pin is checked whatever VERIFYPEER says */
		curl_easy_setopt(c, CURLOPT_PINNEDPUBLICKEY, r->pin);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
		break;
	}
	rc = curl_easy_perform(c);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, http);
	return rc;
}

/* The "error" of a JSON error answer, or a short excerpt of the body. */
static void
report_error_text(const struct report *r, char *out, size_t n)
{
	const char *p = strstr(r->answer, "\"error\"");
	size_t i = 0;

	if (p != NULL && (p = strchr(p + 7, '"')) != NULL) {
		for (p++; *p != '\0' && *p != '"' && i + 1 < n && i < 200; p++)
			out[i++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
		out[i] = '\0';
		return;
	}
	for (p = r->answer; *p != '\0' && i + 1 < n && i < 80; p++)
		out[i++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
	out[i] = '\0';
}

enum report_status
report_send(struct report *r, const char *broker, const char *body,
    struct wire_answer *ans, char *err, size_t errlen)
{
	struct curl_slist *hdrs = NULL, *h;
	char cerr[CURL_ERROR_SIZE], why[256];
	enum report_status st;
	CURLcode rc;
	long http;

	if ((size_t)snprintf(r->url, sizeof(r->url), "%s/api/v1/heartbeat",
	    broker) >= sizeof(r->url)) {
		snprintf(err, errlen, "broker URL too long");
		return REPORT_ERROR;
	}
	if ((h = curl_slist_append(hdrs, "Content-Type: application/json")) == NULL ||
	    (hdrs = h, h = curl_slist_append(hdrs, r->auth)) == NULL ||
	    (hdrs = h, h = curl_slist_append(hdrs, "Expect:")) == NULL) {
		curl_slist_free_all(hdrs);
		snprintf(err, errlen, "out of memory");
		return REPORT_ERROR;
	}
	hdrs = h;
	rc = report_post(r, r->trust, body, hdrs, &http, cerr);
	/* a single self-signed certificate: pinned key or CA, see report.h */
	if (r->pin[0] != '\0' && (rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH ||
	    rc == CURLE_PEER_FAILED_VERIFICATION)) {
		enum report_trust other = r->trust == TRUST_PIN ? TRUST_CA : TRUST_PIN;

		if ((rc = report_post(r, other, body, hdrs, &http, cerr)) == CURLE_OK)
			r->trust = other;
		else if (rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH ||
		    rc == CURLE_PEER_FAILED_VERIFICATION)
			snprintf(cerr, sizeof(cerr), "the broker's key is not the "
			    "one in %.150s, nor is its certificate signed by it", r->ca);
	}
	/* the headers hold the token */
	for (h = hdrs; h != NULL; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(hdrs);

	if (rc != CURLE_OK) {
		snprintf(err, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
		return rc == CURLE_OUT_OF_MEMORY ? REPORT_ERROR : REPORT_UNREACHABLE;
	}
	if (http == 401) {
		snprintf(err, errlen, "token rejected (HTTP 401)");
		return REPORT_REJECTED;
	}
	if (http != 200) {
		report_error_text(r, why, sizeof(why));
		snprintf(err, errlen, "HTTP %ld: %s", http, why);
		/* a broker that cannot serve is as good as unreachable */
		return http >= 500 ? REPORT_UNREACHABLE : REPORT_REFUSED;
	}
	st = REPORT_OK;
	if (r->answer_truncated ||
	    wire_answer_decode(r->answer, r->answer_len, ans, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "bad answer: %s",
		    r->answer_truncated ? "too long" : why);
		st = REPORT_REFUSED;
	}
	return st;
}
