#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker/common/util.h"
#include "broker/common/wire.h"

#define ERR(...) do { snprintf(err, errlen, __VA_ARGS__); goto out; } while (0)

/* Set when one of jansson's allocations failed (wire_init): jansson reports
 * that mid-parse as a syntax error. */
static __thread int wire_nomem;

static void *
wire_json_malloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		wire_nomem = 1;
	return p;
}


/* The wire's state texts, in enum order (enum wire_session_state; the
 * answer's admin state: enabled, draining). */
static const char *const session_text[] = { "active", "disconnected", NULL };
static const char *const admin_text[] = { "enabled", "draining", NULL };
static const char *const kind_text[] = { "logoff", "disconnect", NULL };

/* Index of text in a NULL-ended table, or -1. */
static int
text_index(const char *const *table, const char *text)
{
	for (int i = 0; table[i] != NULL; i++)
		if (strcmp(table[i], text) == 0)
			return i;
	return -1;
}

/* Copies the string member key of o into dst; required or optional. */
static int
get_str(json_t *o, const char *path, const char *key, int required, char *dst,
    size_t n, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	if (v == NULL || json_is_null(v)) {
		dst[0] = '\0';
		if (!required)
			return 0;
		snprintf(err, errlen, "'%s%s' is missing", path, key);
		return -1;
	}
	if (!json_is_string(v)) {
		snprintf(err, errlen, "'%s%s' must be a string", path, key);
		return -1;
	}
	if (json_string_length(v) >= n || strlen(json_string_value(v)) !=
	    json_string_length(v)) {
		snprintf(err, errlen, "'%s%s' must be shorter than %zu bytes "
		    "without NUL", path, key, n);
		return -1;
	}
	if (required && json_string_length(v) == 0) {
		snprintf(err, errlen, "'%s%s' must not be empty", path, key);
		return -1;
	}
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

static int
get_num(json_t *o, const char *path, const char *key, double min, double max,
    double *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	if (v == NULL || !json_is_number(v) || json_number_value(v) < min ||
	    json_number_value(v) > max) {
		snprintf(err, errlen, "'%s%s' must be a number from %.0f to %.0f",
		    path, key, min, max);
		return -1;
	}
	*out = json_number_value(v);
	return 0;
}

static int
get_int(json_t *o, const char *path, const char *key, int64_t min, int64_t max,
    int64_t *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	if (v == NULL || !json_is_integer(v) || json_integer_value(v) < min ||
	    json_integer_value(v) > max) {
		snprintf(err, errlen, "'%s%s' must be an integer from %lld to %lld",
		    path, key, (long long)min, (long long)max);
		return -1;
	}
	*out = json_integer_value(v);
	return 0;
}

/* Session i of the list, its members' errors under path. */
static int
session_decode_at(json_t *o, size_t i, const char *path, struct wire_session *s,
    char *err, size_t errlen)
{
	char state[16];
	int k;
	json_t *id;

	if (!json_is_object(o)) {
		snprintf(err, errlen, "'sessions[%zu]' must be an object", i);
		return -1;
	}
	if (get_str(o, path, "user", 1, s->user, sizeof(s->user), err, errlen) != 0 ||
	    get_str(o, path, "domain", 0, s->domain, sizeof(s->domain), err, errlen) != 0 ||
	    get_str(o, path, "state", 1, state, sizeof(state), err, errlen) != 0)
		return -1;
	/* ids may be numbers (a process id) or strings */
	id = json_object_get(o, "id");
	if (json_is_integer(id))
		snprintf(s->id, sizeof(s->id), "%lld", (long long)json_integer_value(id));
	else if (get_str(o, path, "id", 0, s->id, sizeof(s->id), err, errlen) != 0)
		return -1;
	if ((k = text_index(session_text, state)) >= 0)
		s->state = (enum wire_session_state)k;
	else {
		snprintf(err, errlen, "'%sstate' must be \"active\" or \"disconnected\"", path);
		return -1;
	}
	s->since = 0;
	if (json_object_get(o, "since") != NULL && !json_is_null(json_object_get(o, "since")) &&
	    get_int(o, path, "since", 0, INT64_C(1) << 40, &s->since, err, errlen) != 0)
		return -1;
	return 0;
}

/* The path ("sessions[i].") is made only for an error: decoded once
 * without it (no error written), and again with it if that failed. */
static int
session_decode(json_t *o, size_t i, struct wire_session *s, char *err, size_t errlen)
{
	char path[32];

	if (session_decode_at(o, i, "", s, NULL, 0) == 0)
		return 0;
	snprintf(path, sizeof(path), "sessions[%zu].", i);
	return session_decode_at(o, i, path, s, err, errlen);
}

static int
sessions_decode(json_t *a, struct wire_session **out, size_t *n, char *err,
    size_t errlen)
{
	struct wire_session *s;
	size_t i, count = json_array_size(a);

	if (count > WIRE_SESSIONS_MAX) {
		snprintf(err, errlen, "'sessions' has more than %d entries", WIRE_SESSIONS_MAX);
		return -1;
	}
	if ((s = calloc(count ? count : 1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return WIRE_NOMEM;
	}
	for (i = 0; i < count; i++) {
		if (session_decode(json_array_get(a, i), i, &s[i], err, errlen) != 0) {
			free(s);
			return -1;
		}
	}
	*out = s;
	*n = count;
	return 0;
}

/* jansson's allocations. A parse's tree (many small nodes, freed together
 * soon after: a heartbeat's is hundreds) comes from its thread's arena, a
 * bump allocator reset once none of its blocks is live; everything else,
 * and what does not fit, is malloc's (so a library that frees what jansson
 * gave it with free() still may). A tree never leaves the thread that
 * parsed it (each decoder frees it before it returns): a block is known as
 * the arena's by its address. */
#define ARENA_SIZE	(256 * 1024)

struct arena {
	char *base;
	size_t used;
	size_t live;			/* blocks not freed yet */
	int on;				/* json_loadb under way */
};

static __thread struct arena *arena_mine;
static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static int arena_ready;

static int
in_arena(const struct arena *a, const void *p)
{
	return a != NULL && (const char *)p >= a->base && (const char *)p < a->base + ARENA_SIZE;
}

/* Thread exit: the arena goes unless a block in it is still live. */
static void
arena_exit(void *p)
{
	struct arena *a = p;

	if (a->live == 0) {
		free(a->base);
		free(a);
	}
}

static void *
arena_alloc(size_t n)
{
	struct arena *a = arena_mine;
	void *p;

	n = (n + 15) & ~(size_t)15;
	if (a == NULL || !a->on || n > ARENA_SIZE - a->used)
		return wire_json_malloc(n);
	p = a->base + a->used;
	a->used += n;
	a->live++;
	return p;
}

static void
arena_free(void *p)
{
	struct arena *a = arena_mine;

	if (in_arena(a, p))
		a->live--;
	else
		free(p);
}

static void
arena_init(void)
{
	if (pthread_key_create(&arena_key, arena_exit) == 0) {
		json_set_alloc_funcs(arena_alloc, arena_free);
		arena_ready = 1;
	} else
		json_set_alloc_funcs(wire_json_malloc, free);
}

void
wire_init(void)
{
	(void)pthread_once(&arena_once, arena_init);
}

/* json_loadb with its tree in this thread's arena where it fits. */
static json_t *
arena_loadb(const char *buf, size_t len, size_t flags, json_error_t *je)
{
	struct arena *a;
	json_t *root;

	(void)pthread_once(&arena_once, arena_init);
	if (arena_ready && arena_mine == NULL && (a = calloc(1, sizeof(*a))) != NULL) {
		if ((a->base = malloc(ARENA_SIZE)) != NULL &&
		    pthread_setspecific(arena_key, a) == 0)
			arena_mine = a;
		else {
			free(a->base);
			free(a);
		}
	}
	if ((a = arena_mine) != NULL) {
		if (a->live == 0)
			a->used = 0;
		a->on = 1;
	}
	root = json_loadb(buf, len, flags, je);
	if (a != NULL)
		a->on = 0;
	return root;
}

/* The JSON object or array in buf, or NULL with *r set: WIRE_NOMEM, or -1
 * with the reason in err. */
static json_t *
parse(const char *buf, size_t len, int *r, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root;

	*r = -1;
	wire_nomem = 0;
	if ((root = arena_loadb(buf, len, JSON_REJECT_DUPLICATES, &je)) == NULL) {
		if (wire_nomem || json_error_code(&je) == json_error_out_of_memory) {
			*r = WIRE_NOMEM;
			snprintf(err, errlen, "out of memory");
		} else
			snprintf(err, errlen, "invalid JSON at line %d column %d: %s",
			    je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(root) && !json_is_array(root)) {
		json_decref(root);
		snprintf(err, errlen, "expected a JSON object");
		return NULL;
	}
	return root;
}

const char *
wire_command_kind_str(enum wire_command_kind k)
{
	return (int)k >= 0 && k < WIRE_COMMAND_KIND_COUNT ? kind_text[k] : "?";
}

int
wire_command_kind_parse(const char *text, enum wire_command_kind *out)
{
	int k = text_index(kind_text, text);

	return k < 0 ? -1 : (*out = (enum wire_command_kind)k, 0);
}

/* The array member key of root, absent or null as empty, at most
 * WIRE_COMMANDS_MAX entries, each an object: its size, or -1. */
static int
list_get(json_t *root, const char *key, json_t **a, char *err, size_t errlen)
{
	size_t i;
	json_t *v;

	*a = json_object_get(root, key);
	if (*a == NULL || json_is_null(*a))
		return 0;
	if (!json_is_array(*a) || json_array_size(*a) > WIRE_COMMANDS_MAX) {
		snprintf(err, errlen, "'%s' must be an array of at most %d", key,
		    WIRE_COMMANDS_MAX);
		return -1;
	}
	json_array_foreach(*a, i, v) {
		if (!json_is_object(v)) {
			snprintf(err, errlen, "'%s[%zu]' must be an object", key, i);
			return -1;
		}
	}
	return (int)json_array_size(*a);
}

/* "results": [{id, ok, expired?, detail?}] into hb. */
static int
results_decode(json_t *root, struct wire_heartbeat *hb, char *err, size_t errlen)
{
	json_t *a, *v;
	char path[32];
	int n;

	if ((n = list_get(root, "results", &a, err, errlen)) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		struct wire_result *w = &hb->results[i];
		json_t *o = json_array_get(a, (size_t)i);

		snprintf(path, sizeof(path), "results[%d].", i);
		if (get_int(o, path, "id", 1, INT64_MAX, &w->id, err, errlen) != 0 ||
		    get_str(o, path, "detail", 0, w->detail, sizeof(w->detail), err,
		    errlen) != 0)
			return -1;
		if (!json_is_boolean(v = json_object_get(o, "ok"))) {
			snprintf(err, errlen, "'%sok' must be true or false", path);
			return -1;
		}
		w->ok = json_is_true(v);
		w->expired = json_is_true(json_object_get(o, "expired"));
	}
	hb->nresults = (size_t)n;
	return 0;
}

/* "commands": [{id, kind, session, user, deadline_ms}] into ans. */
static int
commands_decode(json_t *root, struct wire_answer *ans, char *err, size_t errlen)
{
	char path[32], kind[16];
	json_t *a;
	int n;

	if ((n = list_get(root, "commands", &a, err, errlen)) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		struct wire_command *c = &ans->commands[i];
		json_t *o = json_array_get(a, (size_t)i);

		snprintf(path, sizeof(path), "commands[%d].", i);
		if (get_int(o, path, "id", 1, INT64_MAX, &c->id, err, errlen) != 0 ||
		    get_str(o, path, "kind", 1, kind, sizeof(kind), err, errlen) != 0 ||
		    get_str(o, path, "session", 1, c->session, sizeof(c->session), err,
		    errlen) != 0 ||
		    get_str(o, path, "user", 0, c->user, sizeof(c->user), err, errlen) != 0 ||
		    get_int(o, path, "deadline_ms", 0, 86400000, &c->deadline_ms, err,
		    errlen) != 0)
			return -1;
		if (wire_command_kind_parse(kind, &c->kind) != 0) {
			snprintf(err, errlen, "'%skind' must be \"logoff\" or \"disconnect\"",
			    path);
			return -1;
		}
	}
	ans->ncommands = (size_t)n;
	return 0;
}

int
wire_heartbeat_decode(const char *buf, size_t len, struct wire_heartbeat *hb,
    char *err, size_t errlen)
{
	json_t *root, *rdp, *load, *acc, *sess;
	struct wire_heartbeat h;
	int64_t i64;
	double d;
	int r = -1;

	/* the results past nresults are never read: not cleared, not copied */
	memset(&h, 0, offsetof(struct wire_heartbeat, results));
	if ((root = parse(buf, len, &r, err, errlen)) == NULL)
		return r;
	if (!json_is_object(root))
		ERR("expected a JSON object");
	if (get_str(root, "", "name", 1, h.name, sizeof(h.name), err, errlen) != 0 ||
	    get_str(root, "", "version", 0, h.version, sizeof(h.version), err, errlen) != 0)
		goto out;
	if (!json_is_object(rdp = json_object_get(root, "rdp")))
		ERR("'rdp' must be an object");
	if (get_str(rdp, "rdp.", "address", 0, h.rdp_address, sizeof(h.rdp_address),
	    err, errlen) != 0 ||
	    get_int(rdp, "rdp.", "port", 1, 65535, &i64, err, errlen) != 0)
		goto out;
	h.rdp_port = (int)i64;
	if (!json_is_boolean(acc = json_object_get(rdp, "accepting")))
		ERR("'rdp.accepting' must be true or false");
	h.rdp_accepting = json_is_true(acc);
	if (!json_is_object(load = json_object_get(root, "load")))
		ERR("'load' must be an object");
	if (get_int(load, "load.", "ncpu", 1, 65536, &i64, err, errlen) != 0)
		goto out;
	h.ncpu = (int)i64;
	if (get_num(load, "load.", "cpu_percent", 0, 100, &h.cpu_percent, err, errlen) != 0 ||
	    get_num(load, "load.", "load1", 0, 1e6, &h.load1, err, errlen) != 0 ||
	    get_num(load, "load.", "mem_total_kb", 0, 1e12, &d, err, errlen) != 0)
		goto out;
	h.mem_total_kb = (int64_t)d;
	if (get_num(load, "load.", "mem_available_kb", 0, 1e12, &d, err, errlen) != 0)
		goto out;
	h.mem_available_kb = (int64_t)d;
	sess = json_object_get(root, "sessions");
	if (sess == NULL)
		ERR("'sessions' is missing (send null when they are unknown)");
	if (json_is_null(sess)) {
		h.sessions_known = 0;
		if (get_str(root, "", "sessions_error", 0, h.sessions_error,
		    sizeof(h.sessions_error), err, errlen) != 0)
			goto out;
	} else if (json_is_array(sess)) {
		h.sessions_known = 1;
		if ((r = sessions_decode(sess, &h.sessions, &h.nsessions, err, errlen)) != 0)
			goto out;
	} else
		ERR("'sessions' must be an array or null");
	/* r is 0 after the sessions: a failure here must set it again */
	if ((r = results_decode(root, &h, err, errlen)) != 0) {
		free(h.sessions);
		goto out;
	}
	memcpy(hb, &h, offsetof(struct wire_heartbeat, results) +
	    h.nresults * sizeof(h.results[0]));
 out:
	json_decref(root);
	if (r != 0 && wire_nomem)	/* a value jansson could not make */
		r = WIRE_NOMEM;
	return r;
}

int
wire_sessions_decode(const char *buf, size_t len, struct wire_session **out,
    size_t *n, char *err, size_t errlen)
{
	json_t *root;
	int r = -1;

	if ((root = parse(buf, len, &r, err, errlen)) == NULL)
		return r;
	if (!json_is_array(root))
		ERR("expected a JSON array of sessions");
	r = sessions_decode(root, out, n, err, errlen);
 out:
	json_decref(root);
	return r;
}

void
wire_heartbeat_clear(struct wire_heartbeat *hb)
{
	if (hb == NULL)
		return;
	free(hb->sessions);
	memset(hb, 0, offsetof(struct wire_heartbeat, results));	/* nresults 0 */
}

/* json_dump_callback's sink. The failure is sticky: jansson 2.14 ignores
 * a failed write of an object's key and dumps on (a broken text). */
struct dump_buf {
	char *s;
	size_t len, cap;
	int failed;
};

static int
dump_add(const char *buf, size_t n, void *arg)
{
	struct dump_buf *d = arg;
	char *ns;
	size_t cap;

	if (d->failed)
		return -1;
	if (d->len + n + 1 > d->cap) {
		cap = (d->len + n + 1) * 2;
		if ((ns = realloc(d->s, cap)) == NULL) {
			d->failed = 1;
			return -1;
		}
		d->s = ns;
		d->cap = cap;
	}
	memcpy(d->s + d->len, buf, n);
	d->len += n;
	d->s[d->len] = '\0';
	return 0;
}

/* The compact text of o (caller frees), NULL on any failure. o is kept. */
static char *
dump_text(json_t *o)
{
	struct dump_buf d = { NULL, 0, 0, 0 };

	if (o == NULL || json_dump_callback(o, dump_add, &d, JSON_COMPACT) != 0 || d.failed ||
	    d.s == NULL) {
		free(d.s);
		return NULL;
	}
	return d.s;
}

static char *
dump(json_t *o)
{
	char *s = dump_text(o);

	json_decref(o);
	return s;
}

/* Appends obj (consumed) to the array a; -1 on failure. */
static int
append(json_t *a, json_t *obj)
{
	return obj == NULL ? -1 : json_array_append_new(a, obj);
}

static int
results_encode(json_t *root, const struct wire_heartbeat *hb)
{
	json_t *a = json_array();
	int r = a == NULL ? -1 : 0;

	for (size_t i = 0; r == 0 && i < hb->nresults && i < WIRE_COMMANDS_MAX; i++) {
		const struct wire_result *w = &hb->results[i];

		r = append(a, json_pack("{s:I, s:b, s:b, s:s}", "id", (json_int_t)w->id,
		    "ok", w->ok, "expired", w->expired, "detail", w->detail));
	}
	if (r == 0)
		return json_object_set_new(root, "results", a);
	json_decref(a);
	return -1;
}

char *
wire_heartbeat_encode(const struct wire_heartbeat *hb)
{
	json_t *root, *list;

	root = json_pack("{s:s, s:s, s:{s:s, s:i, s:b}, s:{s:i, s:f, s:f, s:I, s:I}}",
	    "name", hb->name, "version", hb->version,
	    "rdp", "address", hb->rdp_address, "port", hb->rdp_port,
	    "accepting", hb->rdp_accepting,
	    "load", "ncpu", hb->ncpu, "cpu_percent", hb->cpu_percent,
	    "load1", hb->load1, "mem_total_kb", (json_int_t)hb->mem_total_kb,
	    "mem_available_kb", (json_int_t)hb->mem_available_kb);
	if (root == NULL)
		return NULL;
	if (hb->nresults > 0 && results_encode(root, hb) != 0) {
		json_decref(root);
		return NULL;
	}
	if (!hb->sessions_known) {
		if (json_object_set_new(root, "sessions", json_null()) != 0 ||
		    json_object_set_new(root, "sessions_error",
		    json_string(hb->sessions_error)) != 0) {
			json_decref(root);
			return NULL;
		}
		return dump(root);
	}
	list = json_array();
	for (size_t i = 0; list != NULL && i < hb->nsessions; i++) {
		const struct wire_session *s = &hb->sessions[i];
		json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:I}",
		    "user", s->user, "domain", s->domain, "id", s->id,
		    "state", session_text[s->state == WIRE_DISCONNECTED],
		    "since", (json_int_t)s->since));
	}
	if (list == NULL || json_array_size(list) != hb->nsessions) {
		json_decref(list);
		json_decref(root);
		return NULL;
	}
	if (json_object_set_new(root, "sessions", list) != 0) {
		json_decref(root);
		return NULL;
	}
	return dump(root);
}

/* The answer without commands (nearly every one) of this thread's last
 * interval and admin state, encoded once. */
struct answer_memo {
	int interval, draining;
	char text[80];			/* "": none */
};
static __thread struct answer_memo answer_memo;

char *
wire_answer_encode(const struct wire_answer *a)
{
	struct answer_memo *m = &answer_memo;
	json_t *root, *list;
	char *text;
	int r = 0;

	if (a->ncommands == 0 && m->text[0] != '\0' && m->interval == a->interval &&
	    m->draining == (a->draining != 0))
		return strdup(m->text);
	root = json_pack("{s:i, s:s}", "interval", a->interval,
	    "admin_state", admin_text[a->draining != 0]);
	if (root == NULL || a->ncommands == 0) {
		if ((text = dump(root)) != NULL &&
		    util_strlcpy(m->text, text, sizeof(m->text)) == 0) {
			m->interval = a->interval;
			m->draining = a->draining != 0;
		} else
			m->text[0] = '\0';
		return text;
	}
	if ((list = json_array()) == NULL)
		r = -1;
	for (size_t i = 0; r == 0 && i < a->ncommands && i < WIRE_COMMANDS_MAX; i++) {
		const struct wire_command *c = &a->commands[i];

		r = append(list, json_pack("{s:I, s:s, s:s, s:s, s:I}", "id",
		    (json_int_t)c->id, "kind", wire_command_kind_str(c->kind), "session",
		    c->session, "user", c->user, "deadline_ms", (json_int_t)c->deadline_ms));
	}
	if (r == 0 && json_object_set_new(root, "commands", list) == 0)
		return dump(root);
	if (r != 0)
		json_decref(list);
	json_decref(root);
	return NULL;
}

int
wire_answer_decode(const char *buf, size_t len, struct wire_answer *a, char *err,
    size_t errlen)
{
	struct wire_answer tmp;
	char admin[16];
	json_t *root;
	int64_t i;
	int r = -1;

	if ((root = parse(buf, len, &r, err, errlen)) == NULL)
		return r;
	if (!json_is_object(root))
		ERR("expected a JSON object");
	if (get_int(root, "", "interval", 1, 3600, &i, err, errlen) != 0 ||
	    get_str(root, "", "admin_state", 1, admin, sizeof(admin), err, errlen) != 0)
		goto out;
	memset(&tmp, 0, sizeof(tmp));
	tmp.interval = (int)i;
	tmp.draining = text_index(admin_text, admin) == 1;	/* any other: enabled */
	if (commands_decode(root, &tmp, err, errlen) != 0)
		goto out;
	*a = tmp;
	r = 0;
 out:
	json_decref(root);
	return r;
}

int
wire_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= WIRE_NAME_MAX)
		return 0;
	for (; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && *s != '-' && *s != '_' && *s != '.')
			return 0;
	return 1;
}

char *
wire_error_encode(const char *msg)
{
	return dump(json_pack("{s:s}", "error", msg));
}

/* ---- admin API: JSON builder and login body ---- */

struct wire_json {
	json_t *j;
	int failed;
};

static struct wire_json *
json_node(json_t *j)
{
	struct wire_json *o;

	if (j == NULL)
		return NULL;
	if ((o = calloc(1, sizeof(*o))) == NULL) {
		json_decref(j);
		return NULL;
	}
	o->j = j;
	return o;
}

struct wire_json *
wire_json_object(void)
{
	return json_node(json_object());
}

struct wire_json *
wire_json_array(void)
{
	return json_node(json_array());
}

/* Sets (or appends, for arrays) v, consumed; marks o failed on error. */
static void
json_put(struct wire_json *o, const char *key, json_t *v)
{
	int r;

	if (o == NULL)
		return;
	if (v == NULL) {
		o->failed = 1;
		return;
	}
	r = json_is_array(o->j) ? json_array_append_new(o->j, v) :
	    json_object_set_new(o->j, key, v);
	if (r != 0)
		o->failed = 1;
}

/* 1 if s is UTF-8 as jansson accepts it (no overlong form, no surrogate,
 * nothing past U+10FFFF). */
static int
utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p != '\0') {
		uint32_t cp;
		int n;

		if (*p < 0x80) {
			p++;
			continue;
		}
		if ((*p & 0xe0) == 0xc0)
			n = 1, cp = *p & 0x1f;
		else if ((*p & 0xf0) == 0xe0)
			n = 2, cp = *p & 0x0f;
		else if ((*p & 0xf8) == 0xf0)
			n = 3, cp = *p & 0x07;
		else
			return 0;
		for (int i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		p += n + 1;
	}
	return 1;
}

void
wire_json_str(struct wire_json *o, const char *key, const char *v)
{
	json_t *s;
	char *copy;

	if (o == NULL)
		return;
	/* json_string fails on bytes that are not UTF-8 and on no memory:
	 * only the first is made ASCII, the second is remembered */
	if ((s = json_string(v ? v : "")) == NULL && v != NULL && !utf8_valid(v) &&
	    (copy = strdup(v)) != NULL) {
		/* not UTF-8 (a client's bytes): keep it readable as ASCII */
		for (char *p = copy; *p; p++)
			if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
				*p = '?';
		s = json_string(copy);
		free(copy);
	}
	json_put(o, key, s);
}

void
wire_json_int(struct wire_json *o, const char *key, int64_t v)
{
	if (o != NULL)
		json_put(o, key, json_integer((json_int_t)v));
}

void
wire_json_num(struct wire_json *o, const char *key, double v)
{
	if (o != NULL)
		json_put(o, key, json_real(v));
}

void
wire_json_bool(struct wire_json *o, const char *key, int v)
{
	if (o != NULL)
		json_put(o, key, json_boolean(v));
}

void
wire_json_null(struct wire_json *o, const char *key)
{
	if (o != NULL)
		json_put(o, key, json_null());
}

void
wire_json_add(struct wire_json *o, const char *key, struct wire_json *child)
{
	if (o == NULL) {
		wire_json_free(child);
		return;
	}
	if (child == NULL || child->failed) {
		o->failed = 1;
		wire_json_free(child);
		return;
	}
	json_put(o, key, child->j);	/* the reference moves into o */
	free(child);
}

char *
wire_json_dump(struct wire_json *o)
{
	char *s = NULL;

	if (o != NULL && !o->failed)
		s = dump_text(o->j);
	wire_json_free(o);
	return s;
}

void
wire_json_free(struct wire_json *o)
{
	if (o == NULL)
		return;
	json_decref(o->j);
	free(o);
}

int
wire_login_decode(const char *buf, size_t len, char *pw, size_t n, char *err,
    size_t errlen)
{
	json_t *root, *v;
	int r = -1;

	/* not parse(): jansson's messages quote the text near the error */
	wire_nomem = 0;
	if ((root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL)) == NULL) {
		snprintf(err, errlen, "expected {\"password\": \"...\"} (%s)", wire_nomem ?
		    "out of memory reading the password" : "invalid JSON");
		return wire_nomem ? WIRE_NOMEM : -1;
	}
	v = json_object_get(root, "password");
	if (!json_is_object(root) || !json_is_string(v))
		ERR("expected {\"password\": \"...\"}");
	if (json_string_length(v) == 0 || json_string_length(v) >= n ||
	    strlen(json_string_value(v)) != json_string_length(v))
		ERR("'password' must be 1 to %zu bytes without NUL", n - 1);
	memcpy(pw, json_string_value(v), json_string_length(v) + 1);
	r = 0;
 out:
	/* jansson's copy of the password goes with the tree: wipe it first */
	if (json_is_string(v))
		explicit_bzero((char *)json_string_value(v), json_string_length(v));
	if (r != 0 && wire_nomem)
		r = WIRE_NOMEM;
	json_decref(root);
	return r;
}
