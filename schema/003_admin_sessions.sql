-- 003: admin browser sessions (broker/http/auth.c), shared by every broker on
-- the database: a login on one works on the others, a logout or expiry ends
-- it on all. Only the SHA-256 of the session cookie is kept; the CSRF token
-- is derived from the cookie, so it is not stored either.
-- IF NOT EXISTS: safe to re-apply (a database whose user_version was set back).

CREATE TABLE IF NOT EXISTS admin_sessions (
	id_hash TEXT PRIMARY KEY,		-- SHA-256 of the cookie's value, hex
	client TEXT NOT NULL DEFAULT '',	-- the login's address
	created INTEGER NOT NULL,		-- unix ms
	last_used INTEGER NOT NULL		-- unix ms, written at most once a second
);
CREATE INDEX IF NOT EXISTS admin_sessions_last_used ON admin_sessions (last_used);
