#!/bin/sh
# make deb-check, inside the booted machine (systemd is PID 1): install the
# packages, start, reload and status the broker once its config names a
# certificate, the agent with a token (refused without), then purge.
# Prints "RESULT ok" last when every step passed.
set -eu
step() { echo "== $*"; }
fail() { echo "FAILED: $*"; exit 1; }
# on any failure: what systemd says about both units
trap 'rc=$?; if [ $rc != 0 ]; then systemctl status --no-pager tsbroker tsagent;
	journalctl --no-pager -o cat -u tsagent | tail -15; fi' EXIT
conf=/etc/tsbroker/tsbroker.conf
export DEBIAN_FRONTEND=noninteractive

step install
apt-get install -y -q --no-install-recommends /debs/tsbroker_*.deb /debs/tsagent_*.deb >/dev/null
systemctl is-enabled tsbroker tsagent || true		# disabled: not before configured
if systemctl is-active -q tsbroker; then fail "started on install"; fi

step "the broker once its config names a certificate"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout /etc/tsbroker/rdp.key -out /etc/tsbroker/rdp.crt 2>/dev/null
chgrp tsbroker /etc/tsbroker/rdp.key /etc/tsbroker/rdp.crt
chmod 0640 /etc/tsbroker/rdp.key /etc/tsbroker/rdp.crt
sed -i -e 's#^certificate = .*#certificate = /etc/tsbroker/rdp.crt#' \
    -e 's#^private_key = .*#private_key = /etc/tsbroker/rdp.key#' \
    -e 's#^listen = 0.0.0.0:8443#listen = 127.0.0.1:8443#' "$conf"
systemctl start tsbroker
wait_for() {	# wait_for WHAT COMMAND...: polls COMMAND for 20 s
	what=$1; shift; i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -lt 100 ] || fail "$what"; sleep 0.2
	done
}
wait_for "tsbroker ready" sh -c 'journalctl -u tsbroker -o cat | grep -q "tsbroker ready"'
systemctl is-active tsbroker
systemctl status --no-pager tsbroker | sed -n '1,12p'
ps -o user=,comm= -C tsbroker

step "the fronts run as tsbroker-front"
wait_for "a front" sh -c 'ps -eo user:20=,args= | grep -q "^tsbroker-front  *tsbroker-front --front"'
ps -eo user:20=,args= | grep -E "^tsbroker(-front)? " | grep -v grep

step reload
systemctl show -p ExecReload tsbroker | grep -q 'path=' || fail "tsbroker.service has no ExecReload"
systemctl reload tsbroker
systemctl is-active tsbroker
wait_for "the reload logged" sh -c 'journalctl -u tsbroker -o cat | grep -q "reloaded: "'
journalctl -u tsbroker --no-pager -o cat | grep "reloaded: "

step "the agent: refused without a token"
systemctl start tsagent || true
systemctl show -p ActiveState -p Result -p ConditionResult tsagent
if systemctl is-active -q tsagent; then fail "the agent started without a token"; fi
journalctl -u tsagent --no-pager -o cat | grep "'token' is required"

step "the agent with a token"
token=$(setpriv --reuid=tsbroker --regid=tsbroker --init-groups \
    tsbroker -f "$conf" server add ts1 --address 127.0.0.1 | grep -oE '[0-9a-f]{64}')
install -m 0644 /etc/tsbroker/rdp.crt /etc/tsagent/broker.crt	# the agent reads it as its dynamic user
sed -i -e "s#^token =.*#token = $token#" -e 's/^#name = ts1/name = ts1/' \
    -e 's#^broker = .*#broker = https://127.0.0.1:8443#' -e 's#^sessions = .*#sessions = utmp#' \
    /etc/tsagent/tsagent.conf
systemctl start tsagent
systemctl is-active tsagent
systemctl status --no-pager tsagent | sed -n '1,10p'
wait_for "ts1 up" sh -c 'setpriv --reuid=tsbroker --regid=tsbroker --init-groups \
    tsbroker -f /etc/tsbroker/tsbroker.conf server list | grep "^ts1 .* up "'
setpriv --reuid=tsbroker --regid=tsbroker --init-groups tsbroker -f "$conf" server list
if journalctl --no-pager -o cat | grep -qi 'first admin password'; then
	fail "an admin password reached the journal"
fi

step purge
systemctl stop tsagent tsbroker
apt-get purge -y -q tsbroker tsagent >/dev/null
rm -f /etc/tsagent/broker.crt /etc/tsbroker/rdp.key /etc/tsbroker/rdp.crt
rmdir /etc/tsbroker /etc/tsagent 2>/dev/null || true
for p in /etc/tsbroker /etc/tsagent /var/lib/tsbroker /usr/share/tsbroker \
    /lib/systemd/system/tsbroker.service /usr/sbin/tsbroker /usr/sbin/tsagent; do
	if [ -e "$p" ]; then fail "left after purge: $p"; fi
done
if systemctl list-unit-files --no-pager | grep -q '^ts'; then fail "a unit left after purge"; fi
echo "RESULT ok"
