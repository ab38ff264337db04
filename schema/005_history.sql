-- 005: the farm over time (docs/operations.md "History"). One row per sample in
-- history, taken once per [history] period by whichever broker comes first
-- (the primary key), and its servers' sessions in history_servers. Samples
-- older than a day are merged into 15-minute ones (span); all are deleted
-- after [history] keep days. Times in unix ms.

CREATE TABLE IF NOT EXISTS history (
	ts INTEGER NOT NULL,			-- the start of the time it covers
	span INTEGER NOT NULL,			-- ms it covers
	logons INTEGER NOT NULL,		-- new placements in it
	reconnects INTEGER NOT NULL,
	refusals INTEGER NOT NULL,
	redirect_p50_us INTEGER NOT NULL,	-- broker time of its redirects
	redirect_p99_us INTEGER NOT NULL,
	headroom INTEGER NOT NULL,		-- farm.h's n+1 headroom (merged: the least)
	PRIMARY KEY (ts, span)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS history_servers (
	ts INTEGER NOT NULL,
	span INTEGER NOT NULL,
	server TEXT NOT NULL,			-- the name (kept after a server is removed)
	active INTEGER NOT NULL,
	disconnected INTEGER NOT NULL,
	pending INTEGER NOT NULL,
	lost INTEGER NOT NULL,
	PRIMARY KEY (ts, span, server)
) WITHOUT ROWID;				-- the key is the row: stored once
