/* lastseen.c: the bounded map of lastseen.h: two generations, each a dense
 * array of users with an open-addressing index (linear probing, FNV-1a of
 * the user); the servers' targets in one small table beside them. */
#include <stdlib.h>
#include <string.h>

#include "broker/common/util.h"
#include "broker/state/lastseen.h"

#define SLOTS	(2 * LASTSEEN_USERS)	/* a power of two: half full at most */

struct user_row {
	char user[WIRE_USER_MAX];
	char login[WIRE_USER_MAX];
	char domain[WIRE_USER_MAX];
	int64_t session_id, server_id, seen;
};

struct server_row {
	int64_t id;
	char name[WIRE_NAME_MAX];
	char address[WIRE_ADDR_MAX];
	char fqdn[WIRE_ADDR_MAX];
	int port;
};

struct generation {
	struct user_row *rows;		/* n used of LASTSEEN_USERS; NULL until used */
	uint32_t *index;		/* SLOTS: row + 1, 0 empty */
	size_t n;
};

struct lastseen {
	struct generation g[2];		/* g[0] the newer */
	struct server_row *sv;
	size_t nsv, capsv;
};

static size_t
hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h & (SLOTS - 1);
}

/* The index slot of user in g: its row's or the empty one where it goes. */
static uint32_t *
slot(const struct generation *g, const char *user)
{
	size_t i = hash(user);

	while (g->index[i] != 0 && strcmp(g->rows[g->index[i] - 1].user, user) != 0)
		i = (i + 1) & (SLOTS - 1);
	return &g->index[i];
}

static int
gen_alloc(struct generation *g)
{
	if (g->rows == NULL && (g->rows = malloc(LASTSEEN_USERS * sizeof(*g->rows))) == NULL)
		return -1;
	if (g->index == NULL && (g->index = calloc(SLOTS, sizeof(*g->index))) == NULL)
		return -1;
	return 0;
}

static const struct server_row *
server_find(const struct lastseen *ls, int64_t id)
{
	for (size_t i = 0; i < ls->nsv; i++)
		if (ls->sv[i].id == id)
			return &ls->sv[i];
	return NULL;
}

static int
server_put(struct lastseen *ls, const struct lastseen_entry *e)
{
	struct server_row *s = (struct server_row *)server_find(ls, e->r.server_id);

	if (s == NULL) {
		if (ls->nsv == ls->capsv) {
			size_t cap = ls->capsv ? ls->capsv * 2 : 16;
			void *a = realloc(ls->sv, cap * sizeof(*ls->sv));

			if (a == NULL)
				return -1;
			ls->sv = a;
			ls->capsv = cap;
		}
		s = &ls->sv[ls->nsv++];
		s->fqdn[0] = '\0';
	}
	s->id = e->r.server_id;
	util_strlcpy(s->name, e->r.server, sizeof(s->name));
	util_strlcpy(s->address, e->r.address, sizeof(s->address));
	if (e->fqdn[0] != '\0')	/* a route has none: keep a placement's */
		util_strlcpy(s->fqdn, e->fqdn, sizeof(s->fqdn));
	s->port = e->r.port;
	return 0;
}

/* Row r of a generation as an entry; -1 if its server is unknown. */
static int
entry_of(const struct lastseen *ls, const struct user_row *r, struct lastseen_entry *out)
{
	const struct server_row *s = server_find(ls, r->server_id);

	if (s == NULL)
		return -1;
	memset(out, 0, sizeof(*out));
	util_strlcpy(out->r.user, r->user, sizeof(out->r.user));
	util_strlcpy(out->r.login, r->login, sizeof(out->r.login));
	util_strlcpy(out->r.domain, r->domain, sizeof(out->r.domain));
	out->r.session_id = r->session_id;
	out->r.server_id = r->server_id;
	util_strlcpy(out->r.server, s->name, sizeof(out->r.server));
	util_strlcpy(out->r.address, s->address, sizeof(out->r.address));
	out->r.port = s->port;
	util_strlcpy(out->fqdn, s->fqdn, sizeof(out->fqdn));
	out->seen = r->seen;
	return 0;
}

struct lastseen *
lastseen_new(void)
{
	return calloc(1, sizeof(struct lastseen));
}

void
lastseen_free(struct lastseen *ls)
{
	if (ls == NULL)
		return;
	for (int i = 0; i < 2; i++) {
		free(ls->g[i].rows);
		free(ls->g[i].index);
	}
	free(ls->sv);
	free(ls);
}

int
lastseen_put(struct lastseen *ls, const struct lastseen_entry *e)
{
	struct generation *g = &ls->g[0];
	struct user_row *r;
	uint32_t *s;

	if (e->r.user[0] == '\0')
		return 0;
	if (gen_alloc(g) != 0 || server_put(ls, e) != 0)
		return -1;
	s = slot(g, e->r.user);
	if (*s == 0 && g->n == LASTSEEN_USERS) {
		/* the newer is full: it becomes the older, the older is dropped */
		struct generation old = ls->g[1];

		ls->g[1] = *g;
		*g = old;
		g->n = 0;
		if (gen_alloc(g) != 0)
			return -1;
		memset(g->index, 0, SLOTS * sizeof(*g->index));
		s = slot(g, e->r.user);
	}
	if (*s == 0)
		*s = (uint32_t)++g->n;
	r = &g->rows[*s - 1];
	util_strlcpy(r->user, e->r.user, sizeof(r->user));
	util_strlcpy(r->login, e->r.login, sizeof(r->login));
	util_strlcpy(r->domain, e->r.domain, sizeof(r->domain));
	r->session_id = e->r.session_id;
	r->server_id = e->r.server_id;
	r->seen = e->seen;
	return 0;
}

int
lastseen_get(const struct lastseen *ls, const char *user, struct lastseen_entry *out)
{
	for (int i = 0; i < 2; i++) {
		const struct generation *g = &ls->g[i];
		uint32_t *s;

		if (g->index == NULL || user[0] == '\0')
			continue;
		if (*(s = slot(g, user)) != 0)
			return entry_of(ls, &g->rows[*s - 1], out);
	}
	return -1;
}

int
lastseen_session(const struct lastseen *ls, int64_t session_id, struct lastseen_entry *out)
{
	for (int i = 0; i < 2; i++)
		for (size_t j = 0; j < ls->g[i].n; j++) {
			const struct user_row *r = &ls->g[i].rows[j];

			if (r->session_id != session_id)
				continue;
			/* an older generation's row of a user seen again since is stale */
			if (lastseen_get(ls, r->user, out) == 0 && out->r.session_id == session_id)
				return 0;
		}
	return -1;
}

size_t
lastseen_count(const struct lastseen *ls)
{
	return ls->g[0].n + ls->g[1].n;
}
