/* placebench: placement at scale, through the store's own operation.
 * Builds a state database of --servers servers (all up, enabled) holding
 * --sessions-per-server sessions each, then times store_placement_commit
 * (decision and durable commit, as the RDP endpoint calls it) for new users
 * and for reconnects, on --connections stores placing at once (one thread
 * and one database connection each, as that many brokers would), beside
 * two references measured in the same run:
 *   commit: one durable SQLite transaction (one INSERT, WAL,
 *           synchronous=FULL) on the same file: the floor of any decision
 *           the broker commits;
 *   pick:   placement_pick alone over the same servers in memory (the pure
 *           decision, no I/O: a pass over every server, the reference the
 *           store's ordered pick is tested against);
 *   ordered: the store's own decision over them (plindex_pick, then
 *           plindex_update of the server placed on).
 *
 *   placebench --db FILE [--servers N] [--sessions-per-server N]
 *              [--decisions N] [--reconnects N] [--commits N] [--connections N]
 *   placebench --engine postgresql --location URL [--servers N]
 *              [--sessions-per-server N] [--decisions N] [--reconnects N]
 *              [--connections N] [--prefix P]
 *
 * SQLite: the database is created anew (FILE is removed first). The bulk
 * load uses plain SQL on the schema (one transaction), the only part that
 * does not go through store.h: adding 10,000 servers one durable transaction
 * at a time would take longer than the benchmark. Another engine: the farm
 * is already loaded (bench.py does it with the engine's own client, users
 * u0000000... as here) and only the placements run; --servers and
 * --sessions-per-server say what it holds (for the reconnects), the two
 * references are not run (0 in the output). --decisions and --reconnects
 * are per connection; new users are PREFIX<connection>-NNNNNNN.
 * Prints one JSON object. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bench/benchutil.h"
#include "broker/common/util.h"
#include "broker/state/placement.h"
#include "broker/state/plindex.h"
#include "broker/state/store.h"

static void
die(const char *what, sqlite3 *db)
{
	fprintf(stderr, "placebench: %s: %s\n", what, db ? sqlite3_errmsg(db) : "failed");
	exit(1);
}

static void
exec_sql(sqlite3 *db, const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		die(sql, db);
}

/* The farm, in one transaction. */
static void
bulk_load(const char *path, int nservers, int per_server, int64_t now)
{
	sqlite3 *db;
	sqlite3_stmt *sv, *ss;
	char name[32], addr[32], hash[65], user[32], rid[16];
	long u = 0;

	if (sqlite3_open(path, &db) != SQLITE_OK)
		die("open", db);
	exec_sql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; BEGIN");
	if (sqlite3_prepare_v2(db, "INSERT INTO servers (id, name, address, port, weight, "
	    "max_sessions, token_hash, state, state_reason, state_since, last_heartbeat, "
	    "rdp_accepting, ncpu, cpu_percent, created) VALUES (?, ?, ?, 3389, 100, ?, ?, "
	    "'up', 'bench', ?, ?, 1, 8, ?, ?)", -1, &sv, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "INSERT INTO sessions (server_id, user, login, domain, "
	    "remote_id, state, created, updated) VALUES (?, ?, ?, 'BENCH', ?, ?, ?, ?)", -1,
	    &ss, NULL) != SQLITE_OK)
		die("prepare", db);
	for (int i = 1; i <= nservers; i++) {
		snprintf(name, sizeof(name), "ts%05d", i);
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
		snprintf(hash, sizeof(hash), "%064x", i);
		sqlite3_bind_int(sv, 1, i);
		sqlite3_bind_text(sv, 2, name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(sv, 3, addr, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(sv, 4, per_server + 1000);
		sqlite3_bind_text(sv, 5, hash, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(sv, 6, now);
		sqlite3_bind_int64(sv, 7, now);
		sqlite3_bind_double(sv, 8, (double)(i * 7919 % 1000) / 10.0);
		sqlite3_bind_int64(sv, 9, now);
		if (sqlite3_step(sv) != SQLITE_DONE)
			die("insert server", db);
		sqlite3_reset(sv);
		for (int j = 0; j < per_server; j++, u++) {
			snprintf(user, sizeof(user), "u%07ld", u);
			snprintf(rid, sizeof(rid), "%d", j + 1);
			sqlite3_bind_int(ss, 1, i);
			sqlite3_bind_text(ss, 2, user, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(ss, 3, user, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(ss, 4, rid, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(ss, 5, j % 5 == 4 ? "disconnected" : "active", -1,
			    SQLITE_STATIC);
			sqlite3_bind_int64(ss, 6, now);
			sqlite3_bind_int64(ss, 7, now);
			if (sqlite3_step(ss) != SQLITE_DONE)
				die("insert session", db);
			sqlite3_reset(ss);
		}
	}
	sqlite3_finalize(sv);
	sqlite3_finalize(ss);
	exec_sql(db, "COMMIT");
	sqlite3_close(db);
}

struct stats {
	double rate, p50, p99, max;
	double cpu_p50, cpu_p99;	/* the thread's CPU time (no preemption) */
	long errors;
};

/* This thread's CPU time, ns. */
static int64_t
thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
stats_of(struct lat_vec *l, double wall_s, long errors, struct stats *s)
{
	lat_sort(l);
	s->rate = wall_s > 0 ? (double)l->n / wall_s : 0;
	s->p50 = (double)lat_pct(l, 50) / 1000.0;	/* ns -> us */
	s->p99 = (double)lat_pct(l, 99) / 1000.0;
	s->max = (double)lat_pct(l, 100) / 1000.0;
	s->errors = errors;
	s->cpu_p50 = s->cpu_p99 = 0;
}

static void
print_stats(const char *name, const struct stats *s, int comma)
{
	printf("\"%s\": {\"rate\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
	    "\"max_us\": %.1f, \"cpu_p50_us\": %.1f, \"cpu_p99_us\": %.1f, \"errors\": %ld}%s ",
	    name, s->rate, s->p50, s->p99, s->max, s->cpu_p50, s->cpu_p99, s->errors,
	    comma ? "," : "");
}

/* The CPU-time percentiles of c into s. */
static void
cpu_of(struct lat_vec *c, struct stats *s)
{
	lat_sort(c);
	s->cpu_p50 = (double)lat_pct(c, 50) / 1000.0;
	s->cpu_p99 = (double)lat_pct(c, 99) / 1000.0;
}

/* n placements of users prefix%07d from start into l (wall) and c (the
 * thread's CPU); errors counted. */
static void
run_placements(struct store *st, const char *prefix, long start, long n, long stride,
    struct lat_vec *l, struct lat_vec *c, long *errors)
{
	struct store_place_request req;
	struct store_place_result res;
	char user[48];
	int r;

	for (long i = 0; i < n; i++) {
		int64_t a, ca;

		snprintf(user, sizeof(user), "%s%07ld", prefix, start + i * stride);
		memset(&req, 0, sizeof(req));
		memset(&res, 0, sizeof(res));
		req.user = user;
		req.login = user;
		req.domain = "BENCH";
		req.client = "192.0.2.1";
		req.now = util_now_ms();
		req.pending_ttl_ms = 120000;
		req.pending_penalty = 1;
		ca = thread_cpu_ns();
		a = bench_mono_ns();
		if ((r = store_placement_commit(st, &req, &res)) != 0) {
			if ((*errors)++ < 3)
				fprintf(stderr, "placebench: %s: %s%s%s\n", user, store_strerror(r),
				    res.reason[0] ? ": " : "", res.reason);
		} else {
			lat_push(l, bench_mono_ns() - a);
			lat_push(c, thread_cpu_ns() - ca);
		}
	}
}

/* One connection's share: its own store, placing while the others do. */
struct placer {
	pthread_t th;
	struct store *st;
	char prefix[32];
	long start, n, stride;
	pthread_barrier_t *go;
	struct lat_vec lat, cpu;
	long errors;
};

static void *
placer_main(void *arg)
{
	struct placer *p = arg;

	pthread_barrier_wait(p->go);
	run_placements(p->st, p->prefix, p->start, p->n, p->stride, &p->lat, &p->cpu,
	    &p->errors);
	return NULL;
}

/* n placements on each of the nconn stores at once (prefix<i>, or the
 * shared users from start by stride when shared is set: reconnects). */
static void
run_parallel(struct store **st, int nconn, const char *prefix, int shared, long start,
    long n, long stride, struct stats *out)
{
	struct placer *p = calloc((size_t)nconn, sizeof(*p));
	struct lat_vec all = { 0 }, cpu = { 0 };
	pthread_barrier_t go;
	long errors = 0;
	int64_t t0;

	if (p == NULL)
		die("out of memory", NULL);
	pthread_barrier_init(&go, NULL, (unsigned)nconn + 1);
	for (int i = 0; i < nconn; i++) {
		p[i].st = st[i];
		p[i].go = &go;
		p[i].n = n;
		p[i].stride = shared ? stride * nconn : stride;
		p[i].start = shared ? start + i * stride : start;
		if (shared)
			snprintf(p[i].prefix, sizeof(p[i].prefix), "%s", prefix);
		else
			snprintf(p[i].prefix, sizeof(p[i].prefix), "%s%d-", prefix, i);
		if (pthread_create(&p[i].th, NULL, placer_main, &p[i]) != 0)
			die("pthread_create", NULL);
	}
	pthread_barrier_wait(&go);
	t0 = bench_mono_ns();
	for (int i = 0; i < nconn; i++) {
		pthread_join(p[i].th, NULL);
		errors += p[i].errors;
		lat_merge(&all, &p[i].lat);
		lat_merge(&cpu, &p[i].cpu);
	}
	stats_of(&all, (double)(bench_mono_ns() - t0) / 1e9, errors, out);
	cpu_of(&cpu, out);
	pthread_barrier_destroy(&go);
	free(all.v);
	free(cpu.v);
	free(p);
}

/* The durable-commit floor: n one-row transactions on a second connection. */
static void
run_commits(const char *path, long n, struct stats *out)
{
	struct lat_vec l = { 0 };
	sqlite3 *db;
	sqlite3_stmt *ins, *b, *c;
	long errors = 0;
	int64_t t0;

	if (sqlite3_open(path, &db) != SQLITE_OK)
		die("open", db);
	exec_sql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL");
	if (sqlite3_prepare_v2(db, "INSERT INTO events (ts, kind, detail) VALUES (?, "
	    "'bench', 'durable commit reference')", -1, &ins, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &b, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "COMMIT", -1, &c, NULL) != SQLITE_OK)
		die("prepare", db);
	t0 = bench_mono_ns();
	for (long i = 0; i < n; i++) {
		int64_t a = bench_mono_ns();

		sqlite3_bind_int64(ins, 1, util_now_ms());
		if (sqlite3_step(b) != SQLITE_DONE || sqlite3_step(ins) != SQLITE_DONE ||
		    sqlite3_step(c) != SQLITE_DONE)
			errors++;
		else
			lat_push(&l, bench_mono_ns() - a);
		sqlite3_reset(b);
		sqlite3_reset(ins);
		sqlite3_reset(c);
	}
	stats_of(&l, (double)(bench_mono_ns() - t0) / 1e9, errors, out);
	free(l.v);
	sqlite3_finalize(ins);
	sqlite3_finalize(b);
	sqlite3_finalize(c);
	sqlite3_close(db);
}

/* placement_pick alone over nservers loaded servers (a pass over every
 * one: the reference the store's ordered pick is tested against), into
 * out; the store's own pick (plindex_pick and the update of the server
 * placed on, as store_placement_commit does) over the same servers into
 * ordered. */
static void
run_picks(int nservers, int per_server, long n, struct stats *out, struct stats *ordered)
{
	struct pl_server *sv = calloc((size_t)nservers, sizeof(*sv));
	char (*names)[16] = calloc((size_t)nservers, 16);
	struct lat_vec l = { 0 }, c = { 0 };
	struct plindex *ix = plindex_new();
	struct pl_decision d;
	int64_t t0;

	if (sv == NULL || names == NULL || ix == NULL)
		die("out of memory", NULL);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < nservers; i++) {
			snprintf(names[i], 16, "ts%05d", i + 1);
			sv[i] = (struct pl_server){ .id = i + 1, .name = names[i],
			    .state = SERVER_UP, .weight = 100, .max_sessions = per_server + 1000,
			    .sessions = per_server,
			    .cpu_percent = (double)((i + 1) * 7919 % 1000) / 10.0 };
		}
		if (pass == 1 && plindex_build(ix, sv, (size_t)nservers, 1) != 0)
			die("out of memory", NULL);
		l.n = c.n = 0;
		t0 = bench_mono_ns();
		for (long k = 0; k < n; k++) {
			struct pl_input in = { sv, (size_t)nservers, NULL, 0, 1 };
			int64_t ca = thread_cpu_ns(), a = bench_mono_ns();
			int r = pass == 0 ? placement_pick(&in, &d) : plindex_pick(ix, &in, &d);

			if (r == 0) {
				sv[d.server].pending++;		/* as a placement would */
				if (pass == 1)
					plindex_update(ix, sv, d.server);
				lat_push(&l, bench_mono_ns() - a);
				lat_push(&c, thread_cpu_ns() - ca);
			}
		}
		stats_of(&l, (double)(bench_mono_ns() - t0) / 1e9, 0, pass == 0 ? out : ordered);
		cpu_of(&c, pass == 0 ? out : ordered);
	}
	plindex_free(ix);
	free(l.v);
	free(c.v);
	free(sv);
	free(names);
}

static long
rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = 0;

	while (f != NULL && fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmHWM: %ld", &kb) == 1)
			break;
	if (f != NULL)
		fclose(f);
	return kb;
}

/* nconn stores of engine at location; exits on failure. */
static void
open_stores(const char *engine, const char *location, int nconn, struct store **st)
{
	char err[256];

	for (int i = 0; i < nconn; i++)
		if ((st[i] = store_open_engine(engine, location, err, sizeof(err))) == NULL) {
			fprintf(stderr, "placebench: %s\n", err);
			exit(1);
		}
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "db", 1, NULL, 'd' }, { "servers", 1, NULL, 's' },
		{ "sessions-per-server", 1, NULL, 'p' }, { "decisions", 1, NULL, 'n' },
		{ "reconnects", 1, NULL, 'r' }, { "commits", 1, NULL, 'c' },
		{ "engine", 1, NULL, 'e' }, { "location", 1, NULL, 'l' },
		{ "connections", 1, NULL, 'k' }, { "prefix", 1, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL, *engine = "sqlite", *prefix = "new";
	int nservers = 10000, per_server = 20, nconn = 1, sqlite, ch;
	long decisions = 2000, reconnects = 1000, commits = 1000, stride;
	struct stats fresh, again, commit, pick, ordered;
	struct store *st[16];
	char wal[4096];
	int64_t t0;
	double load_s = 0, open_s, first_ms;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'd': case 'l': path = optarg; break;
		case 's': nservers = atoi(optarg); break;
		case 'p': per_server = atoi(optarg); break;
		case 'n': decisions = atol(optarg); break;
		case 'r': reconnects = atol(optarg); break;
		case 'c': commits = atol(optarg); break;
		case 'e': engine = optarg; break;
		case 'k': nconn = atoi(optarg); break;
		case 'x': prefix = optarg; break;
		default: goto usage;
		}
	}
	sqlite = strcmp(engine, "sqlite") == 0;
	if (path == NULL || !store_engine_known(engine) || nservers < 1 || nservers > 1000000 ||
	    per_server < 0 || decisions < 1 || reconnects < 0 || commits < 1 ||
	    nconn < 1 || nconn > 16 || strlen(prefix) > 16 || strlen(path) > 4000)
		goto usage;
	if (sqlite) {
		unlink(path);
		snprintf(wal, sizeof(wal), "%s-wal", path);
		unlink(wal);
		snprintf(wal, sizeof(wal), "%s-shm", path);
		unlink(wal);
		open_stores(engine, path, 1, st);
		store_close(st[0]);
		t0 = bench_mono_ns();
		bulk_load(path, nservers, per_server, util_now_ms());
		load_s = (double)(bench_mono_ns() - t0) / 1e9;
	}
	t0 = bench_mono_ns();
	open_stores(engine, path, nconn, st);
	open_s = (double)(bench_mono_ns() - t0) / 1e9;
	/* the first decision of each connection may load caches: timed apart */
	t0 = bench_mono_ns();
	run_parallel(st, nconn, "warm", 0, 0, 1, 1, &fresh);
	first_ms = (double)(bench_mono_ns() - t0) / 1e6;
	run_parallel(st, nconn, prefix, 0, 0, decisions, 1, &fresh);
	/* reconnects of existing users, spread over the farm */
	stride = ((long)nservers * per_server - 7) / (reconnects * nconn + 1);
	if (reconnects > 0)
		run_parallel(st, nconn, "u", 1, 7, reconnects, stride > 0 ? stride : 1, &again);
	else
		memset(&again, 0, sizeof(again));
	for (int i = 0; i < nconn; i++)
		store_close(st[i]);
	memset(&commit, 0, sizeof(commit));
	memset(&pick, 0, sizeof(pick));
	memset(&ordered, 0, sizeof(ordered));
	if (sqlite) {
		run_commits(path, commits, &commit);
		run_picks(nservers, per_server, decisions, &pick, &ordered);
	}
	printf("{\"engine\": \"%s\", \"connections\": %d, \"servers\": %d, \"sessions\": %ld, "
	    "\"bulk_load_s\": %.2f, \"store_open_ms\": %.1f, \"first_decision_ms\": %.1f, ",
	    engine, nconn, nservers, (long)nservers * per_server, load_s, open_s * 1000,
	    first_ms);
	print_stats("new", &fresh, 1);
	print_stats("reconnect", &again, 1);
	print_stats("commit_ref", &commit, 1);
	print_stats("pick_ref", &pick, 1);
	print_stats("ordered_ref", &ordered, 1);
	printf("\"rss_kb\": %ld}\n", rss_kb());
	return 0;
 usage:
	fprintf(stderr, "usage: placebench --db FILE | --engine E --location L [--servers N] "
	    "[--sessions-per-server N] [--decisions N] [--reconnects N] [--commits N] "
	    "[--connections N] [--prefix P]\n");
	return 2;
}
