#!/bin/sh
# `make demo`: a live farm on loopback in one command. A broker on
# 127.0.0.1, three terminal servers ts1..ts3 on 127.0.0.2..4 (build/rdptarget,
# a minimal RDP server for tests) on the broker's RDP port (address mode),
# each with a tsagent reporting its sessions. Prints how to connect and where
# the status page is; Ctrl-C (SIGINT) or SIGTERM stops every process it
# started. State under DEMO_DIR (default var/demo/, wiped at each start).
#
# Environment: DEMO_DIR, DEMO_RDP_PORT (default 3389 if free, else a free
# port), DEMO_HTTP_PORT (default 8443 if free, else a free port),
# TSBROKER_BUILD (default build).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=${TSBROKER_BUILD:-build}
DIR=${DEMO_DIR:-var/demo}
NAMES="ts1 ts2 ts3"
PIDS=""
TICK=""

for p in tsbroker tsagent rdptarget; do
	[ -x "$B/$p" ] || { echo "demo: $B/$p is missing: run make first" >&2; exit 1; }
done
command -v openssl >/dev/null || { echo "demo: openssl is needed" >&2; exit 1; }

cleanup() {
	trap - EXIT INT TERM
	set +e			# some may be gone already (a terminal's Ctrl-C reaches them too)
	[ -n "$TICK" ] && kill "$TICK" 2>/dev/null
	# shellcheck disable=SC2086
	[ -n "$PIDS" ] && kill -TERM $PIDS 2>/dev/null
	i=0
	for pid in $PIDS; do
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$pid" 2>/dev/null
	done
	wait 2>/dev/null
	[ -n "$PIDS" ] && echo "demo: stopped (state and logs kept in $DIR/)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Is TCP port $1 listened on (any address) already?
port_busy() {
	hex=$(printf '%04X' "$1")
	awk -v p="$hex" 'FNR > 1 && $4 == "0A" && substr($2, index($2, ":") + 1) == p { f = 1 }
		END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# $2 if given, else $1 if it is free, else a random free port.
pick_port() {
	[ -n "$2" ] && { echo "$2"; return; }
	if [ -n "$1" ] && ! port_busy "$1"; then echo "$1"; return; fi
	while :; do
		p=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 + 20000 ))
		port_busy "$p" || { echo "$p"; return; }
	done
}

# Waits up to $2 tenths of a second for "grep -q $1 $3"; fails if pid $4 dies.
wait_for() {
	tries=0
	while ! grep -q "$1" "$3" 2>/dev/null; do
		if ! kill -0 "$4" 2>/dev/null || [ $tries -ge "$2" ]; then
			echo "demo: gave up waiting for '$1' in $3:" >&2
			tail -5 "$3" "${3%.*}.log" 2>/dev/null >&2 || true
			exit 1
		fi
		sleep 0.1
		tries=$((tries + 1))
	done
}

RDP_PORT=$(pick_port 3389 "${DEMO_RDP_PORT:-}")
HTTP_PORT=$(pick_port 8443 "${DEMO_HTTP_PORT:-}")
[ "$RDP_PORT" != "$HTTP_PORT" ] || HTTP_PORT=$(pick_port "" "")

rm -rf "$DIR"
mkdir -p "$DIR"
chmod 700 "$DIR"
conf="$DIR/tsbroker.conf"
cat > "$conf" <<EOF
[state]
path = $DIR/tsbroker.db
[rdp]
listen = 127.0.0.1:$RDP_PORT
certificate = $DIR/tsbroker.crt
private_key = $DIR/tsbroker.key
[http]
listen = 127.0.0.1:$HTTP_PORT
web_root = $ROOT/web
[health]
heartbeat_interval = 2
down_after = 6
EOF

"$B/tsbroker" -f "$conf" > "$DIR/broker.out" 2> "$DIR/broker.log" &
BROKER=$!
PIDS="$BROKER"
wait_for "tsbroker ready" 150 "$DIR/broker.out" "$BROKER"
PASSWORD=$(sed -n 's/^First admin password.*: //p' "$DIR/broker.out")
API_TOKEN=$("$B/tsbroker" -f "$conf" admin token add demo | tail -n 1)

octet=2
for name in $NAMES; do
	addr=127.0.0.$octet
	octet=$((octet + 1))
	d="$DIR/$name"
	mkdir -p "$d"
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$addr" \
		-keyout "$d/rdp.key" -out "$d/rdp.crt" 2>/dev/null
	token=$("$B/tsbroker" -f "$conf" server add "$name" --address "$addr" \
		--port "$RDP_PORT" --max-sessions 20 | tail -n 1)
	"$B/rdptarget" --listen "$addr:$RDP_PORT" --cert "$d/rdp.crt" --key "$d/rdp.key" \
		--sessions "$d/sessions.json" --name "$name" > "$d/rdptarget.out" \
		2> "$d/rdptarget.log" &
	PIDS="$PIDS $!"
	echo $! > "$d/rdptarget.pid"
	wait_for LISTENING 100 "$d/rdptarget.out" $!
	(umask 077 && cat > "$d/tsagent.conf" <<EOF
[agent]
name = $name
broker = https://127.0.0.1:$HTTP_PORT
token = $token
ca = $DIR/tsbroker.crt
rdp_address = $addr
rdp_port = $RDP_PORT
sessions = file:$d/sessions.json
interval = 2
retry_max = 4
EOF
)
	"$B/tsagent" -f "$d/tsagent.conf" > /dev/null 2> "$d/tsagent.log" &
	PIDS="$PIDS $!"
	echo $! > "$d/tsagent.pid"
done

n=0
while [ "$("$B/tsbroker" -f "$conf" server list | awk '$5 == "up"' | wc -l)" -lt 3 ]; do
	[ $n -lt 150 ] || { echo "demo: the servers did not come up:" >&2;
		"$B/tsbroker" -f "$conf" server list >&2; exit 1; }
	sleep 0.1
	n=$((n + 1))
done

PORT_ARG=":$RDP_PORT"
[ "$RDP_PORT" = 3389 ] && PORT_ARG=""
cat <<EOF

tsbroker demo: a broker and three terminal servers on loopback (state in $DIR/)

  Connect through the broker (any user name and password; stand-in servers
  show a black screen: what counts is where you land):
      xfreerdp /v:127.0.0.1$PORT_ARG /u:alice /p:demo /cert:ignore
  The broker redirects alice to ts1 127.0.0.2, ts2 127.0.0.3 or ts3 127.0.0.4
  (the least loaded); connect again and she is back on the same server.
  More users: build/rdpprobe --host 127.0.0.1 --port $RDP_PORT --user bob --hold 60

  Status page:  https://127.0.0.1:$HTTP_PORT/   password: $PASSWORD
                (self-signed certificate: $DIR/tsbroker.crt)
  Admin API:    curl -sk -H 'Authorization: Bearer $API_TOKEN' \\
                  https://127.0.0.1:$HTTP_PORT/api/v1/servers
  CLI:          $B/tsbroker -f $conf server list
                (also: session list, server drain ts1, server enable ts1)
  Break it:     kill \$(cat $DIR/ts2/rdptarget.pid)    (ts2 goes down within 6 s)
  Logs:         $DIR/broker.log, $DIR/ts*/

RDP endpoint: 127.0.0.1:$RDP_PORT
Press Ctrl-C to stop.
EOF

# Runs until Ctrl-C; stops everything if one of the processes dies by itself
# (the rdptargets excepted: killing one is part of the demo).
while :; do
	for pid in $BROKER $(cat "$DIR"/ts*/tsagent.pid); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "demo: process $pid exited; see $DIR/ for its log" >&2
			exit 1
		fi
	done
	sleep 1 &
	TICK=$!
	wait "$TICK" || true
	TICK=""
done
