#!/bin/sh
# Installs the Debian 12 packages tsbroker needs, if missing.
#   tools/deps.sh run    to build and run the broker and agent
#   tools/deps.sh test   also everything the tests need
# As root it installs with apt-get; otherwise it names what is missing.
set -eu

BUILD="make gcc pkg-config openssl freerdp2-dev libmicrohttpd-dev libsqlite3-dev libssl-dev
 libcurl4-openssl-dev libjansson-dev libinih-dev libsystemd-dev libpq-dev libseccomp-dev"
TEST="libcmocka-dev python3 python3-pytest python3-pytest-timeout sqlite3 clang libclang-rt-14-dev curl
 freerdp2-x11 rdesktop xvfb xauth procps iproute2 xrdp tigervnc-standalone-server chromium
 systemd keepalived postgresql-15 patroni etcd-server etcd-client python3-psycopg2 gdb
 prometheus testssl.sh scdoc man-db groff-base
 debhelper lintian blhc fakeroot dpkg-dev debootstrap systemd-container"
# The browser tests (tests/web) also need node >= 20 with npm. Debian 12's
# nodejs is 18: it is installed only where no node is on PATH at all, so a
# newer node installed otherwise is kept.
if [ "${1:-run}" = test ] && ! command -v node >/dev/null 2>&1; then
	TEST="$TEST nodejs npm"
fi

case "${1:-run}" in
run) want="$BUILD" ;;
test) want="$BUILD $TEST" ;;
*) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "tsbroker: missing Debian packages:$missing" >&2
	echo "tsbroker: run as root, or: sudo apt-get install$missing" >&2
	exit 1
fi
echo "tsbroker: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
