/* wire: the JSON formats on the wire between agent and broker (jansson is
 * included here only). See docs/api.md "Agent API". */
#ifndef TS_WIRE_H
#define TS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_NAME_MAX	64	/* server names, incl. NUL */
#define WIRE_USER_MAX	128	/* user and domain names, incl. NUL */
#define WIRE_ID_MAX	64	/* agent-side session ids, incl. NUL */
#define WIRE_ADDR_MAX	256
#define WIRE_SESSIONS_MAX 10000	/* sessions in one heartbeat */

enum wire_session_state { WIRE_ACTIVE = 0, WIRE_DISCONNECTED = 1 };

struct wire_session {
	char user[WIRE_USER_MAX];
	char domain[WIRE_USER_MAX];
	char id[WIRE_ID_MAX];
	enum wire_session_state state;
	int64_t since;			/* unix seconds, 0 if unknown */
};

/* An admin's command to an agent (docs/agent.md "Logging a user off"): the
 * broker's heartbeat answer carries them, the agent's next heartbeat the
 * results. Kind texts: "logoff", "disconnect". */
#define WIRE_COMMANDS_MAX 32	/* commands in one answer, results in one beat */
#define WIRE_DETAIL_MAX	256	/* a result's detail, incl. NUL */
enum wire_command_kind { WIRE_LOGOFF = 0, WIRE_DISCONNECT = 1 };
#define WIRE_COMMAND_KIND_COUNT 2

struct wire_command {
	int64_t id;			/* the broker's; run at most once */
	enum wire_command_kind kind;
	char session[WIRE_ID_MAX];	/* the agent's session id */
	char user[WIRE_USER_MAX];	/* the session's user, as the agent said */
	int64_t deadline_ms;		/* ms left to start it, from when the
					 * broker answered: the agent counts from
					 * when it sent the request, on its own
					 * clock (never later than the broker's) */
};

struct wire_result {
	int64_t id;
	int ok;
	int expired;			/* not run: its deadline had passed */
	char detail[WIRE_DETAIL_MAX];
};

struct wire_heartbeat {
	char name[WIRE_NAME_MAX];
	char version[32];
	char rdp_address[WIRE_ADDR_MAX];
	int rdp_port;
	int rdp_accepting;
	int ncpu;
	double cpu_percent;
	double load1;
	int64_t mem_total_kb;
	int64_t mem_available_kb;
	/* 0 when the agent could not read its sessions ("sessions": null):
	 * the broker then keeps what it had. */
	int sessions_known;
	char sessions_error[128];	/* why, when !sessions_known */
	size_t nsessions;
	struct wire_session *sessions;	/* owned, freed by wire_heartbeat_clear */
	size_t nresults;		/* outcomes of commands ("results") */
	struct wire_result results[WIRE_COMMANDS_MAX];
};

struct wire_answer {
	int interval;			/* seconds until the next heartbeat */
	int draining;			/* admin_state: "draining" (1) or "enabled" */
	size_t ncommands;		/* "commands", absent when none */
	struct wire_command commands[WIRE_COMMANDS_MAX];
};

/* The text of a kind ("?" outside the enum); 0 and *out if text is one. */
const char *wire_command_kind_str(enum wire_command_kind k);
int wire_command_kind_parse(const char *text, enum wire_command_kind *out);

/* The decoders' error when memory ran out (not the body's fault): told
 * apart once wire_init has run. */
#define WIRE_NOMEM	(-2)

/* Routes jansson's allocations through wire.c, so that a decode can tell
 * a failed allocation from a malformed body. Call before any other wire_
 * call (a program's first lines). */
void wire_init(void);

/* Parses a heartbeat body. 0, WIRE_NOMEM, or -1 with the reason in err
 * ("'rdp.port' must be an integer from 1 to 65535"). */
int wire_heartbeat_decode(const char *buf, size_t len, struct wire_heartbeat *hb,
    char *err, size_t errlen);
/* Returns a new JSON text owned by the caller (free()), NULL on no memory. */
char *wire_heartbeat_encode(const struct wire_heartbeat *hb);
void wire_heartbeat_clear(struct wire_heartbeat *hb);

char *wire_answer_encode(const struct wire_answer *a);
int wire_answer_decode(const char *buf, size_t len, struct wire_answer *a,
    char *err, size_t errlen);

/* Is s a server or token name: 1 to WIRE_NAME_MAX-1 ASCII letters, digits,
 * '-', '_' or '.'? */
int wire_name_valid(const char *s);

/* {"error": msg}, owned by the caller. */
char *wire_error_encode(const char *msg);

/* Parses a JSON list of sessions (the agent's file: and command: providers):
 * [{"user":..,"domain":..,"id":..,"state":..,"since":..}]. The array is owned
 * by the caller (free()). 0 or -1 with the reason in err. */
int wire_sessions_decode(const char *buf, size_t len, struct wire_session **out,
    size_t *n, char *err, size_t errlen);

/* ---- admin API (broker/http/api_admin.c) ----
 * A small JSON builder, so that the admin API's answers are made here with
 * jansson while wire.h stays free of the store's types. A node is an object
 * or an array; setters copy their values. Errors (no memory, a string that
 * is not UTF-8 is made ASCII instead) are remembered: wire_json_dump then
 * returns NULL. Every function accepts NULL nodes. */
struct wire_json;

struct wire_json *wire_json_object(void);
struct wire_json *wire_json_array(void);
void wire_json_str(struct wire_json *o, const char *key, const char *v);
void wire_json_int(struct wire_json *o, const char *key, int64_t v);
void wire_json_num(struct wire_json *o, const char *key, double v);
void wire_json_bool(struct wire_json *o, const char *key, int v);
void wire_json_null(struct wire_json *o, const char *key);
/* Moves child into o under key (an object) or at the end (an array, key
 * NULL); child is consumed in every case. */
void wire_json_add(struct wire_json *o, const char *key, struct wire_json *child);
/* The compact JSON text of o (caller frees), NULL on error; o is freed. */
char *wire_json_dump(struct wire_json *o);
void wire_json_free(struct wire_json *o);

/* Parses the login body {"password": "..."} into pw (size n; wiped by the
 * caller). 0, or -1 with the reason in err. The password is never copied
 * into err. */
int wire_login_decode(const char *buf, size_t len, char *pw, size_t n, char *err,
    size_t errlen);

#endif
