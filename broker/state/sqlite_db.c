/* sqlite_db.c: the SQLite connection of the SQLite engine (sqlite_db.h),
 * the only file that includes sqlite3.h. */
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/common/wire.h"
#include "broker/state/schema.h"
#include "broker/state/sqlite_db.h"

#define STMT_CACHE 128
/* The WAL is checkpointed by a thread of its own once it holds this many
 * pages (SQLite's default auto-checkpoint), so that no commit waits for
 * the copy and its fsync, and again each time it has grown by as many:
 * under a steady stream of commits the WAL is not reset (a checkpoint
 * rarely catches up with the last commit), and one checkpoint after each
 * commit would copy the same hot pages, with two fsyncs, over and over.
 * Past CKPT_INLINE (the thread behind) the commit checkpoints itself, as
 * SQLite would. */
#define CKPT_PAGES	1000
#define CKPT_INLINE	20000

/* The checkpointer: its own connection to the same file. */
struct ckpt {
	pthread_t th;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int want, stop, running;
	int next;		/* the WAL's size (pages) to checkpoint at next */
	char *path;
};

struct store_db {
	struct sql_db sql;	/* first: sqldb_ops */
	sqlite3 *db;
	struct { const char *sql; sqlite3_stmt *stmt; } cache[STMT_CACHE];
	size_t ncache;
	uint32_t commits;	/* this connection's write commits: PRAGMA
				 * data_version counts only the other connections' */
	int writing;		/* the open transaction began as a write */
	int64_t version;	/* PRAGMA data_version read in it, or -1 */
	struct ckpt ckpt;
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
static struct sql_stmt *
sqldb_vprep(struct store_db *d, const char *sql, const char *fmt, va_list ap)
{
	sqlite3_stmt *stmt = NULL;
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
	if (rc != SQLITE_OK) {
		log_error("bind: %s", sqlite3_errmsg(d->db));
		sqlite3_reset(stmt);
		return NULL;
	}
	return (struct sql_stmt *)stmt;
}

/* Resets a statement from sql_prep() for its next use. */
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
sqldb_exec(struct store_db *d, struct sql_stmt *s, int *changes)
{
	sqlite3_stmt *stmt = (sqlite3_stmt *)s;
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
#define EXEC(d, ...) sqldb_exec(d, sql_prep(d, __VA_ARGS__), NULL)

/* ---- row mapping: one table of columns per row type ---- */

/* Fills dst from the current row of s; 0 or -1 (a state's text unknown). */
static int
row_map(sqlite3_stmt *s, struct cols cols, void *dst)
{
	int r = 0;

	for (size_t i = 0; i < cols.n; i++) {
		const struct col *c = &cols.c[i];
		void *p = (char *)dst + c->off;

		switch (c->type) {
		case 'L': *(int64_t *)p = sqlite3_column_int64(s, (int)i); break;
		case 'I': *(int *)p = sqlite3_column_int(s, (int)i); break;
		case 'D': *(double *)p = sqlite3_column_double(s, (int)i); break;
		default: r |= sql_col_text(c, (const char *)sqlite3_column_text(s, (int)i),
		    p); break;
		}
	}
	return r;
}

/* Steps s to its first row into dst. 0, STORE_NOT_FOUND or another
 * STORE_* code. Resets s. */
static int
sqldb_row(struct store_db *d, struct sql_stmt *st, struct cols cols, void *dst)
{
	sqlite3_stmt *s = (sqlite3_stmt *)st;
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
sqldb_rows(struct store_db *d, struct sql_stmt *st, size_t elem, struct cols cols,
    void *out, size_t *n)
{
	sqlite3_stmt *s = (sqlite3_stmt *)st;
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

/* Steps s through all its rows, each into buf (elem bytes, zeroed first)
 * and then to each(ctx, buf), which returns 0 or a STORE_* code that stops
 * the walk. *rows is how many rows came. Resets s. */
static int
sqldb_each(struct store_db *d, struct sql_stmt *st, struct cols cols, void *buf,
    size_t elem, int (*each)(void *ctx, const void *row), void *ctx, size_t *rows)
{
	sqlite3_stmt *s = (sqlite3_stmt *)st;
	int rc = SQLITE_DONE, r = 0;

	*rows = 0;
	if (s == NULL)
		return STORE_ERR;
	while (r == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		memset(buf, 0, elem);
		r = row_map(s, cols, buf) == 0 ? each(ctx, buf) : STORE_ERR;
		(*rows)++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = DB_ERROR(d, rc);
	done(d, s);
	return r;
}

static int64_t
sqldb_last_id(struct store_db *d)
{
	return sqlite3_last_insert_rowid(d->db);
}

static const struct sql_ops sqldb_ops = { sqldb_vprep, sqldb_exec, sqldb_row,
	sqldb_rows, sqldb_each, sqldb_last_id };

/* ---- transactions ---- */

int
sqldb_begin(struct store_db *d, int write)
{
	d->writing = write;
	d->version = -1;
	return write ? EXEC(d, "BEGIN IMMEDIATE", "") : EXEC(d, "BEGIN", "");
}

int
sqldb_end(struct store_db *d, int r, uint64_t *gen)
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

int
sqldb_generation(struct store_db *d, uint64_t *gen)
{
	sqlite3_stmt *s = (sqlite3_stmt *)sql_prep(d, "PRAGMA data_version", "");
	int rc;

	if (s == NULL)
		return STORE_ERR;
	if ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		d->version = sqlite3_column_int64(s, 0);
		*gen = (uint64_t)d->version << 32 | d->commits;
	}
	done(d, s);
	return rc == SQLITE_ROW ? 0 : DB_ERROR(d, rc);
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

static void *
ckpt_main(void *arg)
{
	struct ckpt *c = arg;
	sqlite3 *db = NULL;

	if (sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
	    NULL) == SQLITE_OK) {
		sqlite3_busy_timeout(db, 5000);
		(void)sqlite3_exec(db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
	}
	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		if (!c->want) {
			pthread_cond_wait(&c->cond, &c->lock);
			continue;
		}
		c->want = 0;
		pthread_mutex_unlock(&c->lock);
		/* passive: copies what no reader still needs, blocks no writer */
		if (db != NULL && sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE,
		    NULL, NULL) != SQLITE_OK)
			log_debug("checkpoint: %s", sqlite3_errmsg(db));
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	sqlite3_close(db);
	return NULL;
}

/* After each commit (SQLite's WAL hook, in place of its auto-checkpoint). */
static int
wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct ckpt *c = arg;

	if (pages < c->next - CKPT_PAGES || c->next < CKPT_PAGES)
		c->next = CKPT_PAGES;	/* the WAL was reset */
	if (pages >= CKPT_INLINE || (!c->running && pages >= CKPT_PAGES))
		(void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	else if (pages >= c->next) {
		c->next = pages + CKPT_PAGES;
		pthread_mutex_lock(&c->lock);
		c->want = 1;
		pthread_cond_signal(&c->cond);
		pthread_mutex_unlock(&c->lock);
	}
	return SQLITE_OK;
}

/* The checkpointer of d at path, or (no thread) SQLite's way. */
static void
ckpt_start(struct store_db *d, const char *path)
{
	struct ckpt *c = &d->ckpt;

	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	if (strcmp(path, ":memory:") != 0 && (c->path = strdup(path)) != NULL &&
	    pthread_create(&c->th, NULL, ckpt_main, c) == 0)
		c->running = 1;
	sqlite3_wal_hook(d->db, wal_hook, c);
}

static void
ckpt_stop(struct ckpt *c)
{
	if (c->running) {
		pthread_mutex_lock(&c->lock);
		c->stop = 1;
		pthread_cond_signal(&c->cond);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->th, NULL);
		c->running = 0;
	}
	free(c->path);
	c->path = NULL;
}

void
sqldb_close(struct store_db *d)
{
	if (d == NULL)
		return;
	if (d->db != NULL)
		sqlite3_wal_hook(d->db, NULL, NULL);
	ckpt_stop(&d->ckpt);
	for (size_t i = 0; i < d->ncache; i++)
		sqlite3_finalize(d->cache[i].stmt);
	sqlite3_close(d->db);
	free(d);
}

struct store_db *
sqldb_open(const char *path, char *err, size_t errlen)
{
	struct store_db *d;
	char *msg = NULL;

	if ((d = calloc(1, sizeof(*d))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->sql.ops = &sqldb_ops;
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
	ckpt_start(d, path);
	return d;
 fail:
	sqldb_close(d);
	return NULL;
}

