/* report: sends heartbeats to the broker over HTTPS (libcurl) and reads its
 * answer. One request per call, no retries: the caller paces and backs off.
 *
 * TLS trust (the agent's "ca" key):
 *   - empty: the system's CA store, with the broker's name checked;
 *   - a file with several certificates, or one not self-signed: a CA bundle,
 *     chain and name checked;
 *   - a file with exactly one self-signed certificate (such as the one the
 *     broker generates on first start): its public key is pinned, so the
 *     broker must present exactly that key; names and dates are not checked.
 *     If the broker presents another key, the file is tried as a CA (chain
 *     and name checked), so a private root CA in a file of its own works
 *     too. Either way trust is anchored in the key in the file.
 * The same trust applies to every broker in the list. */
#ifndef TS_AGENT_REPORT_H
#define TS_AGENT_REPORT_H

#include <stddef.h>

#include "agent/conf.h"
#include "broker/common/wire.h"

enum report_status {
	REPORT_OK = 0,
	REPORT_UNREACHABLE = -1,	/* no connection, TLS failure, timeout, 5xx */
	REPORT_REJECTED = -2,		/* 401: the token was rejected */
	REPORT_REFUSED = -3,		/* another 4xx, or a bad answer */
	REPORT_ERROR = -4,		/* local failure (no memory) */
};

struct report;

/* A reload: c's connect_timeout and timeout for requests from now on. */
void report_set_timeouts(struct report *r, const struct agent_conf *c);
/* Copies what it needs from c (the token too). cancel, if not NULL, is
 * polled during a request; non-zero aborts it (REPORT_UNREACHABLE).
 * NULL with the reason in err (unreadable or bad CA file, no memory). */
struct report *report_new(const struct agent_conf *c, int (*cancel)(void *),
    void *cancel_arg, char *err, size_t errlen);
/* Wipes the token. */
void report_free(struct report *r);

/* POSTs body to broker/api/v1/heartbeat (broker: one URL of the list, as
 * brokers.h keeps it). REPORT_OK fills *ans; otherwise err says why (never
 * with the token). The CA file or pinned key of c applies to every broker
 * (brokers of an HA pair share one certificate), and the trust that worked
 * last is tried first. */
enum report_status report_send(struct report *r, const char *broker,
    const char *body, struct wire_answer *ans, char *err, size_t errlen);

/* The body of the last answer (NUL-terminated, maybe empty), owned by r. */
const char *report_answer_text(const struct report *r);

/* "ok", "unreachable", ... for log lines. */
const char *report_status_name(enum report_status st);

#endif
