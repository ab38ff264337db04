/* store_sqlite.c: the SQLite engine of store_engine.h, the only file that
 * includes sqlite3.h. SQL, transactions and row mapping only: the rules are
 * in store.c, placement.c and reconcile.c. WAL, synchronous=FULL,
 * foreign_keys=ON, a busy timeout; schema/NNN_*.sql applied in order by
 * PRAGMA user_version; prepared statements, cached. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/state/schema.h"
#include "broker/state/store_engine.h"

#define STMT_CACHE 128

struct store_db {
	sqlite3 *db;
	struct { const char *sql; sqlite3_stmt *stmt; } cache[STMT_CACHE];
	size_t ncache;
	uint32_t commits;	/* this connection's write commits: PRAGMA
				 * data_version counts only the other connections' */
	int writing;		/* the open transaction began as a write */
	int64_t version;	/* PRAGMA data_version read in it, or -1 */
};

static int
db_error(struct store_db *d, const char *func, int rc)
{
	log_msg(LOG_ERROR, func, "database: %s", sqlite3_errmsg(d->db));
	rc &= 0xff;
	return rc == SQLITE_FULL || rc == SQLITE_IOERR ? STORE_FULL : STORE_ERR;
}
#define DB_ERROR(d, rc) db_error(d, __func__, rc)

/* Returns the cached prepared statement for sql, bound with the values in
 * fmt ('t' text, 'i' int, 'I' int64, 'd' double), or NULL (logged). */
static sqlite3_stmt *
prep(struct store_db *d, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *stmt = NULL;
	va_list ap;
	size_t i;
	int rc = SQLITE_OK;

	for (i = 0; i < d->ncache; i++) {
		if (d->cache[i].sql == sql) {
			stmt = d->cache[i].stmt;
			break;
		}
	}
	if (stmt == NULL) {
		if (sqlite3_prepare_v3(d->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
		    &stmt, NULL) != SQLITE_OK) {
			log_error("prepare: %s", sqlite3_errmsg(d->db));
			return NULL;
		}
		if (d->ncache < STMT_CACHE) {
			d->cache[d->ncache].sql = sql;
			d->cache[d->ncache++].stmt = stmt;
		}
	}
	va_start(ap, fmt);
	for (i = 0; fmt[i] != '\0' && rc == SQLITE_OK; i++) {
		int col = (int)i + 1;
		switch (fmt[i]) {
		case 't': rc = sqlite3_bind_text(stmt, col, va_arg(ap, const char *), -1,
		    SQLITE_TRANSIENT); break;
		case 'i': rc = sqlite3_bind_int(stmt, col, va_arg(ap, int)); break;
		case 'I': rc = sqlite3_bind_int64(stmt, col, va_arg(ap, int64_t)); break;
		case 'd': rc = sqlite3_bind_double(stmt, col, va_arg(ap, double)); break;
		}
	}
	va_end(ap);
	if (rc != SQLITE_OK) {
		log_error("bind: %s", sqlite3_errmsg(d->db));
		sqlite3_reset(stmt);
		return NULL;
	}
	return stmt;
}

/* Resets a statement from prep() for its next use. */
static void
done(struct store_db *d, sqlite3_stmt *stmt)
{
	if (stmt == NULL)
		return;
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	for (size_t i = 0; i < d->ncache; i++)
		if (d->cache[i].stmt == stmt)
			return;
	sqlite3_finalize(stmt);	/* not cached: cache full */
}

/* Runs a statement that returns no rows; *changes (if not NULL) is how
 * many rows it changed. 0 or a STORE_* code. */
static int
exec_stmt(struct store_db *d, sqlite3_stmt *stmt, int *changes)
{
	int rc;

	if (changes != NULL)
		*changes = 0;
	if (stmt == NULL)
		return STORE_ERR;
	rc = sqlite3_step(stmt);
	done(d, stmt);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
			return STORE_EXISTS;
		return DB_ERROR(d, rc);
	}
	if (changes != NULL)
		*changes = sqlite3_changes(d->db);
	return 0;
}
#define EXEC(d, ...) exec_stmt(d, prep(d, __VA_ARGS__), NULL)

/* ---- row mapping: one table of columns per row type ---- */

/* Column i of a row into the field at off (size bytes) of a struct:
 * 'L' int64, 'I' int, 'D' double, 'T' text, 'S' server state, 'A' admin
 * state, 'E' session state (the enums from their text, states.h). */
struct col {
	char type;
	size_t off, size;
};
#define COL(type, T, f) { type, offsetof(T, f), sizeof(((T *)0)->f) }
#define NCOLS(a) (sizeof(a) / sizeof((a)[0]))

struct cols {
	const struct col *c;
	size_t n;
};
#define COLS(a) ((struct cols){ a, NCOLS(a) })

/* Fills dst from the current row of s; 0 or -1 (a state's text unknown). */
static int
row_map(sqlite3_stmt *s, struct cols cols, void *dst)
{
	int r = 0;

	for (size_t i = 0; i < cols.n; i++) {
		const struct col *c = &cols.c[i];
		void *p = (char *)dst + c->off;
		const char *t = strchr("TSAE", c->type) ? (const char *)
		    sqlite3_column_text(s, (int)i) : NULL;

		switch (c->type) {
		case 'L': *(int64_t *)p = sqlite3_column_int64(s, (int)i); break;
		case 'I': *(int *)p = sqlite3_column_int(s, (int)i); break;
		case 'D': *(double *)p = sqlite3_column_double(s, (int)i); break;
		case 'T': util_strlcpy(p, t ? t : "", c->size); break;
		case 'S': r |= server_state_parse(t, p); break;
		case 'A': r |= admin_state_parse(t, p); break;
		case 'E': r |= session_state_parse(t, p); break;
		}
	}
	return r;
}

/* Steps s to its first row into dst. 0, STORE_NOT_FOUND or another
 * STORE_* code. Resets s. */
static int
row_one(struct store_db *d, sqlite3_stmt *s, struct cols cols, void *dst)
{
	int rc, r;

	if (s == NULL)
		return STORE_ERR;
	if ((rc = sqlite3_step(s)) == SQLITE_ROW)
		r = row_map(s, cols, dst) == 0 ? 0 : STORE_ERR;
	else
		r = rc == SQLITE_DONE ? STORE_NOT_FOUND : DB_ERROR(d, rc);
	done(d, s);
	return r;
}

/* Steps s through all its rows into a new array of elem-sized items. *out
 * and *n are set even on error: the caller frees *out. Resets s. */
static int
rows_all(struct store_db *d, sqlite3_stmt *s, size_t elem, struct cols cols,
    void *out, size_t *n)
{
	char *list = NULL, *tmp;
	size_t count = 0, cap = 0;
	int rc = SQLITE_DONE, r = 0;

	if (s == NULL)
		r = STORE_ERR;
	while (r == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (count == cap) {
			cap = cap ? cap * 2 : 16;
			if ((tmp = realloc(list, cap * elem)) == NULL) {
				r = STORE_ERR;
				break;
			}
			list = tmp;
		}
		memset(list + count * elem, 0, elem);
		if (row_map(s, cols, list + count * elem) != 0)
			r = STORE_ERR;
		count++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = DB_ERROR(d, rc);
	done(d, s);
	*(void **)out = list;
	*n = count;
	return r;
}

/* A single int64 or text column. */
struct one {
	int64_t v;
	char text[WIRE_ADDR_MAX];
};
static const struct col one_int[] = { COL('L', struct one, v) };
static const struct col one_text[] = { COL('T', struct one, text) };

/* ---- transactions ---- */

static int
sq_begin(struct store_db *d, int write)
{
	d->writing = write;
	d->version = -1;
	return write ? EXEC(d, "BEGIN IMMEDIATE", "") : EXEC(d, "BEGIN", "");
}

static int
sq_end(struct store_db *d, int r, uint64_t *gen)
{
	*gen = 0;
	if (r == 0 && (r = EXEC(d, "COMMIT", "")) == 0 && d->writing) {
		d->commits++;
		if (d->version >= 0)
			*gen = (uint64_t)d->version << 32 | d->commits;
	}
	if (r != 0 && !sqlite3_get_autocommit(d->db))
		(void)EXEC(d, "ROLLBACK", "");
	return r;
}

static int
sq_generation(struct store_db *d, uint64_t *gen)
{
	struct one o;
	int r;

	if ((r = row_one(d, prep(d, "PRAGMA data_version", ""), COLS(one_int), &o)) == 0) {
		d->version = o.v;
		*gen = (uint64_t)o.v << 32 | d->commits;
	}
	return r;
}

static int
event_insert(struct store_db *d, int64_t now, const char *kind, const char *server,
    const char *user, const char *client, const char *detail, int64_t duration_us)
{
	return EXEC(d, "INSERT INTO events (ts, kind, server, user, client, detail, "
	    "duration_us) VALUES (?, ?, ?, ?, ?, ?, ?)", "ItttttI", now, kind,
	    server ? server : "", user ? user : "", client ? client : "",
	    detail ? detail : "", duration_us);
}

/* ---- open and migrate ---- */

static int
migrate(struct store_db *d, char *err, size_t errlen)
{
	sqlite3_stmt *s = NULL;
	int version = 0, latest = (int)schema_migrations[schema_count - 1].version;
	char *msg = NULL;

	if (sqlite3_prepare_v2(d->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK ||
	    sqlite3_step(s) != SQLITE_ROW) {
		snprintf(err, errlen, "cannot read the schema version: %s",
		    sqlite3_errmsg(d->db));
		sqlite3_finalize(s);
		return STORE_ERR;
	}
	version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	if (version > latest) {
		snprintf(err, errlen, "the database has schema version %d, newer than "
		    "this tsbroker knows (%d): use a newer tsbroker or restore a backup",
		    version, latest);
		return STORE_TOO_NEW;
	}
	for (size_t i = 0; i < schema_count; i++) {
		const struct schema_migration *m = &schema_migrations[i];
		char sql[64];

		if (m->version <= version)
			continue;
		snprintf(sql, sizeof(sql), ";PRAGMA user_version = %d; COMMIT;", m->version);
		if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(d->db, m->sql, NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(d->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
			snprintf(err, errlen, "migration %s failed: %s", m->name,
			    msg ? msg : sqlite3_errmsg(d->db));
			sqlite3_free(msg);
			sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
			return STORE_ERR;
		}
		log_info("applied schema migration %s", m->name);
	}
	return 0;
}

static void
sq_close(struct store_db *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->ncache; i++)
		sqlite3_finalize(d->cache[i].stmt);
	sqlite3_close(d->db);
	free(d);
}

static struct store_db *
sq_open(const char *path, char *err, size_t errlen)
{
	struct store_db *d;
	char *msg = NULL;

	if ((d = calloc(1, sizeof(*d))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, d->db ? sqlite3_errmsg(d->db) :
		    "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(d->db, 5000);
	sqlite3_extended_result_codes(d->db, 1);
	/* synchronous=FULL: a committed placement survives a power cut too */
	if (sqlite3_exec(d->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
	    "PRAGMA foreign_keys=ON;", NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(d->db));
		sqlite3_free(msg);
		goto fail;
	}
	if (migrate(d, err, errlen) != 0)
		goto fail;
	return d;
 fail:
	sq_close(d);
	return NULL;
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
	if (r == 0)
		r = event_insert(d, now, "server_added", spec->name, NULL, NULL,
		    spec->address, 0);
	return r;
}

static int
server_id(struct store_db *d, const char *name, int64_t *id)
{
	struct one o;
	int r;

	if ((r = row_one(d, prep(d, "SELECT id FROM servers WHERE name = ?", "t", name),
	    COLS(one_int), &o)) == 0)
		*id = o.v;
	return r;
}

static int
server_name(struct store_db *d, int64_t id, char *name, size_t n)
{
	struct one o;
	int r;

	if ((r = row_one(d, prep(d, "SELECT name FROM servers WHERE id = ?", "I", id),
	    COLS(one_text), &o)) == 0)
		util_strlcpy(name, o.text, n);
	return r;
}

static int
sq_server_remove(struct store_db *d, const char *name, int64_t now)
{
	int64_t id;
	int r;

	if ((r = server_id(d, name, &id)) == 0)
		r = EXEC(d, "DELETE FROM servers WHERE id = ?", "I", id);
	if (r == 0)
		r = event_insert(d, now, "server_removed", name, NULL, NULL, NULL, 0);
	return r;
}

static int
sq_server_admin(struct store_db *d, const char *name, enum admin_state a, int64_t now,
    int64_t *id)
{
	int r;

	*id = 0;
	if ((r = server_id(d, name, id)) == 0)
		r = EXEC(d, "UPDATE servers SET admin_state = ? WHERE id = ?", "tI",
		    admin_state_str(a), *id);
	if (r == 0)
		r = event_insert(d, now, a == ADMIN_DRAINING ? "drain" : "enable", name,
		    NULL, NULL, NULL, 0);
	return r;
}

static int
sq_server_list(struct store_db *d, struct store_server **out, size_t *n)
{
	return rows_all(d, prep(d, SQL_SERVER_COLS "ORDER BY s.name", ""), sizeof(**out),
	    COLS(server_cols), out, n);
}

static int
sq_server_get(struct store_db *d, const char *name, struct store_server *out)
{
	return row_one(d, prep(d, SQL_SERVER_COLS "WHERE s.name = ?", "t", name),
	    COLS(server_cols), out);
}

static const struct col id_name_cols[] = { SV('L', id), SV('T', name) };

static int
sq_server_auth(struct store_db *d, const char *token_hash, int64_t *id, char *name,
    size_t namelen)
{
	struct store_server srv;
	int r;

	if ((r = row_one(d, prep(d, "SELECT id, name FROM servers WHERE token_hash = ?",
	    "t", token_hash), COLS(id_name_cols), &srv)) == 0) {
		*id = srv.id;
		util_strlcpy(name, srv.name, namelen);
	}
	return r;
}

/* Marks server id down: sessions lost, pending placements ended, an event.
 * No-op if it is already down. */
static int
server_set_down(struct store_db *d, int64_t id, const char *name, const char *reason,
    int64_t now, int *changed)
{
	int r;

	if ((r = exec_stmt(d, prep(d, "UPDATE servers SET state = 'down', "
	    "state_reason = ?, state_since = ? WHERE id = ? AND state != 'down'", "tII",
	    reason, now, id), changed)) != 0 || !*changed)
		return r;
	if ((r = EXEC(d, "UPDATE sessions SET state = 'lost', updated = ? WHERE "
	    "server_id = ? AND state IN ('active', 'disconnected')", "II", now, id)) != 0 ||
	    (r = EXEC(d, "UPDATE sessions SET state = 'ended', updated = ?, expires = 0 "
	    "WHERE server_id = ? AND state = 'pending'", "II", now, id)) != 0)
		return r;
	return event_insert(d, now, "server_down", name, NULL, NULL, reason, 0);
}

static int
sq_server_down(struct store_db *d, int64_t id, const char *reason, int64_t now,
    int *changed)
{
	char name[WIRE_NAME_MAX];
	int r;

	*changed = 0;
	if ((r = server_name(d, id, name, sizeof(name))) == 0)
		r = server_set_down(d, id, name, reason, now, changed);
	return r;
}

static int
sq_server_quarantine(struct store_db *d, int64_t id, int64_t until, const char *reason,
    int64_t now)
{
	char name[WIRE_NAME_MAX];
	int r;

	if ((r = server_name(d, id, name, sizeof(name))) == 0)
		r = EXEC(d, "UPDATE servers SET quarantined_until = ?, unconfirmed = 0 "
		    "WHERE id = ?", "II", until, id);
	if (r == 0)
		r = event_insert(d, now, "quarantine", name, NULL, NULL, reason, 0);
	return r;
}

/* ---- heartbeats ---- */

static const struct col states_cols[] = { SV('S', state), SV('A', admin_state) };
static const struct col rc_row_cols[] = {
	COL('L', struct rc_row, id), COL('T', struct rc_row, user),
	COL('T', struct rc_row, remote_id), COL('E', struct rc_row, state),
};

static int
sq_heartbeat_read(struct store_db *d, int64_t id, enum server_state *state,
    enum admin_state *admin, struct rc_row **rows, size_t *nrows)
{
	struct store_server srv;
	int r;

	if ((r = row_one(d, prep(d, "SELECT state, admin_state FROM servers WHERE id = ?",
	    "I", id), COLS(states_cols), &srv)) != 0)
		return r;
	*state = srv.state;
	*admin = srv.admin_state;
	if (rows == NULL)
		return 0;
	return rows_all(d, prep(d, "SELECT id, user, remote_id, state FROM sessions "
	    "WHERE server_id = ? AND state != 'ended'", "I", id), sizeof(**rows),
	    COLS(rc_row_cols), rows, nrows);
}

/* One change of a plan. */
static int
change_apply(struct store_db *d, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_change *c, int64_t now)
{
	const struct wire_session *ws = &hb->sessions[c->session];

	switch (c->op) {
	case RC_INSERT:
		return EXEC(d, "INSERT INTO sessions (server_id, user, login, domain, "
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

static int
sq_heartbeat_apply(struct store_db *d, int64_t id, const struct wire_heartbeat *hb,
    const struct rc_plan *plan, int64_t now)
{
	char name[WIRE_NAME_MAX];
	int r, changed;

	if ((r = server_name(d, id, name, sizeof(name))) != 0)
		return r;
	r = EXEC(d, "UPDATE servers SET last_heartbeat = ?, rdp_accepting = ?, "
	    "agent_version = ?, ncpu = ?, cpu_percent = ?, load1 = ?, mem_total_kb = ?, "
	    "mem_available_kb = ?, sessions_known = ? WHERE id = ?", "IitiddIIiI",
	    now, hb->rdp_accepting, hb->version, hb->ncpu, hb->cpu_percent, hb->load1,
	    hb->mem_total_kb, hb->mem_available_kb, hb->sessions_known, id);
	if (r == 0 && plan->transition == RC_UP) {
		r = EXEC(d, "UPDATE servers SET state = 'up', state_reason = "
		    "'heartbeat', state_since = ? WHERE id = ?", "II", now, id);
		if (r == 0)
			r = event_insert(d, now, "server_up", name, NULL, NULL,
			    "heartbeat with RDP accepting", 0);
	} else if (r == 0 && plan->transition == RC_DOWN)
		r = server_set_down(d, id, name, "RDP port not accepting", now, &changed);
	for (size_t i = 0; i < plan->nchanges && r == 0; i++)
		r = change_apply(d, id, hb, &plan->changes[i], now);
	if (r == 0 && plan->confirmed > 0)
		r = EXEC(d, "UPDATE servers SET last_confirmed = ?, unconfirmed = 0 "
		    "WHERE id = ?", "II", now, id);
	return r;
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

static int
sq_load(struct store_db *d, int64_t id, int64_t now,
    int (*each)(void *ctx, const struct store_load *w), void *ctx)
{
	sqlite3_stmt *s = id ? prep(d, SQL_LOAD("WHERE s.id = ?2"), "II", now, id) :
	    prep(d, SQL_LOAD(""), "I", now);
	struct store_load w;
	int rc = SQLITE_DONE, r = 0, rows = 0;

	if (s == NULL)
		return STORE_ERR;
	while (r == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		memset(&w, 0, sizeof(w));
		r = row_map(s, COLS(load_cols), &w) == 0 ? each(ctx, &w) : STORE_ERR;
		rows++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = DB_ERROR(d, rc);
	done(d, s);
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
	return rows_all(d, prep(d, "SELECT id, server_id, state, updated FROM sessions "
	    "WHERE user = ?1 AND (state IN ('active', 'disconnected') OR (state = "
	    "'pending' AND expires > ?2))", "tI", user, now), sizeof(**out),
	    COLS(pl_session_cols), out, n);
}

static int
sq_placement_insert(struct store_db *d, int64_t server_id,
    const struct store_place_request *req, int64_t *session_id)
{
	int r;

	r = EXEC(d, "INSERT INTO sessions (server_id, user, login, domain, state, "
	    "client, created, updated, expires) VALUES (?, ?, ?, ?, 'pending', ?, "
	    "?, ?, ?)", "IttttIII", server_id, req->user, req->login, req->domain,
	    req->client, req->now, req->now, req->now + req->pending_ttl_ms);
	if (r == 0)
		*session_id = sqlite3_last_insert_rowid(d->db);
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
	return row_one(d, prep(d, "SELECT name, address, fqdn, port FROM servers WHERE "
	    "id = ?", "I", server_id), COLS(target_cols), out);
}

static int
sq_pending_expire(struct store_db *d, int64_t now, int *expired)
{
	int r;

	*expired = 0;
	r = EXEC(d, "INSERT INTO events (ts, kind, server, user, client, detail) "
	    "SELECT ?1, 'pending_expired', v.name, s.user, s.client, "
	    "'placement not confirmed by the agent' FROM sessions s JOIN servers v "
	    "ON v.id = s.server_id WHERE s.state = 'pending' AND s.expires <= ?1", "I", now);
	if (r == 0)
		r = EXEC(d, "UPDATE servers SET unconfirmed = unconfirmed + (SELECT "
		    "count(*) FROM sessions WHERE server_id = servers.id AND state = "
		    "'pending' AND expires <= ?1) WHERE id IN (SELECT server_id FROM "
		    "sessions WHERE state = 'pending' AND expires <= ?1)", "I", now);
	if (r == 0)
		r = exec_stmt(d, prep(d, "UPDATE sessions SET state = 'ended', "
		    "updated = ?1 WHERE state = 'pending' AND expires <= ?1", "I", now),
		    expired);
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
};

static int
sq_session_route(struct store_db *d, int64_t session_id, int64_t *expires,
    struct store_route *out)
{
	struct route_row w;
	int r;

	memset(&w, 0, sizeof(w));
	if ((r = row_one(d, prep(d, "SELECT e.id, e.user, e.login, e.domain, e.state, "
	    "v.id, v.name, v.address, v.port, v.state, e.expires FROM sessions e JOIN "
	    "servers v ON v.id = e.server_id WHERE e.id = ?", "I", session_id),
	    COLS(route_cols), &w)) == 0) {
		*out = w.rt;
		*expires = w.expires;
	}
	return r;
}

#define SE(type, f) COL(type, struct store_session, f)
static const struct col session_cols[] = {
	SE('L', id), SE('T', server), SE('T', user), SE('T', login), SE('T', domain),
	SE('T', remote_id), SE('E', state), SE('T', client), SE('L', created),
	SE('L', updated), SE('L', expires),
};

static int
sq_session_list(struct store_db *d, const struct store_session_filter *f,
    struct store_session **out, size_t *n)
{
	return rows_all(d, prep(d, "SELECT e.id, v.name, e.user, e.login, e.domain, "
	    "e.remote_id, e.state, e.client, e.created, e.updated, e.expires FROM "
	    "sessions e JOIN servers v ON v.id = e.server_id WHERE (?1 = '' OR e.user = "
	    "?1) AND (?2 = '' OR v.name = ?2) AND ((?3 = '' AND e.state != 'ended') OR "
	    "e.state = ?3) ORDER BY e.updated DESC, e.id DESC LIMIT 100000", "ttt",
	    f->user ? f->user : "", f->server ? f->server : "",
	    f->state ? session_state_str(*f->state) : ""), sizeof(**out),
	    COLS(session_cols), out, n);
}

static int
sq_session_forget(struct store_db *d, int64_t id, int64_t now)
{
	char detail[64];
	int r, changed;

	r = exec_stmt(d, prep(d, "UPDATE sessions SET state = 'ended', updated = ? "
	    "WHERE id = ? AND state != 'ended'", "II", now, id), &changed);
	if (r == 0 && !changed)
		r = STORE_NOT_FOUND;
	snprintf(detail, sizeof(detail), "session %lld forgotten", (long long)id);
	if (r == 0)
		r = EXEC(d, "INSERT INTO events (ts, kind, server, user, detail) SELECT "
		    "?, 'forget', v.name, e.user, ? FROM sessions e JOIN servers v ON "
		    "v.id = e.server_id WHERE e.id = ?", "ItI", now, detail, id);
	return r;
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
	return rows_all(d, prep(d, "SELECT id, ts, kind, server, user, client, detail, "
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
	if (r == 0)
		r = event_insert(d, now, "admin_password", NULL, NULL, NULL,
		    "admin password set", 0);
	return r;
}

static int
sq_admin_password_get(struct store_db *d, char *hash, size_t n)
{
	struct one o;
	int r;

	if ((r = row_one(d, prep(d, "SELECT password_hash FROM admin WHERE id = 1", ""),
	    COLS(one_text), &o)) == 0)
		util_strlcpy(hash, o.text, n);
	return r;
}

static int
sq_admin_token_add(struct store_db *d, const char *name, const char *token_hash,
    int64_t now)
{
	int r;

	r = EXEC(d, "INSERT INTO admin_tokens (name, token_hash, created) VALUES "
	    "(?, ?, ?)", "ttI", name, token_hash, now);
	if (r == 0)
		r = event_insert(d, now, "admin_token_added", NULL, NULL, NULL, name, 0);
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

	r = row_one(d, prep(d, "SELECT name, created, last_used FROM admin_tokens "
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
	return rows_all(d, prep(d, "SELECT name, created, last_used FROM admin_tokens "
	    "ORDER BY name", ""), sizeof(**out), COLS(token_cols), out, n);
}

static int
sq_admin_token_remove(struct store_db *d, const char *name, int64_t now)
{
	int r, changed;

	r = exec_stmt(d, prep(d, "DELETE FROM admin_tokens WHERE name = ?", "t", name),
	    &changed);
	if (r == 0 && !changed)
		r = STORE_NOT_FOUND;
	if (r == 0)
		r = event_insert(d, now, "admin_token_removed", NULL, NULL, NULL, name, 0);
	return r;
}

const struct store_engine store_engine_sqlite = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.begin = sq_begin,
	.end = sq_end,
	.generation = sq_generation,
	.server_add = sq_server_add,
	.server_remove = sq_server_remove,
	.server_admin = sq_server_admin,
	.server_list = sq_server_list,
	.server_get = sq_server_get,
	.server_auth = sq_server_auth,
	.server_down = sq_server_down,
	.server_quarantine = sq_server_quarantine,
	.heartbeat_read = sq_heartbeat_read,
	.heartbeat_apply = sq_heartbeat_apply,
	.load = sq_load,
	.user_sessions = sq_user_sessions,
	.placement_insert = sq_placement_insert,
	.placement_refresh = sq_placement_refresh,
	.placement_target = sq_placement_target,
	.pending_expire = sq_pending_expire,
	.session_route = sq_session_route,
	.session_list = sq_session_list,
	.session_forget = sq_session_forget,
	.event_add = event_insert,
	.event_list = sq_event_list,
	.event_prune = sq_event_prune,
	.admin_password_set = sq_admin_password_set,
	.admin_password_get = sq_admin_password_get,
	.admin_token_add = sq_admin_token_add,
	.admin_token_auth = sq_admin_token_auth,
	.admin_token_list = sq_admin_token_list,
	.admin_token_remove = sq_admin_token_remove,
};
