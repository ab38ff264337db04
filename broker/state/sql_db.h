/* sql_db: what the SQL operations both engines share (store_sql.c) need of
 * an engine's connection: statements prepared from SQL text, run, and their
 * rows mapped into structs by column tables. sqlite_db.c and pg_db.c each
 * implement it (struct sql_ops); their struct store_db begins with a
 * struct sql_db naming those operations, so store_sql.c reaches them from
 * any engine's connection.
 *
 * The SQL is in the dialect both engines take: "user" quoted, placeholders
 * '?' or '?N' (numbered from 1), typed by the bind format.
 * Returns: 0 or a STORE_* code (store.h); engine failures are logged once by
 * the engine. A statement from sql_prep belongs to the connection and holds
 * its bound values until it is run by one of the functions below (which
 * take NULL as STORE_ERR) or the next sql_prep. */
#ifndef TS_SQL_DB_H
#define TS_SQL_DB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct store_db;
struct sql_stmt;		/* an engine's statement: opaque */

/* Column i of a row into the field at off (size bytes) of a struct:
 * 'L' int64, 'I' int, 'D' double, 'T' text (truncated to size), and the
 * states from their text (states.h): 'S' server, 'A' admin, 'E' session,
 * 'C' command (states.h), 'K' a command's kind (wire.h).
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

/* A text column's value t (NULL: SQL NULL) into the field of c at p: 'T'
 * and the states' types above; 0, or -1 for a state's unknown text. The
 * engines map their numeric columns themselves and call this for the
 * rest, so the states' texts are parsed in one place. */
int sql_col_text(const struct col *c, const char *t, void *p);

struct sql_ops {
	/* sql: a string constant (engines cache by its address); fmt: 't'
	 * text, 'i' int, 'I' int64, 'd' double; NULL if it fails (logged) */
	struct sql_stmt *(*prep)(struct store_db *d, const char *sql, const char *fmt,
	    va_list ap);
	int (*exec)(struct store_db *d, struct sql_stmt *s, int *changes);
	int (*row)(struct store_db *d, struct sql_stmt *s, struct cols cols, void *dst);
	int (*rows)(struct store_db *d, struct sql_stmt *s, size_t elem, struct cols cols,
	    void *out, size_t *n);
	int (*each)(struct store_db *d, struct sql_stmt *s, struct cols cols, void *buf,
	    size_t elem, int (*each)(void *ctx, const void *row), void *ctx, size_t *rows);
	int64_t (*last_id)(struct store_db *d);
};

/* The first member of each engine's struct store_db. */
struct sql_db {
	const struct sql_ops *ops;
};

/* Through d's operations (store_sql.c). */
struct sql_stmt *sql_prep(struct store_db *d, const char *sql, const char *fmt, ...);
/* A statement that returns no rows; *changes (if not NULL) is how many rows
 * it changed. A unique key violated is STORE_EXISTS, a full disk STORE_FULL. */
int sql_exec(struct store_db *d, struct sql_stmt *s, int *changes);
/* The first row into dst; STORE_NOT_FOUND if none. */
int sql_row(struct store_db *d, struct sql_stmt *s, struct cols cols, void *dst);
/* All rows into a new array of elem-sized items; *out and *n are set even on
 * error: the caller frees *out. */
int sql_rows(struct store_db *d, struct sql_stmt *s, size_t elem, struct cols cols,
    void *out, size_t *n);
/* Each row into buf (elem bytes, zeroed first), then each(ctx, buf), which
 * may stop the walk with a code it returns; *rows is how many rows came. */
int sql_each(struct store_db *d, struct sql_stmt *s, struct cols cols, void *buf,
    size_t elem, int (*each)(void *ctx, const void *row), void *ctx, size_t *rows);
/* The id of the last INSERT on d. */
int64_t sql_last_id(struct store_db *d);

#endif
