/* pem_cache: a workaround for FreeRDP 2.11, and only that.
 *
 * Why: FreeRDP 2.11's tls_accept() parses the private key and the
 * certificate (CertificateContent/PrivateKeyContent, through memory BIOs)
 * on every connection and never frees either (SSL_use_PrivateKey and
 * SSL_use_certificate take references of their own): about 7 KB lost per
 * connection, and an RSA key parse of CPU.
 *
 * How: this module defines the two PEM readers tls_accept() calls,
 * PEM_read_bio_PrivateKey and PEM_read_bio_X509. The tsbroker executable's
 * definitions come first in the dynamic linker's global scope, so
 * libfreerdp2's calls resolve to them, not to libcrypto's. When the input
 * is a memory BIO holding exactly the PEM text loaded at start, they return
 * the object parsed once, with one more reference (the caller owns one as
 * usual; the one FreeRDP never drops only raises a counter). Any other input
 * goes to libcrypto's reader unchanged (dlsym RTLD_NEXT).
 *
 * When it goes: with the FreeRDP peer engine (rdp_freerdp.c), once the lean
 * engine, which keeps one SSL_CTX, replaces it. Nothing else may rely on it.
 *
 * pem_cache_selfcheck proves at start that the interposition is in effect
 * (a change of link flags or order could defeat it silently); the endpoint
 * logs a warning once and goes on without it if not (the cost is the leak
 * and the CPU above, not a wrong answer). Thread-safe. */
#ifndef TS_PEM_CACHE_H
#define TS_PEM_CACHE_H

#include <stddef.h>
#include <stdint.h>

/* Reads the certificate and key files (PEM, at most 256 KB each), checks
 * that they belong together, and keeps the parsed objects for the readers.
 * *cert and *key get the texts (NUL-terminated, the caller's: free them
 * after pem_cache_forget). 0, or -1 with the reason in err. */
int pem_cache_load(const char *cert_path, const char *key_path, char **cert, char **key,
    char *err, size_t n);
/* Reads the loaded texts the way FreeRDP does (through the symbols a shared
 * library resolves) and checks the cached objects come back. 0, or -1 with
 * the reason in err. Not counted in pem_cache_hits. */
int pem_cache_selfcheck(char *err, size_t n);
/* Forgets the texts of cert (they are about to be freed) but keeps the
 * objects: FreeRDP holds references to them it never drops, so freeing ours
 * would only make them unreachable (a leak to LeakSanitizer). */
void pem_cache_forget(const char *cert);
/* Reads served from the cache since start (two per TLS handshake). */
uint64_t pem_cache_hits(void);

#endif
