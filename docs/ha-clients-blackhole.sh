#!/bin/sh
# docs/ha-clients.md: xfreerdp against a name whose first address is black-holed (SYN dropped)
# and whose second address listens. Everything inside namespaces made here.
set -u
P=43389
cleanup() {
	ip netns del tsbh-c 2>/dev/null; ip netns del tsbh-p 2>/dev/null
	rm -rf /etc/netns/tsbh-c; rmdir /etc/netns 2>/dev/null
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP PIPE
ip netns add tsbh-c && ip netns add tsbh-p
ip link add tsbh0 type veth peer name tsbh1
ip link set tsbh0 netns tsbh-c && ip link set tsbh1 netns tsbh-p
ip -n tsbh-c link set lo up
ip -n tsbh-c addr add 10.200.0.1/24 dev tsbh0
ip -n tsbh-c link set tsbh0 up
ip -n tsbh-p addr add 10.200.0.3/24 dev tsbh1
ip -n tsbh-p link set tsbh1 up
# 10.200.0.3 in tsbh-p listens; 10.200.0.2: a MAC nobody has: frames go out and are dropped, no ARP, no RST
ip -n tsbh-c neigh add 10.200.0.2 lladdr 02:00:00:00:00:99 dev tsbh0 nud permanent
mkdir -p /etc/netns/tsbh-c
printf '10.200.0.2 tsb-pair\n10.200.0.3 tsb-pair\n' > /etc/netns/tsbh-c/hosts
ip netns exec tsbh-c getent ahostsv4 tsb-pair | grep STREAM
ip netns exec tsbh-p python3 -c "
import socket,time,sys
s=socket.socket(); s.bind(('10.200.0.3',$P)); s.listen(4); s.settimeout(60)
try:
    c,a=s.accept(); print('ACCEPTED', a, flush=True)
except socket.timeout: print('no connection', flush=True)
" &
L=$!
sleep 0.5
t0=$(date +%s.%N)
ip netns exec tsbh-c timeout 90 xvfb-run -a xfreerdp /v:tsb-pair:$P /u:u /p:pw /cert:ignore "$@" > /tmp/ha-clients-x.log 2>&1
rc=$?
t1=$(date +%s.%N)
echo "xfreerdp exit $rc after $(echo "$t1 - $t0" | bc) s"
grep -E "connecting to peer|failed to connect|ERRCONNECT" /tmp/ha-clients-x.log | cut -c1-160 | head
kill $L 2>/dev/null; wait $L 2>/dev/null
