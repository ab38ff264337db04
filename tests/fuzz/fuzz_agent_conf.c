/* libFuzzer target: the agent's configuration file (agent/conf.c: inih,
 * cfg.c, and its own checks: broker URL, token, sessions provider spec, the
 * line finder for error messages). The input is written to a file, as
 * conf_load reads one. A token must never appear in an error message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/brokers.h"
#include "agent/conf.h"
#include "broker/common/log.h"

static char path[64];

static int
occurrences(const uint8_t *data, size_t size, const char *s)
{
	size_t n = strlen(s);
	const uint8_t *p = data, *end = data + size;
	int count = 0;

	while ((p = memmem(p, (size_t)(end - p), s, n)) != NULL) {
		count++;
		p++;
	}
	return count;
}

/* The value of the last "token =" line of text into out ("" if none). */
static void
token_of(const char *text, size_t len, char *out, size_t n)
{
	const char *p = text, *end = text + len, *eol, *v;

	out[0] = '\0';
	for (; p < end; p = eol + 1) {
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		while (p < eol && (*p == ' ' || *p == '\t'))
			p++;
		if ((size_t)(eol - p) < 6 || strncmp(p, "token", 5) != 0)
			continue;
		for (v = p + 5; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		if (v >= eol || (*v != '=' && *v != ':'))
			continue;
		for (v++; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		snprintf(out, n, "%.*s", (int)(eol - v), v);
		out[strcspn(out, "\r;")] = '\0';
	}
}

static void
cleanup(void)
{
	unlink(path);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_conf c;
	struct brokers b;
	char err[1024], token[2048];
	FILE *f;

	if (path[0] == '\0') {
		log_init("fuzz", LOG_ERROR);
		snprintf(path, sizeof(path), "/tmp/fuzz_agent_conf.%ld", (long)getpid());
		atexit(cleanup);
	}
	if ((f = fopen(path, "w")) == NULL)
		abort();
	if (size > 0 && fwrite(data, 1, size, f) != size)
		abort();
	fclose(f);
	memset(&c, 0, sizeof(c));
	err[0] = '\0';
	if (conf_load(path, &c, err, sizeof(err)) == 0) {
		/* broker is a list (separators anywhere): each entry https */
		if (brokers_parse(c.broker, &b, err, sizeof(err)) != 0 || b.n < 1)
			abort();
		for (int i = 0; i < b.n; i++)
			if (strncmp(b.url[i], "https://", 8) != 0)
				abort();
		if (c.token[0] == '\0' ||
		    c.name[0] == '\0' || c.rdp_port < 1 || c.rdp_port > 65535 ||
		    c.interval < 1)
			abort();	/* conf_load promised these */
	} else {
		if (err[0] == '\0' || strnlen(err, sizeof(err)) == sizeof(err))
			abort();
		/* a token shaped like one (32+ hex digits), found nowhere else in
		 * the file (a key may hold the same text), is never echoed */
		token_of((const char *)data, size, token, sizeof(token));
		if (strlen(token) >= 32 && strspn(token, "0123456789abcdefABCDEF") ==
		    strlen(token) && occurrences(data, size, token) == 1 &&
		    strstr(err, token) != NULL)
			abort();
	}
	return 0;
}
