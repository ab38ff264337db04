/* faultalloc: see faultalloc.h. */
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "broker/common/wire.h"
#include "tests/unit/faultalloc.h"

/* the real allocator, under the linker's --wrap */
void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static long armed;	/* the allocation that fails, counted from the arm; 0 off */
static long counted;
static int fired;
static int saved_stderr = -1;	/* while armed */

void
faultalloc_arm(long n)
{
	int null;

	fflush(stderr);
	if (n > 0 && saved_stderr < 0 && (null = open("/dev/null", O_WRONLY)) >= 0) {
		saved_stderr = dup(2);
		dup2(null, 2);
		close(null);
	} else if (n <= 0 && saved_stderr >= 0) {
		dup2(saved_stderr, 2);
		close(saved_stderr);
		saved_stderr = -1;
	}
	armed = n > 0 ? n : 0;
	if (n > 0) {
		counted = 0;
		fired = 0;
	}
}

int
faultalloc_fired(void)
{
	return fired;
}

long
faultalloc_count(void)
{
	return counted;
}

/* 1 if this allocation is the one to fail */
static int
fail_now(void)
{
	if (armed <= 0)
		return 0;
	if (++counted != armed)
		return 0;
	armed = 0;
	fired = 1;
	return 1;
}

void *
__wrap_malloc(size_t n)
{
	return fail_now() ? NULL : __real_malloc(n);
}

void *
__wrap_calloc(size_t k, size_t n)
{
	return fail_now() ? NULL : __real_calloc(k, n);
}

void *
__wrap_realloc(void *p, size_t n)
{
	return fail_now() ? NULL : __real_realloc(p, n);
}

char *
__wrap_strdup(const char *s)
{
	return __wrap_strndup(s, strlen(s));
}

char *
__wrap_strndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *d;

	if ((d = __wrap_malloc(len + 1)) == NULL)
		return NULL;
	memcpy(d, s, len);
	d[len] = '\0';
	return d;
}

/* ---- SQLite ---- */
static void *
sq_malloc(int n)
{
	return __wrap_malloc((size_t)n);
}

static void
sq_free(void *p)
{
	free(p);
}

static void *
sq_realloc(void *p, int n)
{
	return __wrap_realloc(p, (size_t)n);
}

static int
sq_size(void *p)
{
	return (int)malloc_usable_size(p);
}

static int
sq_roundup(int n)
{
	return (n + 7) & ~7;
}

static int
sq_init(void *ctx)
{
	return SQLITE_OK;
}

static void
sq_shutdown(void *ctx)
{
}

/* ---- OpenSSL ---- */
static void *
ossl_malloc(size_t n, const char *file, int line)
{
	return __wrap_malloc(n);
}

static void *
ossl_realloc(void *p, size_t n, const char *file, int line)
{
	return __wrap_realloc(p, n);
}

static void
ossl_free(void *p, const char *file, int line)
{
	free(p);
}

int
faultalloc_install(void)
{
	static const sqlite3_mem_methods sq = { sq_malloc, sq_free, sq_realloc, sq_size,
	    sq_roundup, sq_init, sq_shutdown, NULL };

	wire_init();	/* jansson allocates through wire.c's malloc: wrapped */
	if (sqlite3_config(SQLITE_CONFIG_MALLOC, &sq) != SQLITE_OK)
		return -1;
	if (CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free) != 1)
		return -1;
	return 0;
}
