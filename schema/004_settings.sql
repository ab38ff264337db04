-- 004: settings the brokers sharing the database agree on, one value per
-- key: token_key_fingerprint (the routing-token key's fingerprint, recorded
-- by the first broker in token mode, checked by every broker at start).
-- IF NOT EXISTS: safe to re-apply (a database whose user_version was set back).

CREATE TABLE IF NOT EXISTS settings (
	key TEXT PRIMARY KEY,
	value TEXT NOT NULL,
	updated INTEGER NOT NULL		-- unix ms
);
