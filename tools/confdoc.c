/* confdoc: the key reference of a daemon's configuration, generated from its
 * key table (conf_keys_table(), linked in: build/confdoc-tsbroker and
 * build/confdoc-tsagent), so the manual pages and docs cannot drift.
 *
 *   confdoc-NAME scdoc|md < TEMPLATE > OUT
 *
 * copies TEMPLATE and replaces what lies between the marker lines
 * "; keys:NAME" and "; /keys:NAME" (scdoc comments) or "<!-- keys:NAME -->"
 * and "<!-- /keys:NAME -->" (markdown) with the keys, section by section.
 * Markers of other names are copied as they are. Exit 0, 1 (a marker
 * missing or unclosed, a write error) or 2 (usage). */
#include <stdio.h>
#include <string.h>

#include "broker/common/cfg.h"

enum confdoc_format { CONFDOC_SCDOC, CONFDOC_MD };

/* Writes s with the characters special to format escaped. */
static void
confdoc_text(FILE *out, enum confdoc_format f, const char *s)
{
	for (; *s != '\0'; s++) {
		if (f == CONFDOC_SCDOC && strchr("\\*_", *s) != NULL)
			fputc('\\', out);
		else if (f == CONFDOC_MD && *s == '|')
			fputc('\\', out);
		fputc(*s, out);
	}
}

/* A default longer than this is shown as a literal block: a line of text
 * with no space in it cannot be broken to fit the page. */
#define CONFDOC_DEF_INLINE	40

static void
confdoc_key_scdoc(FILE *out, const struct cfg_key *k, const char *values)
{
	int has_def = k->def != NULL && k->def[0] != '\0';
	int is_long = has_def && strlen(k->def) > CONFDOC_DEF_INLINE;

	fputc('*', out);
	confdoc_text(out, CONFDOC_SCDOC, k->name);
	fputs("*\n\t", out);
	confdoc_text(out, CONFDOC_SCDOC, k->desc);
	fputs("\n\n\tTakes ", out);
	confdoc_text(out, CONFDOC_SCDOC, values);
	fprintf(out, ". %s Default: ", k->flags & CFG_LIVE ? "Live (re-read on SIGHUP)." :
	    "Needs a restart.");
	if (is_long)
		fprintf(out, "\n\n\t```\n\t%s\n\t```\n\n", k->def);
	else {
		if (has_def)
			confdoc_text(out, CONFDOC_SCDOC, k->def);
		else
			fputs("none", out);
		fputs(".\n\n", out);
	}
}

static void
confdoc_key_md(FILE *out, const struct cfg_key *k, const char *values)
{
	fputs("| `", out);
	fputs(k->name, out);
	fputs("` | ", out);
	if (k->def != NULL && k->def[0] != '\0') {
		fputc('`', out);
		confdoc_text(out, CONFDOC_MD, k->def);
		fputc('`', out);
	} else
		fputs("(none)", out);
	fputs(" | ", out);
	confdoc_text(out, CONFDOC_MD, values);
	fprintf(out, " | %s | ", k->flags & CFG_LIVE ? "live" : "restart");
	confdoc_text(out, CONFDOC_MD, k->desc);
	fputs(" |\n", out);
}

/* Every key of keys, a section's together, in table order. */
static void
confdoc_keys(FILE *out, enum confdoc_format f, const struct cfg_key *keys)
{
	char values[128];

	for (const struct cfg_key *s = keys; s->name != NULL; s++) {
		if (!cfg_section_first(keys, s))
			continue;
		if (f == CONFDOC_SCDOC)
			fprintf(out, "## [%s]\n\n", s->section);
		else
			fprintf(out, "\n### [%s]\n\n| key | default | values | on SIGHUP | "
			    "meaning |\n|---|---|---|---|---|\n", s->section);
		for (const struct cfg_key *k = s; k->name != NULL; k++) {
			if (strcmp(k->section, s->section) != 0)
				continue;
			cfg_key_values(k, values, sizeof(values));
			if (f == CONFDOC_SCDOC)
				confdoc_key_scdoc(out, k, values);
			else
				confdoc_key_md(out, k, values);
		}
	}
	if (f == CONFDOC_MD)
		fputc('\n', out);
}

int
main(int argc, char **argv)
{
	char line[4096], begin[128], end[128];
	enum confdoc_format f;
	int state = 0;		/* 0 before the markers, 1 inside, 2 after */

	if (argc != 3 || (strcmp(argv[2], "scdoc") != 0 && strcmp(argv[2], "md") != 0)) {
		fprintf(stderr, "usage: confdoc-NAME NAME scdoc|md < TEMPLATE > OUT\n");
		return 2;
	}
	f = strcmp(argv[2], "scdoc") == 0 ? CONFDOC_SCDOC : CONFDOC_MD;
	snprintf(begin, sizeof(begin), f == CONFDOC_SCDOC ? "; keys:%s\n" :
	    "<!-- keys:%s -->\n", argv[1]);
	snprintf(end, sizeof(end), f == CONFDOC_SCDOC ? "; /keys:%s\n" :
	    "<!-- /keys:%s -->\n", argv[1]);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		if (state == 1 && strcmp(line, end) != 0)
			continue;	/* the old generated keys */
		fputs(line, stdout);
		if (state == 0 && strcmp(line, begin) == 0) {
			confdoc_keys(stdout, f, conf_keys_table());
			state = 1;
		} else if (state == 1)
			state = 2;
	}
	if (state != 2) {
		fprintf(stderr, "confdoc: no %.*s ... %.*s in the template\n",
		    (int)strlen(begin) - 1, begin, (int)strlen(end) - 1, end);
		return 1;
	}
	return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
}
