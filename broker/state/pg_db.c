/* pg_db.c: the PostgreSQL connection (pg_db.h), the only file that
 * includes libpq-fe.h. */
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/common/wire.h"
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
/* until store_commit_timeout says otherwise ([state] commit_timeout) */
#define PGDB_COMMIT_TIMEOUT_MS 5000

struct pg_stmt {
	const char *sql;		/* the cache key: a string constant */
	char name[16];			/* s<N>, prepared on this connection */
};

struct store_db {
	struct sql_db sql;		/* first: pgdb_ops */
	PGconn *conn;
	char *conninfo;			/* for connections made off the lock; wiped */
	char incarnation[64];		/* the server's timeline and start time */
	int64_t xid;			/* this write transaction's id, read before
					 * COMMIT; 0: none (nothing to commit) */
	int commit_timeout_ms;		/* 0: unbounded */
	int in_commit, warned;		/* a WARNING came during COMMIT */
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

	/* the server's errors carry a SQLSTATE; libpq's own (the link) none */
	if (PQstatus(d->conn) == CONNECTION_BAD || state == NULL)
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
		default: r |= sql_col_text(c, t, p); break;
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

/* ---- connections ---- */

/* The server's notices: a WARNING during COMMIT marks it (by severity, not
 * by text: a cancelled synchronous-replication wait says "committed
 * locally"); WARNINGs are logged, lesser notices dropped. */
static void
notice_receive(void *arg, const PGresult *res)
{
	struct store_db *d = arg;
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	if (sev == NULL || strcmp(sev, "WARNING") != 0)
		return;
	if (d->in_commit)
		d->warned = 1;
	log_msg(LOG_WARN, __func__, "database: %s", msg ? msg : "(warning)");
}

/* A new session on conn: its notices, its settings, which server it is.
 * 0, or -1 (conn unusable). */
static int
conn_setup(struct store_db *d, PGconn *conn, char *incarnation, size_t n)
{
	PGresult *res;
	int ok;

	PQsetNoticeReceiver(conn, notice_receive, d);
	/* the server's NOTICEs (IF NOT EXISTS) are noise; WARNINGs are kept */
	res = PQexec(conn, "SET client_min_messages = warning");
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	if (!ok)
		return -1;
	/* which server: an xid means the same transaction only on the same
	 * incarnation (a promotion changes the timeline, a restart the start) */
	res = PQexec(conn, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) || ' ' "
	    "|| pg_postmaster_start_time()::text");
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		util_strlcpy(incarnation, PQgetvalue(res, 0, 0), n);
	else
		incarnation[0] = '\0';	/* a standby: never the same */
	PQclear(res);
	return PQstatus(conn) == CONNECTION_OK ? 0 : -1;
}

/* After a lost connection or a standby: reconnect (libpq walks the host
 * list); the prepared statements are gone with the old session. No
 * primary: PG_DOWN, STORE_UNAVAILABLE. */
static int
reconnect(struct store_db *d)
{
	PQreset(d->conn);
	d->ncache = 0;
	d->fault = PG_OK;
	if (PQstatus(d->conn) != CONNECTION_OK ||
	    conn_setup(d, d->conn, d->incarnation, sizeof(d->incarnation)) != 0) {
		(void)DB_ERROR(d, NULL);
		d->fault = PG_DOWN;
		return STORE_UNAVAILABLE;
	}
	log_info("reconnected to database %s:%s/%s", PQhost(d->conn), PQport(d->conn),
	    PQdb(d->conn));
	return 0;
}

static int gen_made(struct store_db *d, uint64_t *made);
static void *
pgdb_connect(struct store_db *d)
{
	PGconn *conn = PQconnectdb(d->conninfo);

	if (PQstatus(conn) != CONNECTION_OK) {
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

static void
pgdb_install(struct store_db *d, void *conn)
{
	PQfinish(d->conn);
	d->conn = conn;
	d->ncache = 0;
	d->fault = PG_OK;
	d->in_tx = 0;
	if (conn_setup(d, d->conn, d->incarnation, sizeof(d->incarnation)) != 0)
		d->fault = PG_CONN_LOST;	/* the next begin reconnects */
	log_info("connected to database %s:%s/%s", PQhost(d->conn), PQport(d->conn),
	    PQdb(d->conn));
}

static void
pgdb_commit_timeout(struct store_db *d, int ms)
{
	d->commit_timeout_ms = ms;
}

/* ---- transactions ---- */

int
pgdb_begin(struct store_db *d, int write)
{
	const char *sql = write == STORE_TX_LAZY ? "BEGIN ISOLATION LEVEL READ COMMITTED; "
	    "SET LOCAL synchronous_commit = off" : "BEGIN ISOLATION LEVEL READ COMMITTED";
	int r;

	if ((d->fault == PG_CONN_LOST || d->fault == PG_READ_ONLY || d->fault == PG_DOWN ||
	    d->fault == PG_IN_DOUBT || PQstatus(d->conn) == CONNECTION_BAD) &&
	    (r = reconnect(d)) != 0)
		return r;
	d->fault = PG_OK;
	d->xid = 0;
	d->writing = write;
	d->gen = 0;
	/* lost while idle (a restart, pg_terminate_backend): nothing was
	 * sent yet, so reconnect once (logged there) and begin again */
	PQclear(PQexec(d->conn, sql));
	if (PQstatus(d->conn) == CONNECTION_BAD && (r = reconnect(d)) != 0)
		return r;
	if (PQtransactionStatus(d->conn) == PQTRANS_INTRANS)
		r = 0;
	else
		r = simple(d, sql, __func__);
	if (r == 0)
		d->in_tx = 1;
	return r;
}

static void
hook(struct store_db *d, enum pgdb_hook_point where)
{
	if (pgdb_test_hook != NULL)
		pgdb_test_hook(where, PQsocket(d->conn), PQbackendPID(d->conn));
}

/* Sends a cancel for the statement under way on d (a new connection to the
 * same server, bounded by its connect_timeout). */
static void
cancel(struct store_db *d)
{
	PGcancel *c = PQgetCancel(d->conn);
	char err[256];

	if (c != NULL && !PQcancel(c, err, sizeof(err)))
		log_msg(LOG_WARN, __func__, "database: cannot cancel: %s", err);
	PQfreeCancel(c);
}

/* Waits until the COMMIT sent has its answer, cancelling it past the
 * commit timeout (a synchronous standby that does not confirm) and giving
 * the connection up if even the cancel is not answered within as long. */
static void
commit_wait(struct store_db *d)
{
	int64_t start = util_mono_ms(), limit = d->commit_timeout_ms;
	int cancelled = 0;

	while (PQisBusy(d->conn)) {
		struct pollfd p = { .fd = PQsocket(d->conn), .events = POLLIN };
		int64_t left = limit > 0 ? start + limit * (cancelled + 1) - util_mono_ms() : -1;
		int n = poll(&p, 1, limit > 0 ? (int)(left > 0 ? left : 0) : -1);

		if (n == 0 && !cancelled) {
			log_msg(LOG_WARN, "pgdb_end", "database: COMMIT unanswered after %d ms "
			    "(a synchronous standby missing?): cancelling its wait",
			    d->commit_timeout_ms);
			cancel(d);
			cancelled = 1;
			continue;
		}
		if (n == 0)	/* not even the cancel answered: give it up */
			(void)shutdown(PQsocket(d->conn), SHUT_RDWR);
		if (n < 0 || !PQconsumeInput(d->conn))
			break;
	}
}

/* COMMIT, bounded by the commit timeout. 0; STORE_UNAVAILABLE when it
 * warned (PG_LOCAL_ONLY: on the primary only, not replicated); else the
 * failure classified (a lost connection with an xid: PG_IN_DOUBT). */
static int
commit(struct store_db *d)
{
	PGresult *res, *last = NULL;
	int r;

	d->in_commit = 1;
	d->warned = 0;
	if (PQsendQuery(d->conn, "COMMIT")) {
		hook(d, PGDB_HOOK_COMMIT_SENT);
		commit_wait(d);
	}
	while ((res = PQgetResult(d->conn)) != NULL) {
		PQclear(last);
		last = res;
	}
	d->in_commit = 0;
	if (PQresultStatus(last) == PGRES_COMMAND_OK && !d->warned)
		r = 0;
	else if (d->warned) {
		log_msg(LOG_WARN, "pgdb_end", "database %s:%s: a commit was made on the "
		    "primary only (its synchronous standby did not confirm it): not durable, "
		    "not told", PQhost(d->conn) ? PQhost(d->conn) : "",
		    PQport(d->conn) ? PQport(d->conn) : "");
		d->fault = PG_LOCAL_ONLY;
		r = STORE_UNAVAILABLE;
	} else {
		r = db_error(d, "pgdb_end", last);
		if (d->fault == PG_CONN_LOST && d->xid != 0)
			d->fault = PG_IN_DOUBT;
	}
	PQclear(last);
	return r;
}

/* This write transaction's id into d->xid (0: it has none, nothing to
 * commit, no doubt possible). */
static int
xid_read(struct store_db *d)
{
	struct gen_row g = { 0 };
	int r;

	d->xid = 0;
	if ((r = pgdb_row(d, pgdb_prep(d, "SELECT coalesce(pg_current_xact_id_if_assigned()"
	    "::text, '0')::bigint", ""), COLS(gen_cols), &g)) == 0)
		d->xid = g.v;
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
	if (r == 0 && d->writing)
		r = d->gen != 0 ? gen_made(d, &made) : xid_read(d);
	if (r == 0 && d->writing)
		hook(d, PGDB_HOOK_BEFORE_COMMIT);
	if (r == 0 && (r = commit(d)) == 0) {
		*gen = made;
		return 0;
	}
	/* a link lost is not rolled back (nor its fault overwritten) */
	if (d->fault != PG_CONN_LOST && d->fault != PG_IN_DOUBT &&
	    PQstatus(d->conn) == CONNECTION_OK && PQtransactionStatus(d->conn) != PQTRANS_IDLE)
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

static enum store_fault
pgdb_classify(struct store_db *d)
{
	switch (d->fault) {
	case PG_CONN_LOST:
	case PG_READ_ONLY:
	case PG_RETRY:
		return STORE_FAULT_RETRY;
	case PG_IN_DOUBT:
		return STORE_FAULT_IN_DOUBT;
	case PG_DOWN:
		return STORE_FAULT_DOWN;
	default:
		return STORE_FAULT_FINAL;
	}
}

/* A write transaction committed with its own xid: 0 when its commit (and
 * so every earlier one) was confirmed by the synchronous standbys. */
static int
barrier(struct store_db *d)
{
	uint64_t gen;
	int r;

	if ((r = pgdb_begin(d, 1)) != 0)
		return r;
	r = pgdb_exec(d, pgdb_prep(d, "SELECT pg_current_xact_id()", ""), NULL);
	return pgdb_end(d, r, &gen);
}

/* The in-doubt COMMIT of d->xid, after reconnecting: decided by
 * pg_xact_status on the same server incarnation only. */
static enum store_outcome
pgdb_resolve(struct store_db *d)
{
	char st[32] = "", was[sizeof(d->incarnation)];
	int64_t xid = d->xid;
	const char *state;
	PGresult *res;
	char q[96];
	enum store_outcome o;

	util_strlcpy(was, d->incarnation, sizeof(was));
	if (reconnect(d) != 0)
		return STORE_OUTCOME_UNKNOWN;	/* PG_DOWN */
	snprintf(q, sizeof(q), "SELECT pg_xact_status('%lld'::xid8)", (long long)xid);
	res = PQexec(d->conn, q);
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		util_strlcpy(st, PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0),
		    sizeof(st));
	else if (state != NULL && strcmp(state, "22023") == 0)
		util_strlcpy(st, "future", sizeof(st));	/* never got here */
	PQclear(res);
	if (strcmp(st, "aborted") == 0 || strcmp(st, "future") == 0)
		o = STORE_OUTCOME_ABORTED;
	else if (strcmp(st, "committed") == 0 && was[0] != '\0' &&
	    strcmp(was, d->incarnation) == 0)
		o = barrier(d) == 0 ? STORE_OUTCOME_COMMITTED : STORE_OUTCOME_UNKNOWN;
	else
		o = STORE_OUTCOME_UNKNOWN;	/* in progress, or another incarnation */
	log_msg(o == STORE_OUTCOME_UNKNOWN ? LOG_WARN : LOG_INFO, __func__,
	    "database: a COMMIT lost with its connection (xid %lld) %s", (long long)xid,
	    o == STORE_OUTCOME_COMMITTED ? "had committed" : o == STORE_OUTCOME_ABORTED ?
	    "never committed: the operation runs again" : "has an unknown outcome: "
	    "the operation fails, nothing is told");
	return o;
}

const struct store_faults pgdb_faults = {
	.classify = pgdb_classify,
	.resolve = pgdb_resolve,
	.connect = pgdb_connect,
	.install = pgdb_install,
	.commit_timeout = pgdb_commit_timeout,
};

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
	d->xid = sn.own;
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
pgdb_server_lock(struct store_db *d, int64_t server_id, int wait)
{
	int rows, r;

	if (wait)
		return pgdb_exec(d, pgdb_prep(d, "SELECT id FROM servers WHERE id = ? FOR UPDATE",
		    "I", server_id), NULL);
	r = pgdb_exec(d, pgdb_prep(d, "SELECT id FROM servers WHERE id = ? FOR UPDATE SKIP LOCKED",
	    "I", server_id), &rows);
	return r == 0 && rows == 0 ? STORE_LOCK_HELD : r;
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
	if (d->conninfo != NULL) {
		explicit_bzero(d->conninfo, strlen(d->conninfo));
		free(d->conninfo);
	}
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
	d->commit_timeout_ms = PGDB_COMMIT_TIMEOUT_MS;
	if ((d->conninfo = strdup(conninfo)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	d->conn = PQconnectdb(conninfo);
	if (PQstatus(d->conn) != CONNECTION_OK) {
		/* libpq's message names host and port, never the password */
		snprintf(err, errlen, "database: %s", PQerrorMessage(d->conn));
		goto fail;
	}
	if (conn_setup(d, d->conn, d->incarnation, sizeof(d->incarnation)) != 0) {
		snprintf(err, errlen, "database: %s", PQerrorMessage(d->conn));
		goto fail;
	}
	if (migrate(d, err, errlen) != 0)
		goto fail;
	return d;
 fail:
	pgdb_close(d);
	return NULL;
}
