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
/* The files' syncs asked by every connection of this process so far. */
uint64_t sqldb_syncs(void);

#endif
