#!/bin/sh
# Runs the store contract suite (and the PostgreSQL-only cases) against one
# throwaway cluster: tests/pg/unit-pg.sh BIN... Each test gets a fresh
# database "tsb" copied from an empty template (store_fx runs
# TSB_STORE_RESET before each open). The cluster is stopped on exit.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/tsb-pg-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap '"$here/cluster.sh" stop "$dir"; rm -rf "$dir"' EXIT INT TERM
"$here/cluster.sh" start "$dir" "$port"
export PGOPTIONS="-c client_min_messages=warning"
psql="psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $port -U postgres -d postgres"
$psql -c 'CREATE DATABASE tsb_template'
export TSB_STORE_ENGINE=postgresql
export TSB_STORE_LOCATION="host=127.0.0.1 port=$port user=postgres dbname=tsb connect_timeout=5"
export TSB_STORE_RESET="$psql -c 'DROP DATABASE IF EXISTS tsb WITH (FORCE)' -c 'CREATE DATABASE tsb TEMPLATE tsb_template'"
for t in "$@"; do
	echo "== $t (postgresql)"
	"$t"
done
