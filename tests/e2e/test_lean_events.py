"""End-to-end tests of the lean engine's event-driven connections
(broker/front/lean.c: no thread waits for a handshake, the decision asked
without waiting, the drain on the loop): 200 handshakes stalled after the
MCS Connect Response cost no thread each, in the front processes and in
the broker's own process ([rdp] fronts = 0, where the decision runs on a
few decider threads), and a whole redirect still goes through beside
them; the drain ends when the client closes (the broker closes its socket
then, not at the drain's deadline) and is bounded when the client never
closes; a broker stopped with connections in every state (waiting for
its request, in TLS, stalled in MCS, after the redirect) ends them all and
exits cleanly. Every wait polls a condition.
"""
import resource
import socket
import time

import pytest

import rawrdp
from farm import children, free_port, heartbeat_body, wait_until

STALLED = 200


def add_ts1(b):
    port = free_port("127.0.0.2")
    token = b.add_server("ts1", address="127.0.0.2", port=port)
    st, _ = b.heartbeat(token, {**heartbeat_body("ts1", port=port),
                               "rdp": {"address": "127.0.0.2", "port": port,
                                       "accepting": True}})
    assert st == 200
    wait_until(lambda: (b.server("ts1") or {}).get("state") == "up", 10, "ts1 up")


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("Threads:"))


def server_sockets(port, states):
    """The TCP sockets on local port port in one of states (hex, /proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, st = line.split()[1], line.split()[3]
            if int(local.split(":")[1], 16) == port and st in states:
                n += 1
    return n


CLOSE_WAIT = {"08"}


def stalled_client(port, user):
    c = rawrdp.Client("127.0.0.1", port, timeout=30)
    c.x224(user)
    c.start_tls()
    c.tls.sendall(rawrdp.x224_data(rawrdp.mcs_connect_initial()))
    rawrdp.recv_tpkt(c.tls)		# the Connect Response: past TLS, then stalled
    return c


def eof_within(sock, seconds):
    """True once sock reads the end (or a reset) within seconds."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except socket.timeout:
        return False
    except (ConnectionError, OSError):
        pass
    return True


@pytest.fixture
def nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("fronts", [-1, 0])
def test_stalled_handshakes_cost_no_thread_each(broker_factory, nofile, fronts):
    b = broker_factory(rdp__fronts=fronts, rdp__max_handshakes=STALLED + 20,
                       rdp__max_connections=STALLED + 50, rdp__handshake_timeout=60)
    add_ts1(b)
    assert rawrdp.redirect("127.0.0.1", b.rdp_port, "warm").redirected
    pids = children(b.proc.pid) if fronts else [b.proc.pid]
    assert pids
    before = sum(threads(p) for p in pids)
    clients = []
    try:
        for i in range(STALLED):
            clients.append(stalled_client(b.rdp_port, f"s{i}"))
        after = sum(threads(p) for p in pids)
        # a few more at most (admission workers), not one each; a front has
        # a few dozen in all (loops, workers), the broker its own besides
        assert after <= before + 12, (before, after)
        assert fronts == 0 or after <= 24 * len(pids), (before, after)
        res = rawrdp.redirect("127.0.0.1", b.rdp_port, "beside")
        assert res.redirected and res.address == "127.0.0.2", res
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("fronts", [-1, 0])
def test_drain_ends_when_the_client_closes(broker_factory, fronts):
    b = broker_factory(rdp__fronts=fronts)
    add_ts1(b)
    c = rawrdp.Client("127.0.0.1", b.rdp_port, timeout=10)
    c.x224("d1")
    c.start_tls()
    c.mcs()
    c.send_info("d1")
    assert c.read_outcome().redirected
    # the broker waits for the client to close first: its socket stays
    assert server_sockets(b.rdp_port, {"01"}) >= 1
    c.close()
    # then closes its own at once (not at the drain's deadline, 5 s on)
    t0 = time.monotonic()
    wait_until(lambda: server_sockets(b.rdp_port, CLOSE_WAIT | {"01"}) == 0, 10,
               "the broker's socket closed")
    assert time.monotonic() - t0 < 4


def test_drain_is_bounded(broker_factory):
    b = broker_factory()
    add_ts1(b)
    c = rawrdp.Client("127.0.0.1", b.rdp_port, timeout=10)
    try:
        c.x224("d2")
        c.start_tls()
        c.mcs()
        c.send_info("d2")
        assert c.read_outcome().redirected
        # a client that never closes is closed by the broker in the end
        assert eof_within(c.tls, 15)
        assert "d2 from 127.0.0.1 -> ts1" in b.log()
    finally:
        c.close()


@pytest.mark.parametrize("fronts", [-1, 0])
def test_stop_with_connections_in_every_state(broker_factory, fronts):
    b = broker_factory(rdp__fronts=fronts, rdp__handshake_timeout=60)
    add_ts1(b)
    socks = []
    clients = []
    try:
        idle = socket.create_connection(("127.0.0.1", b.rdp_port))	# no request yet
        socks.append(idle)
        in_tls = rawrdp.Client("127.0.0.1", b.rdp_port)		# X.224 answered, no TLS
        in_tls.x224("t1")
        clients.append(in_tls)
        socks.append(in_tls.sock)
        for i in range(5):
            clients.append(stalled_client(b.rdp_port, f"m{i}"))	# stalled in MCS
            socks.append(clients[-1].tls)
        domain = rawrdp.Client("127.0.0.1", b.rdp_port)		# joined, no Client Info
        domain.x224("j1")
        domain.start_tls()
        domain.mcs()
        clients.append(domain)
        socks.append(domain.tls)
        drain = rawrdp.Client("127.0.0.1", b.rdp_port)		# redirected, draining
        drain.x224("r1")
        drain.start_tls()
        drain.mcs()
        drain.send_info("r1")
        assert drain.read_outcome().redirected
        clients.append(drain)
        socks.append(drain.tls)
        t0 = time.monotonic()
        assert b.stop() == 0
        assert time.monotonic() - t0 < 8
        for s in socks:
            assert eof_within(s, 5)
        log = b.log()
        assert "not freeing" not in log and "still busy" not in log
    finally:
        for c in clients:
            c.close()
        for s in socks:
            s.close()
