/* lean: the lean redirect engine. Speaks the server side of the RDP
 * connection sequence itself, as far as a redirect needs, and asks the core
 * through the front door (door.h, DOOR_LOGON) what to send:
 *
 *   X.224 Connection Confirm (RDP_NEG_RSP: TLS), TLS on one SSL_CTX loaded
 *   once, MCS Connect Initial/Response (GCC core, security, network,
 *   cluster data), Erect Domain, Attach User, Channel Joins, Client Info
 *   (the password wiped at once), the licensing "valid client" answer, then
 *   the Server Redirection PDU (address, or a routing token in token mode)
 *   or a Set Error Info, then the bounded drain.
 *
 * The PDUs are parsed and built by pure modules (mcs.h, clientinfo.h,
 * redir_pdu.h); this one does the I/O and TLS (the only lean file including
 * OpenSSL). Each connection is a state machine on a non-blocking socket run
 * by one of a few epoll loop threads (one per CPU, at most 4) from TLS to
 * its end; the admission worker only answers the X.224 request and hands
 * it over. The decision is asked without waiting (door_ops.decide_async,
 * e.g. a front process's, the core's answer over its socket) or, for a
 * core whose decide blocks on the store, on a few decider threads, never
 * on a loop. So no thread waits for a connection, and a handshake in
 * flight costs a few kilobytes (its TLS state, its input buffer only while
 * a PDU is incomplete), not a FreeRDP peer's megabytes.
 *
 * Debug: with TSBROKER_LEAN_DUMP=DIR in the environment every decrypted
 * client PDU is written to DIR/<conn>-<seq>-<name>.bin (Client Info with its
 * password zeroed, lengths kept): for parser tests and fuzz seeds. */
#ifndef TS_LEAN_H
#define TS_LEAN_H

#include <stddef.h>

struct door_conn;
struct lean_engine;
struct lean_pem;

/* The TLS policy (docs/security.md "TLS policy"): versions from min_version up,
 * TLS 1.2 suites as an OpenSSL cipher list, TLS 1.3 ones as OpenSSL
 * ciphersuites. The defaults: forward-secret AEAD suites only. A handshake
 * refused by it is reported (door_report, req.tls_refused) with what the
 * client offered: its versions and suites. */
#define LEAN_TLS_CIPHERS	"ECDHE+AESGCM:ECDHE+CHACHA20"
#define LEAN_TLS_CIPHERSUITES	"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:" \
				"TLS_AES_128_GCM_SHA256"
struct lean_tls {
	const char *ciphers;		/* NULL or "": LEAN_TLS_CIPHERS */
	const char *ciphersuites;	/* NULL or "": LEAN_TLS_CIPHERSUITES */
	const char *min_version;	/* "1.0" .. "1.3"; NULL or "": "1.2" */
};

/* Checks p with OpenSSL (for -t): 0, or -1 with the reason in err. */
int lean_tls_check(const struct lean_tls *p, char *err, size_t n);
/* Sets e's TLS policy (copied) and loads its context again with it, as
 * lean_reload. 0, or -1 with the reason in err (the old one stays). */
int lean_set_tls(struct lean_engine *e, const struct lean_tls *p, char *err, size_t n);
/* lean_set_tls with a new certificate and key (pem, copied; NULL: the
 * current ones) in the same one context: all or nothing. */
int lean_configure(struct lean_engine *e, const struct lean_pem *pem, const struct lean_tls *p,
    char *err, size_t n);

/* A certificate chain and its key, PEM, and the names of their files (for
 * errors). The key's buffer is wiped when freed. */
#define LEAN_PEM_MAX	(256 * 1024)
struct lean_pem {
	const char *cert;
	size_t cert_len;
	const char *key;
	size_t key_len;
	char cert_name[512];
	char key_name[512];
};
/* Reads both files into p (the caller frees it with lean_pem_free). 0, or
 * -1 with the reason in err. */
int lean_pem_read(struct lean_pem *p, const char *certificate, const char *private_key,
    char *err, size_t n);
void lean_pem_free(struct lean_pem *p);

/* Loads the certificate chain and key (pem, copied: the engine keeps it
 * for lean_set_tls) into one SSL_CTX, with the default TLS policy
 * (lean_set_tls to change it).
 * stop_fd: readable once the endpoint stops (admit_stop_fd), borrowed.
 * token_mode: redirects carry a routing token, no address. NULL with the
 * reason in err. */
struct lean_engine *lean_new(const struct lean_pem *pem, int token_mode, int stop_fd,
    char *err, size_t n);
/* Replaces the SSL_CTX whole (a certificate reload or a TLS policy
 * change): connections from now on use the new one, those in flight keep
 * the one they started with (each holds a reference). 0, or -1 with the
 * reason in err (the old one stays). Any thread. */
int lean_reload(struct lean_engine *e, const char *certificate, const char *private_key,
    char *err, size_t n);
/* Takes dc's connection (its X.224 request checked by the X.224 stage and
 * still unread in the socket; dc is copied, the engine's copy is the
 * connection's from the call on) and runs it to its outcome, reported
 * through its door_conn (door_report), then lets the client close first;
 * at the end calls end(arg, its door_conn) once, from any engine thread
 * (maybe before lean_run returns), which must release the connection
 * (admit_conn_release). Returns ADMIT_KEPT; or 0 if it could not take it
 * (out of memory: reported through dc, end not called). Called from
 * admission workers, concurrently; returns without waiting for the
 * client or the core. */
int lean_run(struct lean_engine *e, struct door_conn *dc,
    void (*end)(void *arg, struct door_conn *dc), void *arg);
/* After every connection has ended (admit_free has returned). NULL ok. */
void lean_free(struct lean_engine *e);

#endif
