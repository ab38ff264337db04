/* states: the states of servers and sessions as enums, with the one table
 * to and from their text. The text appears only at the edges: the schema's
 * CHECK lists (schema/001_init.sql, never edited: test_states compares
 * them with this table), the SQL an engine writes, JSON, the CLI and the
 * page (web/app.js). Pure: no I/O, no allocation; returned strings are
 * static. (The agent's wire format has its own two states: wire.h.) */
#ifndef TS_STATES_H
#define TS_STATES_H

#include <stdint.h>

/* Health: unknown until the first heartbeat. */
enum server_state { SERVER_UNKNOWN, SERVER_UP, SERVER_DOWN };
#define SERVER_STATE_COUNT 3

/* What the admin chose: draining keeps reconnects, takes no new users. */
enum admin_state { ADMIN_ENABLED, ADMIN_DRAINING };
#define ADMIN_STATE_COUNT 2

/* pending: placed, not yet confirmed by the agent; lost: on a server that
 * went down (kept, restored if it comes back); ended: gone (kept for a
 * while, hidden from lists). */
enum session_state { SESSION_PENDING, SESSION_ACTIVE, SESSION_DISCONNECTED,
	SESSION_LOST, SESSION_ENDED };
#define SESSION_STATE_COUNT 5

/* An admin's command to an agent (store.h): queued, sent (claimed by its
 * server's heartbeat), then done, failed (by the agent, or no outcome by
 * its deadline) or expired (the agent did not run it: its deadline had
 * passed by the agent's clock). */
enum command_state { COMMAND_QUEUED, COMMAND_SENT, COMMAND_DONE, COMMAND_FAILED,
	COMMAND_EXPIRED };
#define COMMAND_STATE_COUNT 5

/* The text of a state ("?" for a value outside the enum). */
const char *server_state_str(enum server_state s);
const char *admin_state_str(enum admin_state s);
const char *session_state_str(enum session_state s);
const char *command_state_str(enum command_state s);

/* 0 and *out set if text is a state's exact text, else -1. */
int server_state_parse(const char *text, enum server_state *out);
int admin_state_parse(const char *text, enum admin_state *out);
int session_state_parse(const char *text, enum session_state *out);
int command_state_parse(const char *text, enum command_state *out);

/* The rule "takes new users", used by placement, the farm's n+1 and the
 * store: up, enabled and not quarantined. */
int states_takes_new_users(enum server_state state, enum admin_state admin,
    int quarantined);

/* A session a user is sent back to: active or disconnected (a pending
 * placement counts only until its expiry, which the caller checks). */
int states_session_live(enum session_state s);

#endif
