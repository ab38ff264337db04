/* store.c: the SQLite implementation of store.h. */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <sqlite3.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/state/placement.h"
#include "broker/state/schema.h"
#include "broker/state/store.h"

#define STMT_CACHE 128

/* The servers' placement inputs, kept in memory so that a decision does not
 * load every server and count its sessions (placement at 10,000 servers).
 * Exact, not approximate: loaded whole when another connection (an admin
 * command) committed anything (PRAGMA data_version), a server is re-read
 * when this connection wrote something about it (dirty), or when one of its
 * counted pending placements reaches its expiry (min_expires), and a
 * committed placement adds its pending placement. Guarded by store.lock. */
struct load_cache {
	int valid;			/* 0: load everything before the next use */
	int64_t data_version;		/* PRAGMA data_version at the load */
	struct pl_server *sv;		/* sorted by id; names owned */
	int64_t *q_until;		/* quarantined_until */
	int64_t *min_expires;		/* earliest expiry of a counted pending, or INT64_MAX */
	unsigned char *dirty;
	size_t n;
};

struct store {
	sqlite3 *db;
	pthread_mutex_t lock;
	struct { const char *sql; sqlite3_stmt *stmt; } cache[STMT_CACHE];
	size_t ncache;
	struct load_cache lc;
};

static int
db_error(struct store *st, const char *func, int rc)
{
	log_msg(LOG_ERROR, func, "database: %s", sqlite3_errmsg(st->db));
	rc &= 0xff;
	return rc == SQLITE_FULL || rc == SQLITE_IOERR ? STORE_FULL : STORE_ERR;
}
#define DB_ERROR(st, rc) db_error(st, __func__, rc)

/* Returns the cached prepared statement for sql, bound with the values in
 * fmt ('t' text, 'i' int, 'I' int64, 'd' double), or NULL (logged). */
static sqlite3_stmt *
prep(struct store *st, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *stmt = NULL;
	va_list ap;
	size_t i;
	int rc = SQLITE_OK;

	for (i = 0; i < st->ncache; i++) {
		if (st->cache[i].sql == sql) {
			stmt = st->cache[i].stmt;
			break;
		}
	}
	if (stmt == NULL) {
		if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
		    &stmt, NULL) != SQLITE_OK) {
			log_error("prepare: %s", sqlite3_errmsg(st->db));
			return NULL;
		}
		if (st->ncache < STMT_CACHE) {
			st->cache[st->ncache].sql = sql;
			st->cache[st->ncache++].stmt = stmt;
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
		log_error("bind: %s", sqlite3_errmsg(st->db));
		sqlite3_reset(stmt);
		return NULL;
	}
	return stmt;
}

/* Resets a statement from prep() for its next use. */
static void
done(struct store *st, sqlite3_stmt *stmt)
{
	if (stmt == NULL)
		return;
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	for (size_t i = 0; i < st->ncache; i++)
		if (st->cache[i].stmt == stmt)
			return;
	sqlite3_finalize(stmt);	/* not cached: cache full */
}

/* Runs a statement that returns no rows. 0 or a STORE_* code. */
static int
exec_stmt(struct store *st, sqlite3_stmt *stmt)
{
	int rc;

	if (stmt == NULL)
		return STORE_ERR;
	rc = sqlite3_step(stmt);
	done(st, stmt);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
			return STORE_EXISTS;
		return DB_ERROR(st, rc);
	}
	return 0;
}
#define EXEC(st, ...) exec_stmt(st, prep(st, __VA_ARGS__))

static void
col_text(sqlite3_stmt *s, int col, char *dst, size_t n)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	util_strlcpy(dst, t ? (const char *)t : "", n);
}

/* Runs a statement that changes rows; *changes is how many it changed. */
static int
exec_changes(struct store *st, sqlite3_stmt *stmt, int *changes)
{
	int r = exec_stmt(st, stmt);

	*changes = r == 0 ? sqlite3_changes(st->db) : 0;
	return r;
}

/* Fills dst from the current row; 0 or -1 (out of memory). */
typedef int (*row_fn)(sqlite3_stmt *s, void *dst);

/* Steps s to its first row and fills dst with fn. 0, STORE_NOT_FOUND or
 * another STORE_* code. Resets s. */
static int
row_one(struct store *st, sqlite3_stmt *s, row_fn fn, void *dst)
{
	int rc, r;

	if (s == NULL)
		return STORE_ERR;
	if ((rc = sqlite3_step(s)) == SQLITE_ROW)
		r = fn(s, dst) == 0 ? 0 : STORE_ERR;
	else
		r = rc == SQLITE_DONE ? STORE_NOT_FOUND : DB_ERROR(st, rc);
	done(st, s);
	return r;
}

/* Steps s through all its rows, filling one elem-sized item per row with fn
 * in a growing array. *out and *n are set even on error: the caller frees
 * *out. 0 or a STORE_* code. Resets s. */
static int
rows_all(struct store *st, sqlite3_stmt *s, size_t elem, row_fn fn, void *out,
    size_t *n)
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
		if (fn(s, list + count * elem) != 0)
			r = STORE_ERR;
		count++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = DB_ERROR(st, rc);
	done(st, s);
	*(void **)out = list;
	*n = count;
	return r;
}

static int
row_id(sqlite3_stmt *s, void *dst)
{
	*(int64_t *)dst = sqlite3_column_int64(s, 0);
	return 0;
}

/* A text column 0 into a caller's buffer. */
struct text_buf {
	char *p;
	size_t n;
};

static int
row_text(sqlite3_stmt *s, void *dst)
{
	struct text_buf *t = dst;

	col_text(s, 0, t->p, t->n);
	return 0;
}

static int
begin(struct store *st)
{
	pthread_mutex_lock(&st->lock);
	int r = EXEC(st, "BEGIN IMMEDIATE", "");
	if (r != 0)
		pthread_mutex_unlock(&st->lock);
	return r;
}

/* Commits when r is 0, else rolls back; returns r or the commit's error.
 * The lock stays held. */
static int
end_locked(struct store *st, int r)
{
	if (r == 0)
		r = EXEC(st, "COMMIT", "");
	if (r != 0 && !sqlite3_get_autocommit(st->db))
		(void)EXEC(st, "ROLLBACK", "");
	return r;
}

/* end_locked, then the lock is released. */
static int
end(struct store *st, int r)
{
	r = end_locked(st, r);
	pthread_mutex_unlock(&st->lock);
	return r;
}

/* ---- the load cache (struct load_cache); lock held ---- */

static void
lc_clear(struct load_cache *lc)
{
	for (size_t i = 0; i < lc->n; i++)
		free((char *)lc->sv[i].name);
	free(lc->sv);
	free(lc->q_until);
	free(lc->min_expires);
	free(lc->dirty);
	memset(lc, 0, sizeof(*lc));
}

/* Index of server id, or -1. */
static ssize_t
lc_find(const struct load_cache *lc, int64_t id)
{
	size_t lo = 0, hi = lc->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (lc->sv[mid].id == id)
			return (ssize_t)mid;
		if (lc->sv[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* This connection changed something about server id (or, id 0, about
 * servers in general): it is re-read before the next decision. */
static void
lc_touch(struct store *st, int64_t id)
{
	ssize_t i;

	if (!st->lc.valid)
		return;
	if (id == 0 || (i = lc_find(&st->lc, id)) < 0)
		st->lc.valid = 0;
	else
		st->lc.dirty[i] = 1;
}

static int
event_insert(struct store *st, int64_t now, const char *kind, const char *server,
    const char *user, const char *client, const char *detail, int64_t duration_us)
{
	return EXEC(st, "INSERT INTO events (ts, kind, server, user, client, detail, "
	    "duration_us) VALUES (?, ?, ?, ?, ?, ?, ?)", "ItttttI", now, kind,
	    server ? server : "", user ? user : "", client ? client : "",
	    detail ? detail : "", duration_us);
}

/* ---- open and migrate ---- */

static int
migrate(struct store *st, char *err, size_t errlen)
{
	sqlite3_stmt *s = NULL;
	int version = 0, latest = (int)schema_migrations[schema_count - 1].version;
	char *msg = NULL;

	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK ||
	    sqlite3_step(s) != SQLITE_ROW) {
		snprintf(err, errlen, "cannot read the schema version: %s",
		    sqlite3_errmsg(st->db));
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
		if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(st->db, m->sql, NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
			snprintf(err, errlen, "migration %s failed: %s", m->name,
			    msg ? msg : sqlite3_errmsg(st->db));
			sqlite3_free(msg);
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
			return STORE_ERR;
		}
		log_info("applied schema migration %s", m->name);
	}
	return 0;
}

struct store *
store_open(const char *path, char *err, size_t errlen)
{
	struct store *st;
	char *msg = NULL;

	if ((st = calloc(1, sizeof(*st))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&st->lock, NULL);
	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, st->db ? sqlite3_errmsg(st->db) :
		    "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(st->db, 5000);
	sqlite3_extended_result_codes(st->db, 1);
	/* synchronous=FULL: a committed placement survives a power cut too */
	if (sqlite3_exec(st->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
	    "PRAGMA foreign_keys=ON;", NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(st->db));
		sqlite3_free(msg);
		goto fail;
	}
	if (migrate(st, err, errlen) != 0)
		goto fail;
	return st;
 fail:
	store_close(st);
	return NULL;
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < st->ncache; i++)
		sqlite3_finalize(st->cache[i].stmt);
	lc_clear(&st->lc);
	sqlite3_close(st->db);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

const char *
store_strerror(int r)
{
	switch (r) {
	case 0: return "ok";
	case STORE_NOT_FOUND: return "not found";
	case STORE_EXISTS: return "already exists";
	case STORE_FULL: return "the disk is full";
	case STORE_REFUSED: return "refused";
	case STORE_TOO_NEW: return "database is newer than this tsbroker";
	default: return "database error";
	}
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

static int
server_row(sqlite3_stmt *s, void *dst)
{
	struct store_server *o = dst;

	o->id = sqlite3_column_int64(s, 0);
	col_text(s, 1, o->name, sizeof(o->name));
	col_text(s, 2, o->address, sizeof(o->address));
	col_text(s, 3, o->fqdn, sizeof(o->fqdn));
	o->port = sqlite3_column_int(s, 4);
	o->weight = sqlite3_column_int(s, 5);
	o->max_sessions = sqlite3_column_int(s, 6);
	col_text(s, 7, o->admin_state, sizeof(o->admin_state));
	col_text(s, 8, o->state, sizeof(o->state));
	col_text(s, 9, o->state_reason, sizeof(o->state_reason));
	o->state_since = sqlite3_column_int64(s, 10);
	o->quarantined_until = sqlite3_column_int64(s, 11);
	o->unconfirmed = sqlite3_column_int(s, 12);
	o->last_confirmed = sqlite3_column_int64(s, 13);
	o->last_heartbeat = sqlite3_column_int64(s, 14);
	o->rdp_accepting = sqlite3_column_int(s, 15);
	col_text(s, 16, o->agent_version, sizeof(o->agent_version));
	o->ncpu = sqlite3_column_int(s, 17);
	o->cpu_percent = sqlite3_column_double(s, 18);
	o->load1 = sqlite3_column_double(s, 19);
	o->mem_total_kb = sqlite3_column_int64(s, 20);
	o->mem_available_kb = sqlite3_column_int64(s, 21);
	o->sessions_known = sqlite3_column_int(s, 22);
	o->active = sqlite3_column_int(s, 23);
	o->disconnected = sqlite3_column_int(s, 24);
	o->pending = sqlite3_column_int(s, 25);
	o->lost = sqlite3_column_int(s, 26);
	return 0;
}

int
store_server_add(struct store *st, const struct store_server *spec,
    const char *token_hash, int64_t now)
{
	int r;

	if ((r = begin(st)) != 0)
		return r;
	r = EXEC(st, "INSERT INTO servers (name, address, port, fqdn, weight, "
	    "max_sessions, token_hash, state_since, created) VALUES "
	    "(?, ?, ?, ?, ?, ?, ?, ?, ?)", "ttitiitII", spec->name, spec->address,
	    spec->port, spec->fqdn, spec->weight, spec->max_sessions, token_hash, now, now);
	if (r == 0)
		r = event_insert(st, now, "server_added", spec->name, NULL, NULL,
		    spec->address, 0);
	lc_touch(st, 0);
	return end(st, r);
}

static int
server_id(struct store *st, const char *name, int64_t *id)
{
	return row_one(st, prep(st, "SELECT id FROM servers WHERE name = ?", "t", name),
	    row_id, id);
}

int
store_server_remove(struct store *st, const char *name, int64_t now)
{
	int64_t id;
	int r;

	if ((r = begin(st)) != 0)
		return r;
	if ((r = server_id(st, name, &id)) == 0)
		r = EXEC(st, "DELETE FROM servers WHERE id = ?", "I", id);
	if (r == 0)
		r = event_insert(st, now, "server_removed", name, NULL, NULL, NULL, 0);
	lc_touch(st, 0);
	return end(st, r);
}

int
store_server_drain(struct store *st, const char *name, int draining, int64_t now)
{
	int64_t id;
	int r;

	if ((r = begin(st)) != 0)
		return r;
	if ((r = server_id(st, name, &id)) == 0) {
		r = EXEC(st, "UPDATE servers SET admin_state = ? WHERE id = ?", "tI",
		    draining ? "draining" : "enabled", id);
		lc_touch(st, id);
	}
	if (r == 0)
		r = event_insert(st, now, draining ? "drain" : "enable", name, NULL,
		    NULL, NULL, 0);
	return end(st, r);
}

/* Runs a query returning server rows into a new array. Lock held. */
static int
server_query(struct store *st, sqlite3_stmt *s, struct store_server **out, size_t *n)
{
	int r = rows_all(st, s, sizeof(**out), server_row, out, n);

	if (r != 0) {
		free(*out);
		*out = NULL;
	}
	return r;
}

int
store_server_list(struct store *st, struct store_server **out, size_t *n)
{
	int r;

	pthread_mutex_lock(&st->lock);
	r = server_query(st, prep(st, SQL_SERVER_COLS "ORDER BY s.name", ""), out, n);
	pthread_mutex_unlock(&st->lock);
	return r;
}

int
store_server_get(struct store *st, const char *name, struct store_server *out)
{
	int r;

	pthread_mutex_lock(&st->lock);
	r = row_one(st, prep(st, SQL_SERVER_COLS "WHERE s.name = ?", "t", name),
	    server_row, out);
	pthread_mutex_unlock(&st->lock);
	return r;
}

static int
server_row_id_name(sqlite3_stmt *s, void *dst)
{
	struct store_server *o = dst;

	o->id = sqlite3_column_int64(s, 0);
	col_text(s, 1, o->name, sizeof(o->name));
	return 0;
}

int
store_server_auth(struct store *st, const char *token_hash, int64_t *id, char *name,
    size_t namelen)
{
	struct store_server srv;
	int r;

	pthread_mutex_lock(&st->lock);
	r = row_one(st, prep(st, "SELECT id, name FROM servers WHERE token_hash = ?", "t",
	    token_hash), server_row_id_name, &srv);
	pthread_mutex_unlock(&st->lock);
	if (r == 0) {
		*id = srv.id;
		util_strlcpy(name, srv.name, namelen);
	}
	return r;
}

/* Marks server id down (lock and transaction held): sessions lost, pending
 * placements ended, an event. No-op if it is already down. */
static int
server_set_down(struct store *st, int64_t id, const char *name, const char *reason,
    int64_t now, int *changed)
{
	int r;

	lc_touch(st, id);
	if ((r = exec_changes(st, prep(st, "UPDATE servers SET state = 'down', "
	    "state_reason = ?, state_since = ? WHERE id = ? AND state != 'down'", "tII",
	    reason, now, id), changed)) != 0 || !*changed)
		return r;
	if ((r = EXEC(st, "UPDATE sessions SET state = 'lost', updated = ? WHERE "
	    "server_id = ? AND state IN ('active', 'disconnected')", "II", now, id)) != 0 ||
	    (r = EXEC(st, "UPDATE sessions SET state = 'ended', updated = ?, expires = 0 "
	    "WHERE server_id = ? AND state = 'pending'", "II", now, id)) != 0)
		return r;
	return event_insert(st, now, "server_down", name, NULL, NULL, reason, 0);
}

static int
server_name(struct store *st, int64_t id, char *name, size_t n)
{
	struct text_buf t = { name, n };

	return row_one(st, prep(st, "SELECT name FROM servers WHERE id = ?", "I", id),
	    row_text, &t);
}

int
store_server_down(struct store *st, int64_t id, const char *reason, int64_t now)
{
	char name[WIRE_NAME_MAX];
	int r, changed;

	if ((r = begin(st)) != 0)
		return r;
	if ((r = server_name(st, id, name, sizeof(name))) == 0)
		r = server_set_down(st, id, name, reason, now, &changed);
	return end(st, r);
}

int
store_server_quarantine(struct store *st, int64_t id, int64_t until,
    const char *reason, int64_t now)
{
	char name[WIRE_NAME_MAX];
	int r;

	if ((r = begin(st)) != 0)
		return r;
	if ((r = server_name(st, id, name, sizeof(name))) == 0)
		r = EXEC(st, "UPDATE servers SET quarantined_until = ?, unconfirmed = 0 "
		    "WHERE id = ?", "II", until, id);
	lc_touch(st, id);
	if (r == 0)
		r = event_insert(st, now, "quarantine", name, NULL, NULL, reason, 0);
	return end(st, r);
}

/* ---- heartbeats ---- */

struct hb_row {
	int64_t id;
	char user[WIRE_USER_MAX];
	char remote_id[WIRE_ID_MAX];
	char state[16];
	int matched;
};

/* A row of the server's sessions that are not ended. */
static int
hb_row(sqlite3_stmt *s, void *dst)
{
	struct hb_row *w = dst;

	w->id = sqlite3_column_int64(s, 0);
	col_text(s, 1, w->user, sizeof(w->user));
	col_text(s, 2, w->remote_id, sizeof(w->remote_id));
	col_text(s, 3, w->state, sizeof(w->state));
	return 0;
}

/* The stored row a reported session is: the same agent id, else a pending
 * placement of the user, else any row of the user without (or, when the
 * agent gives none, with) an id. */
static struct hb_row *
hb_match(struct hb_row *rows, size_t n, const char *user, const char *rid)
{
	struct hb_row *loose = NULL, *pending = NULL;

	for (size_t i = 0; i < n; i++) {
		struct hb_row *w = &rows[i];
		if (w->matched || strcmp(w->user, user) != 0)
			continue;
		if (rid[0] != '\0' && strcmp(w->remote_id, rid) == 0)
			return w;
		if (pending == NULL && strcmp(w->state, "pending") == 0)
			pending = w;
		else if (loose == NULL && (w->remote_id[0] == '\0' || rid[0] == '\0'))
			loose = w;
	}
	return pending ? pending : loose;
}

static int
hb_reconcile(struct store *st, int64_t id, const struct wire_heartbeat *hb, int up,
    int64_t now, int *confirmed)
{
	struct hb_row *rows = NULL;
	size_t n = 0;
	int r;

	*confirmed = 0;
	if ((r = rows_all(st, prep(st, "SELECT id, user, remote_id, state FROM sessions "
	    "WHERE server_id = ? AND state != 'ended'", "I", id), sizeof(*rows), hb_row,
	    &rows, &n)) != 0) {
		free(rows);
		return r;
	}
	for (size_t i = 0; i < hb->nsessions && r == 0; i++) {
		const struct wire_session *ws = &hb->sessions[i];
		const char *state = !up ? "lost" :
		    ws->state == WIRE_ACTIVE ? "active" : "disconnected";
		char user[WIRE_USER_MAX];
		struct hb_row *w;

		if (placement_user_normalise(ws->user, user, sizeof(user)) != 0)
			continue;	/* "DOMAIN\" and the like: nobody to place */
		if ((w = hb_match(rows, n, user, ws->id)) == NULL) {
			r = EXEC(st, "INSERT INTO sessions (server_id, user, login, domain, "
			    "remote_id, state, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			    "ItttttII", id, user, ws->user, ws->domain, ws->id, state,
			    now, now);
			continue;
		}
		w->matched = 1;
		if (strcmp(w->state, "pending") == 0)
			(*confirmed)++;
		if (strcmp(w->state, state) == 0 && strcmp(w->remote_id, ws->id) == 0)
			continue;	/* unchanged: no write */
		r = EXEC(st, "UPDATE sessions SET state = ?, remote_id = ?, login = ?, "
		    "domain = ?, updated = ?, expires = 0 WHERE id = ?", "ttttII", state,
		    ws->id, ws->user, ws->domain, now, w->id);
	}
	/* what the agent no longer reports has ended; pending ones wait */
	for (size_t i = 0; i < n && r == 0; i++) {
		if (!rows[i].matched && strcmp(rows[i].state, "pending") != 0)
			r = EXEC(st, "UPDATE sessions SET state = 'ended', updated = ? "
			    "WHERE id = ?", "II", now, rows[i].id);
	}
	if (r == 0 && *confirmed > 0)
		r = EXEC(st, "UPDATE servers SET last_confirmed = ?, unconfirmed = 0 "
		    "WHERE id = ?", "II", now, id);
	free(rows);
	return r;
}

static int
server_row_states(sqlite3_stmt *s, void *dst)
{
	struct store_server *o = dst;

	col_text(s, 0, o->state, sizeof(o->state));
	col_text(s, 1, o->admin_state, sizeof(o->admin_state));
	col_text(s, 2, o->name, sizeof(o->name));
	return 0;
}

int
store_heartbeat_apply(struct store *st, int64_t id, const struct wire_heartbeat *hb,
    int64_t now, struct store_heartbeat_result *res)
{
	struct store_server srv;
	const char *name = srv.name;
	int r, up = hb->rdp_accepting;

	memset(res, 0, sizeof(*res));
	if ((r = begin(st)) != 0)
		return r;
	if ((r = row_one(st, prep(st, "SELECT state, admin_state, name FROM servers "
	    "WHERE id = ?", "I", id), server_row_states, &srv)) != 0)
		goto out;
	res->draining = strcmp(srv.admin_state, "draining") == 0;
	lc_touch(st, id);		/* load, health and sessions */
	r = EXEC(st, "UPDATE servers SET last_heartbeat = ?, rdp_accepting = ?, "
	    "agent_version = ?, ncpu = ?, cpu_percent = ?, load1 = ?, mem_total_kb = ?, "
	    "mem_available_kb = ?, sessions_known = ? WHERE id = ?", "IitiddIIiI",
	    now, hb->rdp_accepting, hb->version, hb->ncpu, hb->cpu_percent, hb->load1,
	    hb->mem_total_kb, hb->mem_available_kb, hb->sessions_known, id);
	if (r != 0)
		goto out;
	if (up && strcmp(srv.state, "up") != 0) {
		r = EXEC(st, "UPDATE servers SET state = 'up', state_reason = "
		    "'heartbeat', state_since = ? WHERE id = ?", "II", now, id);
		if (r == 0)
			r = event_insert(st, now, "server_up", name, NULL, NULL,
			    "heartbeat with RDP accepting", 0);
		res->went_up = 1;
	} else if (!up)
		r = server_set_down(st, id, name, "RDP port not accepting", now,
		    &res->went_down);
	if (r == 0 && hb->sessions_known)
		r = hb_reconcile(st, id, hb, up, now, &res->confirmed);
 out:
	return end(st, r);
}

/* ---- placement ---- */

static int
place_session_row(sqlite3_stmt *s, void *dst)
{
	struct pl_session *p = dst;
	const char *state = (const char *)sqlite3_column_text(s, 2);

	p->id = sqlite3_column_int64(s, 0);
	p->server_id = sqlite3_column_int64(s, 1);
	p->state = strcmp(state, "pending") == 0 ? PL_PENDING :
	    strcmp(state, "active") == 0 ? PL_ACTIVE : PL_DISCONNECTED;
	p->updated = sqlite3_column_int64(s, 3);
	return 0;
}

/* A server's row of the load cache: the columns of LC_SERVER_COLS. */
#define LC_SERVER_COLS "id, name, state = 'up', admin_state = 'draining', " \
    "quarantined_until, weight, max_sessions, cpu_percent FROM servers "

struct lc_row {
	struct pl_server p;
	int64_t q_until;
};

static int
lc_server_row(sqlite3_stmt *s, void *dst)
{
	struct lc_row *w = dst;
	const unsigned char *nm = sqlite3_column_text(s, 1);

	w->p.id = sqlite3_column_int64(s, 0);
	w->p.up = sqlite3_column_int(s, 2);
	w->p.draining = sqlite3_column_int(s, 3);
	w->q_until = sqlite3_column_int64(s, 4);
	w->p.weight = sqlite3_column_int(s, 5);
	w->p.max_sessions = sqlite3_column_int(s, 6);
	w->p.cpu_percent = sqlite3_column_double(s, 7);
	return (w->p.name = strdup(nm ? (const char *)nm : "")) ? 0 : -1;
}

static int
data_version(struct store *st, int64_t *v)
{
	return row_one(st, prep(st, "PRAGMA data_version", ""), row_id, v);
}

/* Counts of server id's sessions (placement's view) into lc slot i. */
struct lc_counts {
	int sessions, pending;
	int64_t min_expires;
};

static int
lc_counts_row(sqlite3_stmt *s, void *dst)
{
	struct lc_counts *c = dst;

	c->sessions = sqlite3_column_int(s, 0);
	c->pending = sqlite3_column_int(s, 1);
	c->min_expires = sqlite3_column_type(s, 2) == SQLITE_NULL ? INT64_MAX :
	    sqlite3_column_int64(s, 2);
	return 0;
}

/* Re-reads slot i (its server and its counts at now). */
static int
lc_refresh(struct store *st, size_t i, int64_t now)
{
	struct load_cache *lc = &st->lc;
	struct lc_row w;
	struct lc_counts c;
	int r;

	memset(&w, 0, sizeof(w));
	if ((r = row_one(st, prep(st, "SELECT " LC_SERVER_COLS "WHERE id = ?", "I",
	    lc->sv[i].id), lc_server_row, &w)) != 0) {
		free((char *)w.p.name);
		if (r == STORE_NOT_FOUND)
			lc->valid = 0;	/* removed meanwhile: reload */
		return r == STORE_NOT_FOUND ? 0 : r;
	}
	if ((r = row_one(st, prep(st, "SELECT count(*) FILTER (WHERE state IN ('active', "
	    "'disconnected')), count(*) FILTER (WHERE state = 'pending' AND expires > ?2), "
	    "min(expires) FILTER (WHERE state = 'pending' AND expires > ?2) FROM sessions "
	    "WHERE server_id = ?1 AND state IN ('active', 'disconnected', 'pending')", "II",
	    lc->sv[i].id, now), lc_counts_row, &c)) != 0) {
		free((char *)w.p.name);
		return r;
	}
	free((char *)lc->sv[i].name);
	w.p.sessions = c.sessions;
	w.p.pending = c.pending;
	lc->sv[i] = w.p;
	lc->q_until[i] = w.q_until;
	lc->min_expires[i] = c.min_expires;
	lc->dirty[i] = 0;
	return 0;
}

/* Loads every server and its counts at now. */
static int
lc_load(struct store *st, int64_t now)
{
	struct load_cache *lc = &st->lc, nl;
	struct lc_row *rows = NULL;
	sqlite3_stmt *s;
	int64_t version;
	size_t n = 0;
	int r, rc;

	lc_clear(lc);
	memset(&nl, 0, sizeof(nl));
	if ((r = data_version(st, &version)) != 0)
		return r;
	r = rows_all(st, prep(st, "SELECT " LC_SERVER_COLS "ORDER BY id", ""),
	    sizeof(*rows), lc_server_row, &rows, &n);
	nl.sv = calloc(n + 1, sizeof(*nl.sv));
	nl.q_until = calloc(n + 1, sizeof(*nl.q_until));
	nl.min_expires = calloc(n + 1, sizeof(*nl.min_expires));
	nl.dirty = calloc(n + 1, 1);
	for (size_t i = 0; i < n; i++) {
		if (nl.sv != NULL) {
			nl.sv[nl.n] = rows[i].p;
			nl.n++;
		} else
			free((char *)rows[i].p.name);
		if (nl.q_until != NULL)
			nl.q_until[i] = rows[i].q_until;
		if (nl.min_expires != NULL)
			nl.min_expires[i] = INT64_MAX;
	}
	free(rows);
	if (r != 0)
		goto fail;
	if (nl.sv == NULL || nl.q_until == NULL || nl.min_expires == NULL || nl.dirty == NULL) {
		r = STORE_ERR;
		goto fail;
	}
	if ((s = prep(st, "SELECT server_id, count(*) FILTER (WHERE state IN ('active', "
	    "'disconnected')), count(*) FILTER (WHERE state = 'pending' AND expires > ?1), "
	    "min(expires) FILTER (WHERE state = 'pending' AND expires > ?1) FROM sessions "
	    "WHERE state IN ('active', 'disconnected', 'pending') GROUP BY server_id", "I",
	    now)) == NULL) {
		r = STORE_ERR;
		goto fail;
	}
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		ssize_t i = lc_find(&nl, sqlite3_column_int64(s, 0));

		if (i < 0)
			continue;
		nl.sv[i].sessions = sqlite3_column_int(s, 1);
		nl.sv[i].pending = sqlite3_column_int(s, 2);
		if (sqlite3_column_type(s, 3) != SQLITE_NULL)
			nl.min_expires[i] = sqlite3_column_int64(s, 3);
	}
	done(st, s);
	if (rc != SQLITE_DONE) {
		r = DB_ERROR(st, rc);
		goto fail;
	}
	nl.valid = 1;
	nl.data_version = version;
	*lc = nl;
	return 0;
 fail:
	lc_clear(&nl);
	return r;
}

/* Brings the cache up to date at now (inside a transaction, lock held):
 * reloaded whole if another connection committed since, else the servers
 * this connection changed and those whose counted pending placements
 * expire by now are re-read; quarantine is decided at now. */
static int
lc_update(struct store *st, int64_t now)
{
	struct load_cache *lc = &st->lc;
	int64_t version;
	int r;

	if (lc->valid && ((r = data_version(st, &version)) != 0 ||
	    version != lc->data_version))
		lc->valid = 0;
	for (int pass = 0; pass < 2; pass++) {
		if (!lc->valid && (r = lc_load(st, now)) != 0)
			return r;
		for (size_t i = 0; i < lc->n && lc->valid; i++) {
			if ((lc->dirty[i] || lc->min_expires[i] <= now) &&
			    (r = lc_refresh(st, i, now)) != 0)
				return r;
			lc->sv[i].quarantined = lc->q_until[i] > now;
		}
		if (lc->valid)
			return 0;
		/* a server vanished while being re-read: load once more, whole */
	}
	return STORE_ERR;
}

/* The servers with their load (the cache's array: borrowed, valid while the
 * lock is held) and the user's live sessions (the caller frees *sess). */
static int
place_load(struct store *st, const struct store_place_request *req,
    const struct pl_server **servers, size_t *nservers, struct pl_session **sess,
    size_t *nsess)
{
	int r;

	*sess = NULL;
	*nsess = 0;
	if ((r = lc_update(st, req->now)) != 0) {
		st->lc.valid = 0;
		return r;
	}
	*servers = st->lc.sv;
	*nservers = st->lc.n;
	return rows_all(st, prep(st, "SELECT id, server_id, state, updated FROM sessions "
	    "WHERE user = ?1 AND (state IN ('active', 'disconnected') OR (state = "
	    "'pending' AND expires > ?2))", "tI", req->user, req->now), sizeof(**sess),
	    place_session_row, sess, nsess);
}

static int
place_result_row(sqlite3_stmt *s, void *dst)
{
	struct store_place_result *o = dst;

	col_text(s, 0, o->server, sizeof(o->server));
	col_text(s, 1, o->address, sizeof(o->address));
	col_text(s, 2, o->fqdn, sizeof(o->fqdn));
	o->port = sqlite3_column_int(s, 3);
	return 0;
}

int
store_placement_commit(struct store *st, const struct store_place_request *req,
    struct store_place_result *out)
{
	const struct pl_server *sv = NULL;
	struct pl_session *ss = NULL;
	struct pl_decision d;
	struct store_place_result res;
	size_t ns = 0, nu = 0;
	int r, pr, full = 0;
	int64_t placed_on = 0;

	memset(&res, 0, sizeof(res));
	if ((r = begin(st)) != 0)
		return r;
	if ((r = place_load(st, req, &sv, &ns, &ss, &nu)) != 0)
		goto out;
	struct pl_input in = { sv, ns, ss, nu, req->pending_penalty };
	if ((pr = placement_pick(&in, &d)) != 0) {
		util_strlcpy(out->reason, placement_strerror(pr), sizeof(out->reason));
		r = STORE_REFUSED;
		goto out;
	}
	res.reconnect = d.reconnect;
	if (d.reconnect) {
		res.session_id = ss[d.session].id;
		r = EXEC(st, "UPDATE sessions SET client = ?, updated = ?, expires = "
		    "CASE state WHEN 'pending' THEN ? ELSE expires END WHERE id = ?",
		    "tIII", req->client, req->now, req->now + req->pending_ttl_ms,
		    res.session_id);
		if (r == STORE_FULL) {	/* still answered: see below */
			full = 1;
			r = 0;
		}
	} else {
		r = EXEC(st, "INSERT INTO sessions (server_id, user, login, domain, state, "
		    "client, created, updated, expires) VALUES (?, ?, ?, ?, 'pending', ?, "
		    "?, ?, ?)", "IttttIII", sv[d.server].id, req->user, req->login,
		    req->domain, req->client, req->now, req->now,
		    req->now + req->pending_ttl_ms);
		res.session_id = sqlite3_last_insert_rowid(st->db);
		placed_on = sv[d.server].id;
	}
	if (r != 0)
		goto out;
	res.server_id = sv[d.server].id;
	r = row_one(st, prep(st, "SELECT name, address, fqdn, port FROM servers WHERE "
	    "id = ?", "I", sv[d.server].id), place_result_row, &res);
 out:
	free(ss);
	if (full && r == 0)
		r = STORE_FULL;
	if ((r = end_locked(st, r)) == STORE_FULL && res.reconnect && res.server[0] != '\0') {
		/* the disk is full (at the UPDATE or the COMMIT): the session the
		 * reconnect follows is committed already, so it is served */
		res.unrecorded = 1;
		r = 0;
	}
	if (r == 0) {
		*out = res;
		if (placed_on != 0 && st->lc.valid && (size_t)d.server < st->lc.n) {
			/* the new pending placement counts at once */
			st->lc.sv[d.server].pending++;
			if (req->now + req->pending_ttl_ms < st->lc.min_expires[d.server])
				st->lc.min_expires[d.server] = req->now + req->pending_ttl_ms;
		}
	} else
		st->lc.valid = 0;
	pthread_mutex_unlock(&st->lock);
	return r;
}

int
store_pending_expire(struct store *st, int64_t now, int *expired)
{
	int r;

	*expired = 0;
	if ((r = begin(st)) != 0)
		return r;
	r = EXEC(st, "INSERT INTO events (ts, kind, server, user, client, detail) "
	    "SELECT ?1, 'pending_expired', v.name, s.user, s.client, "
	    "'placement not confirmed by the agent' FROM sessions s JOIN servers v "
	    "ON v.id = s.server_id WHERE s.state = 'pending' AND s.expires <= ?1", "I", now);
	if (r == 0)
		r = EXEC(st, "UPDATE servers SET unconfirmed = unconfirmed + (SELECT "
		    "count(*) FROM sessions WHERE server_id = servers.id AND state = "
		    "'pending' AND expires <= ?1) WHERE id IN (SELECT server_id FROM "
		    "sessions WHERE state = 'pending' AND expires <= ?1)", "I", now);
	if (r == 0)
		r = exec_changes(st, prep(st, "UPDATE sessions SET state = 'ended', "
		    "updated = ?1 WHERE state = 'pending' AND expires <= ?1", "I", now),
		    expired);
	/* what ended here expired by now: only servers with such a counted
	 * placement (min_expires <= now) can have lost one */
	for (size_t i = 0; *expired > 0 && st->lc.valid && i < st->lc.n; i++)
		if (st->lc.min_expires[i] <= now)
			st->lc.dirty[i] = 1;
	return end(st, r);
}

/* ---- routing ---- */

static int
route_row(sqlite3_stmt *s, void *dst)
{
	struct store_route *o = dst;

	o->session_id = sqlite3_column_int64(s, 0);
	col_text(s, 1, o->user, sizeof(o->user));
	col_text(s, 2, o->login, sizeof(o->login));
	col_text(s, 3, o->domain, sizeof(o->domain));
	col_text(s, 4, o->session_state, sizeof(o->session_state));
	o->server_id = sqlite3_column_int64(s, 5);
	col_text(s, 6, o->server, sizeof(o->server));
	col_text(s, 7, o->address, sizeof(o->address));
	o->port = sqlite3_column_int(s, 8);
	col_text(s, 9, o->server_state, sizeof(o->server_state));
	o->live = sqlite3_column_int(s, 10);
	return 0;
}

/* Lock held. */
static int
route_query(struct store *st, int64_t session_id, int64_t now, struct store_route *out)
{
	return row_one(st, prep(st, "SELECT e.id, e.user, e.login, e.domain, e.state, "
	    "v.id, v.name, v.address, v.port, v.state, v.state = 'up' AND (e.state IN "
	    "('active', 'disconnected') OR (e.state = 'pending' AND e.expires > ?2)) "
	    "FROM sessions e JOIN servers v ON v.id = e.server_id WHERE e.id = ?1",
	    "II", session_id, now), route_row, out);
}

int
store_session_route(struct store *st, int64_t session_id, int64_t now,
    struct store_route *out)
{
	struct store_route res;
	int r;

	memset(&res, 0, sizeof(res));
	pthread_mutex_lock(&st->lock);
	r = route_query(st, session_id, now, &res);
	pthread_mutex_unlock(&st->lock);
	if (r == 0)
		*out = res;
	return r;
}

int
store_user_route(struct store *st, const char *user, int64_t now,
    struct store_route *out)
{
	struct store_place_request req = { .user = user, .now = now };
	struct store_route res;
	const struct pl_server *sv = NULL;
	struct pl_session *ss = NULL;
	struct pl_decision d;
	size_t ns = 0, nu = 0;
	int r;

	memset(&res, 0, sizeof(res));
	pthread_mutex_lock(&st->lock);
	if ((r = EXEC(st, "BEGIN", "")) != 0)
		goto unlock;
	if ((r = place_load(st, &req, &sv, &ns, &ss, &nu)) != 0)
		goto out;
	struct pl_input in = { sv, ns, ss, nu, 0 };
	if (nu == 0 || placement_pick(&in, &d) != 0 || !d.reconnect) {
		r = STORE_NOT_FOUND;
		goto out;
	}
	r = route_query(st, ss[d.session].id, now, &res);
 out:
	free(ss);
	(void)EXEC(st, "COMMIT", "");	/* read only: ends the snapshot */
 unlock:
	pthread_mutex_unlock(&st->lock);
	if (r == 0)
		*out = res;
	return r;
}

/* ---- sessions ---- */

static int
session_row(sqlite3_stmt *s, void *dst)
{
	struct store_session *e = dst;

	e->id = sqlite3_column_int64(s, 0);
	col_text(s, 1, e->server, sizeof(e->server));
	col_text(s, 2, e->user, sizeof(e->user));
	col_text(s, 3, e->login, sizeof(e->login));
	col_text(s, 4, e->domain, sizeof(e->domain));
	col_text(s, 5, e->remote_id, sizeof(e->remote_id));
	col_text(s, 6, e->state, sizeof(e->state));
	col_text(s, 7, e->client, sizeof(e->client));
	e->created = sqlite3_column_int64(s, 8);
	e->updated = sqlite3_column_int64(s, 9);
	e->expires = sqlite3_column_int64(s, 10);
	return 0;
}

int
store_session_list(struct store *st, const struct store_session_filter *f,
    struct store_session **out, size_t *n)
{
	char user[WIRE_USER_MAX] = "";
	int r;

	if (f->user && f->user[0] && placement_user_normalise(f->user, user,
	    sizeof(user)) != 0)
		user[0] = '\0';
	pthread_mutex_lock(&st->lock);
	r = rows_all(st, prep(st, "SELECT e.id, v.name, e.user, e.login, e.domain, "
	    "e.remote_id, e.state, e.client, e.created, e.updated, e.expires FROM "
	    "sessions e JOIN servers v ON v.id = e.server_id WHERE (?1 = '' OR e.user = "
	    "?1) AND (?2 = '' OR v.name = ?2) AND ((?3 = '' AND e.state != 'ended') OR "
	    "e.state = ?3) ORDER BY e.updated DESC, e.id DESC LIMIT 100000", "ttt",
	    user, f->server ? f->server : "", f->state ? f->state : ""),
	    sizeof(**out), session_row, out, n);
	pthread_mutex_unlock(&st->lock);
	if (r != 0) {
		free(*out);
		*out = NULL;
	}
	return r;
}

int
store_session_forget(struct store *st, int64_t id, int64_t now)
{
	char detail[64];
	int r, changed;

	if ((r = begin(st)) != 0)
		return r;
	r = exec_changes(st, prep(st, "UPDATE sessions SET state = 'ended', updated = ? "
	    "WHERE id = ? AND state != 'ended'", "II", now, id), &changed);
	lc_touch(st, 0);		/* rare: reload rather than look the server up */
	if (r == 0 && !changed)
		r = STORE_NOT_FOUND;
	snprintf(detail, sizeof(detail), "session %lld forgotten", (long long)id);
	if (r == 0)
		r = EXEC(st, "INSERT INTO events (ts, kind, server, user, detail) SELECT "
		    "?, 'forget', v.name, e.user, ? FROM sessions e JOIN servers v ON "
		    "v.id = e.server_id WHERE e.id = ?", "ItI", now, detail, id);
	return end(st, r);
}

/* ---- events ---- */

int
store_event_add(struct store *st, const char *kind, const char *server,
    const char *user, const char *client, const char *detail, int64_t duration_us)
{
	int r;

	pthread_mutex_lock(&st->lock);
	r = event_insert(st, util_now_ms(), kind, server, user, client, detail,
	    duration_us);
	pthread_mutex_unlock(&st->lock);
	return r;
}

static int
event_row(sqlite3_stmt *s, void *dst)
{
	struct store_event *e = dst;

	e->id = sqlite3_column_int64(s, 0);
	e->ts = sqlite3_column_int64(s, 1);
	col_text(s, 2, e->kind, sizeof(e->kind));
	col_text(s, 3, e->server, sizeof(e->server));
	col_text(s, 4, e->user, sizeof(e->user));
	col_text(s, 5, e->client, sizeof(e->client));
	col_text(s, 6, e->detail, sizeof(e->detail));
	e->duration_us = sqlite3_column_int64(s, 7);
	return 0;
}

int
store_event_list(struct store *st, int64_t since_id, int limit,
    struct store_event **out, size_t *n)
{
	int r;

	pthread_mutex_lock(&st->lock);
	r = rows_all(st, prep(st, "SELECT id, ts, kind, server, user, client, detail, "
	    "duration_us FROM events WHERE id > ? ORDER BY id DESC LIMIT ?", "Ii",
	    since_id, limit < 1 ? 1 : limit), sizeof(**out), event_row, out, n);
	pthread_mutex_unlock(&st->lock);
	if (r != 0) {
		free(*out);
		*out = NULL;
	}
	return r;
}

int
store_event_prune(struct store *st, int64_t before_ms, int keep)
{
	int r;

	if ((r = begin(st)) != 0)
		return r;
	r = EXEC(st, "DELETE FROM events WHERE ts < ? OR id <= (SELECT id FROM events "
	    "ORDER BY id DESC LIMIT 1 OFFSET ?)", "Ii", before_ms, keep);
	if (r == 0)
		r = EXEC(st, "DELETE FROM sessions WHERE state = 'ended' AND updated < ?",
		    "I", before_ms);
	return end(st, r);
}

/* ---- admin ---- */

int
store_admin_password_set(struct store *st, const char *hash, int64_t now)
{
	int r;

	if ((r = begin(st)) != 0)
		return r;
	r = EXEC(st, "INSERT INTO admin (id, password_hash, updated) VALUES (1, ?, ?) "
	    "ON CONFLICT (id) DO UPDATE SET password_hash = excluded.password_hash, "
	    "updated = excluded.updated", "tI", hash, now);
	if (r == 0)
		r = event_insert(st, now, "admin_password", NULL, NULL, NULL,
		    "admin password set", 0);
	return end(st, r);
}

int
store_admin_password_get(struct store *st, char *hash, size_t n)
{
	struct text_buf t = { hash, n };
	int r;

	pthread_mutex_lock(&st->lock);
	r = row_one(st, prep(st, "SELECT password_hash FROM admin WHERE id = 1", ""),
	    row_text, &t);
	pthread_mutex_unlock(&st->lock);
	return r;
}

/* ---- admin API bearer tokens (api_admin, `tsbroker admin token`) ---- */

int
store_admin_token_add(struct store *st, const char *name, const char *token_hash,
    int64_t now)
{
	int r;

	if ((r = begin(st)) != 0)
		return r;
	r = EXEC(st, "INSERT INTO admin_tokens (name, token_hash, created) VALUES "
	    "(?, ?, ?)", "ttI", name, token_hash, now);
	if (r == 0)
		r = event_insert(st, now, "admin_token_added", NULL, NULL, NULL, name, 0);
	return end(st, r);
}

static int
admin_token_row(sqlite3_stmt *s, void *dst)
{
	struct store_admin_token *t = dst;

	col_text(s, 0, t->name, sizeof(t->name));
	t->created = sqlite3_column_int64(s, 1);
	t->last_used = sqlite3_column_int64(s, 2);
	return 0;
}

int
store_admin_token_auth(struct store *st, const char *token_hash, int64_t now,
    char *name, size_t namelen)
{
	struct store_admin_token t;
	int r;

	pthread_mutex_lock(&st->lock);
	r = row_one(st, prep(st, "SELECT name, created, last_used FROM admin_tokens "
	    "WHERE token_hash = ?", "t", token_hash), admin_token_row, &t);
	if (r == 0 && now - t.last_used >= 60000)
		r = EXEC(st, "UPDATE admin_tokens SET last_used = ? WHERE token_hash = ?",
		    "It", now, token_hash);
	pthread_mutex_unlock(&st->lock);
	if (r == 0)
		util_strlcpy(name, t.name, namelen);
	return r;
}

int
store_admin_token_list(struct store *st, struct store_admin_token **out, size_t *n)
{
	int r;

	pthread_mutex_lock(&st->lock);
	r = rows_all(st, prep(st, "SELECT name, created, last_used FROM admin_tokens "
	    "ORDER BY name", ""), sizeof(**out), admin_token_row, out, n);
	pthread_mutex_unlock(&st->lock);
	if (r != 0) {
		free(*out);
		*out = NULL;
	}
	return r;
}

int
store_admin_token_remove(struct store *st, const char *name, int64_t now)
{
	int r, changed;

	if ((r = begin(st)) != 0)
		return r;
	r = exec_changes(st, prep(st, "DELETE FROM admin_tokens WHERE name = ?", "t",
	    name), &changed);
	if (r == 0 && !changed)
		r = STORE_NOT_FOUND;
	if (r == 0)
		r = event_insert(st, now, "admin_token_removed", NULL, NULL, NULL, name, 0);
	return end(st, r);
}
