/* store: the broker's persistent state (servers, sessions, events, admin
 * credentials). Callers ask for operations, never for SQL; each operation is
 * atomic, so a second broker on a shared engine could run the same calls.
 * store.c is the engine-independent layer (the engine chosen at open, the
 * placement load cache, the rules of placement.c and reconcile.c); each
 * engine is one table of operations (store_engine.h): the SQL both share
 * in store_sql.c, on sqlite_db.c (the only file that includes sqlite3.h)
 * or pg_db.c (libpq-fe.h), PostgreSQL's own statements in store_pg.c.
 *
 * Return codes: 0 on success or a STORE_* code below. Database failures are
 * logged once here (with the engine's message) and returned as STORE_ERR or
 * STORE_FULL; callers answer, they do not log them again.
 * Threads: one struct store may be used from any thread; calls are serialised.
 * Lists returned through out-parameters are owned by the caller (free()). */
#ifndef TS_STORE_H
#define TS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "broker/common/wire.h"
#include "broker/state/states.h"

#define STORE_ERR	-1	/* database error */
#define STORE_NOT_FOUND	-2	/* no such server/session */
#define STORE_EXISTS	-3	/* name or token already used */
#define STORE_FULL	-4	/* the disk or database is full */
#define STORE_REFUSED	-5	/* placement refused: no server, no capacity */
#define STORE_TOO_NEW	-6	/* written by a newer tsbroker */
#define STORE_UNAVAILABLE -7	/* no state database reachable, or a commit
				 * not known to be durable: nothing to tell */

struct store;

#define STORE_DESK_MAX	64	/* a desk's name with its NUL (door.h's client_name) */

struct store_server {
	int64_t id;
	char name[WIRE_NAME_MAX];
	char address[WIRE_ADDR_MAX];
	char fqdn[WIRE_ADDR_MAX];
	int port;
	int weight;
	int max_sessions;
	enum admin_state admin_state;
	enum server_state state;
	char state_reason[128];
	int64_t state_since;
	int64_t quarantined_until;
	int unconfirmed;		/* placements expired unconfirmed in a row */
	int64_t last_confirmed;
	int64_t last_heartbeat;
	int rdp_accepting;
	char agent_version[32];
	int ncpu;
	double cpu_percent;
	double load1;
	int64_t mem_total_kb;
	int64_t mem_available_kb;
	int sessions_known;
	/* session counts by state */
	int active, disconnected, pending, lost;
};

struct store_session {
	int64_t id;
	char server[WIRE_NAME_MAX];
	char user[WIRE_USER_MAX];	/* normalised */
	char login[WIRE_USER_MAX];
	char domain[WIRE_USER_MAX];
	char remote_id[WIRE_ID_MAX];
	enum session_state state;
	char client[64];		/* the client's address, last placement */
	/* the computer name claimed by its latest placement or reconnect
	 * (its latest row of the desk trail) */
	char desk[STORE_DESK_MAX];
	int desk_known;			/* 0: unknown (not placed by the broker,
					 * spliced before any MCS data, or its
					 * trail pruned) */
	int64_t created, updated, expires;
};

struct store_event {
	int64_t id;
	int64_t ts;
	char kind[32];
	char server[WIRE_NAME_MAX];
	char user[WIRE_USER_MAX];
	char client[64];
	char detail[256];
	int64_t duration_us;
};

/* Opens (creating) the store of engine ("sqlite"; NULL: the default) at
 * location (SQLite: a file path) and applies pending migrations. NULL with
 * the reason in err (an unknown engine too); STORE_TOO_NEW databases are
 * refused. */
struct store *store_open_engine(const char *engine, const char *location, char *err,
    size_t errlen);
/* store_open_engine of the default engine (SQLite) at path. */
struct store *store_open(const char *path, char *err, size_t errlen);
/* 1 if engine names an engine built in. */
int store_engine_known(const char *engine);
void store_close(struct store *st);

/* ---- servers ---- */
/* spec: name, address, port, fqdn, weight, max_sessions. */
int store_server_add(struct store *st, const struct store_server *spec,
    const char *token_hash, int64_t now);
int store_server_remove(struct store *st, const char *name, int64_t now);
int store_server_drain(struct store *st, const char *name, int draining, int64_t now);
int store_server_list(struct store *st, struct store_server **out, size_t *n);
int store_server_get(struct store *st, const char *name, struct store_server *out);
/* Finds the server whose token hashes to token_hash. */
int store_server_auth(struct store *st, const char *token_hash, int64_t *id,
    char *name, size_t namelen);
/* up/unknown -> down: its sessions become lost, pending placements end.
 * *changed (may be NULL): 1 if this call marked it down (and wrote the
 * event), 0 if it was down already (another store did it). */
int store_server_down(struct store *st, int64_t id, const char *reason, int64_t now,
    int *changed);
/* *changed (may be NULL): 1 if this call quarantined it (and wrote the
 * event), 0 if another store had already. */
int store_server_quarantine(struct store *st, int64_t id, int64_t until,
    const char *reason, int64_t now, int *changed);

/* ---- heartbeats ---- */
struct store_heartbeat_result {
	int draining;			/* admin state to tell the agent */
	int went_up, went_down;		/* transitions caused by this beat */
	int confirmed;			/* pending placements confirmed */
	size_t ncommands;		/* commands claimed for the answer */
	struct wire_command commands[WIRE_COMMANDS_MAX];
	int results;			/* hb's results recorded */
};
/* Applies one heartbeat snapshot of server id in one transaction: load and
 * health; sessions reconciled (new ones appear, vanished ones end, pending
 * placements confirmed, lost ones restored) unless hb->sessions_known is 0,
 * in which case the broker's sessions are kept untouched. In the same
 * transaction the beat's results finish the server's sent commands (each
 * with an event) and its queued commands whose deadline is still ahead
 * are claimed (sent: delivered once, whichever store takes the beat) into
 * res->commands, deadline_ms counted from now. Beats of several threads
 * arriving together share one transaction (group commit): each returns
 * once the commit holding it is durable, and one beat's own error fails it
 * alone. */
int store_heartbeat_apply(struct store *st, int64_t id, const struct wire_heartbeat *hb,
    int64_t now, struct store_heartbeat_result *res);
/* store_heartbeat_apply of the server whose token hashes to token_hash,
 * found in the beat's own transaction (no lock taken apart, so the beats
 * of many agents join one group): STORE_NOT_FOUND if no server has it,
 * STORE_REFUSED if hb->name is not that server's name. name (n bytes) is
 * the server's name on 0 and on STORE_REFUSED. */
int store_heartbeat_token(struct store *st, const char *token_hash,
    const struct wire_heartbeat *hb, int64_t now, struct store_heartbeat_result *res,
    char *name, size_t n);

/* ---- placement ---- */
struct store_place_request {
	const char *user;		/* normalised */
	const char *login, *domain, *client;
	int64_t now;
	int pending_ttl_ms;
	int pending_penalty;
	/* the client's computer name as it claims (door.h client_name,
	 * cleaned); NULL: unknown */
	const char *desk;
};
struct store_place_result {
	int reconnect;
	int64_t session_id;
	int64_t server_id;
	char server[WIRE_NAME_MAX];
	char address[WIRE_ADDR_MAX];
	char fqdn[WIRE_ADDR_MAX];
	int port;
	char reason[64];		/* why, on STORE_REFUSED; why unrecorded */
	int unrecorded;			/* a reconnect served without its refresh
					 * (disk full, database unavailable) */
};
/* Decides (placement.c) and commits in one transaction: a reconnect refreshes
 * the session, a new user gets a pending placement that counts as load at
 * once; either is a row of the user's desk trail. Durable when it returns
 * 0: on an engine with a sync (SQLite) the commit is lazy and the call waits
 * for a sync covering it, which placements waiting together share (group
 * commit). When the disk is full (or that sync fails) a new placement fails
 * (STORE_FULL), but a reconnect is still answered (0, unrecorded set): it
 * follows a session that is committed already, only its refresh (client,
 * time, a pending placement's expiry) is lost. */
int store_placement_commit(struct store *st, const struct store_place_request *req,
    struct store_place_result *out);
/* Pending placements past their expiry end, each with an event; the servers
 * that left them unconfirmed count one more. *expired is how many ended. */
int store_pending_expire(struct store *st, int64_t now, int *expired);

/* ---- routing (token mode, trusted cookies) ---- */
struct store_route {
	int64_t session_id;
	char user[WIRE_USER_MAX];	/* normalised */
	char login[WIRE_USER_MAX];
	char domain[WIRE_USER_MAX];
	enum session_state session_state;
	int64_t server_id;
	char server[WIRE_NAME_MAX];
	char address[WIRE_ADDR_MAX];
	int port;
	enum server_state server_state;
	int live;			/* 1: the session is active, disconnected or an
					 * unexpired pending placement, on an up server */	char remote_id[WIRE_ID_MAX];	/* the agent's id of the session ("" if none) */
};
/* The user and server of session_id (a routing token's session), whatever
 * their states: STORE_NOT_FOUND if there is no such session (or its server
 * was removed). Reads only. */
int store_session_route(struct store *st, int64_t session_id, int64_t now,
    struct store_route *out);
/* Where user (normalised) would reconnect now by placement's reconnect
 * rules, without committing anything: STORE_NOT_FOUND unless the user has
 * a live session on an up server. Reads only. */
int store_user_route(struct store *st, const char *user, int64_t now,
    struct store_route *out);

/* ---- sessions ---- */
struct store_session_filter {
	const char *user, *server;		/* NULL or "" = any */
	const enum session_state *state;	/* NULL = any but ended */
	const char *desk;			/* NULL or "" = any; else sessions last
						 * placed from that desk (ASCII case
						 * ignored) */
};
int store_session_list(struct store *st, const struct store_session_filter *f,
    struct store_session **out, size_t *n);
int store_session_forget(struct store *st, int64_t id, int64_t now);
/* A connection gone back to session_id without a placement (a trusted
 * cookie's splice): its client, desk (req->desk, NULL as a rule: unknown)
 * and time recorded as a reconnect's, with a row of the trail (none, and
 * 0, if there is no such session). */
int store_session_reconnect(struct store *st, int64_t session_id,
    const struct store_place_request *req);

/* ---- the desk trail: where each user sat (docs/state.md) ---- */
struct store_trail {
	int64_t id;
	int64_t ts;			/* unix ms */
	char user[WIRE_USER_MAX];	/* normalised */
	char login[WIRE_USER_MAX];
	char desk[STORE_DESK_MAX];	/* claimed by the client */
	int desk_known;			/* 0: unknown (spliced before MCS data) */
	char client[64];		/* its address */
	char server[WIRE_NAME_MAX];
	int64_t session_id;
	int reconnect;			/* 0: a new placement */
};
/* user's (normalised) trail, newest first, at most limit rows. */
int store_trail_list(struct store *st, const char *user, int limit,
    struct store_trail **out, size_t *n);
/* Deletes the rows older than before_ms, in transactions of a few hundred
 * rows (the write lock is never held long); *pruned is how many this call
 * deleted (of several stores pruning at once, each row counts once). */
int store_trail_prune(struct store *st, int64_t before_ms, int *pruned);

/* ---- commands to agents (log off, disconnect; docs/agent.md "Logging a
 * user off"), shared by the brokers ---- */
#define STORE_ACTOR_MAX		160	/* who asked, incl. NUL */
/* After its deadline (the latest start) a sent command's outcome is awaited
 * this long more (the agent runs it, then reports at once). */
#define STORE_COMMAND_GRACE_MS	20000
#define STORE_COMMAND_TIMEOUT_MS 30000	/* a deadline's default (API, CLI) */
#define STORE_COMMAND_TIMEOUT_MAX 600	/* s */
struct store_command {
	int64_t id;
	int64_t session_id;
	int64_t server_id;
	char server[WIRE_NAME_MAX];
	enum wire_command_kind kind;
	char remote_id[WIRE_ID_MAX];	/* the agent's id of the session */
	char user[WIRE_USER_MAX];	/* the session's login */
	char actor[STORE_ACTOR_MAX];	/* "admin from ADDR", "token NAME", ... */
	enum command_state state;
	char outcome[WIRE_DETAIL_MAX];	/* the agent's detail, or why it failed */
	int64_t created, deadline, updated;	/* unix ms */
};
/* Queues kind for session_id, asked by actor (never a secret), to start by
 * now + timeout_ms, with an event; *out is the command queued. Refused at
 * once (STORE_REFUSED, the reason in reason, n bytes) when the session is
 * pending, lost or ended, its server is not up, a disconnect finds it
 * disconnected already, or a command for it is queued or sent;
 * STORE_NOT_FOUND if there is no such session. */
int store_command_add(struct store *st, int64_t session_id, enum wire_command_kind kind,
    const char *actor, int64_t now, int timeout_ms, struct store_command *out,
    char *reason, size_t n);
int store_command_get(struct store *st, int64_t id, struct store_command *out);
/* Queued commands past their deadline and sent ones past it by
 * STORE_COMMAND_GRACE_MS become failed, each with an event, once across
 * the stores; *failed is how many this call ended. */
int store_command_expire(struct store *st, int64_t now, int *failed);

/* ---- events ---- */
/* Records an event now; the strings may be NULL. */
int store_event_add(struct store *st, const char *kind, const char *server,
    const char *user, const char *client, const char *detail, int64_t duration_us);
/* Events with id > since_id, newest first, at most limit. */
int store_event_list(struct store *st, int64_t since_id, int limit,
    struct store_event **out, size_t *n);
/* Deletes events older than before_ms and beyond the newest keep. */
int store_event_prune(struct store *st, int64_t before_ms, int keep);

/* ---- history: the farm over time (docs/operations.md "History") ---- */
struct store_sample {
	int64_t ts;			/* ms: the start of the time it covers */
	int64_t span;			/* ms it covers (raw: the period; merged: 15 min) */
	int logons, reconnects, refusals;	/* events in it */
	int64_t redirect_p50_us, redirect_p99_us;	/* 0: no redirect */
	int headroom;			/* farm.h; merged: the least */
};
struct store_sample_server {
	int64_t ts, span;		/* the sample's */
	char server[WIRE_NAME_MAX];
	int active, disconnected, pending, lost;	/* merged: rounded means */
};
/* Takes the sample of [ts, ts + span): the events in it counted, the
 * redirect times' percentiles, the sessions of every server as now, and
 * headroom (the caller's, from farm_summarise). Of several stores taking
 * the same ts, one records it: *taken 1 if this call did. */
int store_history_take(struct store *st, int64_t ts, int64_t span, int headroom,
    int *taken);
/* Samples with ts >= since, oldest first, at most limit, and their
 * servers' rows (by ts, then name): new arrays the caller frees, set even
 * on error. */
int store_history_list(struct store *st, int64_t since, int limit,
    struct store_sample **samples, size_t *n, struct store_sample_server **servers,
    size_t *m);
#define STORE_HISTORY_MERGE_MS	(15 * 60 * 1000)	/* the span of merged samples */
#define STORE_HISTORY_RAW_MS	(24 * 3600 * 1000)	/* kept unmerged */
/* Bounded upkeep, one short write transaction per step: merges samples
 * older than now - STORE_HISTORY_RAW_MS into STORE_HISTORY_MERGE_MS ones
 * (a bucket a step), deletes samples older than keep_before (batch
 * samples a step), until done or steps ran. *merged and *deleted count
 * what this call did. */
int store_history_prune(struct store *st, int64_t now, int64_t keep_before, int batch,
    int steps, int *merged, int *deleted);

/* ---- admin credentials ---- */
int store_admin_password_set(struct store *st, const char *hash, int64_t now);
/* STORE_NOT_FOUND if none is set yet. */
int store_admin_password_get(struct store *st, char *hash, size_t n);

/* ---- admin API bearer tokens (api_admin, `tsbroker admin token`) ---- */
struct store_admin_token {
	char name[WIRE_NAME_MAX];
	int64_t created;
	int64_t last_used;		/* 0 = never; updated at most once a minute */
};
/* Adds a token known by its SHA-256 hex; STORE_EXISTS if name is taken. */
int store_admin_token_add(struct store *st, const char *name, const char *token_hash,
    int64_t now);
/* Finds the token whose SHA-256 is token_hash: 0 with its name, or
 * STORE_NOT_FOUND. Records the use (at most one write a minute). */
int store_admin_token_auth(struct store *st, const char *token_hash, int64_t now,
    char *name, size_t namelen);
int store_admin_token_list(struct store *st, struct store_admin_token **out, size_t *n);
int store_admin_token_remove(struct store *st, const char *name, int64_t now);

/* ---- admin browser sessions (auth.c), shared by the brokers ---- */
struct store_admin_session {
	char id_hash[65];		/* SHA-256 hex of the cookie's value */
	char client[64];		/* the login's address */
	int64_t created, last_used;	/* unix ms */
};
/* When a session expires: unused for idle_ms, or max_ms after its login. */
struct store_session_limits {
	int64_t idle_ms, max_ms;
};
/* Adds s (a login); beyond keep sessions the least recently used go. */
int store_admin_session_add(struct store *st, const struct store_admin_session *s,
    int keep);
/* The session id_hash if it is live at now: 0 with it in *out (its use at
 * now recorded, at most one write a second), STORE_NOT_FOUND if there is
 * none or it has expired (an expired one stays until the prune). */
int store_admin_session_use(struct store *st, const char *id_hash, int64_t now,
    const struct store_session_limits *lim, struct store_admin_session *out);
/* Ends the session (a logout); STORE_NOT_FOUND if there is none. */
int store_admin_session_remove(struct store *st, const char *id_hash);
/* Deletes the sessions expired at now; *pruned is how many this call
 * deleted (of several stores pruning at once, each row counts once). */
int store_admin_session_prune(struct store *st, int64_t now,
    const struct store_session_limits *lim, int *pruned);

/* ---- settings the brokers sharing the store agree on ---- */
#define STORE_SETTING_TOKEN_KEY	"token_key_fingerprint"	/* token mode's key */
#define STORE_SETTING_MAX	128	/* bytes of a value, NUL included */
/* The value of key into value (n bytes); STORE_NOT_FOUND if none. */
int store_setting_get(struct store *st, const char *key, char *value, size_t n);
/* Records value for key unless a value is recorded already; 0 with the
 * value in force in current (n bytes) and *first 1 if this call recorded
 * it. Of several stores claiming at once, one records. */
int store_setting_claim(struct store *st, const char *key, const char *value,
    int64_t now, char *current, size_t n, int *first);
/* Sets key to value, replacing any (with an event naming the key). */
int store_setting_set(struct store *st, const char *key, const char *value, int64_t now);

/* How many times the placement load cache was loaded whole (every server
 * read): after another store's commit, never after this store's own. */
uint64_t store_cache_loads(struct store *st);
/* Heartbeats arriving together share one transaction and one commit
 * (store_heartbeat_apply): how many such group commits ran, and the beats
 * in them. */
void store_heartbeat_groups(struct store *st, uint64_t *groups, uint64_t *beats);
/* ---- faults (docs/state.md "When the state database fails") ---- */
/* Each operation runs whole again when the engine says it may (a
 * serialization failure, a deadlock, a connection lost before COMMIT: a few
 * times, jittered) and an in-doubt COMMIT is re-read, never guessed. When
 * no database is reachable the store is down: operations fail fast with
 * STORE_UNAVAILABLE, except that a user whose live session this store last
 * read (placements, routes: the most recent LASTSEEN_USERS or more, see
 * lastseen.h) is still answered from memory, unrecorded (res->unrecorded,
 * res->reason). */
/* 1 if down, with since (ms) and why (a phrase) when not NULL; else 0. */
int store_outage(struct store *st, int64_t *since, char *why, size_t n);
/* While down: tries a new connection without blocking the requests (they
 * fail fast meanwhile), logs the outage's end with its length. 0 when up
 * already, 1 when this call ended an outage, else STORE_UNAVAILABLE. Call
 * it every 250 ms or so. */
int store_recover(struct store *st);
/* Bounds the wait of a COMMIT (ms; [state] commit_timeout): past it the
 * commit is not durable (a synchronous standby missing): STORE_UNAVAILABLE.
 * No-op on engines that do not wait. */
void store_commit_timeout(struct store *st, int ms);

const char *store_strerror(int r);

#endif
