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
	unsigned flags;		/* CFG_LIVE, or 0 (CFG_RESTART) */
	const char *desc;	/* for admins: one or two sentences, plain text */
};

/* flags: a live key takes effect when the daemon re-reads its file on
 * SIGHUP; any other key needs a restart and keeps its old value. */
#define CFG_RESTART	0u
#define CFG_LIVE	0x1u

#define CFG_END { NULL, NULL, CFG_INT, 0, 0, 0, 0, NULL, NULL, 0, NULL }

/* Sets every key of obj to its default. */
void cfg_defaults(const struct cfg_key *keys, void *obj);

/* Writes every key with its default as an INI file (keys without a default
 * as comments), sections in order of first appearance, each key under its description,
 * "(live)" or "(restart)" and the values it takes. 0 or -1 (write error). */
int cfg_print_defaults(const struct cfg_key *keys, FILE *out);

/* Writes what k takes ("an integer from 1 to 60", "yes or no", ...) into
 * buf; returns as snprintf. */
int cfg_key_values(const struct cfg_key *k, char *buf, size_t n);

/* 1 if k is the first key of its section in keys (the order sections are
 * written in: each section's keys together, in table order), else 0. */
int cfg_section_first(const struct cfg_key *keys, const struct cfg_key *k);

/* Each daemon's conf module defines it: its key table (static, CFG_END
 * last), for the generator of the manual pages and docs (tools/confdoc.c). */
const struct cfg_key *conf_keys_table(void);

/* Applies defaults, then the file at path. On error returns -1 and writes
 * "path:line: message" into err (or "path: message" if it cannot be read). */
int cfg_load(const struct cfg_key *keys, void *obj, const char *path,
    char *err, size_t errlen);

/* A reload's view of the table. A key that differs between two objects
 * of it, and whether it is live (takes effect on a reload). */
typedef void (*cfg_diff_fn)(void *ctx, const struct cfg_key *k, int live);
/* Calls fn (NULL: none) for each key whose value differs between a and b,
 * in table order. How many differ. */
int cfg_diff(const struct cfg_key *keys, const void *a, const void *b, cfg_diff_fn fn,
    void *ctx);
/* A cfg_diff_fn for a reload: counts each key in ctx (struct cfg_changes)
 * and logs it once, a restart-only one as needing a restart. */
struct cfg_changes {
	int changed;
	int restart;			/* of changed: restart-only */
};
void cfg_diff_log(void *ctx, const struct cfg_key *k, int live);
/* Copies every live key of src into dst; the others keep dst's values. Ints
 * are stored atomically (other threads may read them meanwhile). */
void cfg_take_live(const struct cfg_key *keys, void *dst, const void *src);

/* Writes k's value in obj into out as it would be written in the file. */
void cfg_format(const struct cfg_key *k, const void *obj, char *out, size_t n);
/* 1 if k is live (takes effect on a reload), else 0. */
int cfg_live(const struct cfg_key *k);

/* Parses text as the file named path would be parsed (used by fuzzing). */
int cfg_load_string(const struct cfg_key *keys, void *obj, const char *path,
    const char *text, char *err, size_t errlen);

#endif
