# tools/demo-lib.sh: what `make demo` (tools/demo.sh) and `make ha-demo`
# (tools/ha-demo.sh) share; sourced (POSIX sh), never run. The sourcing
# script sets DEMO (its name in messages), B (the build directory) and DIR
# (its state); PIDS lists the processes it started (demo_cleanup stops
# them at exit) and STOPS the commands that stop the rest (run first).

PIDS=""
STOPS=""
TICK=""

# Exits unless B holds every program named.
demo_need() {
	for p in "$@"; do
		[ -x "$B/$p" ] || { echo "$DEMO: $B/$p is missing: run make first" >&2; exit 1; }
	done
	command -v openssl >/dev/null || { echo "$DEMO: openssl is needed" >&2; exit 1; }
}

demo_cleanup() {
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
	eval "$STOPS"
	[ -n "$PIDS" ] && echo "$DEMO: stopped (state and logs kept in $DIR/)"
}

# Ctrl-C (SIGINT) or SIGTERM: everything started is stopped, exit 130/143.
demo_traps() {
	trap demo_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# Is TCP port $1 in use (listened on, or a connection's local port)?
port_busy() {
	hex=$(printf '%04X' "$1")
	awk -v p="$hex" 'FNR > 1 && substr($2, index($2, ":") + 1) == p { f = 1 }
		END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# $2 if given, else $1 if it is free, else a random free port.
pick_port() {
	[ -n "$2" ] && { echo "$2"; return; }
	if [ -n "$1" ] && ! port_busy "$1"; then echo "$1"; return; fi
	while :; do
		# below the kernel's ephemeral range (32768-60999), where no
		# outgoing connection takes the port between the pick and the bind
		p=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 12000 + 20000 ))
		port_busy "$p" || { echo "$p"; return; }
	done
}

# Waits up to $2 tenths of a second for "grep -q $1 $3"; fails if pid $4 dies.
wait_for() {
	tries=0
	while ! grep -q "$1" "$3" 2>/dev/null; do
		if ! kill -0 "$4" 2>/dev/null || [ $tries -ge "$2" ]; then
			echo "$DEMO: gave up waiting for '$1' in $3:" >&2
			tail -5 "$3" "${3%.*}.log" 2>/dev/null >&2 || true
			exit 1
		fi
		sleep 0.1
		tries=$((tries + 1))
	done
}

# demo_target CONF NAME ADDRESS RDP_PORT BROKER_URLS CA: server NAME added
# to the broker of CONF, an rdptarget on ADDRESS:RDP_PORT with its own
# certificate, and a tsagent reporting its sessions file to BROKER_URLS
# (one URL or several, spaces between). Pids in DIR/NAME/*.pid.
demo_target() {
	d="$DIR/$2"
	mkdir -p "$d"
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$3" \
		-keyout "$d/rdp.key" -out "$d/rdp.crt" 2>/dev/null
	token=$("$B/tsbroker" -f "$1" server add "$2" --address "$3" \
		--port "$4" --max-sessions 20 | tail -n 1)
	"$B/rdptarget" --listen "$3:$4" --cert "$d/rdp.crt" --key "$d/rdp.key" \
		--sessions "$d/sessions.json" --name "$2" > "$d/rdptarget.out" \
		2> "$d/rdptarget.log" &
	PIDS="$PIDS $!"
	echo $! > "$d/rdptarget.pid"
	wait_for LISTENING 100 "$d/rdptarget.out" $!
	(umask 077 && cat > "$d/tsagent.conf" <<EOF
[agent]
name = $2
broker = $5
token = $token
ca = $6
rdp_address = $3
rdp_port = $4
sessions = file:$d/sessions.json
interval = 2
retry_max = 4
EOF
)
	"$B/tsagent" -f "$d/tsagent.conf" > /dev/null 2> "$d/tsagent.log" &
	PIDS="$PIDS $!"
	echo $! > "$d/tsagent.pid"
}

# Waits up to 15 s until the broker of CONF has $2 servers up.
demo_wait_up() {
	n=0
	while [ "$("$B/tsbroker" -f "$1" server list | awk '$5 == "up"' | wc -l)" -lt "$2" ]; do
		[ $n -lt 150 ] || { echo "$DEMO: the servers did not come up:" >&2;
			"$B/tsbroker" -f "$1" server list >&2; exit 1; }
		sleep 0.1
		n=$((n + 1))
	done
}

# Runs until a signal; exits 1 if one of the pids given dies by itself.
demo_wait() {
	while :; do
		for pid in "$@"; do
			if ! kill -0 "$pid" 2>/dev/null; then
				echo "$DEMO: process $pid exited; see $DIR/ for its log" >&2
				exit 1
			fi
		done
		sleep 1 &
		TICK=$!
		wait "$TICK" || true
		TICK=""
	done
}
