/* brokers: the agent's list of broker URLs and which one it reports to.
 * Pure: no I/O, so the choice is unit-tested without sockets.
 *
 * The rule: a beat starts at the current broker; on a failure (no
 * connection, TLS failure, timeout, 5xx) it tries the next one, each at most
 * once per beat. The first that answers (2xx or 4xx) becomes the current
 * one. If none answers, the current one stays: a farm whose brokers all
 * answer 503 does not make the agent flap through the list.
 *
 * Everything lives in fixed buffers inside struct brokers: nothing to free. */
#ifndef TS_AGENT_BROKERS_H
#define TS_AGENT_BROKERS_H

#include <stddef.h>

#define BROKERS_MAX		8	/* URLs in the 'broker' key */
#define BROKERS_URL_MAX		512	/* each, with its NUL */

enum brokers_result {
	BROKERS_ANSWERED = 0,	/* 2xx or 4xx: the broker's word, stay */
	BROKERS_FAILED = 1,	/* unreachable, TLS, timeout, 5xx: try the next */
	BROKERS_ABORTED = 2,	/* a local error or a stop: end the beat */
};

enum brokers_error {
	BROKERS_OK = 0,
	BROKERS_EMPTY = -1,	/* no URL */
	BROKERS_TOO_MANY = -2,	/* more than BROKERS_MAX */
	BROKERS_BAD_URL = -3,	/* not https://HOST[:PORT][/PATH], or too long */
};

struct brokers {
	char url[BROKERS_MAX][BROKERS_URL_MAX];	/* trailing '/' removed */
	int n;
	int current;		/* index into url: where a beat starts */
};

/* One beat's walk through the list (see brokers_beat_begin). */
struct brokers_beat {
	int at;			/* the broker to try now */
	int tried;		/* how many were tried this beat */
};

/* Parses spec (URLs separated by spaces, tabs or commas) into b, current
 * the first. On error b is unchanged and err names the bad URL. */
int brokers_parse(const char *spec, struct brokers *b, char *err, size_t errlen);

/* Starts a beat at the current broker. */
void brokers_beat_begin(const struct brokers *b, struct brokers_beat *bt);

/* The URL to try now (owned by b, valid as long as b). */
const char *brokers_beat_url(const struct brokers *b, const struct brokers_beat *bt);

/* Records the outcome of the try at bt->at. 1: try brokers_beat_url again
 * (moved to the next broker); 0: the beat is over, b->current is the
 * broker that answered or, if none did, the one the beat started at. */
int brokers_beat_record(struct brokers *b, struct brokers_beat *bt,
    enum brokers_result res);

#endif
