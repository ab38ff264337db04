/* sqlite_db: the SQLite engine's connection (used by store_sqlite.c only):
 * opening (WAL, synchronous=FULL, foreign_keys=ON, a busy timeout, the
 * migrations of schema/NNN_*.sql applied in order by PRAGMA user_version),
 * prepared statements cached by their SQL text's address, rows mapped into
 * structs by column tables, and the transactions with their generation.
 * sqlite_db.c is the only file that includes sqlite3.h.
 *
 * Returns: 0 or a STORE_* code (store.h); SQLite failures are logged once
 * here, with SQLite's message.
 * Statements from sqldb_prep belong to the connection: each is used by one
 * of the step functions below, which reset it. */
#ifndef TS_SQLITE_DB_H
#define TS_SQLITE_DB_H

#include <stddef.h>
#include <stdint.h>

#include "broker/state/store_engine.h"

struct sqlite3_stmt;

/* Column i of a row into the field at off (size bytes) of a struct:
 * 'L' int64, 'I' int, 'D' double, 'T' text (truncated to size), and the
 * states from their text (states.h): 'S' server, 'A' admin, 'E' session.
 * A state's unknown text fails the row (STORE_ERR). */
struct col {
	char type;
	size_t off, size;
};
#define COL(type, T, f) { type, offsetof(T, f), sizeof(((T *)0)->f) }
struct cols {
	const struct col *c;
	size_t n;
};
#define COLS(a) ((struct cols){ a, sizeof(a) / sizeof((a)[0]) })

/* NULL with the reason in err; a newer schema is refused. Owned by the
 * caller: sqldb_close. */
struct store_db *sqldb_open(const char *path, char *err, size_t errlen);
void sqldb_close(struct store_db *d);

/* The cached statement for sql (a string constant: cached by address),
 * bound with the values in fmt ('t' text, 'i' int, 'I' int64, 'd' double),
 * or NULL (logged); the step functions take NULL as STORE_ERR. */
struct sqlite3_stmt *sqldb_prep(struct store_db *d, const char *sql, const char *fmt, ...);
/* Runs a statement that returns no rows; *changes (if not NULL) is how
 * many rows it changed. A unique key violated is STORE_EXISTS, a full disk
 * STORE_FULL. */
int sqldb_exec(struct store_db *d, struct sqlite3_stmt *s, int *changes);
/* The first row into dst; STORE_NOT_FOUND if none. */
int sqldb_row(struct store_db *d, struct sqlite3_stmt *s, struct cols cols, void *dst);
/* All rows into a new array of elem-sized items; *out and *n are set even
 * on error: the caller frees *out. */
int sqldb_rows(struct store_db *d, struct sqlite3_stmt *s, size_t elem, struct cols cols,
    void *out, size_t *n);
/* Each row into buf (elem bytes), then each(ctx, buf), which may stop the
 * walk with a code it returns; *rows is how many rows came. */
int sqldb_each(struct store_db *d, struct sqlite3_stmt *s, struct cols cols, void *buf,
    size_t elem, int (*each)(void *ctx, const void *row), void *ctx, size_t *rows);
/* The rowid of the last INSERT. */
int64_t sqldb_last_id(struct store_db *d);

/* The engine's begin, end and generation (store_engine.h): the generation
 * is PRAGMA data_version (other connections' commits) with this
 * connection's own write commits. */
int sqldb_begin(struct store_db *d, int write);
int sqldb_end(struct store_db *d, int r, uint64_t *gen);
int sqldb_generation(struct store_db *d, uint64_t *gen);

#endif
