-- 003 (PostgreSQL): shared settings, as schema/004_settings.sql.

CREATE TABLE settings (
	key text PRIMARY KEY,
	value text NOT NULL,
	updated bigint NOT NULL
);
