/* addrlimit: per-address limits. See addrlimit.h.
 *
 * The table is open-addressed with a bounded probe (ADDRLIMIT_PROBE slots
 * from the address's hash); a slot whose counts have all run out is free
 * for any address, so nothing is ever deleted and lookups stay short. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/common/loglimit.h"
#include "broker/front/addrlimit.h"

#define ADDRLIMIT_PROBE		16

struct slot {
	uint8_t key[16];
	int used;
	int handshakes;			/* in progress */
	int64_t minute;			/* now / ADDRLIMIT_MINUTE_MS of cur */
	uint32_t cur, prev;		/* placements this minute, the last one */
	struct loglimit log;		/* its refusals' lines (used under the lock) */
};

struct addrlimit {
	struct addrlimit_conf conf;
	pthread_mutex_t lock;
	uint64_t untracked;
	struct slot slots[ADDRLIMIT_SLOTS];
};

static int
addr_parse(const char *s, uint8_t out[16])
{
	struct in_addr v4;

	if (inet_pton(AF_INET6, s, out) == 1)
		return 0;
	if (inet_pton(AF_INET, s, &v4) != 1)
		return ADDRLIMIT_EINVAL;
	memset(out, 0, 10);
	out[10] = out[11] = 0xff;
	memcpy(out + 12, &v4, 4);
	return 0;
}

static int
net_contains(const struct addrlimit_net *n, const uint8_t a[16])
{
	int full = n->prefix / 8, rest = n->prefix % 8;

	if (memcmp(n->addr, a, (size_t)full) != 0)
		return 0;
	return rest == 0 || ((n->addr[full] ^ a[full]) & (0xff << (8 - rest))) == 0;
}

static int
exempt(const struct addrlimit_conf *c, const uint8_t a[16])
{
	for (int i = 0; i < c->nexempt; i++)
		if (net_contains(&c->exempt[i], a))
			return 1;
	return 0;
}

int
addrlimit_exempt_parse(struct addrlimit_conf *c, const char *list, char *err, size_t n)
{
	const char *p = list;
	char item[80], *slash, *end;
	struct addrlimit_net *net;
	size_t len;
	long prefix;
	int v4;

	c->nexempt = 0;
	while (p != NULL && *p != '\0') {
		p += strspn(p, " \t,");
		if ((len = strcspn(p, " \t,")) == 0)
			break;
		if (len >= sizeof(item)) {
			snprintf(err, n, "'%.40s...' is too long", p);
			return ADDRLIMIT_EINVAL;
		}
		if (c->nexempt == ADDRLIMIT_NETS_MAX) {
			snprintf(err, n, "more than %d networks", ADDRLIMIT_NETS_MAX);
			return ADDRLIMIT_EINVAL;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		p += len;
		net = &c->exempt[c->nexempt];
		if ((slash = strchr(item, '/')) != NULL)
			*slash = '\0';
		v4 = strchr(item, ':') == NULL;
		if (addr_parse(item, net->addr) != 0)
			goto bad;
		net->prefix = 128;
		if (slash != NULL) {
			prefix = strtol(slash + 1, &end, 10);
			if (slash[1] == '\0' || *end != '\0' || prefix < 0 || prefix > (v4 ? 32 : 128))
				goto bad;
			net->prefix = (int)prefix + (v4 ? 96 : 0);
		}
		c->nexempt++;
	}
	return 0;
 bad:
	if (slash != NULL)
		*slash = '/';
	snprintf(err, n, "'%s' is not an address or network (ADDRESS[/PREFIX])", item);
	return ADDRLIMIT_EINVAL;
}

struct addrlimit *
addrlimit_new(const struct addrlimit_conf *conf)
{
	struct addrlimit *a;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	a->conf = *conf;
	pthread_mutex_init(&a->lock, NULL);
	return a;
}

void
addrlimit_set_conf(struct addrlimit *a, const struct addrlimit_conf *conf)
{
	/* the exempt list is read under the lock, the limits without it */
	pthread_mutex_lock(&a->lock);
	memcpy(a->conf.exempt, conf->exempt, sizeof(a->conf.exempt));
	a->conf.nexempt = conf->nexempt;
	__atomic_store_n(&a->conf.max_handshakes, conf->max_handshakes, __ATOMIC_RELAXED);
	__atomic_store_n(&a->conf.placements_per_minute, conf->placements_per_minute,
	    __ATOMIC_RELAXED);
	pthread_mutex_unlock(&a->lock);
}

void
addrlimit_free(struct addrlimit *a)
{
	if (a == NULL)
		return;
	pthread_mutex_destroy(&a->lock);
	free(a);
}

/* FNV-1a over the seed and the key. */
static size_t
slot_hash(const struct addrlimit *a, const uint8_t key[16])
{
	uint64_t h = 0xcbf29ce484222325ULL ^ a->conf.seed;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 0x100000001b3ULL;
	return (size_t)(h ^ (h >> 29));
}

/* Brings s's minute counts to now's minute. */
static void
slot_roll(struct slot *s, int64_t now)
{
	int64_t m = now / ADDRLIMIT_MINUTE_MS;

	if (m == s->minute)
		return;
	s->prev = m == s->minute + 1 ? s->cur : 0;
	s->cur = 0;
	s->minute = m;
}

static int
slot_idle(struct slot *s, int64_t now)
{
	slot_roll(s, now);
	return s->handshakes == 0 && s->cur == 0 && s->prev == 0 &&
	    now - s->log.last_ms >= LOGLIMIT_INTERVAL_MS;
}

/* The slot of key (create: taking an idle one if it has none), or NULL.
 * Called with the lock held. */
static struct slot *
slot_find(struct addrlimit *a, const uint8_t key[16], int64_t now, int create)
{
	size_t h = slot_hash(a, key);
	struct slot *s, *spare = NULL;

	for (int i = 0; i < ADDRLIMIT_PROBE; i++) {
		s = &a->slots[(h + (size_t)i) % ADDRLIMIT_SLOTS];
		if (s->used && memcmp(s->key, key, 16) == 0) {
			slot_roll(s, now);
			return s;
		}
		if (spare == NULL && (!s->used || slot_idle(s, now)))
			spare = s;
	}
	if (!create)
		return NULL;
	if (spare == NULL) {
		a->untracked++;
		return NULL;
	}
	memset(spare, 0, sizeof(*spare));
	memcpy(spare->key, key, 16);
	spare->used = 1;
	spare->minute = now / ADDRLIMIT_MINUTE_MS;
	return spare;
}

/* The slot of a limited address (create as slot_find), or NULL for one
 * that is unparsable, untracked or (create) exempt: an address exempted by
 * addrlimit_set_conf still ends what it began. Takes the lock when it
 * returns a slot. */
static struct slot *
slot_lock(struct addrlimit *a, const char *addr, int64_t now, int create)
{
	uint8_t key[16];
	struct slot *s;

	if (addr_parse(addr, key) != 0)
		return NULL;
	pthread_mutex_lock(&a->lock);
	if ((create && exempt(&a->conf, key)) ||
	    (s = slot_find(a, key, now, create)) == NULL) {
		pthread_mutex_unlock(&a->lock);
		return NULL;
	}
	return s;
}

int
addrlimit_handshake_begin(struct addrlimit *a, const char *addr, int64_t now_ms,
    int *counted)
{
	struct slot *s;
	int r = ADDRLIMIT_OK;

	*counted = 0;
	if (__atomic_load_n(&a->conf.max_handshakes, __ATOMIC_RELAXED) <= 0 || (s = slot_lock(a, addr, now_ms, 1)) == NULL)
		return ADDRLIMIT_OK;
	if (s->handshakes >= __atomic_load_n(&a->conf.max_handshakes, __ATOMIC_RELAXED))
		r = ADDRLIMIT_EHANDSHAKES;
	else {
		s->handshakes++;
		*counted = 1;
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

void
addrlimit_handshake_end(struct addrlimit *a, const char *addr, int64_t now_ms)
{
	struct slot *s;

	if ((s = slot_lock(a, addr, now_ms, 0)) == NULL)
		return;
	if (s->handshakes > 0)
		s->handshakes--;
	pthread_mutex_unlock(&a->lock);
}

/* Placements in the sliding minute that ends now. */
static uint64_t
slot_placements(const struct slot *s, int64_t now)
{
	int64_t left = ADDRLIMIT_MINUTE_MS - now % ADDRLIMIT_MINUTE_MS;

	/* rounded up: at a minute's edge the last one counts whole */
	return s->cur + ((uint64_t)s->prev * (uint64_t)left + ADDRLIMIT_MINUTE_MS - 1) /
	    ADDRLIMIT_MINUTE_MS;
}

int
addrlimit_placement_take(struct addrlimit *a, const char *addr, int64_t now_ms,
    int *counted)
{
	struct slot *s;
	int r = ADDRLIMIT_OK;

	*counted = 0;
	if (__atomic_load_n(&a->conf.placements_per_minute, __ATOMIC_RELAXED) <= 0 ||
	    (s = slot_lock(a, addr, now_ms, 1)) == NULL)
		return ADDRLIMIT_OK;
	if (slot_placements(s, now_ms) >=
	    (uint64_t)__atomic_load_n(&a->conf.placements_per_minute, __ATOMIC_RELAXED))
		r = ADDRLIMIT_EPLACEMENTS;
	else {
		s->cur++;
		*counted = 1;
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

void
addrlimit_placement_return(struct addrlimit *a, const char *addr, int64_t now_ms)
{
	struct slot *s;

	if ((s = slot_lock(a, addr, now_ms, 0)) == NULL)
		return;
	if (s->cur > 0)		/* taken this minute; else it has rolled away */
		s->cur--;
	pthread_mutex_unlock(&a->lock);
}

int
addrlimit_log_pass(struct addrlimit *a, const char *addr, int64_t now_ms, uint64_t *quiet)
{
	struct slot *s;
	int pass;

	*quiet = 0;
	if ((s = slot_lock(a, addr, now_ms, 1)) == NULL)
		return 1;
	pass = loglimit_pass(&s->log, now_ms, quiet);
	pthread_mutex_unlock(&a->lock);
	return pass;
}

uint64_t
addrlimit_untracked(struct addrlimit *a)
{
	uint64_t n;

	pthread_mutex_lock(&a->lock);
	n = a->untracked;
	pthread_mutex_unlock(&a->lock);
	return n;
}

int
addrlimit_used(struct addrlimit *a, int64_t now_ms)
{
	int n = 0;

	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < ADDRLIMIT_SLOTS; i++)
		n += a->slots[i].used && !slot_idle(&a->slots[i], now_ms);
	pthread_mutex_unlock(&a->lock);
	return n;
}
