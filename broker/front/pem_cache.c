/* pem_cache: FreeRDP 2.11's PEM re-parse, served from one parse. See
 * pem_cache.h for why and until when. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "broker/common/util.h"
#include "broker/front/pem_cache.h"

#define PEM_CACHE_FILE_MAX	(256 * 1024)

static pthread_mutex_t pem_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	const char *cert_text, *key_text;
	X509 *cert;
	EVP_PKEY *key;
} pem;
static uint64_t pem_hits;

typedef EVP_PKEY *(*pem_key_fn)(BIO *, EVP_PKEY **, pem_password_cb *, void *);
typedef X509 *(*pem_x509_fn)(BIO *, X509 **, pem_password_cb *, void *);

/* 1 if bp is a memory BIO whose unread data is exactly text. */
static int
bio_is(BIO *bp, const char *text)
{
	char *data;
	long n;

	if (bp == NULL || text == NULL || BIO_method_type(bp) != BIO_TYPE_MEM)
		return 0;
	n = BIO_get_mem_data(bp, &data);
	return n > 0 && (size_t)n == strlen(text) && memcmp(data, text, (size_t)n) == 0;
}

/* The cached object for bp (one more reference), or NULL. kind 0: key. */
static void *
cached(BIO *bp, int kind)
{
	void *o = NULL;

	pthread_mutex_lock(&pem_lock);
	if (kind == 0 && pem.key != NULL && bio_is(bp, pem.key_text) &&
	    EVP_PKEY_up_ref(pem.key) == 1)
		o = pem.key;
	if (kind == 1 && pem.cert != NULL && bio_is(bp, pem.cert_text) &&
	    X509_up_ref(pem.cert) == 1)
		o = pem.cert;
	pthread_mutex_unlock(&pem_lock);
	if (o != NULL)
		__atomic_add_fetch(&pem_hits, 1, __ATOMIC_RELAXED);
	return o;	/* the BIO is left unread: the caller frees it */
}

EVP_PKEY *
PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u)
{
	static pem_key_fn real;
	EVP_PKEY *k;

	if (x == NULL && cb == NULL && (k = cached(bp, 0)) != NULL)
		return k;
	if (real == NULL)
		real = (pem_key_fn)dlsym(RTLD_NEXT, "PEM_read_bio_PrivateKey");
	return real != NULL ? real(bp, x, cb, u) : NULL;
}

X509 *
PEM_read_bio_X509(BIO *bp, X509 **x, pem_password_cb *cb, void *u)
{
	static pem_x509_fn real;
	X509 *c;

	if (x == NULL && cb == NULL && (c = cached(bp, 1)) != NULL)
		return c;
	if (real == NULL)
		real = (pem_x509_fn)dlsym(RTLD_NEXT, "PEM_read_bio_X509");
	return real != NULL ? real(bp, x, cb, u) : NULL;
}

static void
cache_set(const char *cert_text, X509 *cert, const char *key_text, EVP_PKEY *key)
{
	X509 *oc;
	EVP_PKEY *ok;

	pthread_mutex_lock(&pem_lock);
	oc = pem.cert;
	ok = pem.key;
	pem.cert_text = cert_text;
	pem.cert = cert;
	pem.key_text = key_text;
	pem.key = key;
	pthread_mutex_unlock(&pem_lock);
	X509_free(oc);
	EVP_PKEY_free(ok);
}

int
pem_cache_load(const char *cert_path, const char *key_path, char **cert, char **key,
    char *err, size_t n)
{
	char *ct = NULL, *kt = NULL;
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	size_t len;
	BIO *b;
	int r = -1;

	if (util_file_read(cert_path, PEM_CACHE_FILE_MAX, &ct, &len) != 0) {
		snprintf(err, n, "certificate '%s': %s", cert_path, strerror(errno));
		goto out;
	}
	if (util_file_read(key_path, PEM_CACHE_FILE_MAX, &kt, &len) != 0) {
		snprintf(err, n, "private key '%s': %s", key_path, strerror(errno));
		goto out;
	}
	if ((b = BIO_new_mem_buf(ct, -1)) != NULL) {
		x = PEM_read_bio_X509(b, NULL, NULL, NULL);
		BIO_free(b);
	}
	if ((b = BIO_new_mem_buf(kt, -1)) != NULL) {
		k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
		BIO_free(b);
	}
	if (x == NULL)
		snprintf(err, n, "certificate '%s': no PEM certificate", cert_path);
	else if (k == NULL)
		snprintf(err, n, "private key '%s': no PEM private key", key_path);
	else if (X509_check_private_key(x, k) != 1)
		snprintf(err, n, "private key '%s' does not match certificate '%s'",
		    key_path, cert_path);
	else {
		cache_set(ct, x, kt, k);	/* takes x and k */
		x = NULL;
		k = NULL;
		*cert = ct;
		*key = kt;
		ct = kt = NULL;
		r = 0;
	}
 out:
	X509_free(x);
	EVP_PKEY_free(k);
	free(ct);
	if (kt != NULL)
		OPENSSL_cleanse(kt, strlen(kt));
	free(kt);
	return r;
}

int
pem_cache_selfcheck(char *err, size_t n)
{
	pem_x509_fn rx;
	pem_key_fn rk;
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	BIO *bx = NULL, *bk = NULL;
	uint64_t before = pem_cache_hits();
	int r = -1;

	/* what a shared library's call resolves to: the global scope's first */
	rx = (pem_x509_fn)dlsym(RTLD_DEFAULT, "PEM_read_bio_X509");
	rk = (pem_key_fn)dlsym(RTLD_DEFAULT, "PEM_read_bio_PrivateKey");
	pthread_mutex_lock(&pem_lock);
	if (pem.cert_text != NULL && pem.key_text != NULL) {
		bx = BIO_new_mem_buf(pem.cert_text, -1);
		bk = BIO_new_mem_buf(pem.key_text, -1);
	}
	pthread_mutex_unlock(&pem_lock);
	if (bx == NULL || bk == NULL) {
		snprintf(err, n, "nothing loaded");
		goto out;
	}
	if (rx != PEM_read_bio_X509 || rk != PEM_read_bio_PrivateKey) {
		snprintf(err, n, "libraries resolve the PEM readers to another definition "
		    "(link flags or order)");
		goto out;
	}
	x = rx(bx, NULL, NULL, NULL);
	k = rk(bk, NULL, NULL, NULL);
	if (x == NULL || x != pem.cert || k == NULL || k != pem.key) {
		snprintf(err, n, "the PEM readers did not return the cached objects");
		goto out;
	}
	r = 0;
 out:
	if (pem_cache_hits() > before)
		__atomic_sub_fetch(&pem_hits, pem_cache_hits() - before, __ATOMIC_RELAXED);
	X509_free(x);
	EVP_PKEY_free(k);
	BIO_free(bx);
	BIO_free(bk);
	return r;
}

void
pem_cache_forget(const char *cert)
{
	pthread_mutex_lock(&pem_lock);
	if (pem.cert_text == cert) {
		pem.cert_text = NULL;
		pem.key_text = NULL;
	}
	pthread_mutex_unlock(&pem_lock);
}

uint64_t
pem_cache_hits(void)
{
	return __atomic_load_n(&pem_hits, __ATOMIC_RELAXED);
}
