/* schema: the migrations of schema/NNN_*.sql, embedded at build time
 * (build/schema.c, made by tools/embed-schema.sh) in ascending order. */
#ifndef TS_SCHEMA_H
#define TS_SCHEMA_H

#include <stddef.h>

struct schema_migration {
	int version;		/* NNN */
	const char *name;	/* file name */
	const char *sql;
};

extern const struct schema_migration schema_migrations[];
extern const size_t schema_count;
/* schema/postgresql/NNN_*.sql (build/schema_pg.c), the PostgreSQL engine's */
extern const struct schema_migration pg_schema_migrations[];
extern const size_t pg_schema_count;

#endif
