#!/bin/sh
# docs/ha-clients.md: a floating address (keepalived VRRP) moved between two "brokers", each a
# network namespace on one bridge; a third namespace is the client.
set -u
L1=; L2=
P=43389; D=${TMPDIR:-/tmp}/ha-clients-ka
cleanup() {
	pids="$L1 $L2 $(cat $D/*-main.pid 2>/dev/null)"
	kill $pids 2>/dev/null
	for i in $(seq 1 100); do kill -0 $pids 2>/dev/null || break; sleep 0.1; done
	kill -9 $pids 2>/dev/null
	for n in ka1 ka2 kc kab; do ip netns del $n 2>/dev/null; done
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP PIPE
rm -rf $D; mkdir -p $D
for n in kab ka1 ka2 kc; do ip netns add $n; ip -n $n link set lo up; done
ip -n kab link add br0 type bridge; ip -n kab link set br0 up
for n in ka1 ka2 kc; do
	ip link add $n-e type veth peer name b-$n
	ip link set $n-e netns $n; ip link set b-$n netns kab
	ip -n kab link set b-$n master br0; ip -n kab link set b-$n up
done
ip -n ka1 addr add 10.201.0.1/24 dev ka1-e; ip -n ka2 addr add 10.201.0.2/24 dev ka2-e
ip -n kc addr add 10.201.0.9/24 dev kc-e
for n in ka1 ka2 kc; do ip -n $n link set $n-e up; done
for n in 1 2; do
	pri=$((200 - n * 50))
	cat > $D/ka$n.conf <<EOC
global_defs { router_id ka$n
  script_user root
  enable_script_security }
vrrp_instance VI_1 {
  state BACKUP
  interface ka$n-e
  virtual_router_id 51
  priority $pri
  advert_int 1
  nopreempt
  virtual_ipaddress { 10.201.0.100/24 }
}
EOC
	ip netns exec ka$n keepalived -P -n -l -f $D/ka$n.conf -p $D/ka$n.pid -r $D/ka$n-vrrp.pid > $D/ka$n.log 2>&1 &
	echo $! > $D/ka$n-main.pid
done
listener() { ip netns exec $1 python3 -c "
import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0',$P)); s.listen(16)
while True:
    c,a=s.accept(); c.sendall(b'$1\n'); c.close()
    if '$1' == 'ka2': open('$D/accept-$1', 'a').write('%.3f\n' % __import__('time').time())
" & }
listener ka1; L1=$!
listener ka2; L2=$!
who() { ip netns exec kc python3 -c "
import socket,sys
try:
    s=socket.create_connection(('10.201.0.100',$P),timeout=1); print(s.recv(16).decode().strip())
except OSError as e: print('fail', e)
"; }
# wait for a master
for i in $(seq 1 100); do r=$(who); case $r in ka*) break;; esac; sleep 0.1; done
echo "VIP at: $r"
M=$r
t0=$(date +%s.%N)
ip -n $M link set $M-e down    # the master vanishes from the network
if [ "${XFREERDP:-}" ]; then
	# a stock client started the moment the master vanished
	rm -f $D/accept-ka2
	ip netns exec kc timeout 40 xvfb-run -a xfreerdp /v:10.201.0.100:$P /u:u /p:pw /cert:ignore /log-level:DEBUG > $D/x.log 2>&1
	echo "xfreerdp exit $? after $(echo "$(date +%s.%N) - $t0" | bc) s; first accept at ka2 $(echo "$(head -1 $D/accept-ka2) - $t0" | bc) s after the master vanished"
	grep -E "connecting to peer|failed to connect" $D/x.log | cut -c1-140
fi
while :; do r=$(who); case $r in ka*) [ "$r" != "$M" ] && break;; esac; done
t1=$(date +%s.%N)
echo "VIP moved to $r after $(echo "$t1 - $t0" | bc) s"
# the old master comes back: nopreempt keeps the address where it is
ip -n $M link set $M-e up
sleep 4
echo "after $M is back: VIP at $(who)"
grep -h "Entering\|MASTER\|BACKUP" $D/ka1.log $D/ka2.log | tail -6
