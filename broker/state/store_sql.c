/* store_sql.c: the SQL operations of store_engine.h that both engines share
 * (over sql_db.h: sqlite_db.c and pg_db.c), and the engines' tables: these
 * operations with each engine's connection and its own statements where
 * the dialects differ (store_pg.h). The rules are in store.c, placement.c
 * and reconcile.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/common/util.h"
#include "broker/common/wire.h"
#include "broker/state/pg_db.h"
#include "broker/state/sql_db.h"
#include "broker/state/sqlite_db.h"
#include "broker/state/states.h"
#include "broker/state/store_pg.h"

/* ---- sql_db.h: through the connection's operations ---- */

static const struct sql_ops *
ops(struct store_db *d)
{
	return ((const struct sql_db *)d)->ops;
}

struct sql_stmt *
sql_prep(struct store_db *d, const char *sql, const char *fmt, ...)
{
	struct sql_stmt *s;
	va_list ap;

	va_start(ap, fmt);
	s = ops(d)->prep(d, sql, fmt, ap);
	va_end(ap);
	return s;
}

int
sql_exec(struct store_db *d, struct sql_stmt *s, int *changes)
{
	return ops(d)->exec(d, s, changes);
}

int
sql_row(struct store_db *d, struct sql_stmt *s, struct cols cols, void *dst)
{
	return ops(d)->row(d, s, cols, dst);
}

int
sql_rows(struct store_db *d, struct sql_stmt *s, size_t elem, struct cols cols,
    void *out, size_t *n)
{
	return ops(d)->rows(d, s, elem, cols, out, n);
}

int
sql_each(struct store_db *d, struct sql_stmt *s, struct cols cols, void *buf,
    size_t elem, int (*each)(void *ctx, const void *row), void *ctx, size_t *rows)
{
	return ops(d)->each(d, s, cols, buf, elem, each, ctx, rows);
}

int64_t
sql_last_id(struct store_db *d)
{
	return ops(d)->last_id(d);
}

int
sql_col_text(const struct col *c, const char *t, void *p)
{
	switch (c->type) {
	case 'T': util_strlcpy(p, t ? t : "", c->size); return 0;
	case 'S': return server_state_parse(t, p);
	case 'A': return admin_state_parse(t, p);
	case 'E': return session_state_parse(t, p);
	case 'C': return command_state_parse(t, p);
	case 'K': return wire_command_kind_parse(t, p);
	}
	return -1;
}

#define EXEC(d, ...) sql_exec(d, sql_prep(d, __VA_ARGS__), NULL)


/* A single int64 or text column. */
struct one {
	int64_t v;
	char text[WIRE_ADDR_MAX];
};
static const struct col one_int[] = { COL('L', struct one, v) };
static const struct col one_text[] = { COL('T', struct one, text) };

static int
event_insert(struct store_db *d, int64_t now, const char *kind, const char *server,
    const char *user, const char *client, const char *detail, int64_t duration_us)
{
	return EXEC(d, "INSERT INTO events (ts, kind, server, \"user\", client, detail, "
	    "duration_us) VALUES (?, ?, ?, ?, ?, ?, ?)", "ItttttI", now, kind,
	    server ? server : "", user ? user : "", client ? client : "",
	    detail ? detail : "", duration_us);
}

/* ---- servers ---- */

#define SQL_SERVER_COLS \
    "SELECT s.id, s.name, s.address, s.fqdn, s.port, s.weight, s.max_sessions, " \
    "s.admin_state, s.state, s.state_reason, s.state_since, s.quarantined_until, " \
    "s.unconfirmed, s.last_confirmed, s.last_heartbeat, s.rdp_accepting, " \
    "s.agent_version, s.ncpu, s.cpu_percent, s.load1, s.mem_total_kb, " \
    "s.mem_available_kb, s.sessions_known, " \
    "(SELECT count(*) FROM sessions WHERE server_id = s.id AND state = 'active'), " \
    "(SELECT count(*) FROM sessions WHERE server_id = s.id AND state = 'disconnected'), " \
    "(SELECT count(*) FROM sessions WHERE server_id = s.id AND state = 'pending'), " \
    "(SELECT count(*) FROM sessions WHERE server_id = s.id AND state = 'lost') " \
    "FROM servers s "

#define SV(type, f) COL(type, struct store_server, f)
static const struct col server_cols[] = {
	SV('L', id), SV('T', name), SV('T', address), SV('T', fqdn), SV('I', port),
	SV('I', weight), SV('I', max_sessions), SV('A', admin_state), SV('S', state),
	SV('T', state_reason), SV('L', state_since), SV('L', quarantined_until),
	SV('I', unconfirmed), SV('L', last_confirmed), SV('L', last_heartbeat),
	SV('I', rdp_accepting), SV('T', agent_version), SV('I', ncpu),
	SV('D', cpu_percent), SV('D', load1), SV('L', mem_total_kb),
	SV('L', mem_available_kb), SV('I', sessions_known), SV('I', active),
	SV('I', disconnected), SV('I', pending), SV('I', lost),
};

static int
sq_server_add(struct store_db *d, const struct store_server *spec,
    const char *token_hash, int64_t now)
{
	int r;

	r = EXEC(d, "INSERT INTO servers (name, address, port, fqdn, weight, "
	    "max_sessions, token_hash, state_since, created) VALUES "
	    "(?, ?, ?, ?, ?, ?, ?, ?, ?)", "ttitiitII", spec->name, spec->address,
	    spec->port, spec->fqdn, spec->weight, spec->max_sessions, token_hash, now, now);
	return r;
}

static int
server_id(struct store_db *d, const char *name, int64_t *id)
{
	struct one o;
	int r;

	if ((r = sql_row(d, sql_prep(d, "SELECT id FROM servers WHERE name = ?", "t", name),
	    COLS(one_int), &o)) == 0)
		*id = o.v;
	return r;
}

/* The first row's single text column into out (n bytes). */
static int
text_row(struct store_db *d, struct sql_stmt *s, char *out, size_t n)
{
	struct one o;
	int r;

	if ((r = sql_row(d, s, COLS(one_text), &o)) == 0)
		util_strlcpy(out, o.text, n);
	return r;
}

static int
server_name(struct store_db *d, int64_t id, char *name, size_t n)
{
	return text_row(d, sql_prep(d, "SELECT name FROM servers WHERE id = ?", "I", id),
	    name, n);
}

static int
sq_server_remove(struct store_db *d, const char *name)
{
	int64_t id;
	int r;

	if ((r = server_id(d, name, &id)) == 0)
		r = EXEC(d, "DELETE FROM servers WHERE id = ?", "I", id);
	return r;
}

static int
sq_server_admin(struct store_db *d, const char *name, enum admin_state a, int64_t *id)
{
	int r;

	*id = 0;
	if ((r = server_id(d, name, id)) == 0)
		r = EXEC(d, "UPDATE servers SET admin_state = ? WHERE id = ?", "tI",
		    admin_state_str(a), *id);
	return r;
}

static int
sq_server_list(struct store_db *d, struct store_server **out, size_t *n)
{
	return sql_rows(d, sql_prep(d, SQL_SERVER_COLS "ORDER BY s.name", ""), sizeof(**out),
	    COLS(server_cols), out, n);
}

static int
sq_server_get(struct store_db *d, const char *name, struct store_server *out)
{
	return sql_row(d, sql_prep(d, SQL_SERVER_COLS "WHERE s.name = ?", "t", name),
	    COLS(server_cols), out);
}

static const struct col id_name_cols[] = { SV('L', id), SV('T', name) };

static int
sq_server_auth(struct store_db *d, const char *token_hash, int64_t *id, char *name,
    size_t namelen)
{
	struct store_server srv;
	int r;

	if ((r = sql_row(d, sql_prep(d, "SELECT id, name FROM servers WHERE token_hash = ?",
	    "t", token_hash), COLS(id_name_cols), &srv)) == 0) {
		*id = srv.id;
		util_strlcpy(name, srv.name, namelen);
	}
	return r;
}

/* Marks server id down: sessions lost, pending placements ended. No-op if
 * it is already down. */
static int
server_set_down(struct store_db *d, int64_t id, const char *reason, int64_t now,
    int *changed)
{
	int r;

	if ((r = sql_exec(d, sql_prep(d, "UPDATE servers SET state = 'down', "
	    "state_reason = ?, state_since = ? WHERE id = ? AND state != 'down'", "tII",
	    reason, now, id), changed)) != 0 || !*changed)
		return r;
	if ((r = EXEC(d, "UPDATE sessions SET state = 'lost', updated = ? WHERE "
	    "server_id = ? AND state IN ('active', 'disconnected')", "II", now, id)) != 0 ||
	    (r = EXEC(d, "UPDATE sessions SET state = 'ended', updated = ?, expires = 0 "
	    "WHERE server_id = ? AND state = 'pending'", "II", now, id)) != 0)
		return r;
	return 0;
}

static int
sq_server_down(struct store_db *d, int64_t id, const char *reason, int64_t now,
    char *name, int *changed)
{
	int r;

	*changed = 0;
	if ((r = server_name(d, id, name, WIRE_NAME_MAX)) == 0)
		r = server_set_down(d, id, reason, now, changed);
	return r;
}

/* Conditional on unconfirmed placements: of two stores quarantining at
 * once, the second finds them reset and changes nothing. */
static int
sq_server_quarantine(struct store_db *d, int64_t id, int64_t until, char *name,
    int *changed)
{
	int r;

	*changed = 0;
	if ((r = server_name(d, id, name, WIRE_NAME_MAX)) == 0)
		r = sql_exec(d, sql_prep(d, "UPDATE servers SET quarantined_until = ?, "
		    "unconfirmed = 0 WHERE id = ? AND unconfirmed > 0", "II", until, id),
		    changed);
	return r;
}

/* ---- heartbeats ---- */

static const struct col states_cols[] = { SV('S', state), SV('A', admin_state),
	SV('T', name) };
static const struct col rc_row_cols[] = {
	COL('L', struct rc_row, id), COL('T', struct rc_row, user),
	COL('T', struct rc_row, remote_id), COL('E', struct rc_row, state),
};

static int
sq_heartbeat_read(struct store_db *d, int64_t id, enum server_state *state,
    enum admin_state *admin, char *name, struct rc_row **rows, size_t *nrows)
{
	struct store_server srv;
	int r;

	if ((r = sql_row(d, sql_prep(d, "SELECT state, admin_state, name FROM servers WHERE "
	    "id = ?", "I", id), COLS(states_cols), &srv)) != 0)
		return r;
	*state = srv.state;
	*admin = srv.admin_state;
	util_strlcpy(name, srv.name, WIRE_NAME_MAX);
	if (rows == NULL)
		return 0;
	/* in the order of the index (hbcache.h keeps it) */
	return sql_rows(d, sql_prep(d, "SELECT id, \"user\", remote_id, state FROM sessions "
	    "WHERE server_id = ? AND state != 'ended' ORDER BY state, id", "I", id),
	    sizeof(**rows), COLS(rc_row_cols), rows, nrows);
}

/* One change of a plan. */
static int
change_apply(struct store_db *d, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_change *c, int64_t now)
{
	const struct wire_session *ws = &hb->sessions[c->session];

	switch (c->op) {
	case RC_INSERT:
		return EXEC(d, "INSERT INTO sessions (server_id, \"user\", login, domain, "
		    "remote_id, state, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		    "ItttttII", id, c->user, ws->user, ws->domain, ws->id,
		    session_state_str(c->state), now, now);
	case RC_UPDATE:
		return EXEC(d, "UPDATE sessions SET state = ?, remote_id = ?, login = ?, "
		    "domain = ?, updated = ?, expires = 0 WHERE id = ?", "ttttII",
		    session_state_str(c->state), ws->id, ws->user, ws->domain, now,
		    c->row_id);
	case RC_END:
		return EXEC(d, "UPDATE sessions SET state = 'ended', updated = ? "
		    "WHERE id = ?", "II", now, c->row_id);
	}
	return STORE_ERR;
}

/* The plan's changes one statement each (SQLite: no round trips). */
static int
changes_each(struct store_db *d, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_plan *plan, int64_t now)
{
	int r = 0;

	for (size_t i = 0; i < plan->nchanges && r == 0; i++)
		r = change_apply(d, id, hb, &plan->changes[i], now);
	return r;
}

/* The beat's load and health, the plan's session changes by changes(), the
 * placements it confirmed. */
static int
heartbeat_apply(struct store_db *d, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_plan *plan, const char *reason, int64_t now,
    int (*changes)(struct store_db *, int64_t, const struct wire_heartbeat *,
    const struct rc_plan *, int64_t))
{
	int r, changed;

	r = EXEC(d, "UPDATE servers SET last_heartbeat = ?, rdp_accepting = ?, "
	    "agent_version = ?, ncpu = ?, cpu_percent = ?, load1 = ?, mem_total_kb = ?, "
	    "mem_available_kb = ?, sessions_known = ? WHERE id = ?", "IitiddIIiI",
	    now, hb->rdp_accepting, hb->version, hb->ncpu, hb->cpu_percent, hb->load1,
	    hb->mem_total_kb, hb->mem_available_kb, hb->sessions_known, id);
	if (r == 0 && plan->transition == RC_UP)
		r = EXEC(d, "UPDATE servers SET state = 'up', state_reason = ?, "
		    "state_since = ? WHERE id = ?", "tII", reason, now, id);
	else if (r == 0 && plan->transition == RC_DOWN)
		r = server_set_down(d, id, reason, now, &changed);
	if (r == 0 && plan->nchanges > 0)
		r = changes(d, id, hb, plan, now);
	if (r == 0 && plan->confirmed > 0)
		r = EXEC(d, "UPDATE servers SET last_confirmed = ?, unconfirmed = 0 "
		    "WHERE id = ?", "II", now, id);
	return r;
}

static int
sq_heartbeat_apply(struct store_db *d, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_plan *plan, const char *reason, int64_t now)
{
	return heartbeat_apply(d, id, hb, plan, reason, now, changes_each);
}

static int
pg_heartbeat_apply(struct store_db *d, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_plan *plan, const char *reason, int64_t now)
{
	return heartbeat_apply(d, id, hb, plan, reason, now, store_pg_changes_apply);
}

/* ---- placement ---- */

/* The servers' placement inputs (all, or WHERE id = ?2) with their counts
 * at ?1, in id order: index lookups per server (sessions_server). */
#define SQL_LOAD(where) "SELECT s.id, s.name, s.state, s.admin_state, " \
    "s.quarantined_until, s.weight, s.max_sessions, s.cpu_percent, (SELECT count(*) " \
    "FROM sessions WHERE server_id = s.id AND state IN ('active', 'disconnected')), " \
    "(SELECT count(*) FROM sessions WHERE server_id = s.id AND state = 'pending' AND " \
    "expires > ?1), (SELECT coalesce(min(expires), 9223372036854775807) FROM sessions " \
    "WHERE server_id = s.id AND state = 'pending' AND expires > ?1) FROM servers s " \
    where " ORDER BY s.id"

#define LD(type, f) COL(type, struct store_load, f)
static const struct col load_cols[] = {
	LD('L', id), LD('T', name), LD('S', state), LD('A', admin), LD('L', quarantined_until),
	LD('I', weight), LD('I', max_sessions), LD('D', cpu_percent), LD('I', sessions),
	LD('I', pending), LD('L', min_expires),
};

/* The caller's each of sq_load, called with the typed row. */
struct load_each {
	int (*each)(void *ctx, const struct store_load *w);
	void *ctx;
};

static int
load_row(void *ctx, const void *row)
{
	const struct load_each *l = ctx;

	return l->each(l->ctx, row);
}

static int
sq_load(struct store_db *d, int64_t id, int64_t now,
    int (*each)(void *ctx, const struct store_load *w), void *ctx)
{
	struct load_each l = { each, ctx };
	struct store_load w;
	size_t rows;
	int r;

	r = sql_each(d, id ? sql_prep(d, SQL_LOAD("WHERE s.id = ?2"), "II", now, id) :
	    sql_prep(d, SQL_LOAD(""), "I", now), COLS(load_cols), &w, sizeof(w),
	    load_row, &l, &rows);
	return r == 0 && id != 0 && rows == 0 ? STORE_NOT_FOUND : r;
}

static const struct col pl_session_cols[] = {
	COL('L', struct pl_session, id), COL('L', struct pl_session, server_id),
	COL('E', struct pl_session, state), COL('L', struct pl_session, updated),
};

static int
sq_user_sessions(struct store_db *d, const char *user, int64_t now,
    struct pl_session **out, size_t *n)
{
	return sql_rows(d, sql_prep(d, "SELECT id, server_id, state, updated FROM sessions "
	    "WHERE \"user\" = ?1 AND (state IN ('active', 'disconnected') OR (state = "
	    "'pending' AND expires > ?2))", "tI", user, now), sizeof(**out),
	    COLS(pl_session_cols), out, n);
}

static int
sq_placement_insert(struct store_db *d, int64_t server_id,
    const struct store_place_request *req, int64_t *session_id)
{
	int r;

	r = EXEC(d, "INSERT INTO sessions (server_id, \"user\", login, domain, state, "
	    "client, created, updated, expires) VALUES (?, ?, ?, ?, 'pending', ?, "
	    "?, ?, ?)", "IttttIII", server_id, req->user, req->login, req->domain,
	    req->client, req->now, req->now, req->now + req->pending_ttl_ms);
	if (r == 0)
		*session_id = sql_last_id(d);
	return r;
}

static int
sq_placement_refresh(struct store_db *d, int64_t session_id,
    const struct store_place_request *req)
{
	return EXEC(d, "UPDATE sessions SET client = ?, updated = ?, expires = "
	    "CASE state WHEN 'pending' THEN ? ELSE expires END WHERE id = ?",
	    "tIII", req->client, req->now, req->now + req->pending_ttl_ms, session_id);
}

#define PR(type, f) COL(type, struct store_place_result, f)
static const struct col target_cols[] = {
	PR('T', server), PR('T', address), PR('T', fqdn), PR('I', port),
};

static int
sq_placement_target(struct store_db *d, int64_t server_id, struct store_place_result *out)
{
	return sql_row(d, sql_prep(d, "SELECT name, address, fqdn, port FROM servers WHERE "
	    "id = ?", "I", server_id), COLS(target_cols), out);
}

/* Ends the pending placements expired by now, marking them (expires
 * negated) so that the events and unconfirmed counts below are of the rows
 * this transaction ended: another store expiring at the same time waits on
 * those rows and then skips them (no longer pending), so each placement
 * expires, is counted and is reported once. */
static int
sq_pending_expire(struct store_db *d, int64_t now, int *expired)
{
	int r;

	*expired = 0;
	r = sql_exec(d, sql_prep(d, "UPDATE sessions SET state = 'ended', updated = ?1, "
	    "expires = -expires WHERE state = 'pending' AND expires <= ?1 AND expires > 0",
	    "I", now), expired);
	if (r == 0 && *expired > 0)
		r = EXEC(d, "INSERT INTO events (ts, kind, server, \"user\", client, detail) "
		    "SELECT ?1, 'pending_expired', v.name, s.user, s.client, "
		    "'placement not confirmed by the agent' FROM sessions s JOIN servers v "
		    "ON v.id = s.server_id WHERE s.state = 'ended' AND s.expires < 0 "
		    "ORDER BY s.id", "I", now);
	if (r == 0 && *expired > 0)
		r = EXEC(d, "UPDATE servers SET unconfirmed = unconfirmed + (SELECT "
		    "count(*) FROM sessions WHERE server_id = servers.id AND state = "
		    "'ended' AND expires < 0) WHERE id IN (SELECT server_id FROM "
		    "sessions WHERE state = 'ended' AND expires < 0)", "");
	if (r == 0 && *expired > 0)
		r = EXEC(d, "UPDATE sessions SET expires = -expires WHERE state = 'ended' "
		    "AND expires < 0", "");
	return r;
}

/* ---- routing and sessions ---- */

/* A route and its session's expiry (store.c decides whether it is live). */
struct route_row {
	struct store_route rt;
	int64_t expires;
};
#define RT(type, f) COL(type, struct route_row, rt.f)
static const struct col route_cols[] = {
	RT('L', session_id), RT('T', user), RT('T', login), RT('T', domain),
	RT('E', session_state), RT('L', server_id), RT('T', server), RT('T', address),
	RT('I', port), RT('S', server_state), COL('L', struct route_row, expires),
	RT('T', remote_id),
};

static int
sq_session_route(struct store_db *d, int64_t session_id, int64_t *expires,
    struct store_route *out)
{
	struct route_row w;
	int r;

	memset(&w, 0, sizeof(w));
	if ((r = sql_row(d, sql_prep(d, "SELECT e.id, e.user, e.login, e.domain, e.state, "
	    "v.id, v.name, v.address, v.port, v.state, e.expires, e.remote_id FROM "
	    "sessions e JOIN servers v ON v.id = e.server_id WHERE e.id = ?", "I", session_id),
	    COLS(route_cols), &w)) == 0) {
		*out = w.rt;
		*expires = w.expires;
	}
	return r;
}

#define SE(type, f) COL(type, struct store_session, f)
static const struct col session_cols[] = {
	SE('L', id), SE('T', server), SE('T', user), SE('T', login), SE('T', domain),
	SE('T', remote_id), SE('E', state), SE('T', client), SE('T', desk),
	SE('I', desk_known), SE('L', created), SE('L', updated), SE('L', expires),
};

static int
sq_session_list(struct store_db *d, const struct store_session_filter *f,
    struct store_session **out, size_t *n)
{
	/* the desk: of the session's latest row of the trail */
	return sql_rows(d, sql_prep(d, "SELECT e.id, v.name, e.user, e.login, e.domain, "
	    "e.remote_id, e.state, e.client, coalesce(t.desk, ''), coalesce(t.desk_known, "
	    "0), e.created, e.updated, e.expires FROM sessions e JOIN servers v ON v.id = "
	    "e.server_id LEFT JOIN desk_trail t ON t.id = (SELECT max(id) FROM desk_trail "
	    "WHERE session_id = e.id) WHERE (?1 = '' OR e.user = ?1) AND (?2 = '' OR "
	    "v.name = ?2) AND ((?3 = '' AND e.state != 'ended') OR e.state = ?3) AND (?4 "
	    "= '' OR (t.desk_known = 1 AND lower(t.desk) = lower(?4))) ORDER BY e.updated "
	    "DESC, e.id DESC LIMIT 100000",
	    "tttt", f->user ? f->user : "", f->server ? f->server : "",
	    f->state ? session_state_str(*f->state) : "", f->desk ? f->desk : ""),
	    sizeof(**out), COLS(session_cols), out, n);
}

static int
sq_session_forget(struct store_db *d, int64_t id, int64_t now)
{
	char detail[64];
	int r, changed;

	r = sql_exec(d, sql_prep(d, "UPDATE sessions SET state = 'ended', updated = ? "
	    "WHERE id = ? AND state != 'ended'", "II", now, id), &changed);
	if (r == 0 && !changed)
		r = STORE_NOT_FOUND;
	snprintf(detail, sizeof(detail), "session %lld forgotten", (long long)id);
	if (r == 0)
		r = EXEC(d, "INSERT INTO events (ts, kind, server, \"user\", detail) SELECT "
		    "?, 'forget', v.name, e.user, ? FROM sessions e JOIN servers v ON "
		    "v.id = e.server_id WHERE e.id = ?", "ItI", now, detail, id);
	return r;
}

/* ---- the desk trail ---- */

static int
sq_trail_add(struct store_db *d, int64_t session_id, int reconnect, const char *server,
    const struct store_place_request *req)
{
	if (server != NULL)	/* a new placement: its row's values, no join */
		return EXEC(d, "INSERT INTO desk_trail (ts, \"user\", login, desk, "
		    "desk_known, client, server, session_id, reconnect) VALUES (?, ?, ?, ?, "
		    "?, ?, ?, ?, ?)", "ItttittIi", req->now, req->user, req->login,
		    req->desk ? req->desk : "", req->desk != NULL, req->client ? req->client : "",
		    server, session_id, reconnect);
	return EXEC(d, "INSERT INTO desk_trail (ts, \"user\", login, desk, desk_known, "
	    "client, server, session_id, reconnect) SELECT ?1, e.user, e.login, ?2, ?3, "
	    "?4, v.name, e.id, ?5 FROM sessions e JOIN servers v ON v.id = e.server_id "
	    "WHERE e.id = ?6", "ItitiI", req->now, req->desk ? req->desk : "",
	    req->desk != NULL, req->client ? req->client : "", reconnect, session_id);
}

#define TR(type, f) COL(type, struct store_trail, f)
static const struct col trail_cols[] = {
	TR('L', id), TR('L', ts), TR('T', user), TR('T', login), TR('T', desk),
	TR('I', desk_known), TR('T', client), TR('T', server), TR('L', session_id),
	TR('I', reconnect),
};

static int
sq_trail_list(struct store_db *d, const char *user, int limit, struct store_trail **out,
    size_t *n)
{
	return sql_rows(d, sql_prep(d, "SELECT id, ts, \"user\", login, desk, desk_known, "
	    "client, server, session_id, reconnect FROM desk_trail WHERE \"user\" = ? "
	    "ORDER BY ts DESC, id DESC LIMIT ?", "ti", user, limit < 1 ? 1 : limit),
	    sizeof(**out), COLS(trail_cols), out, n);
}

/* Of several stores deleting at once, a row goes to one of them: the
 * others find it gone (PostgreSQL re-checks the rows it waited for). */
static int
sq_trail_prune(struct store_db *d, int64_t before_ms, int limit, int *pruned)
{
	return sql_exec(d, sql_prep(d, "DELETE FROM desk_trail WHERE id IN (SELECT id FROM "
	    "desk_trail WHERE ts < ? ORDER BY id LIMIT ?)", "Ii", before_ms, limit), pruned);
}

/* ---- events ---- */

#define EV(type, f) COL(type, struct store_event, f)
static const struct col event_cols[] = {
	EV('L', id), EV('L', ts), EV('T', kind), EV('T', server), EV('T', user),
	EV('T', client), EV('T', detail), EV('L', duration_us),
};

static int
sq_event_list(struct store_db *d, int64_t since_id, int limit, struct store_event **out,
    size_t *n)
{
	return sql_rows(d, sql_prep(d, "SELECT id, ts, kind, server, \"user\", client, detail, "
	    "duration_us FROM events WHERE id > ? ORDER BY id DESC LIMIT ?", "Ii",
	    since_id, limit < 1 ? 1 : limit), sizeof(**out), COLS(event_cols), out, n);
}

static int
sq_event_prune(struct store_db *d, int64_t before_ms, int keep)
{
	int r;

	r = EXEC(d, "DELETE FROM events WHERE ts < ? OR id <= (SELECT id FROM events "
	    "ORDER BY id DESC LIMIT 1 OFFSET ?)", "Ii", before_ms, keep);
	if (r == 0)
		r = EXEC(d, "DELETE FROM sessions WHERE state = 'ended' AND updated < ?",
		    "I", before_ms);
	if (r == 0)
		r = EXEC(d, "DELETE FROM commands WHERE updated < ? AND state NOT IN "
		    "('queued', 'sent')", "I", before_ms);
	return r;
}

/* ---- admin credentials and tokens ---- */

static int
sq_admin_password_set(struct store_db *d, const char *hash, int64_t now)
{
	int r;

	r = EXEC(d, "INSERT INTO admin (id, password_hash, updated) VALUES (1, ?, ?) "
	    "ON CONFLICT (id) DO UPDATE SET password_hash = excluded.password_hash, "
	    "updated = excluded.updated", "tI", hash, now);
	return r;
}

static int
sq_admin_password_get(struct store_db *d, char *hash, size_t n)
{
	return text_row(d, sql_prep(d, "SELECT password_hash FROM admin WHERE id = 1", ""),
	    hash, n);
}

static int
sq_admin_token_add(struct store_db *d, const char *name, const char *token_hash,
    int64_t now)
{
	int r;

	r = EXEC(d, "INSERT INTO admin_tokens (name, token_hash, created) VALUES "
	    "(?, ?, ?)", "ttI", name, token_hash, now);
	return r;
}

#define AT(type, f) COL(type, struct store_admin_token, f)
static const struct col token_cols[] = { AT('T', name), AT('L', created), AT('L', last_used) };

static int
sq_admin_token_auth(struct store_db *d, const char *token_hash, int64_t now,
    char *name, size_t namelen)
{
	struct store_admin_token t;
	int r;

	r = sql_row(d, sql_prep(d, "SELECT name, created, last_used FROM admin_tokens "
	    "WHERE token_hash = ?", "t", token_hash), COLS(token_cols), &t);
	if (r == 0 && now - t.last_used >= 60000)
		r = EXEC(d, "UPDATE admin_tokens SET last_used = ? WHERE token_hash = ?",
		    "It", now, token_hash);
	if (r == 0)
		util_strlcpy(name, t.name, namelen);
	return r;
}

static int
sq_admin_token_list(struct store_db *d, struct store_admin_token **out, size_t *n)
{
	return sql_rows(d, sql_prep(d, "SELECT name, created, last_used FROM admin_tokens "
	    "ORDER BY name", ""), sizeof(**out), COLS(token_cols), out, n);
}

static int
sq_admin_token_remove(struct store_db *d, const char *name)
{
	int r, changed;

	r = sql_exec(d, sql_prep(d, "DELETE FROM admin_tokens WHERE name = ?", "t", name),
	    &changed);
	return r == 0 && !changed ? STORE_NOT_FOUND : r;
}

/* ---- admin browser sessions ---- */

#define AS(type, f) COL(type, struct store_admin_session, f)
static const struct col admin_session_cols[] = { AS('T', id_hash), AS('T', client),
	AS('L', created), AS('L', last_used) };

static int
sq_admin_session_add(struct store_db *d, const struct store_admin_session *s, int keep)
{
	int r;

	r = EXEC(d, "INSERT INTO admin_sessions (id_hash, client, created, last_used) "
	    "VALUES (?, ?, ?, ?)", "ttII", s->id_hash, s->client, s->created, s->last_used);
	if (r == 0)
		r = EXEC(d, "DELETE FROM admin_sessions WHERE id_hash NOT IN (SELECT id_hash "
		    "FROM admin_sessions ORDER BY last_used DESC, created DESC LIMIT ?)", "i",
		    keep);
	return r;
}

static int
sq_admin_session_get(struct store_db *d, const char *id_hash,
    struct store_admin_session *out)
{
	return sql_row(d, sql_prep(d, "SELECT id_hash, client, created, last_used FROM "
	    "admin_sessions WHERE id_hash = ?", "t", id_hash), COLS(admin_session_cols), out);
}

static int
sq_admin_session_touch(struct store_db *d, const char *id_hash, int64_t now)
{
	return EXEC(d, "UPDATE admin_sessions SET last_used = ? WHERE id_hash = ? AND "
	    "last_used < ?", "ItI", now, id_hash, now);
}

static int
sq_admin_session_remove(struct store_db *d, const char *id_hash)
{
	int r, changed;

	r = sql_exec(d, sql_prep(d, "DELETE FROM admin_sessions WHERE id_hash = ?", "t",
	    id_hash), &changed);
	return r == 0 && !changed ? STORE_NOT_FOUND : r;
}

static int
sq_admin_session_prune(struct store_db *d, int64_t idle_before, int64_t max_before,
    int *pruned)
{
	return sql_exec(d, sql_prep(d, "DELETE FROM admin_sessions WHERE last_used <= ? OR "
	    "created <= ?", "II", idle_before, max_before), pruned);
}

/* ---- history ---- */

static int
sq_history_claim(struct store_db *d, int64_t ts, int64_t span, int headroom, int *claimed)
{
	return sql_exec(d, sql_prep(d, "INSERT INTO history (ts, span, logons, reconnects, "
	    "refusals, redirect_p50_us, redirect_p99_us, headroom) SELECT ?1, ?2, "
	    "count(CASE WHEN kind = 'placement' THEN 1 END), "
	    "count(CASE WHEN kind = 'reconnect' THEN 1 END), "
	    "count(CASE WHEN kind = 'refusal' THEN 1 END), 0, 0, ?3 FROM events "
	    "WHERE ts >= ?1 AND ts < ?1 + ?2 ON CONFLICT (ts, span) DO NOTHING", "IIi",
	    ts, span, headroom), claimed);
}

static const struct col duration_cols[] = { { 'L', 0, sizeof(int64_t) } };

static int
sq_history_durations(struct store_db *d, int64_t ts, int64_t span, int64_t **out, size_t *n)
{
	return sql_rows(d, sql_prep(d, "SELECT duration_us FROM events WHERE ts >= ?1 AND "
	    "ts < ?1 + ?2 AND kind IN ('placement', 'reconnect') ORDER BY duration_us", "II",
	    ts, span), sizeof(**out), COLS(duration_cols), out, n);
}

static int
sq_history_fill(struct store_db *d, int64_t ts, int64_t span, int64_t p50_us, int64_t p99_us)
{
	int r;

	r = EXEC(d, "UPDATE history SET redirect_p50_us = ?3, redirect_p99_us = ?4 "
	    "WHERE ts = ?1 AND span = ?2", "IIII", ts, span, p50_us, p99_us);
	if (r == 0)
		r = EXEC(d, "INSERT INTO history_servers (ts, span, server, active, "
		    "disconnected, pending, lost) SELECT ?1, ?2, v.name, "
		    "count(CASE WHEN e.state = 'active' THEN 1 END), "
		    "count(CASE WHEN e.state = 'disconnected' THEN 1 END), "
		    "count(CASE WHEN e.state = 'pending' THEN 1 END), "
		    "count(CASE WHEN e.state = 'lost' THEN 1 END) FROM servers v "
		    "LEFT JOIN sessions e ON e.server_id = v.id AND e.state <> 'ended' "
		    "WHERE true GROUP BY v.name", "II", ts, span);
	return r;
}

#define HS(type, f) COL(type, struct store_sample, f)
static const struct col sample_cols[] = {
	HS('L', ts), HS('L', span), HS('I', logons), HS('I', reconnects), HS('I', refusals),
	HS('L', redirect_p50_us), HS('L', redirect_p99_us), HS('I', headroom),
};
#define HV(type, f) COL(type, struct store_sample_server, f)
static const struct col sample_server_cols[] = {
	HV('L', ts), HV('L', span), HV('T', server), HV('I', active), HV('I', disconnected),
	HV('I', pending), HV('I', lost),
};

static int
sq_history_list(struct store_db *d, int64_t since, int limit, struct store_sample **out,
    size_t *n)
{
	return sql_rows(d, sql_prep(d, "SELECT ts, span, logons, reconnects, refusals, "
	    "redirect_p50_us, redirect_p99_us, headroom FROM history WHERE ts >= ? "
	    "ORDER BY ts, span LIMIT ?", "Ii", since, limit < 1 ? 1 : limit),
	    sizeof(**out), COLS(sample_cols), out, n);
}

static int
sq_history_servers(struct store_db *d, int64_t from, int64_t to,
    struct store_sample_server **out, size_t *n)
{
	return sql_rows(d, sql_prep(d, "SELECT ts, span, server, active, disconnected, "
	    "pending, lost FROM history_servers WHERE ts >= ? AND ts <= ? "
	    "ORDER BY ts, span, server", "II", from, to), sizeof(**out),
	    COLS(sample_server_cols), out, n);
}

static int
sq_history_oldest_raw(struct store_db *d, int64_t before, int64_t span, int64_t *ts)
{
	struct one o;
	int r;

	if ((r = sql_row(d, sql_prep(d, "SELECT ts FROM history WHERE span < ? AND ts < ? "
	    "ORDER BY ts LIMIT 1", "II", span, before), COLS(one_int), &o)) == 0)
		*ts = o.v;
	return r;
}

static int
sq_history_merge(struct store_db *d, int64_t from, int64_t span)
{
	int r;

	r = EXEC(d, "INSERT INTO history (ts, span, logons, reconnects, refusals, "
	    "redirect_p50_us, redirect_p99_us, headroom) SELECT ?1, ?2, sum(logons), "
	    "sum(reconnects), sum(refusals), CAST(avg(redirect_p50_us) AS bigint), "
	    "max(redirect_p99_us), min(headroom) FROM history WHERE ts >= ?1 AND "
	    "ts < ?1 + ?2 AND span < ?2 HAVING count(*) > 0 "
	    "ON CONFLICT (ts, span) DO NOTHING", "II", from, span);
	if (r == 0)
		r = EXEC(d, "INSERT INTO history_servers (ts, span, server, active, "
		    "disconnected, pending, lost) SELECT ?1, ?2, server, "
		    "CAST(round(avg(active)) AS integer), "
		    "CAST(round(avg(disconnected)) AS integer), "
		    "CAST(round(avg(pending)) AS integer), CAST(round(avg(lost)) AS integer) "
		    "FROM history_servers WHERE ts >= ?1 AND ts < ?1 + ?2 AND span < ?2 "
		    "GROUP BY server ON CONFLICT (ts, span, server) DO NOTHING", "II", from, span);
	if (r == 0)
		r = EXEC(d, "DELETE FROM history_servers WHERE ts >= ?1 AND ts < ?1 + ?2 AND "
		    "span < ?2", "II", from, span);
	if (r == 0)
		r = EXEC(d, "DELETE FROM history WHERE ts >= ?1 AND ts < ?1 + ?2 AND "
		    "span < ?2", "II", from, span);
	return r;
}

static int
sq_history_delete(struct store_db *d, int64_t before, int batch, int *deleted)
{
	struct one o;
	int64_t cut = before;
	int r;

	/* at most batch samples: cut at the oldest one past them */
	r = sql_row(d, sql_prep(d, "SELECT ts FROM history WHERE ts < ? ORDER BY ts "
	    "LIMIT 1 OFFSET ?", "Ii", before, batch), COLS(one_int), &o);
	if (r == 0)
		cut = o.v;
	else if (r != STORE_NOT_FOUND)
		return r;
	if ((r = EXEC(d, "DELETE FROM history_servers WHERE ts < ?", "I", cut)) != 0)
		return r;
	return sql_exec(d, sql_prep(d, "DELETE FROM history WHERE ts < ?", "I", cut), deleted);
}

/* ---- commands to agents ---- */

#define CM(type, f) COL(type, struct store_command, f)
static const struct col command_cols[] = {
	CM('L', id), CM('L', session_id), CM('L', server_id), CM('T', server),
	CM('K', kind), CM('T', remote_id), CM('T', user), CM('T', actor), CM('C', state),
	CM('T', outcome), CM('L', created), CM('L', deadline), CM('L', updated),
};
#define SQL_COMMAND_COLS "SELECT c.id, c.session_id, c.server_id, v.name, c.kind, " \
    "c.remote_id, c.\"user\", c.actor, c.state, c.outcome, c.created, c.deadline, " \
    "c.updated FROM commands c JOIN servers v ON v.id = c.server_id "

static int
sq_command_insert(struct store_db *d, const struct store_command *c, int64_t *id)
{
	int r;

	r = EXEC(d, "INSERT INTO commands (session_id, server_id, kind, remote_id, \"user\", "
	    "actor, state, created, deadline, updated) VALUES (?, ?, ?, ?, ?, ?, 'queued', "
	    "?, ?, ?)", "IIttttIII", c->session_id, c->server_id,
	    wire_command_kind_str(c->kind), c->remote_id, c->user, c->actor, c->created,
	    c->deadline, c->created);
	if (r == 0)
		*id = sql_last_id(d);
	return r;
}

static int
sq_command_get(struct store_db *d, int64_t id, struct store_command *out)
{
	return sql_row(d, sql_prep(d, SQL_COMMAND_COLS "WHERE c.id = ?", "I", id),
	    COLS(command_cols), out);
}

static int
sq_command_pending(struct store_db *d, int64_t session_id, int64_t *id)
{
	struct one o;
	int r;

	if ((r = sql_row(d, sql_prep(d, "SELECT id FROM commands WHERE session_id = ? AND "
	    "state IN ('queued', 'sent') ORDER BY id LIMIT 1", "I", session_id),
	    COLS(one_int), &o)) == 0)
		*id = o.v;
	return r;
}

static int
sq_command_queued(struct store_db *d, int64_t server_id, int64_t now, size_t max,
    struct store_command **out, size_t *n)
{
	return sql_rows(d, sql_prep(d, SQL_COMMAND_COLS "WHERE c.server_id = ? AND "
	    "c.state = 'queued' AND c.deadline > ? ORDER BY c.id LIMIT ?", "IIi",
	    server_id, now, (int)max), sizeof(**out), COLS(command_cols), out, n);
}

static int
sq_command_overdue(struct store_db *d, int64_t now, int64_t grace_ms,
    struct store_command **out, size_t *n)
{
	return sql_rows(d, sql_prep(d, SQL_COMMAND_COLS "WHERE (c.state = 'queued' AND "
	    "c.deadline <= ?1) OR (c.state = 'sent' AND c.deadline <= ?2) ORDER BY c.id "
	    "LIMIT 1000", "II", now, now - grace_ms), sizeof(**out), COLS(command_cols),
	    out, n);
}

static int
sq_command_finish(struct store_db *d, int64_t id, int64_t server_id,
    enum command_state from, enum command_state to, const char *outcome, int64_t now,
    int *changed)
{
	return sql_exec(d, sql_prep(d, "UPDATE commands SET state = ?, outcome = ?, "
	    "updated = ? WHERE id = ? AND (? = 0 OR server_id = ?) AND state = ?",
	    "ttIIIIt", command_state_str(to), outcome, now, id, server_id, server_id,
	    command_state_str(from)), changed);
}

/* ---- settings ---- */

static int
sq_setting_get(struct store_db *d, const char *key, char *value, size_t n)
{
	return text_row(d, sql_prep(d, "SELECT value FROM settings WHERE key = ?", "t", key),
	    value, n);
}

static int
sq_setting_add(struct store_db *d, const char *key, const char *value, int64_t now,
    int *added)
{
	return sql_exec(d, sql_prep(d, "INSERT INTO settings (key, value, updated) VALUES "
	    "(?, ?, ?) ON CONFLICT (key) DO NOTHING", "ttI", key, value, now), added);
}

static int
sq_setting_set(struct store_db *d, const char *key, const char *value, int64_t now)
{
	return EXEC(d, "INSERT INTO settings (key, value, updated) VALUES (?, ?, ?) ON "
	    "CONFLICT (key) DO UPDATE SET value = excluded.value, updated = "
	    "excluded.updated", "ttI", key, value, now);
}

/* The operations both engines share, in each engine's table. */
#define SQL_OPS \
	.server_add = sq_server_add, \
	.server_remove = sq_server_remove, \
	.server_admin = sq_server_admin, \
	.server_list = sq_server_list, \
	.server_get = sq_server_get, \
	.server_auth = sq_server_auth, \
	.server_down = sq_server_down, \
	.server_quarantine = sq_server_quarantine, \
	.heartbeat_read = sq_heartbeat_read, \
	.load = sq_load, \
	.user_sessions = sq_user_sessions, \
	.placement_insert = sq_placement_insert, \
	.placement_refresh = sq_placement_refresh, \
	.placement_target = sq_placement_target, \
	.pending_expire = sq_pending_expire, \
	.session_route = sq_session_route, \
	.session_list = sq_session_list, \
	.session_forget = sq_session_forget, \
	.trail_add = sq_trail_add, \
	.trail_list = sq_trail_list, \
	.trail_prune = sq_trail_prune, \
	.event_add = event_insert, \
	.event_list = sq_event_list, \
	.event_prune = sq_event_prune, \
	.admin_password_set = sq_admin_password_set, \
	.admin_password_get = sq_admin_password_get, \
	.admin_token_add = sq_admin_token_add, \
	.admin_token_auth = sq_admin_token_auth, \
	.admin_token_list = sq_admin_token_list, \
	.admin_token_remove = sq_admin_token_remove, \
	.admin_session_add = sq_admin_session_add, \
	.admin_session_get = sq_admin_session_get, \
	.admin_session_touch = sq_admin_session_touch, \
	.admin_session_remove = sq_admin_session_remove, \
	.admin_session_prune = sq_admin_session_prune, \
	.command_insert = sq_command_insert, \
	.command_get = sq_command_get, \
	.command_pending = sq_command_pending, \
	.command_queued = sq_command_queued, \
	.command_overdue = sq_command_overdue, \
	.command_finish = sq_command_finish, \
	.history_claim = sq_history_claim, \
	.history_durations = sq_history_durations, \
	.history_fill = sq_history_fill, \
	.history_list = sq_history_list, \
	.history_servers = sq_history_servers, \
	.history_oldest_raw = sq_history_oldest_raw, \
	.history_merge = sq_history_merge, \
	.history_delete = sq_history_delete, \
	.setting_get = sq_setting_get, \
	.setting_add = sq_setting_add, \
	.setting_set = sq_setting_set,

const struct store_engine store_engine_sqlite = {
	.name = "sqlite",
	.open = sqldb_open,
	.close = sqldb_close,
	.begin = sqldb_begin,
	.end = sqldb_end,
	.sync = sqldb_sync,
	.generation = sqldb_generation,
	.heartbeat_apply = sq_heartbeat_apply,
	.user_lock = NULL,	/* the write lock serialises placements */
	.server_lock = NULL,
	SQL_OPS
};

const struct store_engine store_engine_postgresql = {
	.name = "postgresql",
	.faults = &pgdb_faults,
	.open = pgdb_open,
	.close = pgdb_close,
	.begin = pgdb_begin,
	.end = pgdb_end,
	.generation = pgdb_generation,
	.heartbeat_apply = pg_heartbeat_apply,
	.user_lock = pgdb_user_lock,
	.server_lock = pgdb_server_lock,
	SQL_OPS
};
