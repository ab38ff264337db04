#!/bin/sh
# make deb-check, inside the booted machine (systemd is PID 1): install the
# packages, start, reload and status the broker once its config names a
# certificate, the agent with a token (refused without), then purge.
# Prints "RESULT ok" last when every step passed.
set -eu
step() { echo "== $*"; }
fail() { echo "FAILED: $*"; exit 1; }
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
systemctl is-active tsbroker
systemctl status --no-pager tsbroker | sed -n '1,12p'
ps -o user=,comm= -C tsbroker

step reload
if systemctl show -p ExecReload tsbroker | grep -q 'path='; then
	systemctl reload tsbroker
	systemctl is-active tsbroker
	journalctl -u tsbroker --no-pager -n 5 -o cat
else
	echo "tsbroker.service has no ExecReload on this branch (SIGHUP: wt-reload)"
fi

step "the agent: refused without a token"
systemctl start tsagent || true
systemctl show -p ActiveState -p Result -p ConditionResult tsagent
if systemctl is-active -q tsagent; then fail "the agent started without a token"; fi
journalctl -u tsagent --no-pager -o cat | grep "'token' is required"

step "the agent with a token"
token=$(setpriv --reuid=tsbroker --regid=tsbroker --init-groups \
    tsbroker -f "$conf" server add ts1 --address 127.0.0.1 | grep -oE '[0-9a-f]{64}')
cp /etc/tsbroker/rdp.crt /etc/tsagent/broker.crt
sed -i -e "s#^token =.*#token = $token#" -e 's/^#name = ts1/name = ts1/' \
    -e 's#^broker = .*#broker = https://127.0.0.1:8443#' -e 's#^sessions = .*#sessions = utmp#' \
    /etc/tsagent/tsagent.conf
systemctl start tsagent
systemctl is-active tsagent
systemctl status --no-pager tsagent | sed -n '1,10p'
i=0
until setpriv --reuid=tsbroker --regid=tsbroker --init-groups tsbroker -f "$conf" \
    server list | tee /tmp/list | grep -q '^ts1 .* up '; do
	i=$((i + 1)); [ $i -lt 100 ] || { cat /tmp/list; fail "ts1 not up"; }; sleep 0.2
done
cat /tmp/list
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
systemctl list-unit-files 'ts*' --no-pager
echo "RESULT ok"
