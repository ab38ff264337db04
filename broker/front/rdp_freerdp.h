/* rdp_freerdp: the FreeRDP engine. Runs one connection through FreeRDP
 * 2.11's server peer, TLS only, up to Client Info and licensing, and asks
 * the core through the front door (door.h, DOOR_LOGON) what to send: a
 * Server Redirection PDU or a refusal (Set Error Info). The only module of
 * the endpoint that includes FreeRDP (with frpeer.c, shared with the test
 * peers). It goes when the lean engine replaces it, pem_cache with it. */
#ifndef TS_RDP_FREERDP_H
#define TS_RDP_FREERDP_H

#include <stddef.h>

struct door_conn;
struct fr_engine;

/* Loads the certificate and key once (pem_cache), proves the PEM
 * interposition is in effect (a warning, once, if not), sets up WLog and
 * WinPR's SSL. stop_fd: readable once the endpoint stops (admit_stop_fd),
 * borrowed. token_mode: redirects carry a routing token, no address. NULL
 * with the reason in err. */
struct fr_engine *rdp_freerdp_new(const char *certificate, const char *private_key,
    int token_mode, int stop_fd, char *err, size_t n);
/* The TLS policy FreeRDP 2.11 lets a server set: the TLS 1.2 cipher list
 * (AllowedTlsCiphers) and the lowest version ("1.0".."1.3", TLSMinVersion).
 * It cannot set TLS 1.3 suites (OpenSSL's defaults, all forward-secret
 * AEAD, apply) nor report what a refused client offered. Copied; for
 * connections from now on. */
void rdp_freerdp_set_tls(struct fr_engine *e, const char *ciphers, const char *min_version);
/* Reads the certificate and key again (pem_cache): connections from now on
 * get them. 0, or -1 with the reason in err (the old ones stay). Any
 * thread; rdp_freerdp_set_tls too. */
int rdp_freerdp_reload(struct fr_engine *e, const char *certificate, const char *private_key,
    char *err, size_t n);
/* Runs dc's connection (its X.224 request still unread in the socket) to
 * its outcome, reported through dc (door_report), then lets the client
 * close first. Called from admission workers, concurrently. */
void rdp_freerdp_run(struct fr_engine *e, struct door_conn *dc);
/* After every run has returned. NULL ok. */
void rdp_freerdp_free(struct fr_engine *e);

#endif
