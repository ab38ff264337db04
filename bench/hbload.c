/* hbload: simulated agents posting real HTTPS heartbeats (libcurl, one
 * keep-alive connection per thread, as tsagent keeps one per agent). Each
 * agent reports --sessions sessions; the threads share the agents and post
 * as fast as the broker answers (closed loop) for --duration seconds.
 *
 *   hbload --url https://H:P --ca FILE --tokens FILE [--threads N]
 *          [--duration S] [--sessions N] [--churn] [--interval S]
 *
 * --tokens: one "NAME TOKEN" line per agent. --churn: every heartbeat
 * changes one session's state (a write beyond the server row), otherwise
 * the snapshot repeats (the steady state). --interval: each thread posts
 * for each of its agents once per S seconds (open loop, as real agents do)
 * instead of as fast as the broker answers. Prints one JSON object: ok,
 * errors (non-200 or transport), rate, latency p50/p99/max (microseconds). */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "bench/benchutil.h"

#define AGENTS_MAX	100000
#define BODY_MAX	16384

struct agent {
	char name[64];
	char auth[128];
	long beats;
};

static struct agent *agents;
static int nagents, nsessions = 20, churn;
static double interval;	/* seconds between one agent's beats; 0: closed loop */
static const char *url, *ca;
static int64_t t_end;

struct worker {
	pthread_t th;
	int first, last;	/* agents [first, last) */
	struct lat_vec lat;
	long ok, err;
	long last_status;
};

static size_t
sink(char *p, size_t size, size_t n, void *arg)
{
	return size * n;
}

static int
body_of(struct agent *a, char *b, size_t n)
{
	size_t o = 0;
	int w;

	w = snprintf(b, n, "{\"name\":\"%s\",\"version\":\"bench\",\"rdp\":{\"address\":"
	    "\"127.0.0.2\",\"port\":3389,\"accepting\":true},\"load\":{\"ncpu\":8,"
	    "\"cpu_percent\":%.1f,\"load1\":1.5,\"mem_total_kb\":32000000,"
	    "\"mem_available_kb\":16000000},\"sessions\":[", a->name,
	    (double)(a->beats % 100));
	if (w < 0 || (size_t)w >= n)
		return -1;
	o = (size_t)w;
	for (int i = 0; i < nsessions; i++) {
		int disc = churn ? (int)((a->beats + (long)i) % nsessions == 0) : i % 5 == 4;

		w = snprintf(b + o, n - o, "%s{\"user\":\"%s-u%02d\",\"domain\":\"BENCH\","
		    "\"id\":\"%d\",\"state\":\"%s\",\"since\":1700000000}", i ? "," : "",
		    a->name, i, i + 1, disc ? "disconnected" : "active");
		if (w < 0 || (size_t)w >= n - o)
			return -1;
		o += (size_t)w;
	}
	if (o + 3 > n)
		return -1;
	memcpy(b + o, "]}", 3);
	return 0;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	CURL *h = curl_easy_init();
	struct curl_slist *hdr = NULL;
	char *body = malloc(BODY_MAX);
	int k = w->first;
	int64_t round = bench_mono_us();

	if (h == NULL || body == NULL)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);	/* the broker's cert names no IP */
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	while (bench_mono_us() < t_end) {
		struct agent *a = &agents[k];
		long status = 0;
		int64_t t0;

		if (++k >= w->last) {
			k = w->first;
			round += (int64_t)(interval * 1e6);
			while (interval > 0 && bench_mono_us() < round && bench_mono_us() < t_end)
				usleep(10000);
		}
		if (body_of(a, body, BODY_MAX) != 0)
			break;
		a->beats++;
		curl_slist_free_all(hdr);
		hdr = curl_slist_append(NULL, "Content-Type: application/json");
		hdr = curl_slist_append(hdr, a->auth);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		t0 = bench_mono_us();
		if (curl_easy_perform(h) == CURLE_OK &&
		    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
		    status == 200) {
			w->ok++;
			lat_push(&w->lat, bench_mono_us() - t0);
		} else {
			w->err++;
			w->last_status = status;
		}
	}
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	free(body);
	return NULL;
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "url", 1, NULL, 'u' }, { "ca", 1, NULL, 'c' }, { "tokens", 1, NULL, 't' },
		{ "threads", 1, NULL, 'n' }, { "duration", 1, NULL, 'd' },
		{ "sessions", 1, NULL, 's' }, { "churn", 0, NULL, 'x' },
		{ "interval", 1, NULL, 'i' }, { NULL, 0, NULL, 0 },
	};
	const char *tokens = NULL;
	double duration = 10;
	int nthreads = 8, ch;
	char name[64], tok[96], endpoint[512];
	struct worker *ws;
	FILE *f;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'u': url = optarg; break;
		case 'c': ca = optarg; break;
		case 't': tokens = optarg; break;
		case 'n': nthreads = atoi(optarg); break;
		case 'd': duration = atof(optarg); break;
		case 's': nsessions = atoi(optarg); break;
		case 'x': churn = 1; break;
		case 'i': interval = atof(optarg); break;
		default: goto usage;
		}
	}
	if (url == NULL || ca == NULL || tokens == NULL || nthreads < 1 || nthreads > 1024 ||
	    duration <= 0 || nsessions < 0 || nsessions > 200 || interval < 0 || strlen(url) > 400)
		goto usage;
	snprintf(endpoint, sizeof(endpoint), "%s/api/v1/heartbeat", url);
	url = endpoint;
	if ((agents = calloc(AGENTS_MAX, sizeof(*agents))) == NULL ||
	    (f = fopen(tokens, "r")) == NULL) {
		fprintf(stderr, "hbload: %s: cannot read\n", tokens);
		return 1;
	}
	while (nagents < AGENTS_MAX && fscanf(f, "%63s %95s", name, tok) == 2) {
		snprintf(agents[nagents].name, sizeof(agents[0].name), "%s", name);
		snprintf(agents[nagents].auth, sizeof(agents[0].auth),
		    "Authorization: Bearer %s", tok);
		nagents++;
	}
	fclose(f);
	if (nagents < nthreads) {
		fprintf(stderr, "hbload: %d agents for %d threads\n", nagents, nthreads);
		return 1;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	ws = calloc((size_t)nthreads, sizeof(*ws));
	int64_t t0 = bench_mono_us();
	t_end = t0 + (int64_t)(duration * 1e6);
	for (int i = 0; i < nthreads; i++) {
		ws[i].first = (int)((long)nagents * i / nthreads);
		ws[i].last = (int)((long)nagents * (i + 1) / nthreads);
		if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0)
			return 1;
	}
	struct lat_vec all = { 0 };
	long ok = 0, err = 0, last_status = 0;

	for (int i = 0; i < nthreads; i++) {
		pthread_join(ws[i].th, NULL);
		ok += ws[i].ok;
		err += ws[i].err;
		if (ws[i].last_status)
			last_status = ws[i].last_status;
		lat_merge(&all, &ws[i].lat);
	}
	double wall = (double)(bench_mono_us() - t0) / 1e6;
	lat_sort(&all);
	printf("{\"agents\": %d, \"threads\": %d, \"sessions\": %d, \"churn\": %d, \"ok\": %ld, "
	    "\"errors\": %ld, \"last_error_status\": %ld, \"wall_s\": %.2f, \"rate\": %.1f, "
	    "\"p50_us\": %lld, \"p99_us\": %lld, \"max_us\": %lld}\n", nagents, nthreads,
	    nsessions, churn, ok, err, last_status, wall, (double)ok / wall,
	    (long long)lat_pct(&all, 50), (long long)lat_pct(&all, 99),
	    (long long)lat_pct(&all, 100));
	curl_global_cleanup();
	return 0;
 usage:
	fprintf(stderr, "usage: hbload --url https://H:P --ca FILE --tokens FILE [--threads N] "
	    "[--duration S] [--sessions N] [--churn] [--interval S]\n");
	return 2;
}
