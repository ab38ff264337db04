#!/bin/sh
# Throwaway PostgreSQL 15 servers for the tests: a primary, and a streaming
# standby that the primary waits for (synchronous_commit = on).
#   tests/pg/cluster.sh start DIR PORT    initdb DIR/data, start a primary on
#                                         127.0.0.1:PORT (unix socket in DIR)
#   tests/pg/cluster.sh standby DIR PORT PRIMARY_PORT NAME
#                                         a base backup of the primary into
#                                         DIR/data, started as standby NAME
#   tests/pg/cluster.sh sync PORT NAME    the primary on PORT waits for NAME
#                                         (until it is in sync); NAME '' waits
#                                         for none
#   tests/pg/cluster.sh promote DIR PORT  the standby becomes a primary that
#                                         waits for none (as Patroni would set it)
#   tests/pg/cluster.sh kill DIR          SIGKILL to the postmaster and its
#                                         children (a crashed machine)
#   tests/pg/cluster.sh stop DIR          fast shutdown
# Prints nothing on success; the server log is DIR/log. The servers run as
# the postgres user when started by root. Trust authentication, fsync off:
# for tests only.
set -eu
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

psql_at() {
	PGOPTIONS="-c client_min_messages=warning" psql -q -X -t -A -v ON_ERROR_STOP=1 \
	    -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}

# the settings of DIR/data for a server on PORT
local_conf() {
	cat >>"$1/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$1'
CONF
}

run_server() {
	as_pg "$BIN/pg_ctl" -D "$1/data" -l "$1/log" -w -t 30 -o "-k $1" start >/dev/null
}

newdir() {
	mkdir -p "$1"
	[ "$(id -u)" = 0 ] && chown postgres "$1"
	return 0
}

case "${1:-}" in
start)
	dir=$2 port=$3
	newdir "$dir"
	as_pg "$BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync \
	    --no-instructions -E UTF8 --locale=C >"$dir/initdb.log" 2>&1
	cat >>"$dir/data/postgresql.conf" <<CONF
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
	local_conf "$dir" "$port"
	echo "host replication all 127.0.0.1/32 trust" >>"$dir/data/pg_hba.conf"
	run_server "$dir"
	;;
standby)
	dir=$2 port=$3 primary=$4 name=$5
	newdir "$dir"
	as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$primary" -U postgres -D "$dir/data" \
	    -R -X stream -c fast --no-sync
	# the base backup carries the primary's port and socket: the last line wins
	local_conf "$dir" "$port"
	as_pg sed -i "s/^primary_conninfo = '/primary_conninfo = 'application_name=$name /" \
	    "$dir/data/postgresql.auto.conf"
	run_server "$dir"
	;;
sync)
	port=$2 name=$3
	if [ -n "$name" ]; then
		psql_at "$port" "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ($name)'"
	else
		psql_at "$port" "ALTER SYSTEM SET synchronous_standby_names = ''"
	fi
	psql_at "$port" "SELECT pg_reload_conf()" >/dev/null
	[ -z "$name" ] && exit 0
	i=0
	until [ "$(psql_at "$port" "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$name' AND sync_state = 'sync'")" = 1 ]; do
		i=$((i + 1))
		[ $i -lt 300 ] || { echo "cluster.sh: $name is not in sync" >&2; exit 1; }
		sleep 0.1
	done
	;;
promote)
	dir=$2 port=$3
	as_pg "$BIN/pg_ctl" -D "$dir/data" -w -t 30 promote >/dev/null
	psql_at "$port" "ALTER SYSTEM SET synchronous_standby_names = ''"
	psql_at "$port" "SELECT pg_reload_conf()" >/dev/null
	;;
kill)
	dir=$2
	pid=$(head -1 "$dir/data/postmaster.pid")
	kill -STOP "$pid"	# no new children meanwhile
	pkill -KILL -P "$pid" || true
	kill -KILL "$pid"
	i=0
	# gone, or a zombie nobody has reaped yet
	while [ -e "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "cluster.sh: $pid lives" >&2; exit 1; }
		sleep 0.05
	done
	;;
stop)
	dir=$2
	as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
	;;
*)
	echo "usage: $0 start DIR PORT | standby DIR PORT PRIMARY_PORT NAME |" \
	    "sync PORT NAME | promote DIR PORT | kill DIR | stop DIR" >&2
	exit 2
	;;
esac
