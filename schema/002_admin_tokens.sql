-- 002: bearer tokens for scripts using the admin API (tsbroker admin token).
-- Only the SHA-256 of each token is kept; the token is shown once.
-- IF NOT EXISTS: safe to re-apply (a database whose user_version was set back).

CREATE TABLE IF NOT EXISTS admin_tokens (
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	token_hash TEXT NOT NULL UNIQUE,	-- SHA-256 of the token, hex
	created INTEGER NOT NULL,
	last_used INTEGER NOT NULL DEFAULT 0
);
