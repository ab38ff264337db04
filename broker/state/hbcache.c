/* hbcache.c: the cache of hbcache.h: a dense array of entries with two
 * open-addressing indexes (by id, by token; linear probing), rebuilt as
 * the array grows. An entry dropped keeps its slots (used 0) until the
 * cache is emptied. */
#include <stdlib.h>
#include <string.h>

#include "broker/common/util.h"
#include "broker/state/hbcache.h"

struct slot_entry {
	struct hbcache_entry e;
	int used;
};

struct hbcache {
	struct slot_entry *v;
	size_t n, cap;			/* entries (used or dropped), allocated */
	uint32_t *by_id, *by_token;	/* nslots each: entry + 1, 0 empty */
	size_t nslots;			/* a power of two, >= 2 * cap */
	size_t rows, max_rows;		/* rows kept, at most */
	uint64_t gen;			/* the generation reflected; 0 none */
	uint64_t hits, misses;
};

static size_t
hash_id(int64_t id, size_t mask)
{
	uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ull;

	return (size_t)(h >> 32) & mask;
}

static size_t
hash_token(const char *s, size_t mask)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h & mask;
}

/* The index slot of id: its entry's or the empty one where it goes. */
static uint32_t *
slot_id(const struct hbcache *c, int64_t id)
{
	size_t mask = c->nslots - 1, i = hash_id(id, mask);

	while (c->by_id[i] != 0 && c->v[c->by_id[i] - 1].e.id != id)
		i = (i + 1) & mask;
	return &c->by_id[i];
}

static uint32_t *
slot_token(const struct hbcache *c, const char *token)
{
	size_t mask = c->nslots - 1, i = hash_token(token, mask);

	while (c->by_token[i] != 0 && strcmp(c->v[c->by_token[i] - 1].e.token, token) != 0)
		i = (i + 1) & mask;
	return &c->by_token[i];
}

/* The indexes over entries 0..n, in nslots slots each. */
static int
reindex(struct hbcache *c, size_t nslots)
{
	uint32_t *a = calloc(nslots, sizeof(*a)), *b = calloc(nslots, sizeof(*b));

	if (a == NULL || b == NULL) {
		free(a);
		free(b);
		return -1;
	}
	free(c->by_id);
	free(c->by_token);
	c->by_id = a;
	c->by_token = b;
	c->nslots = nslots;
	for (size_t i = 0; i < c->n; i++) {
		*slot_id(c, c->v[i].e.id) = (uint32_t)i + 1;
		if (c->v[i].e.token[0] != '\0')
			*slot_token(c, c->v[i].e.token) = (uint32_t)i + 1;
	}
	return 0;
}

struct hbcache *
hbcache_new(size_t max_rows)
{
	struct hbcache *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->max_rows = max_rows;
	if (reindex(c, 64) != 0) {
		free(c);
		return NULL;
	}
	return c;
}

static void
entry_forget(struct hbcache *c, struct slot_entry *s)
{
	c->rows -= s->e.nrows;
	free(s->e.rows);
	s->e.rows = NULL;
	s->e.nrows = 0;
	s->used = 0;
}

static void
clear(struct hbcache *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->v[i].e.rows);
	c->n = 0;
	c->rows = 0;
	c->gen = 0;
	memset(c->by_id, 0, c->nslots * sizeof(*c->by_id));
	memset(c->by_token, 0, c->nslots * sizeof(*c->by_token));
}

void
hbcache_free(struct hbcache *c)
{
	if (c == NULL)
		return;
	clear(c);
	free(c->v);
	free(c->by_id);
	free(c->by_token);
	free(c);
}

void
hbcache_begin(struct hbcache *c, uint64_t gen)
{
	if (gen == 0 || gen != c->gen)
		clear(c);
}

void
hbcache_end(struct hbcache *c, int committed, uint64_t gen)
{
	if (!committed || gen == 0)
		clear(c);
	else
		c->gen = gen;
}

void
hbcache_follow(struct hbcache *c, uint64_t from, uint64_t to)
{
	if (c->gen != 0 && c->gen == from)
		c->gen = to;
}

int
hbcache_holds(const struct hbcache *c)
{
	return c != NULL && c->gen != 0 && c->n > 0;
}

/* The entry of slot value s (0: none), counted as a hit or a miss. */
static struct hbcache_entry *
entry_of(struct hbcache *c, uint32_t s)
{
	if (s != 0 && c->v[s - 1].used) {
		c->hits++;
		return &c->v[s - 1].e;
	}
	c->misses++;
	return NULL;
}

struct hbcache_entry *
hbcache_token(struct hbcache *c, const char *token)
{
	return entry_of(c, *slot_token(c, token));
}

struct hbcache_entry *
hbcache_id(struct hbcache *c, int64_t id)
{
	return entry_of(c, *slot_id(c, id));
}

void
hbcache_drop(struct hbcache *c, int64_t id)
{
	uint32_t s = *slot_id(c, id);

	if (s != 0 && c->v[s - 1].used)
		entry_forget(c, &c->v[s - 1]);
}

/* The order of the engine's read (heartbeat_read: by state's text, id). */
static int
row_cmp(const void *a, const void *b)
{
	const struct rc_row *x = a, *y = b;
	int d = strcmp(session_state_str(x->state), session_state_str(y->state));

	return d != 0 ? d : (x->id > y->id) - (x->id < y->id);
}

/* Entry slot for id, made if new; NULL if out of memory. */
static struct slot_entry *
entry_slot(struct hbcache *c, int64_t id)
{
	uint32_t *s = slot_id(c, id);
	struct slot_entry *v;

	if (*s != 0)
		return &c->v[*s - 1];
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;

		if ((v = realloc(c->v, cap * sizeof(*v))) == NULL)
			return NULL;
		c->v = v;
		c->cap = cap;
	}
	if (2 * c->cap > c->nslots) {
		size_t nslots = c->nslots;

		while (2 * c->cap > nslots)
			nslots *= 2;
		if (reindex(c, nslots) != 0)
			return NULL;
		s = slot_id(c, id);
	}
	v = &c->v[c->n];
	memset(v, 0, sizeof(*v));
	v->e.id = id;
	*s = (uint32_t)++c->n;
	return v;
}

struct hbcache_entry *
hbcache_put(struct hbcache *c, int64_t id, const char *token, const char *name,
    enum server_state state, enum admin_state admin, const struct rc_row *rows,
    size_t nrows)
{
	struct slot_entry *s;
	struct rc_row *copy = NULL;
	uint32_t *t;

	hbcache_drop(c, id);
	if (token != NULL && strlen(token) >= HBCACHE_TOKEN_MAX)
		return NULL;
	if (rows != NULL && (nrows > c->max_rows - c->rows ||
	    (copy = malloc((nrows ? nrows : 1) * sizeof(*copy))) == NULL))
		return NULL;
	if ((s = entry_slot(c, id)) == NULL) {
		free(copy);
		return NULL;
	}
	if (token != NULL && token[0] != '\0' && strcmp(s->e.token, token) != 0) {
		if (s->e.token[0] != '\0') {	/* another token: not this one's */
			free(copy);
			return NULL;
		}
		t = slot_token(c, token);
		if (*t != 0)		/* was another server's: it no longer is */
			c->v[*t - 1].e.token[0] = '\0';
		util_strlcpy(s->e.token, token, sizeof(s->e.token));
		*t = (uint32_t)(s - c->v) + 1;
	}
	util_strlcpy(s->e.name, name, sizeof(s->e.name));
	s->e.state = state;
	s->e.admin = admin;
	s->e.no_commands = 0;
	s->e.rows_known = rows != NULL;
	if (rows != NULL) {
		memcpy(copy, rows, nrows * sizeof(*copy));
		qsort(copy, nrows, sizeof(*copy), row_cmp);
		s->e.rows = copy;
		s->e.nrows = nrows;
		c->rows += nrows;
	}
	s->used = 1;
	return &s->e;
}

void
hbcache_apply(struct hbcache *c, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_plan *plan)
{
	uint32_t s = *slot_id(c, id);
	struct hbcache_entry *e;
	size_t keep = 0;

	if (s == 0 || !c->v[s - 1].used)
		return;
	e = &c->v[s - 1].e;
	if (plan->transition == RC_DOWN) {
		hbcache_drop(c, id);
		return;
	}
	if (plan->transition == RC_UP)
		e->state = SERVER_UP;
	if (plan->nchanges == 0)
		return;
	if (!e->rows_known) {
		hbcache_drop(c, id);
		return;
	}
	for (size_t i = 0; i < plan->nchanges; i++) {
		const struct rc_change *ch = &plan->changes[i];
		struct rc_row *w = NULL;

		if (ch->op == RC_INSERT) {	/* its row id is the engine's */
			hbcache_drop(c, id);
			return;
		}
		for (size_t j = 0; j < e->nrows && w == NULL; j++)
			if (e->rows[j].id == ch->row_id)
				w = &e->rows[j];
		if (w == NULL) {
			hbcache_drop(c, id);
			return;
		}
		if (ch->op == RC_END)
			w->state = SESSION_ENDED;
		else {
			w->state = ch->state;
			util_strlcpy(w->remote_id, hb->sessions[ch->session].id,
			    sizeof(w->remote_id));
		}
	}
	for (size_t j = 0; j < e->nrows; j++)	/* ended rows are not read */
		if (e->rows[j].state != SESSION_ENDED)
			e->rows[keep++] = e->rows[j];
	c->rows -= e->nrows - keep;
	e->nrows = keep;
	qsort(e->rows, e->nrows, sizeof(*e->rows), row_cmp);
}

size_t
hbcache_count(const struct hbcache *c)
{
	size_t k = 0;

	for (size_t i = 0; i < c->n; i++)
		k += c->v[i].used;
	return k;
}

void
hbcache_stats(const struct hbcache *c, uint64_t *hits, uint64_t *misses)
{
	*hits = c->hits;
	*misses = c->misses;
}
