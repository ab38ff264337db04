-- 008: the sessions' state CHECK as comparisons instead of IN (...): SQLite
-- evaluates an IN list of more than two values through a temporary b-tree
-- built for every row written (about 60% of the instructions of a
-- placement's INSERT). The same states are allowed. The table is rebuilt as
-- SQLite's ALTER TABLE documentation describes (no table refers to it; the
-- ids are kept). PostgreSQL's schema is unchanged.
CREATE TABLE sessions_new (
	id INTEGER PRIMARY KEY,
	server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
	user TEXT NOT NULL,			-- normalised: lower case, no domain
	login TEXT NOT NULL DEFAULT '',		-- as the client or agent gave it
	domain TEXT NOT NULL DEFAULT '',
	remote_id TEXT NOT NULL DEFAULT '',	-- the agent's id for the session
	state TEXT NOT NULL
		CHECK (state = 'pending' OR state = 'active' OR state = 'disconnected'
		    OR state = 'lost' OR state = 'ended'),
	client TEXT NOT NULL DEFAULT '',	-- client address of the last redirect
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL,
	expires INTEGER NOT NULL DEFAULT 0	-- pending placements only
);
INSERT INTO sessions_new (id, server_id, user, login, domain, remote_id, state, client,
	created, updated, expires)
	SELECT id, server_id, user, login, domain, remote_id, state, client, created,
	updated, expires FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_new RENAME TO sessions;
CREATE INDEX sessions_user ON sessions(user, state);
CREATE INDEX sessions_server ON sessions(server_id, state);
