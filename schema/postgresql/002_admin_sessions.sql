-- 002 (PostgreSQL): admin browser sessions, as schema/003_admin_sessions.sql.

CREATE TABLE admin_sessions (
	id_hash text PRIMARY KEY,
	client text NOT NULL DEFAULT '',
	created bigint NOT NULL,
	last_used bigint NOT NULL
);
CREATE INDEX admin_sessions_last_used ON admin_sessions (last_used);
