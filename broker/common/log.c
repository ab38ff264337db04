#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "broker/common/log.h"

static const char *log_prog = "tsbroker";
static enum log_level log_max = LOG_INFO;

void
log_init(const char *prog, enum log_level max)
{
	log_prog = prog;
	log_max = max;
}

void
log_msg(enum log_level level, const char *func, const char *fmt, ...)
{
	static const char *names[] = { "error", "warn", "info", "debug" };
	char line[1024], ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	if (level > log_max)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* one write per line keeps lines whole across threads */
	fprintf(stderr, "%s.%03ldZ %s[%s] %s: %s\n", ts, now.tv_nsec / 1000000,
	    log_prog, names[level], func, line);
}
