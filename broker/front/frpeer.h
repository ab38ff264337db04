/* frpeer: FreeRDP set-up shared by the broker's FreeRDP engine
 * (rdp_freerdp.c) and the test peers (tools/rdptarget, tools/rdpprobe), so
 * that the broker does not link test code and the tools do not copy the
 * broker's: WLog to stderr, a TLS-only server peer on a socket, one step of
 * its event loop. With rdp_freerdp.c the only files that include FreeRDP. */
#ifndef TS_FRPEER_H
#define TS_FRPEER_H

#include <freerdp/peer.h>
#include <winpr/synch.h>

/* FreeRDP logs through WLog to stdout by default: to stderr instead, at
 * level (a WLOG_* value; WLOG_FATAL keeps it quiet), unless the WLOG_LEVEL
 * environment variable says otherwise. */
void frpeer_wlog_setup(unsigned int level);

/* A server peer on fd with its context, TLS only (no standard RDP security,
 * no NLA), the PEM texts copied into its settings, ContextExtra = extra.
 * fd is taken: on failure it is closed and NULL returned with *why set (a
 * static string). Set the callbacks, then peer->Initialize. */
freerdp_peer *frpeer_new(int fd, const char *cert_pem, const char *key_pem, void *extra,
    const char **why);
/* Disconnects and frees peer (closing its socket). NULL ok. */
void frpeer_free(freerdp_peer *peer);

enum frpeer_step {
	FRPEER_READY = 0,	/* the peer ran its pending input */
	FRPEER_TIMEOUT,		/* ms passed */
	FRPEER_STOPPED,		/* stop is set */
	FRPEER_CLOSED,		/* the peer failed or the client closed */
	FRPEER_ENOHANDLES,	/* FreeRDP gave no event handles */
	FRPEER_EWAIT,		/* the wait failed */
};

/* Waits up to ms for the peer's events or stop, then runs the peer once. */
enum frpeer_step frpeer_step(freerdp_peer *peer, HANDLE stop, DWORD ms);

#endif
