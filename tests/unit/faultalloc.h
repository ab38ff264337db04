/* faultalloc: a malloc-failure injector for the unit tests, in SQLite's
 * style: arm it with N and the Nth allocation from then on fails (once);
 * a test runs a path for N = 1, 2, ... until the path completes without
 * reaching N, bounded per path.
 *
 * It reaches the code under test's own allocations (malloc, calloc,
 * realloc, strdup, free of the objects linked into the test binary, through
 * the linker's --wrap: FAULTALLOC_LDFLAGS) and the libraries' own (SQLite by
 * SQLITE_CONFIG_MALLOC, jansson through wire_init's hook, OpenSSL by
 * CRYPTO_set_mem_functions). Memory is still the real allocator's, so ASan
 * and LeakSanitizer see every block (make asan-test). Not thread-safe: one
 * thread arms it and runs the path. */
#ifndef TS_TEST_FAULTALLOC_H
#define TS_TEST_FAULTALLOC_H

/* Hooks the libraries' allocators. Call first in main, before any of them
 * allocates; 0, or -1 if a library had allocated already. */
int faultalloc_install(void);
/* The nth allocation from now fails (1: the next one); 0 disarms. While
 * armed, stderr is /dev/null (the errors the path logs, by the thousand). */
void faultalloc_arm(long n);
/* 1 once the armed failure happened (until the next arm with n > 0). */
int faultalloc_fired(void);
/* Allocations counted since the last arm with n > 0. */
long faultalloc_count(void);

#endif
