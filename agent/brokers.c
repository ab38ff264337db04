#include <stdio.h>
#include <string.h>

#include "agent/brokers.h"

#define BROKERS_SEP	" \t,"

/* Checks one URL of len bytes at p and copies it without trailing '/'. */
static int
brokers_url_add(struct brokers *b, const char *p, size_t len)
{
	if (len >= BROKERS_URL_MAX || len <= 8 || strncmp(p, "https://", 8) != 0 ||
	    p[8] == '/')
		return BROKERS_BAD_URL;
	while (len > 8 && p[len - 1] == '/')
		len--;
	memcpy(b->url[b->n], p, len);
	b->url[b->n][len] = '\0';
	b->n++;
	return BROKERS_OK;
}

int
brokers_parse(const char *spec, struct brokers *b, char *err, size_t errlen)
{
	struct brokers tmp;
	const char *p = spec;
	size_t len;
	int r = BROKERS_OK;

	memset(&tmp, 0, sizeof(tmp));
	for (;;) {
		p += strspn(p, BROKERS_SEP);
		if (*p == '\0')
			break;
		len = strcspn(p, BROKERS_SEP);
		if (tmp.n == BROKERS_MAX) {
			snprintf(err, errlen, "'broker' takes at most %d URLs",
			    BROKERS_MAX);
			return BROKERS_TOO_MANY;
		}
		if ((r = brokers_url_add(&tmp, p, len)) != BROKERS_OK) {
			snprintf(err, errlen, "'broker' expects an https://HOST[:PORT] "
			    "URL, not '%.*s'", len > 200 ? 200 : (int)len, p);
			return r;
		}
		p += len;
	}
	if (tmp.n == 0) {
		snprintf(err, errlen, "'broker' is required (https://HOST:PORT; "
		    "several: separated by spaces or commas)");
		return BROKERS_EMPTY;
	}
	*b = tmp;
	return BROKERS_OK;
}

void
brokers_beat_begin(const struct brokers *b, struct brokers_beat *bt)
{
	bt->at = b->current;
	bt->tried = 0;
}

const char *
brokers_beat_url(const struct brokers *b, const struct brokers_beat *bt)
{
	return b->url[bt->at];
}

int
brokers_beat_record(struct brokers *b, struct brokers_beat *bt,
    enum brokers_result res)
{
	bt->tried++;
	switch (res) {
	case BROKERS_ANSWERED:
		b->current = bt->at;
		return 0;
	case BROKERS_ABORTED:
		return 0;
	case BROKERS_FAILED:
		break;
	}
	if (bt->tried >= b->n)
		return 0;	/* none answered: the current one stays */
	bt->at = (bt->at + 1) % b->n;
	return 1;
}
