-- 001: servers, sessions, events, admin credentials.
-- Times are unix milliseconds. Applied once, in a transaction, by store.c.

CREATE TABLE servers (
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	address TEXT NOT NULL,
	port INTEGER NOT NULL DEFAULT 3389 CHECK (port BETWEEN 1 AND 65535),
	fqdn TEXT NOT NULL DEFAULT '',
	weight INTEGER NOT NULL DEFAULT 100 CHECK (weight BETWEEN 1 AND 10000),
	max_sessions INTEGER NOT NULL CHECK (max_sessions >= 1),
	token_hash TEXT NOT NULL UNIQUE,	-- SHA-256 of the agent's token, hex
	admin_state TEXT NOT NULL DEFAULT 'enabled'
		CHECK (admin_state IN ('enabled', 'draining')),
	state TEXT NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'up', 'down')),
	state_reason TEXT NOT NULL DEFAULT 'no heartbeat yet',
	state_since INTEGER NOT NULL,
	quarantined_until INTEGER NOT NULL DEFAULT 0,
	unconfirmed INTEGER NOT NULL DEFAULT 0,	-- placements expired unconfirmed in a row
	last_confirmed INTEGER NOT NULL DEFAULT 0,
	last_heartbeat INTEGER NOT NULL DEFAULT 0,
	rdp_accepting INTEGER NOT NULL DEFAULT 0,
	agent_version TEXT NOT NULL DEFAULT '',
	ncpu INTEGER NOT NULL DEFAULT 0,
	cpu_percent REAL NOT NULL DEFAULT 0,
	load1 REAL NOT NULL DEFAULT 0,
	mem_total_kb INTEGER NOT NULL DEFAULT 0,
	mem_available_kb INTEGER NOT NULL DEFAULT 0,
	sessions_known INTEGER NOT NULL DEFAULT 1,
	created INTEGER NOT NULL
);

CREATE TABLE sessions (
	id INTEGER PRIMARY KEY,
	server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
	user TEXT NOT NULL,			-- normalised: lower case, no domain
	login TEXT NOT NULL DEFAULT '',		-- as the client or agent gave it
	domain TEXT NOT NULL DEFAULT '',
	remote_id TEXT NOT NULL DEFAULT '',	-- the agent's id for the session
	state TEXT NOT NULL
		CHECK (state IN ('pending', 'active', 'disconnected', 'lost', 'ended')),
	client TEXT NOT NULL DEFAULT '',	-- client address of the last redirect
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL,
	expires INTEGER NOT NULL DEFAULT 0	-- pending placements only
);
CREATE INDEX sessions_user ON sessions(user, state);
CREATE INDEX sessions_server ON sessions(server_id, state);

CREATE TABLE events (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,
	kind TEXT NOT NULL,
	server TEXT NOT NULL DEFAULT '',
	user TEXT NOT NULL DEFAULT '',
	client TEXT NOT NULL DEFAULT '',
	detail TEXT NOT NULL DEFAULT '',
	duration_us INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_ts ON events(ts);

CREATE TABLE admin (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	password_hash TEXT NOT NULL,
	updated INTEGER NOT NULL
);
