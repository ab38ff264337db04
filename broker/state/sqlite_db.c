/* sqlite_db.c: the SQLite connection of the SQLite engine (sqlite_db.h),
 * the only file that includes sqlite3.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	char *wal;		/* the WAL file's path (WAL mode on a file), else NULL */
	int wal_fd;		/* sqldb_sync's descriptor of it, or -1 */
};

static int
db_error(struct store_db *d, const char *func, int rc)
{
	log_msg(LOG_ERROR, func, "database: %s", sqlite3_errmsg(d->db));
	rc &= 0xff;
	return rc == SQLITE_FULL || rc == SQLITE_IOERR ? STORE_FULL : STORE_ERR;
}
#define DB_ERROR(d, rc) db_error(d, __func__, rc)

/* ---- the WAL's writes gathered (a VFS over the default one) ----
 * SQLite writes each WAL frame in two calls (its 24-byte header, then the
 * page): a placement's 7 pages are 14 system calls. This VFS passes every
 * call to the default VFS, but a WAL file's appends (writes past the end of
 * what this connection wrote since the file's header) that continue one
 * another are gathered in a buffer and written in one call: at once after
 * the page of a commit frame (its header's database size is not 0), so that
 * a commit's frames are all in the file before SQLite syncs it or tells any
 * other connection of them, at every synchronous level; before anything
 * else touches the file (a read, its size, a sync, truncation, a file
 * control, a write elsewhere); when the buffer is full. A write error is
 * the write's or the next call's, as SQLite's own would be. What is left
 * when no transaction is open (the frames of one rolled back) is dropped
 * (wal_settle, after every statement): written later it could overwrite
 * another connection's frames. */
#define WALBUF_MAX	(128 * 1024)
#define WAL_HDR		32	/* the WAL file's header */
#define WAL_FRAME_HDR	24	/* a frame's header, before its page */

struct vfile {
	sqlite3_file base;	/* first: SQLite's view */
	sqlite3_file *real;	/* the default VFS's file, after this struct */
	unsigned char *buf;	/* a WAL file: its writes gathered; else NULL */
	size_t len;
	sqlite3_int64 off;	/* of buf[0] in the file */
	sqlite3_int64 end;	/* of what it wrote since the file's header */
	int commit;		/* the last write was a commit frame's header */
};

static sqlite3_vfs *vfs_root;	/* the default VFS */
static sqlite3_vfs vfs_wal;
static pthread_once_t vfs_once = PTHREAD_ONCE_INIT;

#define REAL(pf)	(((struct vfile *)(pf))->real)
#define RM(pf)		(REAL(pf)->pMethods)

static int
vf_flush(struct vfile *f)
{
	size_t len = f->len;

	f->len = 0;
	return len == 0 ? SQLITE_OK : f->real->pMethods->xWrite(f->real, f->buf, (int)len,
	    f->off);
}

static int
vf_write(sqlite3_file *pf, const void *p, int n, sqlite3_int64 off)
{
	struct vfile *f = (struct vfile *)pf;
	const unsigned char *b = p;
	int rc, commit = f->commit;

	if (f->buf == NULL)
		return RM(pf)->xWrite(REAL(pf), p, n, off);
	f->commit = n == WAL_FRAME_HDR && off >= WAL_HDR &&
	    (b[4] | b[5] | b[6] | b[7]) != 0;
	if (off == 0)
		f->end = 0;	/* the header: the file begins again */
	if (f->len > 0 && (off != f->off + (sqlite3_int64)f->len ||
	    f->len + (size_t)n > WALBUF_MAX) && (rc = vf_flush(f)) != SQLITE_OK)
		return rc;
	if (n <= 0 || (size_t)n > WALBUF_MAX || off < f->end)
		return RM(pf)->xWrite(REAL(pf), p, n, off);	/* not an append */
	if (f->len == 0)
		f->off = off;
	memcpy(f->buf + f->len, p, (size_t)n);
	f->len += (size_t)n;
	f->end = off + n;
	return commit ? vf_flush(f) : SQLITE_OK;	/* a commit frame's page */
}

/* The calls that see the file: the buffer written first. */
static int
vf_read(sqlite3_file *pf, void *p, int n, sqlite3_int64 off)
{
	int rc = vf_flush((struct vfile *)pf);

	return rc != SQLITE_OK ? rc : RM(pf)->xRead(REAL(pf), p, n, off);
}

static int
vf_truncate(sqlite3_file *pf, sqlite3_int64 size)
{
	int rc = vf_flush((struct vfile *)pf);

	return rc != SQLITE_OK ? rc : RM(pf)->xTruncate(REAL(pf), size);
}

static uint64_t syncs;		/* sqldb_syncs */
static int sync_fail;		/* sqldb_test_sync_fail */
static void (*sync_hook)(void *);	/* sqldb_test_sync_hook */
static void *sync_hook_arg;

uint64_t
sqldb_syncs(void)
{
	return __atomic_load_n(&syncs, __ATOMIC_RELAXED);
}

static int
vf_sync(sqlite3_file *pf, int flags)
{
	int rc = vf_flush((struct vfile *)pf);

	__atomic_add_fetch(&syncs, 1, __ATOMIC_RELAXED);
	return rc != SQLITE_OK ? rc : RM(pf)->xSync(REAL(pf), flags);
}

static int
vf_size(sqlite3_file *pf, sqlite3_int64 *size)
{
	int rc = vf_flush((struct vfile *)pf);

	return rc != SQLITE_OK ? rc : RM(pf)->xFileSize(REAL(pf), size);
}

static int
vf_control(sqlite3_file *pf, int op, void *arg)
{
	int rc = vf_flush((struct vfile *)pf);

	return rc != SQLITE_OK ? rc : RM(pf)->xFileControl(REAL(pf), op, arg);
}

static int
vf_fetch(sqlite3_file *pf, sqlite3_int64 off, int n, void **pp)
{
	int rc = vf_flush((struct vfile *)pf);

	return rc != SQLITE_OK ? rc : RM(pf)->xFetch(REAL(pf), off, n, pp);
}

static int
vf_close(sqlite3_file *pf)
{
	struct vfile *f = (struct vfile *)pf;

	free(f->buf);	/* (what is left is of no transaction: see wal_settle) */
	f->buf = NULL;
	f->len = 0;
	return RM(pf)->xClose(REAL(pf));
}

/* The rest as the default VFS's. */
static int vf_lock(sqlite3_file *pf, int l) { return RM(pf)->xLock(REAL(pf), l); }
static int vf_unlock(sqlite3_file *pf, int l) { return RM(pf)->xUnlock(REAL(pf), l); }
static int vf_reserved(sqlite3_file *pf, int *o) { return RM(pf)->xCheckReservedLock(REAL(pf), o); }
static int vf_sector(sqlite3_file *pf) { return RM(pf)->xSectorSize(REAL(pf)); }
static int vf_caps(sqlite3_file *pf) { return RM(pf)->xDeviceCharacteristics(REAL(pf)); }
static int vf_shm_map(sqlite3_file *pf, int pg, int sz, int ext, void volatile **pp)
{ return RM(pf)->xShmMap(REAL(pf), pg, sz, ext, pp); }
static int vf_shm_lock(sqlite3_file *pf, int off, int n, int fl)
{ return RM(pf)->xShmLock(REAL(pf), off, n, fl); }
static void vf_shm_barrier(sqlite3_file *pf) { RM(pf)->xShmBarrier(REAL(pf)); }
static int vf_shm_unmap(sqlite3_file *pf, int del) { return RM(pf)->xShmUnmap(REAL(pf), del); }
static int vf_unfetch(sqlite3_file *pf, sqlite3_int64 off, void *p)
{ return RM(pf)->xUnfetch(REAL(pf), off, p); }

static const sqlite3_io_methods vf_methods = {
	3, vf_close, vf_read, vf_write, vf_truncate, vf_sync, vf_size, vf_lock, vf_unlock,
	vf_reserved, vf_control, vf_sector, vf_caps, vf_shm_map, vf_shm_lock,
	vf_shm_barrier, vf_shm_unmap, vf_fetch, vf_unfetch,
};

static int
vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf, int flags, int *out)
{
	struct vfile *f = (struct vfile *)pf;
	int rc;

	(void)vfs;
	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	if ((rc = vfs_root->xOpen(vfs_root, name, f->real, flags, out)) != SQLITE_OK)
		return rc;	/* (pf->pMethods NULL: SQLite does not close it) */
	if (f->real->pMethods == NULL || f->real->pMethods->iVersion < 3) {
		if (f->real->pMethods != NULL)
			f->real->pMethods->xClose(f->real);
		return SQLITE_CANTOPEN;	/* (every Unix VFS has version 3) */
	}
	if (flags & SQLITE_OPEN_WAL)
		f->buf = malloc(WALBUF_MAX);	/* NULL: written as it comes */
	pf->pMethods = &vf_methods;
	return SQLITE_OK;
}

#define ROOT(fn, ...) vfs_root->fn(vfs_root, __VA_ARGS__)
static int vfs_delete(sqlite3_vfs *v, const char *n, int s) { (void)v; return ROOT(xDelete, n, s); }
static int vfs_access(sqlite3_vfs *v, const char *n, int fl, int *o)
{ (void)v; return ROOT(xAccess, n, fl, o); }
static int vfs_full(sqlite3_vfs *v, const char *n, int k, char *o)
{ (void)v; return ROOT(xFullPathname, n, k, o); }
static void *vfs_dlopen(sqlite3_vfs *v, const char *n) { (void)v; return ROOT(xDlOpen, n); }
static void vfs_dlerror(sqlite3_vfs *v, int k, char *o) { (void)v; ROOT(xDlError, k, o); }
static void (*vfs_dlsym(sqlite3_vfs *v, void *h, const char *s))(void)
{ (void)v; return ROOT(xDlSym, h, s); }
static void vfs_dlclose(sqlite3_vfs *v, void *h) { (void)v; ROOT(xDlClose, h); }
static int vfs_random(sqlite3_vfs *v, int k, char *o) { (void)v; return ROOT(xRandomness, k, o); }
static int vfs_sleep(sqlite3_vfs *v, int us) { (void)v; return ROOT(xSleep, us); }
static int vfs_time(sqlite3_vfs *v, double *o) { (void)v; return ROOT(xCurrentTime, o); }
static int vfs_lasterr(sqlite3_vfs *v, int k, char *o) { (void)v; return ROOT(xGetLastError, k, o); }
static int vfs_time64(sqlite3_vfs *v, sqlite3_int64 *o) { (void)v; return ROOT(xCurrentTimeInt64, o); }

static void
vfs_init(void)
{
	sqlite3_vfs *root = sqlite3_vfs_find(NULL);

	if (root == NULL || root->iVersion < 2)
		return;
	vfs_wal = (sqlite3_vfs){ .iVersion = 2, .szOsFile = (int)sizeof(struct vfile) +
	    root->szOsFile, .mxPathname = root->mxPathname, .zName = "tsbroker-wal",
	    .xOpen = vfs_open, .xDelete = vfs_delete, .xAccess = vfs_access,
	    .xFullPathname = vfs_full, .xDlOpen = vfs_dlopen, .xDlError = vfs_dlerror,
	    .xDlSym = vfs_dlsym, .xDlClose = vfs_dlclose, .xRandomness = vfs_random,
	    .xSleep = vfs_sleep, .xCurrentTime = vfs_time, .xGetLastError = vfs_lasterr,
	    .xCurrentTimeInt64 = vfs_time64 };
	vfs_root = root;
	if (sqlite3_vfs_register(&vfs_wal, 0) != SQLITE_OK)
		vfs_root = NULL;
}

/* No transaction open on d (one ended, committed or not): what its WAL
 * buffer holds is dropped (a commit's frames were written at its commit
 * frame; the rest is of a transaction rolled back). */
static void
wal_settle(struct store_db *d)
{
	sqlite3_file *fp = NULL;

	if (!sqlite3_get_autocommit(d->db) ||
	    sqlite3_file_control(d->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &fp) !=
	    SQLITE_OK || fp == NULL || fp->pMethods != &vf_methods)
		return;
	((struct vfile *)fp)->len = 0;
}

/* The VFS to open the state database with: this one, or NULL (the default,
 * if it could not be set up). */
static const char *
vfs_name(void)
{
	pthread_once(&vfs_once, vfs_init);
	return vfs_root != NULL ? vfs_wal.zName : NULL;
}

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
	wal_settle(d);
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

/* A STORE_TX_LAZY commit's level (on: NORMAL, no sync in WAL mode), else
 * FULL, every commit synced. A pragma acts when prepared: run, not cached. */
static int
lazy_set(struct store_db *d, int on)
{
	int rc = sqlite3_exec(d->db, on ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL",
	    NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : DB_ERROR(d, rc);
}

int
sqldb_begin(struct store_db *d, int write)
{
	int r;

	if (write == STORE_TX_LAZY && d->wal == NULL)
		write = STORE_TX_WRITE;	/* no WAL: every commit synced */
	d->writing = write;
	d->version = -1;
	if (write == STORE_TX_LAZY && (r = lazy_set(d, 1)) != 0)
		return r;
	r = write ? EXEC(d, "BEGIN IMMEDIATE", "") : EXEC(d, "BEGIN", "");
	if (r != 0 && write == STORE_TX_LAZY)
		(void)lazy_set(d, 0);	/* no end follows a failed begin */
	return r;
}

int
sqldb_end(struct store_db *d, int r, uint64_t *gen)
{
	int rl;

	*gen = 0;
	if (r == 0 && (r = EXEC(d, "COMMIT", "")) == 0 && d->writing) {
		d->commits++;
		if (d->version >= 0)
			*gen = (uint64_t)d->version << 32 | d->commits;
	}
	if (r != 0 && !sqlite3_get_autocommit(d->db))
		(void)EXEC(d, "ROLLBACK", "");
	if (d->writing == STORE_TX_LAZY && (rl = lazy_set(d, 0)) != 0 && r == 0)
		r = rl;
	return r;
}

int
sqldb_sync(struct store_db *d)
{
	if (d->wal == NULL)
		return 0;
	if (d->wal_fd < 0 && (d->wal_fd = open(d->wal, O_RDONLY | O_CLOEXEC)) < 0) {
		log_error("database: cannot open %s to sync it: %s", d->wal, strerror(errno));
		return STORE_ERR;
	}
	__atomic_add_fetch(&syncs, 1, __ATOMIC_RELAXED);
	if (sync_hook != NULL)
		sync_hook(sync_hook_arg);
	if (__atomic_load_n(&sync_fail, __ATOMIC_RELAXED) > 0) {
		__atomic_sub_fetch(&sync_fail, 1, __ATOMIC_RELAXED);
		log_error("database: cannot sync %s: injected by a test", d->wal);
		return STORE_FULL;
	}
	if (fdatasync(d->wal_fd) != 0) {
		log_error("database: cannot sync %s: %s", d->wal, strerror(errno));
		return STORE_FULL;
	}
	return 0;
}

void
sqldb_test_sync_fail(int n)
{
	__atomic_store_n(&sync_fail, n, __ATOMIC_RELAXED);
}

void
sqldb_test_sync_hook(void (*fn)(void *), void *arg)
{
	sync_hook = fn;
	sync_hook_arg = arg;
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
			wal_settle(d);
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
	if (d->wal_fd >= 0)
		close(d->wal_fd);
	free(d->wal);
	for (size_t i = 0; i < d->ncache; i++)
		sqlite3_finalize(d->cache[i].stmt);
	sqlite3_close(d->db);
	free(d);
}

/* d->wal: the WAL file's path if the connection is in WAL mode on a file
 * (not :memory:, nor a file system without WAL's shared memory). */
static int
wal_find(struct store_db *d, char *err, size_t errlen)
{
	sqlite3_stmt *s = NULL;
	const char *file = sqlite3_db_filename(d->db, "main");
	int wal = 0;

	if (sqlite3_prepare_v2(d->db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		wal = sqlite3_column_text(s, 0) != NULL &&
		    strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0;
	sqlite3_finalize(s);
	if (!wal || file == NULL || file[0] == '\0')
		return 0;
	if ((d->wal = strdup(sqlite3_filename_wal(file))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return STORE_ERR;
	}
	return 0;
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
	d->wal_fd = -1;
	if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	    SQLITE_OPEN_NOMUTEX, vfs_name()) != SQLITE_OK) {
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
	if (migrate(d, err, errlen) != 0 || wal_find(d, err, errlen) != 0)
		goto fail;
	ckpt_start(d, path);
	return d;
 fail:
	sqldb_close(d);
	return NULL;
}

