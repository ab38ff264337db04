#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "broker/common/cfg.h"
#include "broker/common/log.h"
#include "broker/common/util.h"

struct cfg_ctx {
	const struct cfg_key *keys;
	void *obj;
	char msg[256];
};

static int
cfg_bool(const char *v, int *out)
{
	static const char *yes[] = { "yes", "true", "on", "1" };
	static const char *no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0)
			return *out = 1, 0;
		if (strcasecmp(v, no[i]) == 0)
			return *out = 0, 0;
	}
	return -1;
}

static int
cfg_choice(const char *choices, const char *v)
{
	size_t n = strlen(v);
	const char *p = choices;

	while (n > 0 && *p) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, v, n) == 0)
			return 0;
		if (bar == NULL)
			break;
		p = bar + 1;
	}
	return -1;
}

int
cfg_key_values(const struct cfg_key *k, char *buf, size_t n)
{
	switch (k->type) {
	case CFG_INT:
		return snprintf(buf, n, "an integer from %ld to %ld", k->min, k->max);
	case CFG_BOOL:
		return snprintf(buf, n, "yes or no");
	case CFG_HOSTPORT:
		return snprintf(buf, n, "host:port");
	case CFG_ENUM:
		return snprintf(buf, n, "one of %s", k->choices);
	case CFG_STR:
		break;
	}
	return snprintf(buf, n, "text of up to %zu characters", k->size - 1);
}

/* The message for a value k does not take; always -1. */
static int
cfg_expects(const struct cfg_key *k, char *msg, size_t n)
{
	char values[128];

	cfg_key_values(k, values, sizeof(values));
	snprintf(msg, n, "'%s' expects %s", k->name, values);
	return -1;
}

/* Stores v into key k of obj; on error writes the reason into msg. */
static int
cfg_set(const struct cfg_key *k, void *obj, const char *v, char *msg, size_t n)
{
	char *field = (char *)obj + k->offset;
	char host[256], *end;
	int port;
	long l;

	switch (k->type) {
	case CFG_INT:
		errno = 0;
		l = strtol(v, &end, 10);
		if (errno != 0 || end == v || *end != '\0' || l < k->min || l > k->max)
			return cfg_expects(k, msg, n);
		*(int *)(void *)field = (int)l;
		return 0;
	case CFG_BOOL:
		if (cfg_bool(v, (int *)(void *)field) != 0)
			return cfg_expects(k, msg, n);
		return 0;
	case CFG_HOSTPORT:
		if (util_hostport_parse(v, host, sizeof(host), &port) != 0)
			return cfg_expects(k, msg, n);
		break;
	case CFG_ENUM:
		if (cfg_choice(k->choices, v) != 0)
			return cfg_expects(k, msg, n);
		break;
	case CFG_STR:
		break;
	}
	if (util_strlcpy(field, v, k->size) != 0) {
		snprintf(msg, n, "'%s' is longer than %zu characters", k->name,
		    k->size - 1);
		return -1;
	}
	return 0;
}

void
cfg_defaults(const struct cfg_key *keys, void *obj)
{
	char msg[256];

	for (const struct cfg_key *k = keys; k->name != NULL; k++) {
		if (k->def == NULL) {
			if (k->type != CFG_INT && k->type != CFG_BOOL)
				((char *)obj + k->offset)[0] = '\0';
			continue;
		}
		/* defaults are written by us and always valid */
		(void)cfg_set(k, obj, k->def, msg, sizeof(msg));
	}
}

/* Writes text as "# " comment lines of at most about 78 columns. */
static void
cfg_print_comment(FILE *out, const char *text)
{
	const char *p = text;

	while (*p != '\0') {
		const char *end = p, *brk = NULL;

		while (*end != '\0' && (end - p < 76 || brk == NULL)) {
			if (*end == ' ')
				brk = end;
			end++;
		}
		if (*end == '\0')
			brk = end;
		fprintf(out, "# %.*s\n", (int)(brk - p), p);
		p = *brk == ' ' ? brk + 1 : brk;
	}
}

int
cfg_section_first(const struct cfg_key *keys, const struct cfg_key *k)
{
	for (const struct cfg_key *j = keys; j != k; j++)
		if (strcmp(j->section, k->section) == 0)
			return 0;
	return 1;
}

int
cfg_print_defaults(const struct cfg_key *keys, FILE *out)
{
	char values[128];

	for (const struct cfg_key *s = keys; s->name != NULL; s++) {
		if (!cfg_section_first(keys, s))
			continue;
		fprintf(out, "%s[%s]\n", s == keys ? "" : "\n", s->section);
		for (const struct cfg_key *k = s; k->name != NULL; k++) {
			if (strcmp(k->section, s->section) != 0)
				continue;
			cfg_key_values(k, values, sizeof(values));
			fputc('\n', out);
			cfg_print_comment(out, k->desc);
			fprintf(out, "# (%s) %s\n", k->flags & CFG_LIVE ? "live" : "restart",
			    values);
			if (k->def != NULL)
				fprintf(out, "%s = %s\n", k->name, k->def);
			else
				fprintf(out, "# %s =\n", k->name);
		}
	}
	return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}

static int
cfg_handler(void *user, const char *section, const char *name, const char *value)
{
	struct cfg_ctx *ctx = user;
	int known_section = 0;

	if (ctx->msg[0] != '\0')	/* report the first error only */
		return 0;
	for (const struct cfg_key *k = ctx->keys; k->name != NULL; k++) {
		if (strcmp(k->section, section) != 0)
			continue;
		known_section = 1;
		if (strcmp(k->name, name) == 0) {
			if (cfg_set(k, ctx->obj, value, ctx->msg, sizeof(ctx->msg)) != 0)
				return 0;
			return 1;
		}
	}
	if (known_section)
		snprintf(ctx->msg, sizeof(ctx->msg), "unknown key '%s' in [%s]",
		    name, section);
	else
		snprintf(ctx->msg, sizeof(ctx->msg), "unknown section [%s]", section);
	return 0;
}

static int
cfg_finish(struct cfg_ctx *ctx, const char *path, int r, char *err, size_t errlen)
{
	if (r == 0)
		return 0;
	if (r > 0 && ctx->msg[0] != '\0')
		snprintf(err, errlen, "%s:%d: %s", path, r, ctx->msg);
	else if (r > 0)
		snprintf(err, errlen, "%s:%d: syntax error", path, r);
	else if (r == -1)
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	else
		snprintf(err, errlen, "%s: out of memory", path);
	return -1;
}

int
cfg_load(const struct cfg_key *keys, void *obj, const char *path, char *err,
    size_t errlen)
{
	struct cfg_ctx ctx = { keys, obj, "" };

	cfg_defaults(keys, obj);
	return cfg_finish(&ctx, path, ini_parse(path, cfg_handler, &ctx), err, errlen);
}

int
cfg_load_string(const struct cfg_key *keys, void *obj, const char *path,
    const char *text, char *err, size_t errlen)
{
	struct cfg_ctx ctx = { keys, obj, "" };

	cfg_defaults(keys, obj);
	return cfg_finish(&ctx, path, ini_parse_string(text, cfg_handler, &ctx),
	    err, errlen);
}


static int
key_differs(const struct cfg_key *k, const void *a, const void *b)
{
	const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;

	if (k->type == CFG_INT || k->type == CFG_BOOL)
		return *(const int *)(const void *)fa != *(const int *)(const void *)fb;
	return strncmp(fa, fb, k->size) != 0;
}

int
cfg_diff(const struct cfg_key *keys, const void *a, const void *b, cfg_diff_fn fn, void *ctx)
{
	int n = 0;

	for (const struct cfg_key *k = keys; k->name != NULL; k++) {
		if (!key_differs(k, a, b))
			continue;
		n++;
		if (fn != NULL)
			fn(ctx, k, cfg_live(k));
	}
	return n;
}

void
cfg_diff_log(void *ctx, const struct cfg_key *k, int live)
{
	struct cfg_changes *n = ctx;

	n->changed++;
	if (live) {
		log_info("reload: [%s] %s changed", k->section, k->name);
		return;
	}
	n->restart++;
	log_warn("reload: [%s] %s changed: needs a restart (the old value stays)", k->section,
	    k->name);
}

void
cfg_take_live(const struct cfg_key *keys, void *dst, const void *src)
{
	for (const struct cfg_key *k = keys; k->name != NULL; k++) {
		char *fd = (char *)dst + k->offset;
		const char *fs = (const char *)src + k->offset;

		if (!cfg_live(k))
			continue;
		if (k->type == CFG_INT || k->type == CFG_BOOL)
			__atomic_store_n((int *)(void *)fd, *(const int *)(const void *)fs,
			    __ATOMIC_RELAXED);
		else
			memcpy(fd, fs, k->size);
	}
}

int
cfg_live(const struct cfg_key *k)
{
	return (k->flags & CFG_LIVE) != 0;
}

void
cfg_format(const struct cfg_key *k, const void *obj, char *out, size_t n)
{
	const char *f = (const char *)obj + k->offset;

	if (k->type == CFG_INT)
		snprintf(out, n, "%d", *(const int *)(const void *)f);
	else if (k->type == CFG_BOOL)
		snprintf(out, n, "%s", *(const int *)(const void *)f ? "yes" : "no");
	else
		snprintf(out, n, "%.*s", (int)k->size, f);
}
