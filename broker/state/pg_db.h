/* pg_db: the PostgreSQL engine's connection (struct sql_ops of sql_db.h for
 * store_sql.c and store_pg.c):
 * connecting with a libpq conninfo (several hosts, target_session_attrs,
 * sslmode, a password from .pgpass or a service file: all libpq's), the
 * migrations of schema/postgresql/NNN_*.sql applied once under an advisory
 * lock (several brokers starting together), prepared statements named once
 * per connection (PQprepare/PQexecPrepared, cached by the SQL text's
 * address; '?' and '?N' placeholders typed from fmt), rows mapped by the
 * column tables of sql_db.h, transactions and their
 * generation. pg_db.c is the only file that includes libpq-fe.h.
 *
 * Returns: 0 or a STORE_* code (store.h); PostgreSQL failures are logged
 * once here with the server's message and PQhost/PQport/PQdb at most: the
 * conninfo (which may hold a password) is never logged nor put into err.
 * Faults (enum pg_fault, classified for store.c by pgdb_faults): connection
 * lost (no SQLSTATE: libpq's own error, PQstatus CONNECTION_BAD or a failed
 * read) before COMMIT, 25006 (a standby), 40001/40P01 -> STORE_FAULT_RETRY (reconnected at the next
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
 * Its statements (struct sql_ops) hold their bound values (text by
 * pointer: the caller's strings must live until the statement runs) until
 * the next prep. */
#ifndef TS_PG_DB_H
#define TS_PG_DB_H

#include <stddef.h>
#include <stdint.h>

#include "broker/state/sql_db.h"
#include "broker/state/store_engine.h"

/* NULL with the reason in err (never the conninfo); a newer schema is
 * refused (STORE_TOO_NEW). Owned by the caller: pgdb_close. */
struct store_db *pgdb_open(const char *conninfo, char *err, size_t errlen);
void pgdb_close(struct store_db *d);

/* The engine's begin, end and generation (store_engine.h): the generation
 * is a hash of pg_current_snapshot()'s running transactions and xmax, which
 * any transaction completing on the cluster changes; end reports the one
 * its own commit makes (read just before it) unless another transaction
 * completed since the generation was read in this transaction. */
int pgdb_begin(struct store_db *d, int write);
int pgdb_end(struct store_db *d, int r, uint64_t *gen);
int pgdb_generation(struct store_db *d, uint64_t *gen);
/* The placement locks of store_engine.h, held until the transaction ends:
 * an advisory lock on the user's hash, the server's row FOR UPDATE. */
int pgdb_user_lock(struct store_db *d, const char *user);
int pgdb_server_lock(struct store_db *d, int64_t server_id, int wait);

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
