#!/bin/sh
# A throwaway Patroni pair on etcd for the tests (Debian's patroni 3.0 and
# etcd-server 3.4, no systemd): one etcd member, two PostgreSQL 15 nodes,
# each managed by its own Patroni; synchronous_mode (not strict), ttl 5.
#   tests/pg/patroni.sh start DIR BASEPORT  etcd, then node 1 and node 2; waits
#                                           until one is the primary and the
#                                           other its synchronous standby
#   tests/pg/patroni.sh wait DIR [SECONDS]  waits for a primary and a
#                                           synchronous standby again
#   tests/pg/patroni.sh primary DIR         prints the primary's node (1 or 2);
#                                           exit 1 while there is none
#   tests/pg/patroni.sh role DIR N          prints node N's role: primary,
#                                           sync, replica or down
#   tests/pg/patroni.sh kill-node DIR N     the node crashes: its Patroni and
#                                           its postgres get SIGKILL
#   tests/pg/patroni.sh start-node DIR N    starts node N's Patroni again
#                                           (it rejoins, pg_rewind if needed)
#   tests/pg/patroni.sh freeze-node DIR N   SIGSTOP to node N's Patroni and
#                                           postgres: a machine that vanished
#                                           without closing its connections
#   tests/pg/patroni.sh thaw-node DIR N     SIGCONT to them
#   tests/pg/patroni.sh stop DIR            stops both nodes, then etcd
# Ports from BASEPORT: etcd client +0 and peer +1; node N's postgres
# +2N and its Patroni REST API +2N+1 (so +0 to +5). Files under DIR:
# ports (the layout), etcd/, nN/{patroni.yml,patroni.log,patroni.pid,data}.
# Patroni and postgres run as the postgres user when started by root.
# Trust authentication, fsync off: for tests only.
set -eu
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# each daemon started directly in the background, so $! is its own pid
# (setpriv execs; a shell function would put a subshell's pid in $!)
as_pg_bg() {
	log=$1
	shift
	if [ "$(id -u)" = 0 ]; then
		setpriv --reuid=postgres --regid=postgres --init-groups "$@" >>"$log" 2>&1 &
	else
		"$@" >>"$log" 2>&1 &
	fi
}

newdir() {
	mkdir -p "$1"
	[ "$(id -u)" = 0 ] && chown postgres "$1"
	return 0
}

load_ports() {
	[ -f "$1/ports" ] || { echo "patroni.sh: no cluster in $1" >&2; exit 1; }
	base=$(cat "$1/ports")
}

# node N's REST port and postgres port
rest_port() { echo $((base + 2 * $1 + 1)); }
pg_port() { echo $((base + 2 * $1)); }

# the HTTP status of node $1's REST path $2 (000: no answer)
code() {
	curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$(rest_port "$1")/$2" || true
}

# node N's role: its own /primary answer, else the primary's view of it
# (a node's own /sync answer is stale for a loop after it was frozen)
role() {
	case "$(code "$1" primary)" in
	200) echo primary; return ;;
	000) echo down; return ;;
	esac
	other=$((3 - $1))
	if [ "$(code $other primary)" = 200 ] &&
	    curl -s -m 1 "http://127.0.0.1:$(rest_port $other)/cluster" |
	    grep -q "\"name\": \"n$1\", \"role\": \"sync_standby\", \"state\": \"running\""; then
		echo sync
	else
		echo replica
	fi
}

primary_node() {
	for n in 1 2; do
		[ "$(role $n)" = primary ] && { echo $n; return 0; }
	done
	return 1
}

# waits up to $2 seconds for a primary with a synchronous standby
wait_pair() {
	i=0
	limit=$(($2 * 10))
	while :; do
		r1=$(role 1) r2=$(role 2)
		case "$r1/$r2" in primary/sync | sync/primary) return 0 ;; esac
		i=$((i + 1))
		[ $i -lt $limit ] || { echo "patroni.sh: no primary with a synchronous standby in $1 ($r1/$r2)" >&2; exit 1; }
		sleep 0.1
	done
}

write_node_conf() {
	dir=$1 n=$2
	nd=$dir/n$n
	newdir "$nd"
	cat >"$nd/patroni.yml" <<YML
scope: tsb
namespace: /tsb/
name: n$n
restapi:
  listen: 127.0.0.1:$(rest_port "$n")
  connect_address: 127.0.0.1:$(rest_port "$n")
etcd3:
  hosts: 127.0.0.1:$base
bootstrap:
  dcs:
    ttl: 5
    loop_wait: 1
    retry_timeout: 2
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 5
        max_replication_slots: 5
        max_connections: 100
        wal_keep_size: 64MB
        fsync: "off"
        full_page_writes: "on"
        wal_retrieve_retry_interval: 100ms
  initdb:
    - encoding: UTF8
    - locale: C
    - auth: trust
    - no-sync
postgresql:
  listen: 127.0.0.1:$(pg_port "$n")
  connect_address: 127.0.0.1:$(pg_port "$n")
  data_dir: $nd/data
  bin_dir: $BIN
  pgpass: $nd/pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
    rewind:
      username: postgres
  parameters:
    unix_socket_directories: $nd
  pg_hba:
    - local all all trust
    - host replication all 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
YML
}

start_node() {
	dir=$1 n=$2
	nd=$dir/n$n
	as_pg_bg "$nd/patroni.log" patroni "$nd/patroni.yml"
	echo $! >"$nd/patroni.pid"
}

# SIGKILL to pid $1, then waits until it is gone or a zombie
kill9() {
	kill -KILL "$1" 2>/dev/null || return 0
	i=0
	while [ -e "/proc/$1" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "patroni.sh: $1 lives" >&2; exit 1; }
		sleep 0.05
	done
}

kill_node() {
	dir=$1 n=$2
	nd=$dir/n$n
	pm=
	[ -f "$nd/data/postmaster.pid" ] && pm=$(head -1 "$nd/data/postmaster.pid")
	# a stale file's pid may be another program's by now
	grep -qs postgres "/proc/$pm/cmdline" || pm=
	[ -n "$pm" ] && kill -STOP "$pm" 2>/dev/null	# no new children meanwhile
	if [ -f "$nd/patroni.pid" ]; then
		pp=$(cat "$nd/patroni.pid")
		grep -qs patroni "/proc/$pp/cmdline" && kill9 "$pp"
	fi
	if [ -n "$pm" ]; then
		pkill -KILL -P "$pm" || true
		kill9 "$pm"
	fi
	return 0
}

# signal $1 to node $3's Patroni and postgres processes in dir $2
signal_node() {
	nd=$2/n$3
	pm=$(head -1 "$nd/data/postmaster.pid")
	pp=$(cat "$nd/patroni.pid")
	grep -qs postgres "/proc/$pm/cmdline" || { echo "patroni.sh: node $3 has no postgres" >&2; exit 1; }
	grep -qs patroni "/proc/$pp/cmdline" || { echo "patroni.sh: node $3 has no Patroni" >&2; exit 1; }
	kill "-$1" "$pp"
	kill "-$1" "$pm"
	pkill "-$1" -P "$pm" || true
}

# SIGTERM to pid $1 (Patroni stops its postgres), SIGKILL after $2 s
term() {
	kill -TERM "$1" 2>/dev/null || return 0
	i=0
	while [ -e "/proc/$1" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; do
		i=$((i + 1))
		[ $i -lt $(($2 * 10)) ] || { kill9 "$1"; return 0; }
		sleep 0.1
	done
}

case "${1:-}" in
start)
	dir=$2 base=$3
	newdir "$dir"
	echo "$base" >"$dir/ports"
	newdir "$dir/etcd"
	chmod 700 "$dir/etcd"
	as_pg_bg "$dir/etcd.log" etcd --name e1 --data-dir "$dir/etcd/data" \
	    --listen-client-urls "http://127.0.0.1:$base" \
	    --advertise-client-urls "http://127.0.0.1:$base" \
	    --listen-peer-urls "http://127.0.0.1:$((base + 1))" \
	    --initial-advertise-peer-urls "http://127.0.0.1:$((base + 1))" \
	    --initial-cluster "e1=http://127.0.0.1:$((base + 1))" \
	    --initial-cluster-state new --initial-cluster-token "tsb-$base"
	echo $! >"$dir/etcd.pid"
	i=0
	until curl -s -m 1 "http://127.0.0.1:$base/health" | grep -q '"health":"true"'; do
		i=$((i + 1))
		[ $i -lt 200 ] || { echo "patroni.sh: etcd did not start (see $dir/etcd.log)" >&2; exit 1; }
		sleep 0.1
	done
	for n in 1 2; do
		write_node_conf "$dir" "$n"
	done
	# node 1 bootstraps first, so it is the first primary
	start_node "$dir" 1
	i=0
	until [ "$(role 1)" = primary ]; do
		i=$((i + 1))
		[ $i -lt 600 ] || { echo "patroni.sh: node 1 did not bootstrap (see $dir/n1/patroni.log)" >&2; exit 1; }
		sleep 0.1
	done
	start_node "$dir" 2
	wait_pair "$dir" 60
	;;
wait)
	load_ports "$2"
	wait_pair "$2" "${3:-60}"
	;;
primary)
	load_ports "$2"
	primary_node
	;;
role)
	load_ports "$2"
	role "$3"
	;;
kill-node)
	load_ports "$2"
	kill_node "$2" "$3"
	;;
start-node)
	load_ports "$2"
	start_node "$2" "$3"
	;;
freeze-node)
	signal_node STOP "$2" "$3"
	;;
thaw-node)
	signal_node CONT "$2" "$3"
	;;
stop)
	dir=$2
	for n in 1 2; do
		# a frozen node (freeze-node) first gets going again
		(signal_node CONT "$dir" "$n") 2>/dev/null || true
		pp=$(cat "$dir/n$n/patroni.pid" 2>/dev/null || true)
		grep -qs patroni "/proc/$pp/cmdline" && term "$pp" 15
		# a postgres left by a Patroni that did not stop it
		kill_node "$dir" "$n"
	done
	[ -f "$dir/etcd.pid" ] && term "$(cat "$dir/etcd.pid")" 5
	exit 0
	;;
*)
	echo "usage: $0 start DIR BASEPORT | wait DIR [SECONDS] | primary DIR | role DIR N |" \
	    "kill-node DIR N | start-node DIR N | freeze-node DIR N | thaw-node DIR N |" \
	    "stop DIR" >&2
	exit 2
	;;
esac
