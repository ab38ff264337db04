/* loglimit: at most one log line a second for an event that a client can
 * repeat at will (rejected tokens, locked-out logins), with a count of the
 * lines left out. Lock-free; safe from any number of threads. */
#ifndef TS_LOGLIMIT_H
#define TS_LOGLIMIT_H

#include <stdint.h>

#define LOGLIMIT_INTERVAL_MS	1000

/* Zero-initialised; the caller owns it. */
struct loglimit {
	int64_t last_ms;		/* monotonic; atomic */
	uint64_t quiet;			/* left out since last_ms; atomic */
};

/* 1 if a line may be logged now (monotonic ms), with *quiet the number of
 * lines left out since the last one; 0 if this one is left out (counted). */
int loglimit_pass(struct loglimit *l, int64_t now, uint64_t *quiet);

#endif
