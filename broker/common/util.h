/* util: small helpers shared by both daemons. No allocation unless stated. */
#ifndef TS_UTIL_H
#define TS_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wall-clock and monotonic time in milliseconds. */
int64_t util_now_ms(void);
int64_t util_mono_ms(void);

/* Copies src into dst (size n), always NUL-terminated; -1 if truncated. */
int util_strlcpy(char *dst, const char *src, size_t n);

/* Parses "host:port", "[v6]:port"; host into host (size n). 0 or -1. */
int util_hostport_parse(const char *s, char *host, size_t n, int *port);

/* Reads a whole file (at most max bytes) into a new NUL-terminated buffer
 * owned by the caller. 0, -1 (errno set) or UTIL_FILE_TOO_LARGE. */
#define UTIL_FILE_TOO_LARGE	(-2)
int util_file_read(const char *path, size_t max, char **out, size_t *len);

/* Fills buf with n random bytes from the kernel. 0 or -1. */
int util_random(void *buf, size_t n);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void util_hex(const uint8_t *in, size_t n, char *out);

#endif
