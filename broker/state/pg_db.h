/* pg_db: the PostgreSQL engine's connection (for store_pg.c):
 * connecting with a libpq conninfo (several hosts, target_session_attrs,
 * sslmode, a password from .pgpass or a service file: all libpq's), the
 * migrations of schema/postgresql/NNN_*.sql applied once under an advisory
 * lock (several brokers starting together), prepared statements named once
 * per connection (PQprepare/PQexecPrepared, cached by the SQL text's
 * address; '?' and '?N' placeholders as in sqlite_db.h, typed from fmt),
 * rows mapped by the column tables of sqlite_db.h, transactions and their
 * generation. pg_db.c is the only file that includes libpq-fe.h.
 *
 * Returns: 0 or a STORE_* code (store.h); PostgreSQL failures are logged
 * once here with the server's message and PQhost/PQport/PQdb at most: the
 * conninfo (which may hold a password) is never logged nor put into err.
 * Faults (enum pg_fault, classified for store.c by pgdb_faults): connection
 * lost (no SQLSTATE: libpq's own error, PQstatus CONNECTION_BAD or a failed
 * read) before COMMIT, 25006 (a
 * standby), 40001/40P01 -> STORE_FAULT_RETRY (reconnected at the next
 * pgdb_begin: libpq walks the host list to the primary); a reconnect that
 * finds no primary -> STORE_FAULT_DOWN (STORE_UNAVAILABLE); 53100 disk full
 * -> STORE_FULL; 23505 -> STORE_EXISTS; anything else STORE_ERR, final.
 * COMMIT: a write transaction's id (pg_current_xact_id_if_assigned) is read
 * first; a COMMIT whose connection dies is in doubt and pgdb_resolve decides
 * after reconnecting by pg_xact_status: trusted only on the same server
 * incarnation (timeline and postmaster start: after a promotion or a crash
 * restart the xid may be another's), and "committed" only once a later
 * commit confirms it was replicated; "aborted" or an xid in the new
 * primary's future -> never committed. The wait of a COMMIT is bounded by
 * pgdb_commit_timeout (PQcancel past it); a WARNING during COMMIT (a
 * cancelled synchronous-replication wait: "committed locally") makes it not
 * durable: STORE_UNAVAILABLE, PG_LOCAL_ONLY, final.
 * Statements from pgdb_prep belong to the connection and hold their bound
 * values until the next pgdb_prep. */
#ifndef TS_PG_DB_H
#define TS_PG_DB_H

#include <stddef.h>
#include <stdint.h>

#include "broker/state/sqlite_db.h"	/* struct col, struct cols, COL, COLS */
#include "broker/state/store_engine.h"

struct pg_stmt;

/* NULL with the reason in err (never the conninfo); a newer schema is
 * refused (STORE_TOO_NEW). Owned by the caller: pgdb_close. */
struct store_db *pgdb_open(const char *conninfo, char *err, size_t errlen);
void pgdb_close(struct store_db *d);

/* The statement for sql (a string constant), with the values in fmt ('t'
 * text, 'i' int, 'I' int64, 'd' double) bound, or NULL (logged). */
struct pg_stmt *pgdb_prep(struct store_db *d, const char *sql, const char *fmt, ...);
/* As sqldb_exec, sqldb_row, sqldb_rows, sqldb_each (sqlite_db.h). */
int pgdb_exec(struct store_db *d, struct pg_stmt *s, int *changes);
int pgdb_row(struct store_db *d, struct pg_stmt *s, struct cols cols, void *dst);
int pgdb_rows(struct store_db *d, struct pg_stmt *s, size_t elem, struct cols cols,
    void *out, size_t *n);
int pgdb_each(struct store_db *d, struct pg_stmt *s, struct cols cols, void *buf,
    size_t elem, int (*each)(void *ctx, const void *row), void *ctx, size_t *rows);
/* The id of this session's last INSERT (lastval()); 0 if none. */
int64_t pgdb_last_id(struct store_db *d);

/* The engine's begin, end and generation (store_engine.h): the generation
 * is pg_snapshot_xmax(pg_current_snapshot()), the next transaction id of
 * the cluster, which any commit of any broker moves. */
int pgdb_begin(struct store_db *d, int write);
int pgdb_end(struct store_db *d, int r, uint64_t *gen);
int pgdb_generation(struct store_db *d, uint64_t *gen);
/* The placement locks of store_engine.h, held until the transaction ends:
 * an advisory lock on the user's hash, the server's row FOR UPDATE. */
int pgdb_user_lock(struct store_db *d, const char *user);
int pgdb_server_lock(struct store_db *d, int64_t server_id);

/* What the last failure was (since pgdb_begin). */
enum pg_fault {
	PG_OK,
	PG_CONN_LOST,		/* no SQLSTATE, CONNECTION_BAD, before COMMIT */
	PG_READ_ONLY,		/* 25006: a standby */
	PG_RETRY,		/* 40001, 40P01 */
	PG_IN_DOUBT,		/* the connection died in COMMIT */
	PG_LOCAL_ONLY,		/* COMMIT warned: on the primary only */
	PG_DOWN,		/* a reconnect found no primary */
	PG_OTHER,
};
enum pg_fault pgdb_fault(const struct store_db *d);

/* The fault handling of store_engine.h (classify, resolve, connect off the
 * store's lock, install, commit_timeout). */
extern const struct store_faults pgdb_faults;

/* Test hook (tests/unit/test_store_pg.c defines it; weak, so the daemons
 * have none): called with the connection's socket and backend pid at
 * where. */
enum pgdb_hook_point {
	PGDB_HOOK_BEFORE_COMMIT,	/* the xid read, COMMIT not sent */
	PGDB_HOOK_COMMIT_SENT,		/* COMMIT sent, its answer not read */
};
void pgdb_test_hook(enum pgdb_hook_point where, int fd, int backend_pid)
    __attribute__((weak));

#endif
