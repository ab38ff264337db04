/* store_engine: what a storage engine provides to the store (store.c), one
 * table of operations per engine. Internal to broker/state/: callers use
 * store.h. An engine maps rows and runs its own query language; the rules
 * (placement, heartbeat reconciliation, the load cache) stay in store.c,
 * placement.c and reconcile.c, so a second engine re-implements storage,
 * not rules.
 *
 * Transactions: store.c serialises calls on one struct store_db (its lock)
 * and brackets every store.h operation in begin .. end: each operation
 * below runs inside that transaction and must not commit by itself.
 * Returns: 0 or a STORE_* code (store.h); engine failures are logged once
 * by the engine, with its message and __func__. Lists returned through
 * out-parameters are new arrays owned by the caller (free()), also on
 * error; strings in rows are copied into their fixed buffers. */
#ifndef TS_STORE_ENGINE_H
#define TS_STORE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "broker/state/placement.h"
#include "broker/state/reconcile.h"
#include "broker/state/store.h"

struct store_db;

/* A server's placement inputs and the earliest expiry of its counted
 * pending placements (INT64_MAX if none), as of now. */
struct store_load {
	int64_t id;
	char name[WIRE_NAME_MAX];
	enum server_state state;
	enum admin_state admin;
	int64_t quarantined_until;
	int weight, max_sessions;
	double cpu_percent;
	int sessions;			/* active + disconnected */
	int pending;			/* pending, expires > now */
	int64_t min_expires;
};

/* What an engine's last failure means for the whole store operation
 * (store.c: begin .. end run again, or answered). */
enum store_fault {
	STORE_FAULT_FINAL,		/* answer it */
	STORE_FAULT_RETRY,		/* nothing was committed: run it again (a
					 * serialization failure, a deadlock, a
					 * connection lost before COMMIT, a standby) */
	STORE_FAULT_IN_DOUBT,		/* the COMMIT's outcome is unknown: resolve */
	STORE_FAULT_DOWN,		/* no database reachable: STORE_UNAVAILABLE */
};

/* What became of an in-doubt COMMIT. */
enum store_outcome {
	STORE_OUTCOME_COMMITTED,	/* durably: the operation is done */
	STORE_OUTCOME_ABORTED,		/* never committed: run it again */
	STORE_OUTCOME_UNKNOWN,		/* cannot tell (no primary, or committed on
					 * the primary only): STORE_UNAVAILABLE */
};

/* An engine's fault handling; NULL (SQLite today): every failure final. */
struct store_faults {
	/* the meaning of the last failure of db (since its last begin) */
	enum store_fault (*classify)(struct store_db *db);
	/* after STORE_FAULT_IN_DOUBT: reconnects and re-reads */
	enum store_outcome (*resolve)(struct store_db *db);
	/* While down: a new connection made without the store's lock (it
	 * reads nothing of db but what open set; it may block up to the
	 * engine's connect timeout), NULL if none can be had; then put in
	 * place with the lock held (install owns it). */
	void *(*connect)(struct store_db *db);
	void (*install)(struct store_db *db, void *conn);
	/* bounds a COMMIT's wait (ms, 0 unbounded): past it the engine stops
	 * waiting and the commit is not durable (STORE_UNAVAILABLE) */
	void (*commit_timeout)(struct store_db *db, int ms);
};

/* server_lock without wait: another transaction holds the server */
#define STORE_LOCK_HELD	1

/* begin's write. A lazy write's commit returns before it is durable: the
 * next durable commit (any transaction's) makes it so, as a kill of the
 * broker does not undo it, but a power cut or a database failover before
 * that may (SQLite WAL: synchronous NORMAL for its commit; PostgreSQL:
 * synchronous_commit off). For records written after the fact, whose
 * caller has answered already (events). */
enum { STORE_TX_READ, STORE_TX_WRITE, STORE_TX_LAZY };

struct store_engine {
	const char *name;
	const struct store_faults *faults;	/* NULL: none */		/* the [state] engine value */
	/* location: the engine's own (SQLite: a file path or ":memory:").
	 * NULL with the reason in err; STORE_TOO_NEW refused. */
	struct store_db *(*open)(const char *location, char *err, size_t errlen);
	void (*close)(struct store_db *db);
	/* write: a STORE_TX_* below */
	int (*begin)(struct store_db *db, int write);
	/* Commits when r is 0, else rolls back; r or the commit's error. On
	 * a commit of a write transaction in which generation was read, *gen
	 * is the generation this commit made, if no other store committed
	 * since it was last read in this transaction (SQLite: its write lock
	 * keeps them out); else 0 (unknown: the cache reloads). */
	int (*end)(struct store_db *db, int r, uint64_t *gen);
	/* Makes every commit so far durable, the lazy ones too, without the
	 * transaction (any thread, beside other transactions; one call at a
	 * time); STORE_FULL if it cannot. NULL: none (a write that must be
	 * durable when told is not committed lazily). */
	int (*sync)(struct store_db *db);
	/* A number that changes with every commit, by this store or any
	 * other: equal generations mean no other store committed between the
	 * two reads. Never 0. */
	int (*generation)(struct store_db *db, uint64_t *gen);

	/* Events are store.c's (event_add): the operations below write none
	 * but the bulk ones (pending_expire, session_forget). A name out is a
	 * WIRE_NAME_MAX buffer: the server's. */

	/* servers; *id: the server changed (0 if none) */
	int (*server_add)(struct store_db *db, const struct store_server *spec,
	    const char *token_hash, int64_t now);
	int (*server_remove)(struct store_db *db, const char *name);
	int (*server_admin)(struct store_db *db, const char *name, enum admin_state a,
	    int64_t *id);
	int (*server_list)(struct store_db *db, struct store_server **out, size_t *n);
	int (*server_get)(struct store_db *db, const char *name, struct store_server *out);
	int (*server_auth)(struct store_db *db, const char *token_hash, int64_t *id,
	    char *name, size_t namelen);
	/* up/unknown -> down (sessions lost, pending placements ended);
	 * *changed 0 if it was down already */
	int (*server_down)(struct store_db *db, int64_t id, const char *reason,
	    int64_t now, char *name, int *changed);
	/* *changed 0 if another store quarantined it first (none unconfirmed) */
	int (*server_quarantine)(struct store_db *db, int64_t id, int64_t until,
	    char *name, int *changed);

	/* heartbeats: the server's stored health, admin state and name, and
	 * (if rows is not NULL) its sessions that have not ended */
	int (*heartbeat_read)(struct store_db *db, int64_t id, enum server_state *state,
	    enum admin_state *admin, char *name, struct rc_row **rows, size_t *nrows);
	/* the beat's load and health, then plan (reconcile.c) as one set;
	 * reason: the state_reason of the plan's transition (a down one as
	 * server_down) */
	int (*heartbeat_apply)(struct store_db *db, int64_t id,
	    const struct wire_heartbeat *hb, const struct rc_plan *plan,
	    const char *reason, int64_t now);

	/* placement */
	/* each(ctx, row) for every server (id 0) or for server id, in id
	 * order, at now; each returns 0 or a STORE_* code, which stops the
	 * load and is returned. STORE_NOT_FOUND if id names no server. */
	int (*load)(struct store_db *db, int64_t id, int64_t now,
	    int (*each)(void *ctx, const struct store_load *w), void *ctx);
	/* the user's active and disconnected sessions and unexpired pending
	 * placements */
	int (*user_sessions)(struct store_db *db, const char *user, int64_t now,
	    struct pl_session **out, size_t *n);
	/* Optional (NULL: the engine's write lock serialises placements, as
	 * SQLite's does). user_lock: no other store places user until this
	 * transaction ends; server_lock: nor writes to server_id's placements,
	 * and its load read after it counts every commit before it; without
	 * wait, STORE_LOCK_HELD (nothing taken) if another transaction holds
	 * it. */
	int (*user_lock)(struct store_db *db, const char *user);
	int (*server_lock)(struct store_db *db, int64_t server_id, int wait);
	int (*placement_insert)(struct store_db *db, int64_t server_id,
	    const struct store_place_request *req, int64_t *session_id);
	/* a reconnect: the session's client and time, a pending one's expiry */
	int (*placement_refresh)(struct store_db *db, int64_t session_id,
	    const struct store_place_request *req);
	/* name, address, fqdn and port of server_id into out */
	int (*placement_target)(struct store_db *db, int64_t server_id,
	    struct store_place_result *out);
	int (*pending_expire)(struct store_db *db, int64_t now, int *expired);

	/* the route of session_id (all but live) and the session's expiry */
	int (*session_route)(struct store_db *db, int64_t session_id, int64_t *expires,
	    struct store_route *out);
	/* f->user normalised already */
	int (*session_list)(struct store_db *db, const struct store_session_filter *f,
	    struct store_session **out, size_t *n);
	int (*session_forget)(struct store_db *db, int64_t id, int64_t now);

	/* the desk trail: a row for session_id now (its user and server); a
	 * session's desk is that of its latest row (session_list). server
	 * NULL: user, login and server read from the session's row; else
	 * (a session just inserted from req on server) from req and server */
	int (*trail_add)(struct store_db *db, int64_t session_id, int reconnect,
	    const char *server, const struct store_place_request *req);
	int (*trail_list)(struct store_db *db, const char *user, int limit,
	    struct store_trail **out, size_t *n);
	/* at most limit of the rows older than before_ms */
	int (*trail_prune)(struct store_db *db, int64_t before_ms, int limit, int *pruned);

	int (*event_add)(struct store_db *db, int64_t now, const char *kind,
	    const char *server, const char *user, const char *client, const char *detail,
	    int64_t duration_us);
	int (*event_list)(struct store_db *db, int64_t since_id, int limit,
	    struct store_event **out, size_t *n);
	int (*event_prune)(struct store_db *db, int64_t before_ms, int keep);

	int (*admin_password_set)(struct store_db *db, const char *hash, int64_t now);
	int (*admin_password_get)(struct store_db *db, char *hash, size_t n);
	int (*admin_token_add)(struct store_db *db, const char *name,
	    const char *token_hash, int64_t now);
	int (*admin_token_auth)(struct store_db *db, const char *token_hash, int64_t now,
	    char *name, size_t namelen);
	int (*admin_token_list)(struct store_db *db, struct store_admin_token **out,
	    size_t *n);
	int (*admin_token_remove)(struct store_db *db, const char *name);

	/* admin browser sessions; keep: the most recently used kept */
	int (*admin_session_add)(struct store_db *db, const struct store_admin_session *s,
	    int keep);
	int (*admin_session_get)(struct store_db *db, const char *id_hash,
	    struct store_admin_session *out);
	int (*admin_session_touch)(struct store_db *db, const char *id_hash, int64_t now);
	/* STORE_NOT_FOUND if none */
	int (*admin_session_remove)(struct store_db *db, const char *id_hash);
	/* those used before idle_before or made before max_before */
	int (*admin_session_prune)(struct store_db *db, int64_t idle_before,
	    int64_t max_before, int *pruned);

	/* history (store.h); history_claim: the sample row of [ts, ts + span)
	 * with its counts from events, *claimed 0 if recorded already;
	 * durations: the redirect times in it, ascending (a new array) */
	int (*history_claim)(struct store_db *db, int64_t ts, int64_t span, int headroom,
	    int *claimed);
	int (*history_durations)(struct store_db *db, int64_t ts, int64_t span,
	    int64_t **out, size_t *n);
	/* the percentiles into the claimed row, and its servers' rows */
	int (*history_fill)(struct store_db *db, int64_t ts, int64_t span, int64_t p50_us,
	    int64_t p99_us);
	int (*history_list)(struct store_db *db, int64_t since, int limit,
	    struct store_sample **out, size_t *n);
	int (*history_servers)(struct store_db *db, int64_t from, int64_t to,
	    struct store_sample_server **out, size_t *n);
	/* the oldest unmerged sample before `before`: STORE_NOT_FOUND if none */
	int (*history_oldest_raw)(struct store_db *db, int64_t before, int64_t span,
	    int64_t *ts);
	/* merges the samples shorter than span in [from, from + span) */
	int (*history_merge)(struct store_db *db, int64_t from, int64_t span);
	/* deletes the samples before `before`, at most batch of them */
	int (*history_delete)(struct store_db *db, int64_t before, int batch,
	    int *deleted);

	/* commands to agents (rows with their server's name) */
	int (*command_insert)(struct store_db *db, const struct store_command *c,
	    int64_t *id);
	int (*command_get)(struct store_db *db, int64_t id, struct store_command *out);
	/* the id of a queued or sent command of session_id; STORE_NOT_FOUND */
	int (*command_pending)(struct store_db *db, int64_t session_id, int64_t *id);
	/* server_id's queued commands whose deadline is after now, oldest
	 * first, at most max */
	int (*command_queued)(struct store_db *db, int64_t server_id, int64_t now,
	    size_t max, struct store_command **out, size_t *n);
	/* queued with deadline <= now, sent with deadline + grace_ms <= now */
	int (*command_overdue)(struct store_db *db, int64_t now, int64_t grace_ms,
	    struct store_command **out, size_t *n);
	/* id (of server_id, 0: any) from state from to to, with its outcome;
	 * *changed 0 if it was not in from (another store moved it) */
	int (*command_finish)(struct store_db *db, int64_t id, int64_t server_id,
	    enum command_state from, enum command_state to, const char *outcome,
	    int64_t now, int *changed);

	/* settings; setting_add: *added 0 if key had a value (kept) */
	int (*setting_get)(struct store_db *db, const char *key, char *value, size_t n);
	int (*setting_add)(struct store_db *db, const char *key, const char *value,
	    int64_t now, int *added);
	int (*setting_set)(struct store_db *db, const char *key, const char *value,
	    int64_t now);
};

/* The engines built in (store_sql.c: the SQL both share, on sqlite_db.c or
 * pg_db.c, with store_pg.c's statements for PostgreSQL). */
extern const struct store_engine store_engine_sqlite;
extern const struct store_engine store_engine_postgresql;

#endif
