-- 006: the admins' commands to agents (log off, disconnect a session), a
-- queue the brokers sharing the database deliver from: queued, then sent
-- (claimed by the heartbeat of the session's server, whichever broker took
-- it), then done, failed or expired (the agent judged the deadline passed).
-- A command not done by its deadline becomes failed (store.c). Times unix ms.
-- IF NOT EXISTS: safe to re-apply (a database whose user_version was set back).

CREATE TABLE IF NOT EXISTS commands (
	id INTEGER PRIMARY KEY,
	session_id INTEGER NOT NULL,		-- sessions.id (kept when it is pruned)
	server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
	kind TEXT NOT NULL CHECK (kind IN ('logoff', 'disconnect')),
	remote_id TEXT NOT NULL DEFAULT '',	-- the agent's id of the session
	"user" TEXT NOT NULL DEFAULT '',		-- the login the agent knows
	actor TEXT NOT NULL DEFAULT '',		-- who asked: "admin from ADDR", "token NAME"
	state TEXT NOT NULL DEFAULT 'queued'
		CHECK (state IN ('queued', 'sent', 'done', 'failed', 'expired')),
	outcome TEXT NOT NULL DEFAULT '',
	created INTEGER NOT NULL,
	deadline INTEGER NOT NULL,		-- the latest start
	updated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_server ON commands(server_id, state);
