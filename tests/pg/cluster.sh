#!/bin/sh
# A throwaway PostgreSQL 15 primary for the tests (no standby yet; the
# settings a synchronous standby needs are in place).
#   tests/pg/cluster.sh start DIR PORT   initdb DIR/data, start on 127.0.0.1:PORT
#                                        (unix socket in DIR), wait until ready
#   tests/pg/cluster.sh stop DIR         fast shutdown
# Prints nothing on success; the server log is DIR/log. The server runs as
# the postgres user when started by root. Trust authentication, fsync off:
# for tests only.
set -eu
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
	dir=$2 port=$3
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres "$dir"
	as_pg "$BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync \
	    --no-instructions -E UTF8 --locale=C >"$dir/initdb.log" 2>&1
	cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = on
full_page_writes = off
wal_level = replica
max_wal_senders = 5
hot_standby = on
wal_keep_size = 64MB
wal_retrieve_retry_interval = 100ms
max_connections = 100
CONF
	echo "host replication all 127.0.0.1/32 trust" >>"$dir/data/pg_hba.conf"
	as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 -o "-k $dir" start \
	    >/dev/null
	;;
stop)
	dir=$2
	as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
	;;
*)
	echo "usage: $0 start DIR PORT | stop DIR" >&2
	exit 2
	;;
esac
