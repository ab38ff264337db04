/* cfg: table-driven INI files (parsed by inih) for both daemons.
 * A table of struct cfg_key describes every key: where it is stored in the
 * caller's struct, its default and its bounds. Strings are copied into fixed
 * buffers inside that struct, so nothing is allocated. */
#ifndef TS_CFG_H
#define TS_CFG_H

#include <stddef.h>
#include <stdio.h>

enum cfg_type {
	CFG_INT,	/* int, within [min, max] */
	CFG_BOOL,	/* int 0/1 from yes/no/true/false/on/off/1/0 */
	CFG_STR,	/* char[size] */
	CFG_HOSTPORT,	/* char[size] holding "host:port" */
	CFG_ENUM,	/* char[size], one of the '|'-separated choices */
};

struct cfg_key {
	const char *section;
	const char *name;
	enum cfg_type type;
	size_t offset;
	size_t size;		/* CFG_STR, CFG_HOSTPORT, CFG_ENUM: buffer size */
	long min, max;		/* CFG_INT */
	const char *def;	/* default, as it would be written in the file; NULL = empty */
	const char *choices;	/* CFG_ENUM */
};

#define CFG_END { NULL, NULL, CFG_INT, 0, 0, 0, 0, NULL, NULL }

/* Sets every key of obj to its default. */
void cfg_defaults(const struct cfg_key *keys, void *obj);

/* Writes every key with its default as an INI file (keys without a default
 * as comments), sections in table order. 0 or -1 (write error). */
int cfg_print_defaults(const struct cfg_key *keys, FILE *out);

/* Applies defaults, then the file at path. On error returns -1 and writes
 * "path:line: message" into err (or "path: message" if it cannot be read). */
int cfg_load(const struct cfg_key *keys, void *obj, const char *path,
    char *err, size_t errlen);

/* 1 if key k holds different values in a and b, else 0. */
int cfg_differs(const struct cfg_key *k, const void *a, const void *b);
/* Copies k's value from src into dst (a reload; an int is stored atomically,
 * for threads that read it meanwhile). */
void cfg_copy(const struct cfg_key *k, void *dst, const void *src);

/* Parses text as the file named path would be parsed (used by fuzzing). */
int cfg_load_string(const struct cfg_key *keys, void *obj, const char *path,
    const char *text, char *err, size_t errlen);

#endif
