"""End-to-end tests of the token-mode relay (broker/front/splice.c): a real
broker in token mode splices raw clients to a terminal server played by a
sink in this test (127.0.0.2:P), so that every byte either way can be
checked. The routing token is the broker's own, from a real redirect
(rawrdp) that placed alice on the sink's server. The keepalive test puts the sink in
a network namespace of its own behind a veth pair and takes the link down.
Every wait polls a condition.
"""
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

import rawrdp
from farm import free_port, heartbeat_body, wait_until

ACTIVE = "tsbroker_splices_active"
C2S = 'tsbroker_splice_bytes_total{direction="client_to_server"}'
S2C = 'tsbroker_splice_bytes_total{direction="server_to_client"}'


def closed(cause):
    return f'tsbroker_splices_closed_total{{cause="{cause}"}}'


def read_request(s):
    """The X.224 Connection Request the relay sent first, whole."""
    head = recv_exact(s, 4)
    return head + recv_exact(s, int.from_bytes(head[2:4], "big") - 4)


recv_exact = rawrdp.recv_exact


def recv_all(s):
    got = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(got)
        got += chunk


def pattern(i, n):
    """n bytes unique to connection i, so that a byte out of place shows."""
    unit = i.to_bytes(4, "big") + bytes(range(0, 252))
    return (unit * (n // len(unit) + 1))[:n]


class Sink:
    """The terminal server: accepts on address:port; each connection is
    handed to handler(sock) in a thread of its own (or, with echo=True, all
    echoed from one selector thread)."""

    def __init__(self, address, port, handler=None, echo=False):
        self.ls = socket.create_server((address, port), backlog=2048)
        self.handler, self.echo = handler, echo
        self.accepted = []
        self.requests = []
        self.stopping = False
        self.t = threading.Thread(target=self._echo if echo else self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted.append(c)
            threading.Thread(target=self.handler, args=(c,), daemon=True).start()

    def _echo(self):
        sel = selectors.DefaultSelector()
        self.ls.setblocking(False)
        sel.register(self.ls, selectors.EVENT_READ)
        pending = {}
        while not self.stopping:
            for key, _ in sel.select(0.2):
                if key.fileobj is self.ls:
                    try:
                        c, _ = self.ls.accept()
                    except BlockingIOError:
                        continue
                    c.setblocking(True)
                    self.requests.append(read_request(c))   # sent first, whole
                    c.setblocking(False)
                    self.accepted.append(c)
                    pending[c] = b""
                    sel.register(c, selectors.EVENT_READ)
                    continue
                c = key.fileobj
                try:
                    data = c.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(c)
                    c.close()
                    continue
                c.setblocking(True)      # the relay reads as fast as we write
                c.sendall(data)
                c.setblocking(False)

    def stop(self):
        self.stopping = True
        self.ls.close()
        self.t.join(5)
        for c in self.accepted:
            c.close()


@pytest.fixture
def relay(broker_factory, stopped_at_teardown):
    """relay(handler=..., echo=..., address=..., **broker_conf): a token-mode
    broker, a sink registered as ts1, and the X.224 request with the routing
    token the broker gave alice for it."""
    def make(handler=None, echo=False, address="127.0.0.2", sink_port=None, **conf):
        conf.setdefault("rdp__mode", "token")
        conf.setdefault("rdp__token_key", "token.key")
        conf.setdefault("rdp__connect_timeout", 3)
        conf.setdefault("health__down_after", 86400)   # one heartbeat keeps ts1 up
        b = broker_factory(**conf)
        port = sink_port or free_port(address)
        sink = None
        if handler or echo:
            sink = Sink(address, port, handler, echo)
            stopped_at_teardown.append(sink)
        token = b.add_server("ts1", address=address, port=port)
        status, _ = b.heartbeat(token, {**heartbeat_body("ts1", port=port),
                                        "rdp": {"address": address, "port": port,
                                                "accepting": True}})
        assert status == 200
        wait_until(lambda: (b.server("ts1") or {}).get("state") == "up", 10, "ts1 up")
        res = rawrdp.redirect("127.0.0.1", b.rdp_port, "alice")
        assert res.redirected and res.token.startswith("Cookie: msts="), res
        request = rawrdp.x224_request((res.token + "\r\n").encode())
        return b, sink, request, port
    return make


def connect(b, request):
    s = socket.create_connection(("127.0.0.1", b.rdp_port), timeout=20)
    s.sendall(request)
    return s


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- tests -----------------------------------------------------------------

def test_half_close_carried_across_and_counted(relay):
    seen = {}

    def server(c):
        seen["request"] = read_request(c)
        seen["data"] = recv_all(c)                   # up to the client's FIN
        c.sendall(b"after your FIN: " + bytes(200000))
        c.shutdown(socket.SHUT_WR)

    b, sink, request, _ = relay(handler=server)
    before = b.metrics()
    s = connect(b, request)
    payload = pattern(1, 300000)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    back = recv_all(s)                               # the server's answer, then EOF
    s.close()
    assert seen["request"] == request                # the request bytes unchanged
    assert seen["data"] == payload
    assert back == b"after your FIN: " + bytes(200000)
    m = wait_until(lambda: (lambda m: m if m[ACTIVE] == 0 else None)(b.metrics()), 10,
                   "the pair closed")
    assert m[closed("done")] == before[closed("done")] + 1
    assert m[C2S] - before[C2S] == len(request) + len(payload)
    assert m[S2C] - before[S2C] == len(back)


def test_either_side_ending_closes_both(relay):
    conns = []

    def server(c):
        read_request(c)
        conns.append(c)

    b, sink, request, _ = relay(handler=server)
    s = connect(b, request)
    wait_until(lambda: conns, 10, "the server's leg")
    # the server resets its leg: the client's is closed too, and counted
    conns[0].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conns[0].close()
    s.settimeout(10)
    try:
        assert s.recv(10) == b""
    except ConnectionResetError:
        pass
    wait_until(lambda: b.metrics()[ACTIVE] == 0, 10, "the pair closed")
    assert b.metrics()[closed("reset")] == 1


def test_target_that_stops_reading_bounds_memory(relay):
    """Back-pressure: the relay stops reading the client when the server
    stops reading; it holds a bounded buffer, spins no CPU, and every byte
    arrives in order once the server reads again."""
    conns = []
    go = threading.Event()
    got = {}

    def server(c):
        read_request(c)
        conns.append(c)
        go.wait(60)
        got["data"] = recv_all(c)
        c.close()

    b, sink, request, _ = relay(handler=server)
    s = connect(b, request)
    wait_until(lambda: conns, 10, "the server's leg")
    rss0 = rss_kb(b.proc.pid)
    s.setblocking(False)
    sent = bytearray()
    quiet = time.monotonic()
    i = 0
    while time.monotonic() - quiet < 1.0:            # until nothing goes for 1 s
        chunk = pattern(i, 65536)
        try:
            n = s.send(chunk)
            sent += chunk[:n]
            quiet = time.monotonic()
            i += 1
        except BlockingIOError:
            time.sleep(0.01)
        assert len(sent) < 512 << 20, "the relay kept reading: no back-pressure"
    c0 = cpu_s(b.proc.pid)
    time.sleep(2)
    cpu = cpu_s(b.proc.pid) - c0
    grew = rss_kb(b.proc.pid) - rss0
    print(f"\n[splice] stalled server: {len(sent) >> 10} KiB in flight, broker RSS +{grew} KiB, "
          f"{cpu:.2f} CPU s in 2 s")
    assert cpu < 0.3, f"the broker spun {cpu:.2f} CPU s while stalled"
    assert grew < 8 * 1024, f"the broker's RSS grew {grew} KiB"   # one bounded buffer
    assert b.metrics()[ACTIVE] == 1
    s.setblocking(True)
    s.shutdown(socket.SHUT_WR)
    go.set()
    wait_until(lambda: "data" in got, 30, "the server to read it all")
    assert got["data"] == bytes(sent)
    s.close()
    wait_until(lambda: b.metrics()[ACTIVE] == 0, 10, "the pair closed")


def test_thousand_concurrent_splices_every_byte_in_order(relay):
    n, size = 1000, 32768
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * n + 500                               # our two ends and the broker's two
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need, "open-files limit"
    b, sink, request, _ = relay(echo=True, rdp__splice_max=n + 10,
                                rdp__max_connections=n + 100)
    t0 = time.monotonic()
    socks = []
    for i in range(n):
        socks.append(connect(b, request))
    wait_until(lambda: b.metrics()[ACTIVE] == n, 60, f"{n} splices at once")
    held = time.monotonic() - t0
    assert len(sink.requests) == n and all(r == request for r in sink.requests)
    for i, s in enumerate(socks):                    # all open while each is checked
        data = pattern(i, size)
        s.sendall(data)
        assert recv_exact(s, size) == data, f"connection {i}: bytes out of order"
    m = b.metrics()
    print(f"\n[splice] {n} concurrent splices set up in {held:.1f} s; broker RSS "
          f"{rss_kb(b.proc.pid) >> 10} MB")
    assert m[ACTIVE] == n
    for s in socks:
        s.close()
    wait_until(lambda: b.metrics()[ACTIVE] == 0, 60, "every pair closed")
    assert b.metrics()[closed("done")] == n


# ---- keepalive: a peer that vanishes without a FIN -----------------------------

NS = f"tsbsplice{os.getpid()}"
HOST_IF, NS_IF = f"tsbh{os.getpid() % 100000}", f"tsbn{os.getpid() % 100000}"
# link-local, on our veth only; a subnet per run, so that runs side by side differ
_NET = f"169.254.{os.getpid() % 250 + 1}"
HOST_IP, NS_IP = f"{_NET}.1", f"{_NET}.2"

NS_SINK = r"""
import socket, sys
ls = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("LISTENING", flush=True)
c, _ = ls.accept()
head = c.recv(4, socket.MSG_WAITALL)
c.recv(int.from_bytes(head[2:4], "big") - 4, socket.MSG_WAITALL)   # the request
while True:
    data = c.recv(65536)
    if not data:
        break
    c.sendall(data)
"""


def sh(*args):
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns():
    """A namespace NS with NS_IP on one end of a veth pair; HOST_IP on the
    other, here. Removed at teardown."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and ip(8) for a network namespace")
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        sh("ip", "link", "set", NS_IF, "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        sh("ip", "-n", NS, "addr", "add", f"{NS_IP}/30", "dev", NS_IF)
        sh("ip", "-n", NS, "link", "set", NS_IF, "up")
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        yield
    finally:
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def test_vanished_server_noticed_by_keepalive(relay, netns):
    keepalive, user_timeout = 2, 4
    port = 33890
    sink = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", NS_SINK, NS_IP,
                             str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout.readline().strip() == "LISTENING"
        b, _, request, _ = relay(address=NS_IP, sink_port=port,
                                 rdp__splice_keepalive=keepalive,
                                 rdp__splice_user_timeout=user_timeout,
                                 rdp__splice_idle_timeout=600)
        s = connect(b, request)
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"           # spliced through the veth
        assert b.metrics()[ACTIVE] == 1
        # the link goes away: no FIN, no RST ever reaches the broker
        sh("ip", "-n", NS, "link", "set", NS_IF, "down")
        sh("ip", "link", "set", HOST_IF, "down")
        t0 = time.monotonic()
        wait_until(lambda: b.metrics()[ACTIVE] == 0, 60, "the lost splice freed")
        took = time.monotonic() - t0
        bound = max(user_timeout, keepalive + max(1, keepalive // 4))
        print(f"\n[splice] vanished server noticed after {took:.1f} s "
              f"(splice_keepalive {keepalive}, splice_user_timeout {user_timeout})")
        assert took <= bound + 5, f"noticed after {took:.1f} s, bound {bound} s"
        assert b.metrics()[closed("peer_lost")] == 1
        s.settimeout(10)
        try:
            assert s.recv(10) == b""                 # the client's leg closed too
        except ConnectionResetError:
            pass
        s.close()
    finally:
        sink.kill()
        sink.wait()
