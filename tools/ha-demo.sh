#!/bin/sh
# `make ha-demo`: a broker pair with no single point of failure, on
# loopback. Brokers A (127.0.0.1) and B (127.0.0.10) on one RDP port, the
# same certificate and token key, one PostgreSQL database: a primary and a
# synchronous standby under Patroni with one etcd member
# (tests/pg/patroni.sh); three terminal servers ts1..ts3 on 127.0.0.2..4
# (build/rdptarget) whose agents list both brokers. Prints the status page
# of each broker, the admin password, and how to kill each part; Ctrl-C
# (SIGINT) or SIGTERM stops everything it started. Run as root (PostgreSQL
# runs as the postgres user) after `tools/deps.sh test`.
#
# Environment: HA_DEMO_DIR (state, default var/ha-demo/, wiped at each
# start), HA_DEMO_RDP_PORT (default 3389 if free), HA_DEMO_HTTP_PORT
# (default 8443 if free), TSBROKER_BUILD (default build), HA_DEMO_CHECK=1:
# start, check that both pages show three servers up and that a logon
# through each broker lands, stop, exit 0 (tests/e2e/test_ha_demo.py).
# The database's files live in a directory of their own under /tmp (the
# postgres user must reach them), named in HA_DEMO_DIR/pg.path.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=${TSBROKER_BUILD:-build}
DIR=${HA_DEMO_DIR:-var/ha-demo}
DEMO=ha-demo
HOSTS="127.0.0.1 127.0.0.10"
. tools/demo-lib.sh

demo_need tsbroker tsagent rdptarget rdpprobe
for p in patroni etcd curl; do
	command -v $p >/dev/null || { echo "$DEMO: $p is needed: run tools/deps.sh test" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "$DEMO: run as root (PostgreSQL runs as postgres)" >&2; exit 1; }
demo_traps

# (port_busy looks at every address: the RDP port is free on the targets' too)
RDP_PORT=$(pick_port 3389 "${HA_DEMO_RDP_PORT:-}")
HTTP_PORT=$(pick_port 8443 "${HA_DEMO_HTTP_PORT:-}")
[ "$RDP_PORT" != "$HTTP_PORT" ] || HTTP_PORT=$(pick_port "" "")
# Patroni's six ports (etcd, two nodes' postgres and REST API)
while :; do
	PG_BASE=$(pick_port "" "")
	ok=1
	for i in 0 1 2 3 4 5; do
		port_busy $((PG_BASE + i)) && ok=0
		[ $((PG_BASE + i)) = "$RDP_PORT" ] || [ $((PG_BASE + i)) = "$HTTP_PORT" ] && ok=0
	done
	[ $ok = 1 ] && break
done

rm -rf "$DIR"
mkdir -p "$DIR"
chmod 700 "$DIR"
PG=$(mktemp -d /tmp/tsb-ha-demo.XXXXXX)
chmod 755 "$PG"
echo "$PG" > "$DIR/pg.path"
# at exit: stopped, its logs kept in DIR/pg/, its directory removed
STOPS="sh tests/pg/patroni.sh stop '$PG' >/dev/null 2>&1; mkdir -p '$DIR/pg';
	cp '$PG/etcd.log' '$DIR/pg/' 2>/dev/null; cp '$PG/n1/patroni.log' '$DIR/pg/n1.log' 2>/dev/null;
	cp '$PG/n2/patroni.log' '$DIR/pg/n2.log' 2>/dev/null; rm -rf '$PG'"
PIDS=" "		# demo_cleanup runs STOPS and says "stopped" from here on

echo "$DEMO: starting etcd and two PostgreSQL nodes under Patroni (about 10 s) ..."
sh tests/pg/patroni.sh start "$PG" "$PG_BASE" || {
	tail -n 15 "$PG/etcd.log" "$PG"/n*/patroni.log >&2
	exit 1
}
node=$(sh tests/pg/patroni.sh primary "$PG")
PG1=$((PG_BASE + 2)) PG2=$((PG_BASE + 4))
psql -q -X -h 127.0.0.1 -p $((PG_BASE + 2 * node)) -U postgres -d postgres \
	-c "CREATE DATABASE tsbroker" >/dev/null
URL="host=127.0.0.1,127.0.0.1 port=$PG1,$PG2 user=postgres dbname=tsbroker target_session_attrs=read-write connect_timeout=2"

# the shared certificate, key and routing-token key (docs/ha-keys.md)
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=tsbroker-ha-demo" \
	-keyout "$DIR/tsbroker.key" -out "$DIR/tsbroker.crt" 2>/dev/null
openssl rand -out "$DIR/token.key" 32
chmod 600 "$DIR/tsbroker.key" "$DIR/token.key"

# broker_conf NAME HOST: DIR/NAME/tsbroker.conf for a broker on HOST
broker_conf() {
	mkdir -p "$DIR/$1"
	cat > "$DIR/$1/tsbroker.conf" <<EOF
[state]
engine = postgresql
url = $URL
[rdp]
listen = $2:$RDP_PORT
certificate = $DIR/tsbroker.crt
private_key = $DIR/tsbroker.key
token_key = $DIR/token.key
[http]
listen = $2:$HTTP_PORT
web_root = $ROOT/web
[health]
heartbeat_interval = 2
down_after = 6
EOF
}

set -- a b
for h in $HOSTS; do
	broker_conf "$1" "$h"
	"$B/tsbroker" -f "$DIR/$1/tsbroker.conf" > "$DIR/$1/broker.out" 2> "$DIR/$1/broker.log" &
	PIDS="$PIDS $!"
	echo $! > "$DIR/$1/broker.pid"
	wait_for "tsbroker ready" 150 "$DIR/$1/broker.out" $!
	shift
done
PASSWORD=$(sed -n 's/^First admin password.*: //p' "$DIR/a/broker.out")
conf="$DIR/a/tsbroker.conf"

URLS=""
for h in $HOSTS; do
	URLS="$URLS https://$h:$HTTP_PORT"
done
URLS=${URLS# }
octet=2
for name in ts1 ts2 ts3; do
	demo_target "$conf" "$name" "127.0.0.$octet" "$RDP_PORT" "$URLS" "$DIR/tsbroker.crt"
	octet=$((octet + 1))
done
demo_wait_up "$conf" 3

if [ "${HA_DEMO_CHECK:-}" = 1 ]; then
	token=$("$B/tsbroker" -f "$conf" admin token add ha-demo-check | tail -n 1)
	n=0
	for h in $HOSTS; do
		page="https://$h:$HTTP_PORT"
		code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$DIR/tsbroker.crt" -k \
			-H 'Content-Type: application/json' -d "{\"password\":\"$PASSWORD\"}" \
			"$page/api/v1/login")
		[ "$code" = 200 ] || { echo "$DEMO: check: login on $page: $code" >&2; exit 1; }
		up=$(curl -s -k -H "Authorization: Bearer $token" "$page/api/v1/servers" |
			grep -o '"state": *"up"' | wc -l)
		[ "$up" = 3 ] || { echo "$DEMO: check: $page shows $up servers up" >&2; exit 1; }
		n=$((n + 1))
		res=$("$B/rdpprobe" --host "$h" --port "$RDP_PORT" --user "check$n" --timeout 10 || true)
		case "$res" in
		*"RESULT ok host=127.0.0."[234]" "*"redirected=1"*) ;;
		*) echo "$DEMO: check: a logon through $h: $res" >&2; exit 1 ;;
		esac
		echo "$DEMO: check: $page shows 3 servers up; check$n logged on through $h: ${res#RESULT }"
	done
	echo "$DEMO: check passed"
	exit 0
fi

cat <<EOF

tsbroker HA demo: two brokers on one PostgreSQL pair under Patroni (etcd),
three terminal servers (state in $DIR/, the database in $PG/)

  Broker A  RDP 127.0.0.1:$RDP_PORT   status page https://127.0.0.1:$HTTP_PORT/
  Broker B  RDP 127.0.0.10:$RDP_PORT  status page https://127.0.0.10:$HTTP_PORT/
  Admin password (both pages, one shared store): $PASSWORD
  Both present $DIR/tsbroker.crt (self-signed) and use one token key.

  Log on through either (stand-in servers show a black screen):
      xfreerdp /v:127.0.0.1:$RDP_PORT /u:alice /p:demo /cert:ignore
      $B/rdpprobe --host 127.0.0.10 --port $RDP_PORT --user bob
  alice lands on the same server through A or B. The agents report to
  the first of "$URLS" that answers.

  Kill a part, then watch both pages (servers, sessions, events); the
  commands run from $ROOT:
    broker A         kill -9 $(cat "$DIR/a/broker.pid")
                     B's page: the servers stay up (the agents move to B within
                     one heartbeat); logons through 127.0.0.10 go on. Clients of
                     A's address need a floating address (docs/ha-clients.md).
    broker B         kill -9 $(cat "$DIR/b/broker.pid")
    the primary      sh tests/pg/patroni.sh kill-node $PG \$(sh tests/pg/patroni.sh primary $PG)
                     Patroni promotes the standby within about 5 s (ttl 5);
                     logons pause meanwhile, then go on; nothing placed is lost.
    the standby      sh tests/pg/patroni.sh kill-node $PG N   (N: the node that is not the primary)
                     commits wait until Patroni stops waiting for it (not strict
                     synchronous_mode: its next loop, 1-2 s); then logons go on.
    a node back      sh tests/pg/patroni.sh start-node $PG N  (it rejoins as the standby)
    roles            sh tests/pg/patroni.sh role $PG 1; sh tests/pg/patroni.sh role $PG 2
    ts2              kill -9 \$(cat $DIR/ts2/rdptarget.pid)
                     ts2 goes down within 6 s; new users go to ts1 and ts3.
  Logs: $DIR/a/broker.log, $DIR/b/broker.log, $DIR/ts*/, $PG/n*/patroni.log
        (the database's logs are copied to $DIR/pg/ at exit)

Press Ctrl-C to stop.
EOF
demo_wait
