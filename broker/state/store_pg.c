/* store_pg.c: the PostgreSQL engine's own statements (store_pg.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/common/log.h"
#include "broker/state/sql_db.h"
#include "broker/state/states.h"
#include "broker/state/store.h"
#include "broker/state/store_pg.h"

/* An array literal ('{"a","b"}', '{1,2}') being built; p NULL after a
 * failed allocation. */
struct arr {
	char *p;
	size_t n, cap;
	int failed;
};

static void
arr_put(struct arr *a, const char *s, size_t len)
{
	char *q;

	if (a->failed)
		return;
	if (a->n + len + 3 > a->cap) {
		size_t cap = (a->cap ? a->cap * 2 : 256) + len;

		if ((q = realloc(a->p, cap)) == NULL) {
			a->failed = 1;
			return;
		}
		a->p = q;
		a->cap = cap;
	}
	memcpy(a->p + a->n, s, len);
	a->n += len;
	a->p[a->n] = '\0';
}

/* Appends s quoted ('"' and '\' escaped), with the separator before it. */
static void
arr_text(struct arr *a, const char *s)
{
	arr_put(a, a->n == 0 ? "{\"" : ",\"", 2);
	for (const char *c = s; *c != '\0'; c++) {
		if (*c == '"' || *c == '\\')
			arr_put(a, "\\", 1);
		arr_put(a, c, 1);
	}
	arr_put(a, "\"", 1);
}

static void
arr_int(struct arr *a, int64_t v)
{
	char buf[24];

	arr_put(a, a->n == 0 ? "{" : ",", 1);
	arr_put(a, buf, (size_t)snprintf(buf, sizeof(buf), "%" PRId64, v));
}

/* The literal (an empty array if nothing was added), or NULL if out of
 * memory. */
static const char *
arr_done(struct arr *a)
{
	arr_put(a, a->n == 0 ? "{}" : "}", a->n == 0 ? 2 : 1);
	return a->failed ? NULL : a->p;
}

/* Per kind of change, the columns as arrays. */
enum { A_ID, A_USER, A_LOGIN, A_DOMAIN, A_RID, A_STATE, A_COLS };

int
store_pg_changes_apply(struct store_db *d, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_plan *plan, int64_t now)
{
	struct arr ins[A_COLS], upd[A_COLS], end = { 0 };
	const char *iv[A_COLS], *uv[A_COLS], *ev;
	int nins = 0, nupd = 0, nend = 0, r = 0;

	memset(ins, 0, sizeof(ins));
	memset(upd, 0, sizeof(upd));
	for (size_t i = 0; i < plan->nchanges; i++) {
		const struct rc_change *c = &plan->changes[i];
		const struct wire_session *ws = &hb->sessions[c->session];
		struct arr *a = c->op == RC_INSERT ? ins : upd;

		if (c->op == RC_END) {
			arr_int(&end, c->row_id);
			nend++;
			continue;
		}
		if (c->op == RC_INSERT) {
			arr_text(&a[A_USER], c->user);
			nins++;
		} else {
			arr_int(&a[A_ID], c->row_id);
			nupd++;
		}
		arr_text(&a[A_LOGIN], ws->user);
		arr_text(&a[A_DOMAIN], ws->domain);
		arr_text(&a[A_RID], ws->id);
		arr_text(&a[A_STATE], session_state_str(c->state));
	}
	for (int k = 0; k < A_COLS; k++)
		if ((iv[k] = arr_done(&ins[k])) == NULL || (uv[k] = arr_done(&upd[k])) == NULL)
			r = STORE_ERR;
	if ((ev = arr_done(&end)) == NULL)
		r = STORE_ERR;
	if (r != 0) {
		log_error("out of memory");
		goto out;
	}
	if (nins > 0 && (r = sql_exec(d, sql_prep(d, "INSERT INTO sessions (server_id, "
	    "\"user\", login, domain, remote_id, state, created, updated) SELECT ?1, t.u, "
	    "t.l, t.d, t.r, t.s, ?2, ?2 FROM unnest(?3::text[], ?4::text[], ?5::text[], "
	    "?6::text[], ?7::text[]) AS t(u, l, d, r, s)", "IIttttt", id, now, iv[A_USER],
	    iv[A_LOGIN], iv[A_DOMAIN], iv[A_RID], iv[A_STATE]), NULL)) != 0)
		goto out;
	if (nupd > 0 && (r = sql_exec(d, sql_prep(d, "UPDATE sessions e SET state = t.s, "
	    "remote_id = t.r, login = t.l, domain = t.d, updated = ?1, expires = 0 FROM "
	    "unnest(?2::bigint[], ?3::text[], ?4::text[], ?5::text[], ?6::text[]) AS "
	    "t(id, s, r, l, d) WHERE e.id = t.id", "Ittttt", now, uv[A_ID], uv[A_STATE],
	    uv[A_RID], uv[A_LOGIN], uv[A_DOMAIN]), NULL)) != 0)
		goto out;
	if (nend > 0)
		r = sql_exec(d, sql_prep(d, "UPDATE sessions SET state = 'ended', updated = ?1 "
		    "WHERE id = ANY(?2::bigint[])", "It", now, ev), NULL);
 out:
	for (int k = 0; k < A_COLS; k++) {
		free(ins[k].p);
		free(upd[k].p);
	}
	free(end.p);
	return r;
}
