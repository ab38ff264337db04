/* tsagent: reports this terminal server's load, RDP health and sessions to
 * the broker. See docs/agent.md. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>

#include "agent/brokers.h"
#include "agent/conf.h"
#include "agent/probe.h"
#include "agent/report.h"
#include "agent/sessions.h"
#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/common/wire.h"

#define AGENT_RDP_TIMEOUT_MS	1000
#define AGENT_DONE_IDS		256	/* command ids remembered as run */

/* What the agent saw last, so that it logs changes and not every beat. */
struct agent {
	struct agent_conf conf;
	struct probe probe;
	struct sessions *sessions;
	struct report *report;
	const char *path;		/* the configuration file (argv) */
	sigset_t stop_signals;		/* blocked; waited for */
	sigset_t wait_signals;		/* those and SIGHUP (reload) */
	int load_ok, rdp_accepting, sessions_ok;
	enum report_status last;
	int have_last;
	char last_err[256];
	int failures;
	int reporting_to;		/* index in conf.brokers logged last, or -1 */
	int interval;			/* seconds, as the broker said last */
	int draining;			/* the admin state, as the broker said last */
	/* the broker's commands: outcomes not yet reported, and the ids run
	 * lately (each at most once; the broker delivers an id once, so after
	 * a restart none comes again) */
	size_t nresults;
	struct wire_result results[WIRE_COMMANDS_MAX];
	int64_t done[AGENT_DONE_IDS];
	size_t ndone;
};

static void
usage(void)
{
	fprintf(stderr, "usage: tsagent -f FILE [-t | --once] [-v] | tsagent -D | tsagent -V\n"
	    "  -f FILE   configuration file ([agent] section)\n"
	    "  -t        check the configuration and exit\n"
	    "  --once    send one heartbeat, print the broker's answer, exit 0 on success\n"
	    "  -v        log debug messages\n"
	    "  -D        print a default configuration and exit\n"
	    "  -V        print the version and exit\n");
}

/* Non-zero once SIGTERM or SIGINT is pending (they are blocked). */
static int
agent_stopping(void *arg)
{
	struct agent *a = arg;
	sigset_t pending;

	if (sigpending(&pending) != 0)
		return 0;
	for (int sig = 1; sig < NSIG; sig++)
		if (sigismember(&a->stop_signals, sig) && sigismember(&pending, sig))
			return 1;
	return 0;
}

/* The sessions provider of a->conf. NULL when out of memory. */
static struct sessions *
agent_sessions_new(struct agent *a)
{
	struct sessions_opts so;

	memset(&so, 0, sizeof(so));
	so.spec = a->conf.sessions;
	so.proc_root = "/proc";
	so.command_timeout_ms = a->conf.command_timeout * 1000;
	so.act[WIRE_LOGOFF] = a->conf.logoff_command;
	so.act[WIRE_DISCONNECT] = a->conf.disconnect_command;
	return sessions_new(&so);
}

/* SIGHUP: reads the file again. A file that does not load is refused
 * (logged) and the agent goes on with what it has; else the live keys take
 * effect from the next heartbeat, the others are logged as needing a
 * restart. */
static void
agent_reload(struct agent *a)
{
	struct agent_conf *next = calloc(1, sizeof(*next));
	struct cfg_changes n = { 0, 0 };
	struct sessions *s;
	char err[512];

	if (next == NULL) {
		log_error("reload refused: out of memory");
		return;
	}
	if (conf_load(a->path, next, err, sizeof(err)) != 0) {
		log_error("reload refused, still running on the previous configuration: %s", err);
		goto out;
	}
	(void)conf_diff(&a->conf, next, cfg_diff_log, &n);
	if (n.changed > n.restart) {
		conf_take_live(&a->conf, next);
		report_set_timeouts(a->report, &a->conf);
		a->interval = a->conf.interval;	/* until the broker says otherwise */
		if ((s = agent_sessions_new(a)) == NULL)
			log_error("reload: out of memory: the sessions provider stays");
		else {
			sessions_free(a->sessions);
			a->sessions = s;
		}
	}
	log_info("reloaded: %d keys changed, %d need a restart", n.changed, n.restart);
 out:
	explicit_bzero(next, sizeof(*next));
	free(next);
}

/* Waits ms or until a stop signal (SIGHUP reloads meanwhile); 1 if
 * stopped. */
static int
agent_wait(struct agent *a, int64_t ms)
{
	int64_t deadline = util_mono_ms() + ms;
	struct timespec ts;
	int64_t left;
	int sig;

	while ((left = deadline - util_mono_ms()) > 0) {
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000;
		if ((sig = sigtimedwait(&a->wait_signals, NULL, &ts)) == SIGHUP)
			agent_reload(a);
		else if (sig > 0)
			return 1;
	}
	return agent_stopping(a);
}

/* Builds this beat's heartbeat; logs what changed since the last one.
 * Returns the JSON body (caller frees) or NULL if the load is unreadable. */
static char *
agent_snapshot(struct agent *a)
{
	struct wire_heartbeat hb;
	struct probe_load load;
	char err[256];
	char *body = NULL;
	int ok;

	memset(&hb, 0, sizeof(hb));
	if (probe_load_read(&a->probe, &load, err, sizeof(err)) != 0) {
		if (a->load_ok)
			log_error("cannot read the load, sending no heartbeat: %s", err);
		a->load_ok = 0;
		return NULL;
	}
	a->load_ok = 1;
	util_strlcpy(hb.name, a->conf.name, sizeof(hb.name));
	util_strlcpy(hb.version, TS_VERSION, sizeof(hb.version));
	util_strlcpy(hb.rdp_address, a->conf.rdp_address, sizeof(hb.rdp_address));
	hb.rdp_port = a->conf.rdp_port;
	hb.rdp_accepting = probe_rdp_accepting(a->conf.rdp_address, a->conf.rdp_port,
	    AGENT_RDP_TIMEOUT_MS);
	if (hb.rdp_accepting != a->rdp_accepting)
		log_info("RDP port %s:%d is %s", a->conf.rdp_address[0] ?
		    a->conf.rdp_address : "127.0.0.1", a->conf.rdp_port,
		    hb.rdp_accepting ? "accepting" : "not accepting");
	a->rdp_accepting = hb.rdp_accepting;
	hb.ncpu = load.ncpu;
	hb.cpu_percent = load.cpu_percent;
	hb.load1 = load.load1;
	hb.mem_total_kb = load.mem_total_kb;
	hb.mem_available_kb = load.mem_available_kb;
	hb.nresults = a->nresults;
	memcpy(hb.results, a->results, a->nresults * sizeof(a->results[0]));

	ok = sessions_collect(a->sessions, &hb.sessions, &hb.nsessions,
	    hb.sessions_error, sizeof(hb.sessions_error)) == 0;
	hb.sessions_known = ok;
	if (!ok && a->sessions_ok)
		log_warn("sessions unknown (%s provider): %s",
		    sessions_provider(a->sessions), hb.sessions_error);
	else if (ok && !a->sessions_ok)
		log_info("sessions readable (%s provider): %zu", 
		    sessions_provider(a->sessions), hb.nsessions);
	a->sessions_ok = ok;
	log_debug("load %.1f%% cpu, load1 %.2f, %lld/%lld kB free, rdp %s, %s%zu sessions",
	    hb.cpu_percent, hb.load1, (long long)hb.mem_available_kb,
	    (long long)hb.mem_total_kb, hb.rdp_accepting ? "up" : "down",
	    ok ? "" : "unknown ", hb.nsessions);
	if ((body = wire_heartbeat_encode(&hb)) == NULL)
		log_error("out of memory");
	wire_heartbeat_clear(&hb);
	return body;
}

/* Logs the outcome of a beat if it differs from the previous one. */
static void
agent_log_outcome(struct agent *a, enum report_status st, const char *err,
    const struct wire_answer *ans)
{
	int changed = !a->have_last || st != a->last ||
	    (st == REPORT_REFUSED && strcmp(err, a->last_err) != 0);

	if (changed) {
		switch (st) {
		case REPORT_OK:
			if (a->have_last && a->failures > 0)
				log_info("broker reachable again after %d failed "
				    "heartbeats", a->failures);
			else
				log_info("broker reachable: heartbeat accepted");
			break;
		case REPORT_UNREACHABLE:
			log_warn("broker unreachable: %s (retrying, at most every %d s)",
			    err, a->conf.retry_max);
			break;
		case REPORT_REJECTED:
			log_error("token rejected by the broker (HTTP 401): check "
			    "'token' and 'name' (retrying)");
			break;
		case REPORT_REFUSED:
			log_warn("heartbeat refused: %s", err);
			break;
		case REPORT_ERROR:
			log_error("%s", err);
			break;
		}
	}
	if (st == REPORT_OK && (changed || ans->interval != a->interval ||
	    ans->draining != a->draining))
		log_info("broker says: interval %d s, %s", ans->interval,
		    ans->draining ? "draining" : "enabled");
	a->last = st;
	a->have_last = 1;
	util_strlcpy(a->last_err, err, sizeof(a->last_err));
}

/* Exponential backoff with jitter while heartbeats fail: about interval,
 * 2 x interval, 4 x ..., capped at retry_max, each drawn from [d/2, d]. */
static int64_t
agent_backoff_ms(const struct agent *a)
{
	int64_t d = (int64_t)a->interval * 1000;
	uint32_t rnd = 0;

	for (int i = 1; i < a->failures && d < (int64_t)a->conf.retry_max * 1000; i++)
		d *= 2;
	if (d > (int64_t)a->conf.retry_max * 1000)
		d = (int64_t)a->conf.retry_max * 1000;
	(void)util_random(&rnd, sizeof(rnd));
	return d / 2 + (int64_t)(rnd % (uint32_t)(d / 2 + 1));
}

static enum brokers_result
agent_broker_result(struct agent *a, enum report_status st)
{
	switch (st) {
	case REPORT_OK:
	case REPORT_REJECTED:	/* the farm's word: docs/agent.md */
	case REPORT_REFUSED:
		return BROKERS_ANSWERED;
	case REPORT_UNREACHABLE:
		return agent_stopping(a) ? BROKERS_ABORTED : BROKERS_FAILED;
	case REPORT_ERROR:
		break;
	}
	return BROKERS_ABORTED;
}

/* Sends body to the current broker, then to the next ones while they fail
 * (brokers.h). Logs when the broker reported to changes. */
static enum report_status
agent_send(struct agent *a, const char *body, struct wire_answer *ans,
    char *err, size_t errlen)
{
	struct brokers *b = &a->conf.brokers;
	struct brokers_beat bt;
	enum report_status st;
	enum brokers_result res;
	char first_err[256] = "";
	const char *url;

	brokers_beat_begin(b, &bt);
	do {
		url = brokers_beat_url(b, &bt);
		memset(ans, 0, sizeof(*ans));
		st = report_send(a->report, url, body, ans, err, errlen);
		res = agent_broker_result(a, st);
		if (res == BROKERS_FAILED) {
			log_debug("%s: %s", url, err);
			if (bt.tried == 0)
				util_strlcpy(first_err, err, sizeof(first_err));
		}
	} while (brokers_beat_record(b, &bt, res) == 1);
	if (res == BROKERS_ANSWERED && b->current != a->reporting_to) {
		if (a->reporting_to >= 0 && first_err[0] != '\0')
			log_info("reporting to %s (%s: %s)", url,
			    b->url[a->reporting_to], first_err);
		else
			log_info("reporting to %s", url);
		a->reporting_to = b->current;
	}
	return st;
}

/* 1 if command id was run (or refused) already. */
static int
agent_done(const struct agent *a, int64_t id)
{
	for (size_t i = 0; i < a->ndone && i < AGENT_DONE_IDS; i++)
		if (a->done[i] == id)
			return 1;
	return 0;
}

/* Carries out the answer's commands, each id once and none after its
 * deadline (sent_at + deadline_ms on this agent's monotonic clock, sent_at
 * being when the request went out: never later than the broker's), into
 * the results the next heartbeat reports. */
static void
agent_commands(struct agent *a, const struct wire_answer *ans, int64_t sent_at)
{
	for (size_t i = 0; i < ans->ncommands && a->nresults < WIRE_COMMANDS_MAX; i++) {
		const struct wire_command *c = &ans->commands[i];
		struct wire_result *w;
		const char *kind = wire_command_kind_str(c->kind);
		int r;

		if (agent_done(a, c->id))
			continue;
		a->done[a->ndone++ % AGENT_DONE_IDS] = c->id;
		w = &a->results[a->nresults++];
		memset(w, 0, sizeof(*w));
		w->id = c->id;
		if (util_mono_ms() >= sent_at + c->deadline_ms) {
			w->expired = 1;
			snprintf(w->detail, sizeof(w->detail), "not run: its deadline "
			    "had passed when it arrived");
			log_warn("command %lld (%s of session %s of %s): %s", (long long)c->id,
			    kind, c->session, c->user, w->detail);
			continue;
		}
		r = sessions_act(a->sessions, c->kind, c->session, c->user, w->detail,
		    sizeof(w->detail));
		w->ok = r == 0;
		if (r == 0)
			log_info("command %lld: %s of session %s of %s: %s", (long long)c->id,
			    kind, c->session, c->user, w->detail);
		else
			log_warn("command %lld: %s of session %s of %s failed: %s",
			    (long long)c->id, kind, c->session, c->user, w->detail);
	}
}

/* One heartbeat. For --once prints the answer. */
static enum report_status
agent_beat(struct agent *a, int once)
{
	struct wire_answer ans;
	enum report_status st;
	char err[256] = "";
	char *body;
	int64_t sent_at = util_mono_ms();

	if ((body = agent_snapshot(a)) == NULL)
		return REPORT_ERROR;
	st = agent_send(a, body, &ans, err, sizeof(err));
	free(body);
	if (st == REPORT_OK)
		a->nresults = 0;	/* the body carried them all */
	if (st == REPORT_OK && ans.ncommands > 0)
		agent_commands(a, &ans, sent_at);
	if (once) {
		const char *text = report_answer_text(a->report);

		if (text[0] != '\0')
			printf("%s\n", text);
		if (st != REPORT_OK)
			log_error("heartbeat failed (%s): %s", report_status_name(st), err);
		return st;
	}
	if (st != REPORT_OK && agent_stopping(a))
		return st;		/* the request was cut short to stop */
	agent_log_outcome(a, st, err, &ans);
	if (st == REPORT_OK) {
		a->failures = 0;
		a->interval = ans.interval;
		a->draining = ans.draining;
	} else
		a->failures++;
	return st;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "once", no_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct agent *a = NULL;
	const char *path = NULL;
	int opt, check = 0, once = 0, verbose = 0, rc = 1, curl_up = 0;
	char err[512];
	struct stat sb;

	while ((opt = getopt_long(argc, argv, "f:tvDVh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f': path = optarg; break;
		case 't': check = 1; break;
		case 'o': once = 1; break;
		case 'v': verbose = 1; break;
		case 'D': return conf_print_defaults(stdout) == 0 ? 0 : 1;
		case 'V': puts("tsagent " TS_VERSION); return 0;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (path == NULL || optind != argc || (check && once)) {
		usage();
		return 2;
	}
	log_init("tsagent", verbose ? LOG_DEBUG : LOG_INFO);
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		fprintf(stderr, "tsagent: out of memory\n");
		return 1;
	}
	if (conf_load(path, &a->conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "tsagent: %s\n", err);
		goto out;
	}
	if (check) {
		printf("%s: ok\n", path);
		rc = 0;
		goto out;
	}
	if (stat(path, &sb) == 0 && (sb.st_mode & S_IROTH))
		log_warn("%s is readable by everyone but holds the token", path);

	/* stop signals stay blocked and are waited for (sigtimedwait) or
	 * polled (during a request); children get the default mask back */
	sigemptyset(&a->stop_signals);
	sigaddset(&a->stop_signals, SIGTERM);
	sigaddset(&a->stop_signals, SIGINT);
	a->wait_signals = a->stop_signals;
	sigaddset(&a->wait_signals, SIGHUP);
	sigprocmask(SIG_BLOCK, &a->wait_signals, NULL);
	a->path = path;
	signal(SIGPIPE, SIG_IGN);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		log_error("cannot start libcurl");
		goto out;
	}
	curl_up = 1;
	probe_init(&a->probe, "/proc");
	if ((a->sessions = agent_sessions_new(a)) == NULL) {
		log_error("out of memory");
		goto out;
	}
	if ((a->report = report_new(&a->conf, agent_stopping, a, err, sizeof(err))) == NULL) {
		log_error("%s", err);
		goto out;
	}
	/* so that the first beat logs its state */
	a->rdp_accepting = -1;
	a->sessions_ok = 1;
	a->load_ok = 1;
	a->interval = a->conf.interval;
	a->reporting_to = -1;

	if (once) {
		/* commands in the answer: run, then reported by a second beat */
		rc = agent_beat(a, 1) == REPORT_OK && (a->nresults == 0 ||
		    agent_beat(a, 1) == REPORT_OK) ? 0 : 1;
		goto out;
	}
	log_info("tsagent %s: server '%s', broker %s, sessions %s, interval %d s",
	    TS_VERSION, a->conf.name, a->conf.broker, a->conf.sessions,
	    a->conf.interval);
	for (;;) {
		int64_t delay;

		if (agent_beat(a, 0) == REPORT_OK)
			/* outcomes to report: at once */
			delay = a->nresults > 0 ? 0 : (int64_t)a->interval * 1000;
		else
			delay = agent_backoff_ms(a);
		if (agent_wait(a, delay))
			break;
	}
	log_info("stopping");
	rc = 0;
 out:
	report_free(a->report);
	sessions_free(a->sessions);
	explicit_bzero(&a->conf, sizeof(a->conf));
	free(a);
	if (curl_up)
		curl_global_cleanup();
	return rc;
}
