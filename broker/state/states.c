#include <stddef.h>
#include <string.h>

#include "broker/state/states.h"

/* The one table of the states' text, in enum order. */
static const char *const server_text[SERVER_STATE_COUNT] = { "unknown", "up", "down" };
static const char *const admin_text[ADMIN_STATE_COUNT] = { "enabled", "draining" };
static const char *const session_text[SESSION_STATE_COUNT] = { "pending", "active",
	"disconnected", "lost", "ended" };
static const char *const command_text[COMMAND_STATE_COUNT] = { "queued", "sent", "done",
	"failed", "expired" };

static const char *
text_of(const char *const *table, size_t n, int v)
{
	return v >= 0 && (size_t)v < n ? table[v] : "?";
}

/* Index of text in table, or -1. */
static int
index_of(const char *const *table, size_t n, const char *text)
{
	for (size_t i = 0; text != NULL && i < n; i++)
		if (strcmp(table[i], text) == 0)
			return (int)i;
	return -1;
}

const char *
server_state_str(enum server_state s)
{
	return text_of(server_text, SERVER_STATE_COUNT, (int)s);
}

const char *
admin_state_str(enum admin_state s)
{
	return text_of(admin_text, ADMIN_STATE_COUNT, (int)s);
}

const char *
session_state_str(enum session_state s)
{
	return text_of(session_text, SESSION_STATE_COUNT, (int)s);
}

const char *
command_state_str(enum command_state s)
{
	return text_of(command_text, COMMAND_STATE_COUNT, (int)s);
}

int
server_state_parse(const char *text, enum server_state *out)
{
	int i = index_of(server_text, SERVER_STATE_COUNT, text);

	return i < 0 ? -1 : (*out = (enum server_state)i, 0);
}

int
admin_state_parse(const char *text, enum admin_state *out)
{
	int i = index_of(admin_text, ADMIN_STATE_COUNT, text);

	return i < 0 ? -1 : (*out = (enum admin_state)i, 0);
}

int
session_state_parse(const char *text, enum session_state *out)
{
	int i = index_of(session_text, SESSION_STATE_COUNT, text);

	return i < 0 ? -1 : (*out = (enum session_state)i, 0);
}

int
command_state_parse(const char *text, enum command_state *out)
{
	int i = index_of(command_text, COMMAND_STATE_COUNT, text);

	return i < 0 ? -1 : (*out = (enum command_state)i, 0);
}

int
states_takes_new_users(enum server_state state, enum admin_state admin, int quarantined)
{
	return state == SERVER_UP && admin == ADMIN_ENABLED && !quarantined;
}

int
states_session_live(enum session_state s)
{
	return s == SESSION_ACTIVE || s == SESSION_DISCONNECTED;
}
