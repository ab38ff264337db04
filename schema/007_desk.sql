-- 007: the desk, where each user sits: each user's trail of placements and
-- reconnects with the computer name the client claimed (Client Core Data
-- clientName), its address and the server, kept [history] desk_keep_days;
-- a session's desk is its latest row's. Personal data: docs/state.md.
-- IF NOT EXISTS: safe to re-apply.

CREATE TABLE IF NOT EXISTS desk_trail (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,			-- unix ms
	user TEXT NOT NULL,			-- normalised
	login TEXT NOT NULL DEFAULT '',
	desk TEXT NOT NULL DEFAULT '',		-- as the client claimed it
	desk_known INTEGER NOT NULL,		-- 0: unknown (spliced before MCS data)
	client TEXT NOT NULL DEFAULT '',	-- the client's address
	server TEXT NOT NULL,			-- by name: the trail outlives the server
	session_id INTEGER NOT NULL,
	reconnect INTEGER NOT NULL		-- 0: a new placement
);
CREATE INDEX IF NOT EXISTS desk_trail_user ON desk_trail(user, ts);
CREATE INDEX IF NOT EXISTS desk_trail_ts ON desk_trail(ts);
CREATE INDEX IF NOT EXISTS desk_trail_session ON desk_trail(session_id, id);
