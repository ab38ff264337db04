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
 * Errors (enum pg_fault, pgdb_fault): connection lost (no SQLSTATE: PQstatus
 * is CONNECTION_BAD) and 25006 (read-only: a standby) -> PQreset at the next
 * pgdb_begin (libpq walks the host list to the primary); 40001/40P01 ->
 * the whole transaction may be retried; 53100 disk full -> STORE_FULL;
 * 23505 -> STORE_EXISTS; anything else STORE_ERR. A connection lost while
 * idle is reconnected at pgdb_begin and the transaction begun again
 * (nothing was sent). A COMMIT lost in flight is in doubt: STORE_ERR, and
 * the next operation re-reads: a placement retried finds its pending row
 * (a reconnect, never a second session), a heartbeat is reconciled again
 * by the next beat, a server or token added again is STORE_EXISTS. Not yet
 * done: retrying a whole transaction on 40001/40P01 (READ COMMITTED gives
 * a deadlock only when two placements re-pick across two servers' locks).
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
int pgdb_server_lock(struct store_db *d, int64_t server_id);

/* What the last failure was: decides a retry of the whole transaction. */
enum pg_fault {
	PG_OK,
	PG_CONN_LOST,		/* no SQLSTATE, CONNECTION_BAD; COMMIT in doubt */
	PG_READ_ONLY,		/* 25006: a standby */
	PG_RETRY,		/* 40001, 40P01 */
	PG_OTHER,
};
enum pg_fault pgdb_fault(const struct store_db *d);

#endif
