/* sqlite_db: the SQLite engine's connection (struct sql_ops of sql_db.h for
 * store_sql.c):
 * opening (WAL, synchronous=FULL, foreign_keys=ON, a busy timeout, the
 * migrations of schema/NNN_*.sql applied in order by PRAGMA user_version),
 * prepared statements cached by their SQL text's address, rows mapped into
 * structs by column tables, and the transactions with their generation.
 * sqlite_db.c is the only file that includes sqlite3.h.
 *
 * Returns: 0 or a STORE_* code (store.h); SQLite failures are logged once
 * here, with SQLite's message.
 * Its statements (struct sql_ops) are reset by the function that runs them. */
#ifndef TS_SQLITE_DB_H
#define TS_SQLITE_DB_H

#include <stddef.h>
#include <stdint.h>

#include "broker/state/sql_db.h"
#include "broker/state/store_engine.h"

/* NULL with the reason in err; a newer schema is refused. Owned by the
 * caller: sqldb_close. */
struct store_db *sqldb_open(const char *path, char *err, size_t errlen);
void sqldb_close(struct store_db *d);

/* The engine's begin, end and generation (store_engine.h): the generation
 * is PRAGMA data_version (other connections' commits) with this
 * connection's own write commits. */
int sqldb_begin(struct store_db *d, int write);
int sqldb_end(struct store_db *d, int r, uint64_t *gen);
int sqldb_generation(struct store_db *d, uint64_t *gen);
/* Makes every commit of d so far durable, the STORE_TX_LAZY ones too: the
 * WAL file synced through a descriptor of its own, so that it may run in
 * any thread beside d's transactions (one sqldb_sync at a time). Not in
 * WAL mode: 0 at once (every commit was synced). STORE_FULL: the sync
 * failed (logged). */
int sqldb_sync(struct store_db *d);
/* The files' syncs asked by every connection of this process so far
 * (sqldb_sync's among them). */
uint64_t sqldb_syncs(void);
/* Tests: the next n sqldb_sync calls fail as an I/O error would; fn(arg)
 * runs in each before its sync (NULL: none). Set while no store syncs. */
void sqldb_test_sync_fail(int n);
void sqldb_test_sync_hook(void (*fn)(void *), void *arg);

#endif
