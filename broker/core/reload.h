/* reload: SIGHUP. Reads the configuration file again with the checks of
 * -t; a file that fails them is refused (logged once with -t's message, an
 * event, counted) and the daemon keeps the configuration it has. Otherwise
 * key by key (conf_diff): each changed live key takes effect, each changed
 * restart-only key is logged as needing a restart and keeps its value.
 * The certificates and keys are read again on every reload (renewed files
 * under the same paths), by every TLS holder: the RDP engine (rdp_reload)
 * and the HTTPS door (http_reload). README "Reloading" (docs/operations.md). */
#ifndef TS_RELOAD_H
#define TS_RELOAD_H

#include <stddef.h>

struct broker;
struct conf;
struct http;
struct http_conf;
struct metrics_reloads;
struct rdp;
struct store;

/* The parts a reload reaches, all borrowed. */
struct reload {
	struct conf *c;			/* the live configuration: live keys copied in */
	struct store *st;
	struct rdp *rdp;
	struct http *http;
	struct broker *broker;
	struct metrics_reloads *m;	/* its counters (atomics) */
};

/* What -t checks after the file parsed: the TLS policies (OpenSSL's,
 * GnuTLS's) and limits_exempt. 0, or -1 with the reason in err. */
int reload_check(const struct conf *c, char *err, size_t n);
/* The HTTPS door's settings from c (listen, certificate, key, limits,
 * policy; no callbacks). Pointers into c. */
void reload_http_conf(struct http_conf *hc, const struct conf *c);
/* Reads want's certificates and keys again and hands them to every TLS
 * holder, with want's TLS policies: checked first (a file that does not
 * load or a key that does not match refuses the whole), then swapped; new
 * connections get them, those open keep theirs. The hook for any further
 * holder (front processes). 0, or -1 with the reason in err. Main thread. */
int reload_tls(struct reload *r, const struct conf *want, char *err, size_t n);
/* One reload (SIGHUP): 0 applied, -1 refused (logged, an event, counted).
 * Main thread. */
int reload_run(struct reload *r);

#endif
