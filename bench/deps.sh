#!/bin/sh
# The benchmark's own packages (make bench-deps, run by make bench):
# HAProxy 2.6 for the splice reference, valgrind for the profile, sqlite3.
# The build's packages come from tools/deps.sh. Installs only what is
# missing, only as root; otherwise says what the bench will skip.
set -u
need=""
command -v haproxy >/dev/null 2>&1 || need="$need haproxy"
command -v valgrind >/dev/null 2>&1 || need="$need valgrind"
command -v sqlite3 >/dev/null 2>&1 || need="$need sqlite3"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "bench: installing$need"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null 2>&1 || {
		apt-get update -q >/dev/null 2>&1
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null 2>&1
	} || echo "bench: could not install$need: those figures will be skipped"
else
	echo "bench: missing$need (not root): those figures will be skipped"
fi
exit 0
