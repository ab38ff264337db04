/* plindex.c: a binary heap of candidate slots with their positions (an
 * update sifts one slot), walked best-first past quarantined servers. */
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "broker/state/plindex.h"

#define NONE		((size_t)-1)
#define WALK_MAX	64	/* quarantined servers skipped before a full pass */
#define RECONNECT_MAX	64	/* a user's sessions handled on the fast path */

struct plindex {
	const struct pl_server *sv;
	size_t n, cap;
	int penalty, built;
	size_t *heap, nheap;		/* slots, placement_cmp order */
	size_t *pos;			/* slot -> heap index, or NONE */
};

struct plindex *
plindex_new(void)
{
	return calloc(1, sizeof(struct plindex));
}

void
plindex_free(struct plindex *ix)
{
	if (ix == NULL)
		return;
	free(ix->heap);
	free(ix->pos);
	free(ix);
}

/* Slot a before slot b: placement's order, then the array's (placement_pick
 * keeps the first of equals). */
static int
before(const struct plindex *ix, size_t a, size_t b)
{
	int c = placement_cmp(&ix->sv[a], &ix->sv[b], ix->penalty);

	return c != 0 ? c < 0 : a < b;
}

static void
put(struct plindex *ix, size_t k, size_t slot)
{
	ix->heap[k] = slot;
	ix->pos[slot] = k;
}

static void
sift_up(struct plindex *ix, size_t k)
{
	size_t slot = ix->heap[k];

	while (k > 0 && before(ix, slot, ix->heap[(k - 1) / 2])) {
		put(ix, k, ix->heap[(k - 1) / 2]);
		k = (k - 1) / 2;
	}
	put(ix, k, slot);
}

static void
sift_down(struct plindex *ix, size_t k)
{
	size_t slot = ix->heap[k];

	for (;;) {
		size_t c = 2 * k + 1;

		if (c >= ix->nheap)
			break;
		if (c + 1 < ix->nheap && before(ix, ix->heap[c + 1], ix->heap[c]))
			c++;
		if (!before(ix, ix->heap[c], slot))
			break;
		put(ix, k, ix->heap[c]);
		k = c;
	}
	put(ix, k, slot);
}

int
plindex_build(struct plindex *ix, const struct pl_server *sv, size_t n, int penalty)
{
	ix->built = 0;
	ix->nheap = 0;
	ix->sv = sv;
	ix->n = n;
	ix->penalty = penalty;
	if (n > ix->cap) {
		size_t *h = realloc(ix->heap, n * sizeof(*h)), *p;

		if (h != NULL)
			ix->heap = h;
		if (h == NULL || (p = realloc(ix->pos, n * sizeof(*p))) == NULL)
			return -1;
		ix->pos = p;
		ix->cap = n;
	}
	for (size_t i = 0; i < n; i++) {
		ix->pos[i] = NONE;
		if (placement_open(&sv[i])) {
			ix->pos[i] = ix->nheap;
			ix->heap[ix->nheap++] = i;
		}
	}
	for (size_t k = ix->nheap / 2; k-- > 0;)
		sift_down(ix, k);
	ix->built = 1;
	return 0;
}

void
plindex_update(struct plindex *ix, const struct pl_server *sv, size_t i)
{
	size_t k, slot;

	if (ix == NULL || !ix->built || sv != ix->sv || i >= ix->n)
		return;
	k = ix->pos[i];
	if (!placement_open(&sv[i])) {
		if (k == NONE)
			return;
		ix->pos[i] = NONE;
		if (k == --ix->nheap)
			return;
		put(ix, k, ix->heap[ix->nheap]);	/* the last one fills the gap */
	} else if (k == NONE) {
		k = ix->nheap++;
		put(ix, k, i);
	}
	slot = ix->heap[k];
	sift_up(ix, k);
	sift_down(ix, ix->pos[slot]);
}

ssize_t
plindex_find(const struct pl_server *sv, size_t n, int64_t id)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (sv[mid].id == id)
			return (ssize_t)mid;
		if (sv[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* The user's reconnect: placement_pick's over the servers of its sessions
 * alone (it reads no other). 1 with *out, 0 if none, -1 if there are too
 * many sessions to do so here. */
static int
pick_reconnect(const struct plindex *ix, const struct pl_input *in, struct pl_decision *out)
{
	struct pl_server sub[RECONNECT_MAX];
	size_t slot[RECONNECT_MAX], m = 0;
	struct pl_decision d;

	if (in->nsessions > RECONNECT_MAX)
		return -1;
	for (size_t i = 0; i < in->nsessions; i++) {
		ssize_t k = plindex_find(ix->sv, ix->n, in->sessions[i].server_id);

		if (k >= 0) {
			sub[m] = ix->sv[k];
			slot[m++] = (size_t)k;
		}
	}
	struct pl_input si = { sub, m, in->sessions, in->nsessions, in->pending_penalty };
	if (m == 0 || placement_pick(&si, &d) != 0 || !d.reconnect)
		return 0;
	out->server = slot[d.server];
	out->reconnect = 1;
	out->session = d.session;
	return 1;
}

/* The frontier of the best-first walk: heap indices, a small heap itself. */
struct walk {
	size_t k[2 * WALK_MAX + 4];
	size_t n;
};

static void
walk_push(const struct plindex *ix, struct walk *w, size_t k)
{
	size_t j = w->n++;

	while (j > 0 && before(ix, ix->heap[k], ix->heap[w->k[(j - 1) / 2]])) {
		w->k[j] = w->k[(j - 1) / 2];
		j = (j - 1) / 2;
	}
	w->k[j] = k;
}

static size_t
walk_pop(const struct plindex *ix, struct walk *w)
{
	size_t top = w->k[0], last = w->k[--w->n], j = 0;

	for (;;) {
		size_t c = 2 * j + 1;

		if (c >= w->n)
			break;
		if (c + 1 < w->n && before(ix, ix->heap[w->k[c + 1]], ix->heap[w->k[c]]))
			c++;
		if (!before(ix, ix->heap[w->k[c]], ix->heap[last]))
			break;
		w->k[j] = w->k[c];
		j = c;
	}
	w->k[j] = last;
	return top;
}

int
plindex_pick(struct plindex *ix, const struct pl_input *in, struct pl_decision *out)
{
	struct walk w = { .n = 0 };
	int r, skipped = 0;

	if (ix == NULL || !ix->built || in->servers != ix->sv || in->nservers != ix->n ||
	    (in->pending_penalty != ix->penalty &&
	    plindex_build(ix, in->servers, in->nservers, in->pending_penalty) != 0))
		return placement_pick(in, out);
	if (in->nsessions > 0 && (r = pick_reconnect(ix, in, out)) != 0)
		return r > 0 ? 0 : placement_pick(in, out);
	/* the least loaded candidate that is not quarantined */
	if (ix->nheap > 0)
		walk_push(ix, &w, 0);
	while (w.n > 0) {
		size_t k = walk_pop(ix, &w), slot = ix->heap[k];

		if (!ix->sv[slot].quarantined) {
			out->server = slot;
			out->reconnect = 0;
			out->session = 0;
			return 0;
		}
		if (++skipped > WALK_MAX)
			break;
		if (2 * k + 1 < ix->nheap)
			walk_push(ix, &w, 2 * k + 1);
		if (2 * k + 2 < ix->nheap)
			walk_push(ix, &w, 2 * k + 2);
	}
	/* none (the refusal's reason), or many quarantined: the full pass */
	return placement_pick(in, out);
}
