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
DEMO=demo
. tools/demo-lib.sh

demo_need tsbroker tsagent rdptarget
demo_traps

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
	demo_target "$conf" "$name" "127.0.0.$octet" "$RDP_PORT" "https://127.0.0.1:$HTTP_PORT" \
		"$DIR/tsbroker.crt"
	octet=$((octet + 1))
done
demo_wait_up "$conf" 3

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
# shellcheck disable=SC2046
demo_wait "$BROKER" $(cat "$DIR"/ts*/tsagent.pid)
