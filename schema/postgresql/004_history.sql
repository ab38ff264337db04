-- 004 (PostgreSQL): the farm over time, as schema/005_history.sql.

CREATE TABLE history (
	ts bigint NOT NULL,
	span bigint NOT NULL,
	logons integer NOT NULL,
	reconnects integer NOT NULL,
	refusals integer NOT NULL,
	redirect_p50_us bigint NOT NULL,
	redirect_p99_us bigint NOT NULL,
	headroom integer NOT NULL,
	PRIMARY KEY (ts, span)
);

CREATE TABLE history_servers (
	ts bigint NOT NULL,
	span bigint NOT NULL,
	server text NOT NULL,
	active integer NOT NULL,
	disconnected integer NOT NULL,
	pending integer NOT NULL,
	lost integer NOT NULL,
	PRIMARY KEY (ts, span, server)
);
