#!/bin/sh
# make deb-check: the packages under a real systemd (outside CI: needs root,
# debootstrap and systemd-nspawn). A Debian 12 tree is debootstrapped once
# (cached in BUILD/deb-check/bookworm, with the packages' dependencies, so a
# run needs no network), booted ephemerally (systemd-nspawn -b -x: a
# throwaway copy, its own network namespace: loopback only) with BUILD/deb and this directory bind-mounted, and the
# check (inside.sh) run by a unit at boot; the machine powers off after it.
#   tools/deb-check/run.sh BUILD
set -eu
B=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
tree=$B/deb-check/bookworm
deps="systemd,systemd-sysv,dbus,adduser,openssl,curl,procps,libfreerdp2-2,libwinpr2-2,\
libmicrohttpd12,libsqlite3-0,libpq5,libinih1,libjansson4,libcurl4,libssl3,libgnutls30,libsystemd0"
for t in debootstrap systemd-nspawn; do
	command -v $t >/dev/null || { echo "deb-check: $t is missing (tools/deps.sh test)" >&2; exit 1; }
done
ls "$B"/deb/tsbroker_*.deb "$B"/deb/tsagent_*.deb >/dev/null
if [ ! -d "$tree" ]; then
	mkdir -p "$B/deb-check"
	rm -rf "$tree.tmp"
	echo "deb-check: debootstrap bookworm into $tree (once)"
	debootstrap --variant=minbase --include="$deps" bookworm "$tree.tmp" \
	    http://deb.debian.org/debian >"$B/deb-check/debootstrap.log" 2>&1 ||
	    { tail -20 "$B/deb-check/debootstrap.log"; exit 1; }
	mv "$tree.tmp" "$tree"
fi
out=$B/deb-check/out
rm -rf "$out" && mkdir -p "$out"
# the check runs at boot (systemd.wants= on PID 1's command line) and the
# machine powers off when it ends, either way
timeout 600 systemd-nspawn -q -x -D "$tree" -M tsb-deb-check --register=no --keep-unit --private-network \
    --bind-ro="$(cd "$B/deb" && pwd)":/debs --bind-ro="$here":/check \
    --bind="$(cd "$out" && pwd)":/out \
    --bind-ro="$here/deb-check.service":/etc/systemd/system/deb-check.service \
    -b -- systemd.wants=deb-check.service >"$out/console.log" 2>&1 || true
cat "$out/check.log" 2>/dev/null || { tail -40 "$out/console.log"; }
grep -qx "RESULT ok" "$out/check.log" 2>/dev/null
