#!/bin/sh
# Runs the store contract suite (and the PostgreSQL-only cases) against one
# throwaway cluster: tests/pg/unit-pg.sh BIN... Each test gets a fresh
# database "tsb" copied from an empty template (store_fx runs
# TSB_STORE_RESET before each open). The cluster is stopped on exit.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/tsb-pg-XXXXXX)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap '"$here/cluster.sh" stop "$dir"; rm -rf "$dir"' EXIT INT TERM
"$here/cluster.sh" start "$dir" "$port"
export PGOPTIONS="-c client_min_messages=warning"
psql="psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $port -U postgres -d postgres"
$psql -c 'CREATE DATABASE tsb_template'
export TSB_STORE_ENGINE=postgresql
export TSB_STORE_LOCATION="host=127.0.0.1 port=$port user=postgres dbname=tsb connect_timeout=5"
# psql to the cluster (add -d DB -c SQL): the fault tests' second connection
export TSB_PG_PSQL="psql -q -X -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $port -U postgres"
export TSB_PG_KILL="$psql -c \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'tsb'\" >/dev/null"
export TSB_STORE_RESET="$psql -c 'DROP DATABASE IF EXISTS tsb WITH (FORCE)' -c 'CREATE DATABASE tsb TEMPLATE tsb_template'"
# The CLI on engine = postgresql, with a known password in the url (the
# cluster trusts: libpq never sends it): it appears in no output, also not
# in the error of a refused connection.
if [ -n "${TSBROKER:-}" ]; then
	pw=Kn0wn-Pa55word
	$psql -c 'CREATE DATABASE tsb_cli'
	printf '[state]\nengine = postgresql\nurl = host=127.0.0.1 port=%s user=postgres password=%s dbname=tsb_cli\n' \
	    "$port" "$pw" >"$dir/ok.conf"
	printf '[state]\nengine = postgresql\nurl = postgresql://postgres:%s@127.0.0.1:1/tsb_cli?connect_timeout=2\n' \
	    "$pw" >"$dir/bad.conf"
	out="$dir/cli.out"
	{
		"$TSBROKER" -f "$dir/ok.conf" -t &&
		"$TSBROKER" -f "$dir/ok.conf" -v server add s1 --address 10.0.0.1 \
		    --max-sessions 5 &&
		"$TSBROKER" -f "$dir/ok.conf" -v server list &&
		"$TSBROKER" -f "$dir/ok.conf" -v session list &&
		"$TSBROKER" -f "$dir/ok.conf" -v admin token add ci &&
		"$TSBROKER" -f "$dir/ok.conf" -v admin token list &&
		! "$TSBROKER" -f "$dir/bad.conf" -v server list
	} >"$out" 2>&1 || { cat "$out"; echo "unit-pg: the CLI on postgresql failed" >&2; exit 1; }
	grep -q "s1 *10.0.0.1" "$out" || { cat "$out"; echo "unit-pg: server list" >&2; exit 1; }
	if grep -q "$pw" "$out"; then
		cat "$out"; echo "unit-pg: the password was printed" >&2; exit 1
	fi
	echo "== the CLI on postgresql: ok, no password printed"
fi
for t in "$@"; do
	echo "== $t (postgresql)"
	sh "$here/../unit/bounded.sh" "$t"
done
