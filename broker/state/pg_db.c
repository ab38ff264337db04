/* pg_db.c: the PostgreSQL connection (pg_db.h), the only file that
 * includes libpq-fe.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/state/schema.h"
#include "broker/state/pg_db.h"

#define STMT_CACHE 128
#define PARAMS_MAX 16
#define OID_INT4 23
#define OID_INT8 20
#define OID_TEXT 25
#define OID_FLOAT8 701
/* pg_advisory_xact_lock keys: the migrations; users use hashtext() */
#define LOCK_MIGRATE INT64_C(0x7473620001)

struct pg_stmt {
	const char *sql;		/* the cache key: a string constant */
	char name[16];			/* s<N>, prepared on this connection */
};

struct store_db {
	struct sql_db sql;		/* first: pgdb_ops */
	PGconn *conn;
	struct pg_stmt cache[STMT_CACHE];
	size_t ncache;
	/* the values bound by the last pgdb_prep */
	int nparams;
	char vals[PARAMS_MAX][32];
	const char *params[PARAMS_MAX];
	enum pg_fault fault;
	int in_tx, writing;
	uint64_t gen;			/* the generation read in this transaction, or 0 */
};

/* Classifies res (NULL: the connection) into d->fault and a STORE_* code;
 * logged once, without the conninfo. */
static int
db_error(struct store_db *d, const char *func, PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(d->conn) == CONNECTION_BAD)
		d->fault = PG_CONN_LOST;
	else if (state != NULL && strcmp(state, "25006") == 0)
		d->fault = PG_READ_ONLY;
	else if (state != NULL && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0))
		d->fault = PG_RETRY;
	else
		d->fault = PG_OTHER;
	if (state != NULL && strcmp(state, "23505") == 0)
		return STORE_EXISTS;	/* the caller's answer: not logged */
	log_msg(LOG_ERROR, func, "database %s:%s/%s: %s%s%s", PQhost(d->conn) ? PQhost(d->conn) :
	    "", PQport(d->conn) ? PQport(d->conn) : "", PQdb(d->conn) ? PQdb(d->conn) : "",
	    state ? state : "", state ? " " : "", PQerrorMessage(d->conn));
	return state != NULL && strcmp(state, "53100") == 0 ? STORE_FULL : STORE_ERR;
}
#define DB_ERROR(d, res) db_error(d, __func__, res)

enum pg_fault
pgdb_fault(const struct store_db *d)
{
	return d->fault;
}

/* sql with '?' and '?N' turned into '$N' into buf; 0 or -1 (too long). */
static int
placeholders(const char *sql, char *buf, size_t len)
{
	size_t o = 0;
	int n = 0;

	for (const char *p = sql; *p != '\0'; p++) {
		if (o + 8 >= len)
			return -1;
		if (*p != '?') {
			buf[o++] = *p;
			continue;
		}
		if (p[1] >= '0' && p[1] <= '9')
			buf[o++] = '$';
		else
			o += (size_t)snprintf(buf + o, len - o, "$%d", ++n);
	}
	buf[o] = '\0';
	return 0;
}

static struct pg_stmt *
stmt_get(struct store_db *d, const char *sql, const char *fmt)
{
	Oid types[PARAMS_MAX];
	char text[8192];
	PGresult *res;
	struct pg_stmt *s;
	size_t i;
	int r;

	for (i = 0; i < d->ncache; i++)
		if (d->cache[i].sql == sql)
			return &d->cache[i];
	if (d->ncache == STMT_CACHE || strlen(fmt) > PARAMS_MAX ||
	    placeholders(sql, text, sizeof(text)) != 0) {
		log_error("statement cache full or statement too long");
		return NULL;
	}
	for (i = 0; fmt[i] != '\0'; i++)
		types[i] = fmt[i] == 't' ? OID_TEXT : fmt[i] == 'i' ? OID_INT4 :
		    fmt[i] == 'I' ? OID_INT8 : OID_FLOAT8;
	s = &d->cache[d->ncache];
	snprintf(s->name, sizeof(s->name), "s%zu", d->ncache);
	res = PQprepare(d->conn, s->name, text, (int)i, types);
	r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : DB_ERROR(d, res);
	PQclear(res);
	if (r != 0)
		return NULL;
	s->sql = sql;
	d->ncache++;
	return s;
}

static struct sql_stmt *
pgdb_vprep(struct store_db *d, const char *sql, const char *fmt, va_list ap)
{
	struct pg_stmt *s;
	int i;

	if ((s = stmt_get(d, sql, fmt)) == NULL)
		return NULL;
	for (i = 0; fmt[i] != '\0'; i++) {
		char *v = d->vals[i];

		d->params[i] = v;
		switch (fmt[i]) {
		case 't': d->params[i] = va_arg(ap, const char *); break;
		case 'i': snprintf(v, sizeof(d->vals[i]), "%d", va_arg(ap, int)); break;
		case 'I': snprintf(v, sizeof(d->vals[i]), "%lld",
		    (long long)va_arg(ap, int64_t)); break;
		case 'd': snprintf(v, sizeof(d->vals[i]), "%.17g", va_arg(ap, double)); break;
		}
	}
	d->nparams = i;
	return (struct sql_stmt *)s;
}

static struct sql_stmt *
pgdb_prep(struct store_db *d, const char *sql, const char *fmt, ...)
{
	struct sql_stmt *s;
	va_list ap;

	va_start(ap, fmt);
	s = pgdb_vprep(d, sql, fmt, ap);
	va_end(ap);
	return s;
}

/* Runs s; the result (PGRES_TUPLES_OK or COMMAND_OK) or NULL (classified
 * into *r). */
static PGresult *
run(struct store_db *d, struct sql_stmt *stmt, int *r, const char *func)
{
	const struct pg_stmt *s = (const struct pg_stmt *)stmt;
	PGresult *res;
	ExecStatusType st;

	*r = STORE_ERR;
	if (s == NULL)
		return NULL;
	res = PQexecPrepared(d->conn, s->name, d->nparams, d->params, NULL, NULL, 0);
	st = PQresultStatus(res);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		*r = 0;
		return res;
	}
	*r = db_error(d, func, res);
	PQclear(res);
	return NULL;
}

/* Row i of res into dst; 0 or -1 (a state's text unknown). */
static int
row_map(PGresult *res, int row, struct cols cols, void *dst)
{
	int r = 0;

	for (size_t i = 0; i < cols.n; i++) {
		const struct col *c = &cols.c[i];
		void *p = (char *)dst + c->off;
		const char *t = PQgetvalue(res, row, (int)i);

		switch (c->type) {
		case 'L': *(int64_t *)p = strtoll(t, NULL, 10); break;
		case 'I': *(int *)p = (int)strtol(t, NULL, 10); break;
		case 'D': *(double *)p = strtod(t, NULL); break;
		case 'T': util_strlcpy(p, t, c->size); break;
		case 'S': r |= server_state_parse(t, p); break;
		case 'A': r |= admin_state_parse(t, p); break;
		case 'E': r |= session_state_parse(t, p); break;
		}
	}
	return r;
}

static int
pgdb_exec(struct store_db *d, struct sql_stmt *s, int *changes)
{
	PGresult *res;
	int r;

	if (changes != NULL)
		*changes = 0;
	if ((res = run(d, s, &r, __func__)) == NULL)
		return r;
	if (changes != NULL)
		*changes = atoi(PQcmdTuples(res));
	PQclear(res);
	return 0;
}

static int
pgdb_row(struct store_db *d, struct sql_stmt *s, struct cols cols, void *dst)
{
	PGresult *res;
	int r;

	if ((res = run(d, s, &r, __func__)) == NULL)
		return r;
	if (PQntuples(res) == 0)
		r = STORE_NOT_FOUND;
	else if (row_map(res, 0, cols, dst) != 0)
		r = STORE_ERR;
	PQclear(res);
	return r;
}

static int
pgdb_rows(struct store_db *d, struct sql_stmt *s, size_t elem, struct cols cols,
    void *out, size_t *n)
{
	PGresult *res;
	char *list = NULL;
	int r, rows = 0;

	*(void **)out = NULL;
	*n = 0;
	if ((res = run(d, s, &r, __func__)) == NULL)
		return r;
	rows = PQntuples(res);
	if (rows > 0 && (list = calloc((size_t)rows, elem)) == NULL)
		r = STORE_ERR;
	for (int i = 0; r == 0 && i < rows; i++)
		if (row_map(res, i, cols, list + (size_t)i * elem) != 0)
			r = STORE_ERR;
	PQclear(res);
	*(void **)out = list;
	*n = list ? (size_t)rows : 0;
	return r;
}

static int
pgdb_each(struct store_db *d, struct sql_stmt *s, struct cols cols, void *buf, size_t elem,
    int (*each)(void *ctx, const void *row), void *ctx, size_t *rows)
{
	PGresult *res;
	int r;

	*rows = 0;
	if ((res = run(d, s, &r, __func__)) == NULL)
		return r;
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		memset(buf, 0, elem);
		r = row_map(res, i, cols, buf) == 0 ? each(ctx, buf) : STORE_ERR;
		(*rows)++;
	}
	PQclear(res);
	return r;
}

struct gen_row { int64_t v; };
static const struct col gen_cols[] = { COL('L', struct gen_row, v) };

static int64_t
pgdb_last_id(struct store_db *d)
{
	struct gen_row g = { 0 };

	(void)pgdb_row(d, pgdb_prep(d, "SELECT lastval()", ""), COLS(gen_cols), &g);
	return g.v;
}

static const struct sql_ops pgdb_ops = { pgdb_vprep, pgdb_exec, pgdb_row, pgdb_rows,
	pgdb_each, pgdb_last_id };

/* A statement without parameters or rows, outside the cache. */
static int
simple(struct store_db *d, const char *sql, const char *func)
{
	PGresult *res = PQexec(d->conn, sql);
	int r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : db_error(d, func, res);

	PQclear(res);
	return r;
}

/* ---- transactions ---- */

/* After a lost connection or a standby: reconnect (libpq walks the host
 * list); the prepared statements are gone with the old session. */
static int
reconnect(struct store_db *d)
{
	PQreset(d->conn);
	d->ncache = 0;
	d->fault = PG_OK;
	if (PQstatus(d->conn) != CONNECTION_OK)
		return DB_ERROR(d, NULL);
	log_info("reconnected to database %s:%s/%s", PQhost(d->conn), PQport(d->conn),
	    PQdb(d->conn));
	return 0;
}

static int gen_made(struct store_db *d, uint64_t *made);

int
pgdb_begin(struct store_db *d, int write)
{
	int r;

	if ((d->fault == PG_CONN_LOST || d->fault == PG_READ_ONLY ||
	    PQstatus(d->conn) == CONNECTION_BAD) && (r = reconnect(d)) != 0)
		return r;
	d->fault = PG_OK;
	d->writing = write;
	d->gen = 0;
	/* lost while idle (a restart, pg_terminate_backend): nothing was
	 * sent yet, so reconnect once (logged there) and begin again */
	PQclear(PQexec(d->conn, "BEGIN ISOLATION LEVEL READ COMMITTED"));
	if (PQstatus(d->conn) == CONNECTION_BAD && (r = reconnect(d)) != 0)
		return r;
	if (PQtransactionStatus(d->conn) == PQTRANS_INTRANS)
		r = 0;
	else
		r = simple(d, "BEGIN ISOLATION LEVEL READ COMMITTED", __func__);
	if (r == 0)
		d->in_tx = 1;
	return r;
}

int
pgdb_end(struct store_db *d, int r, uint64_t *gen)
{
	uint64_t made = 0;

	*gen = 0;
	if (!d->in_tx)
		return r;
	d->in_tx = 0;
	if (r == 0 && d->writing && d->gen != 0)
		r = gen_made(d, &made);
	if (r == 0 && (r = simple(d, "COMMIT", __func__)) == 0) {
		*gen = made;
		return 0;
	}
	if (PQstatus(d->conn) == CONNECTION_OK &&
	    PQtransactionStatus(d->conn) != PQTRANS_IDLE)
		(void)simple(d, "ROLLBACK", __func__);
	return r;
}

/* The generation: a hash of the snapshot's running transactions (xip, in
 * ascending order) and its xmax, which is the latest completed transaction
 * + 1. While xmax stays, transactions below it can only complete, leaving
 * xip; one above it that completes moves xmax: so an equal generation
 * means no transaction completed between the two reads (xmax alone misses
 * a commit by one that was running at the first). xmin is left out: it
 * counts this connection's own transaction. */
#define SQL_SNAPSHOT "WITH c AS (SELECT pg_current_snapshot() AS s) " \
    "SELECT 1, x::text::bigint FROM c, pg_snapshot_xip(s) AS x UNION ALL " \
    "SELECT 2, pg_snapshot_xmax(s)::text::bigint FROM c"
#define GEN_RANGE_MAX 65536	/* of running xids predicted by gen_made */

struct snap_row {
	int64_t kind, v;		/* 1 running, 2 xmax, 3 this transaction's xid */
};
static const struct col snap_cols[] = { COL('L', struct snap_row, kind),
	COL('L', struct snap_row, v) };

struct snap {
	uint64_t h;			/* of the running xids so far */
	int64_t xmax, own;
};

static uint64_t
gen_mix(uint64_t h, uint64_t v)
{
	h = (h ^ v) * UINT64_C(0x9e3779b97f4a7c15);
	return h ^ (h >> 31);
}

static uint64_t
gen_final(uint64_t h, int64_t xmax)
{
	h = gen_mix(h ^ UINT64_C(0x5bd1e995), (uint64_t)xmax);
	return h != 0 ? h : 1;		/* 0: unknown */
}

static int
snap_row(void *ctx, const void *row)
{
	const struct snap_row *w = row;
	struct snap *sn = ctx;

	if (w->kind == 1)
		sn->h = gen_mix(sn->h, (uint64_t)w->v);
	else if (w->kind == 2)
		sn->xmax = w->v;
	else
		sn->own = w->v;
	return 0;
}

int
pgdb_generation(struct store_db *d, uint64_t *gen)
{
	struct snap sn = { 0, 0, 0 };
	struct snap_row w;
	size_t rows;
	int r;

	if ((r = pgdb_each(d, pgdb_prep(d, SQL_SNAPSHOT " ORDER BY 1, 2", ""),
	    COLS(snap_cols), &w, sizeof(w), snap_row, &sn, &rows)) == 0)
		*gen = d->gen = gen_final(sn.h, sn.xmax);
	return r;
}

/* The generation this transaction's commit will make, read just before it:
 * 0 if another transaction completed since the generation was read in it.
 * Else, with xid X of this one: X below xmax leaves the snapshot as it is;
 * X at or above it makes xmax X + 1 and every xid from the old xmax to X
 * (running now, none completed yet) part of the running set. A subxact
 * among those makes the guess wrong: one needless reload, never a missed
 * commit. */
static int
gen_made(struct store_db *d, uint64_t *made)
{
	struct snap sn = { 0, 0, 0 };
	struct snap_row w;
	size_t rows;
	uint64_t h;
	int r;

	*made = 0;
	if ((r = pgdb_each(d, pgdb_prep(d, SQL_SNAPSHOT " UNION ALL SELECT 3, "
	    "coalesce(pg_current_xact_id_if_assigned()::text::bigint, 0) ORDER BY 1, 2", ""),
	    COLS(snap_cols), &w, sizeof(w), snap_row, &sn, &rows)) != 0)
		return r;
	if (gen_final(sn.h, sn.xmax) != d->gen)
		return 0;
	if (sn.own < sn.xmax) {		/* no xid (0) too */
		*made = d->gen;
		return 0;
	}
	if (sn.own - sn.xmax > GEN_RANGE_MAX)
		return 0;
	h = sn.h;
	for (int64_t x = sn.xmax; x < sn.own; x++)
		h = gen_mix(h, (uint64_t)x);
	*made = gen_final(h, sn.own + 1);
	return 0;
}

int
pgdb_user_lock(struct store_db *d, const char *user)
{
	return pgdb_exec(d, pgdb_prep(d, "SELECT pg_advisory_xact_lock(1, hashtext(?))", "t",
	    user), NULL);
}

int
pgdb_server_lock(struct store_db *d, int64_t server_id)
{
	return pgdb_exec(d, pgdb_prep(d, "SELECT id FROM servers WHERE id = ? FOR UPDATE", "I",
	    server_id), NULL);
}

/* ---- open and migrate ---- */

/* Applies the migrations not applied yet, each in its transaction, under
 * an advisory lock: brokers starting together apply each once. */
static int
migrate(struct store_db *d, char *err, size_t errlen)
{
	struct gen_row v = { 0 };
	int64_t latest = pg_schema_migrations[pg_schema_count - 1].version;
	uint64_t gen;
	int r;

	if ((r = pgdb_begin(d, 1)) != 0 ||
	    (r = pgdb_exec(d, pgdb_prep(d, "SELECT pg_advisory_xact_lock(?)", "I",
	    LOCK_MIGRATE), NULL)) != 0 ||
	    (r = simple(d, "CREATE TABLE IF NOT EXISTS tsb_schema (version bigint NOT "
	    "NULL)", __func__)) != 0)
		goto out;
	r = pgdb_row(d, pgdb_prep(d, "SELECT coalesce(max(version), 0) FROM tsb_schema", ""),
	    COLS(gen_cols), &v);
	if (r != 0)
		goto out;
	if (v.v > latest) {
		snprintf(err, errlen, "the database has schema version %lld, newer than "
		    "this tsbroker knows (%lld): use a newer tsbroker or restore a backup",
		    (long long)v.v, (long long)latest);
		r = STORE_TOO_NEW;
		goto out;
	}
	for (size_t i = 0; i < pg_schema_count && r == 0; i++) {
		const struct schema_migration *m = &pg_schema_migrations[i];

		if (m->version <= v.v)
			continue;
		if ((r = simple(d, m->sql, __func__)) == 0)
			r = pgdb_exec(d, pgdb_prep(d, "INSERT INTO tsb_schema VALUES (?)", "I",
			    (int64_t)m->version), NULL);
		if (r == 0)
			log_info("applied schema migration postgresql/%s", m->name);
		else
			snprintf(err, errlen, "migration %s failed", m->name);
	}
 out:
	r = pgdb_end(d, r, &gen);
	if (r != 0 && err[0] == '\0')
		snprintf(err, errlen, "cannot read or apply the schema");
	return r;
}

void
pgdb_close(struct store_db *d)
{
	if (d == NULL)
		return;
	PQfinish(d->conn);
	free(d);
}

struct store_db *
pgdb_open(const char *conninfo, char *err, size_t errlen)
{
	struct store_db *d;

	err[0] = '\0';
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->sql.ops = &pgdb_ops;
	d->conn = PQconnectdb(conninfo);
	if (PQstatus(d->conn) != CONNECTION_OK) {
		/* libpq's message names host and port, never the password */
		snprintf(err, errlen, "database: %s", PQerrorMessage(d->conn));
		goto fail;
	}
	/* the server's NOTICEs (IF NOT EXISTS) are noise; WARNINGs are kept */
	if (simple(d, "SET client_min_messages = warning", __func__) != 0 ||
	    migrate(d, err, errlen) != 0)
		goto fail;
	return d;
 fail:
	pgdb_close(d);
	return NULL;
}
