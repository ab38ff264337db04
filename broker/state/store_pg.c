/* store_pg.c: the PostgreSQL engine of store_engine.h: the operations of
 * store_sqlite.c (one SQL for both engines) over pg_db.c's connection (the
 * only file that includes libpq-fe.h). */
#define STORE_SQL_PG
#include "broker/state/pg_db.h"
#define DB_PREP pgdb_prep
#define DB_EXEC pgdb_exec
#define DB_ROW pgdb_row
#define DB_ROWS pgdb_rows
#define DB_EACH pgdb_each
#define DB_LAST_ID pgdb_last_id
#define ENGINE_VAR store_engine_postgresql
#define ENGINE_NAME "postgresql"
#define ENGINE_OPS(f) pgdb_##f
#define ENGINE_USER_LOCK pgdb_user_lock
#define ENGINE_SERVER_LOCK pgdb_server_lock
#define ENGINE_FAULTS (&pgdb_faults)
#include "broker/state/store_sqlite.c"
