"""Hostile and broken clients against the real broker (issue 8): idle
connections by the thousand, a huge TPKT length, random bytes, a stalled TLS
handshake, a flood of bad agent tokens, oversized and deeply nested JSON,
and the leak check (1,000 redirects, the broker's RSS bounded). Raw sockets
from Python on loopback (tests/e2e/rawrdp.py is a minimal RDP client); every
loop is bounded and every wait polls.

Under make asan-test RSS bounds are not checked (ASan's quarantine and
shadow memory grow by design); LeakSanitizer checks the broker at exit
instead. TSBROKER_LEAK_REDIRECTS (make leakcheck: 10,000) sets the length of
the leak loop (default 1,000).
"""
import http.client
import json
import os
import random
import resource
import select
import socket
import ssl
import threading
import time

import pytest

import rawrdp
import farm
from farm import TSBROKER, Target, free_port, heartbeat_body, wait_until


def _sanitized():
    """ASan or TSan (make tsan-test): their shadow memory makes RSS no measure."""
    with open(TSBROKER, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__tsan_init" in data


SANITIZED = _sanitized()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def nthreads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def raise_nofile(want):
    """Raises this process's open-files limit to want (or the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@pytest.fixture
def up_broker(broker_factory):
    """A broker with ts1 up for a long while (one heartbeat, down_after 1 h),
    so that the RDP endpoint redirects without agents."""
    def make(**conf):
        conf.setdefault("health__down_after", 3600)
        conf.setdefault("rdp_port", free_port("127.0.0.1", "127.0.0.2"))
        b = broker_factory(**conf)
        b.token = b.add_server("ts1", address="127.0.0.2", max_sessions=100000)
        status, _ = b.heartbeat(b.token, heartbeat_body("ts1"))
        assert status == 200
        return b
    return make


@pytest.fixture
def target_factory(tmp_path, stopped_at_teardown):
    """target(broker): an rdptarget on 127.0.0.2 at the broker's RDP port (the
    client keeps the port), so that FreeRDP clients can follow redirects."""
    def make(b):
        t = Target(tmp_path / f"target{len(stopped_at_teardown)}", "ts1", "127.0.0.2",
                   b.rdp_port, cert=(b.cert, b.key))
        stopped_at_teardown.append(t)
        t.start_target()
        return t.target
    return make


def probe(b):
    """rdpprobe (FreeRDP's client) through the broker: seconds it took."""
    t = time.monotonic()
    res = farm.probe(b.rdp_port, "probe", timeout=10)
    assert res["ok"] and res["host"] == "127.0.0.2" and res["redirected"] == "1", res
    return time.monotonic() - t


def redirect(b, user, timeout=10):
    t = time.monotonic()
    res = rawrdp.redirect("127.0.0.1", b.rdp_port, user, timeout=timeout)
    return res, time.monotonic() - t


def assert_serves(b, user="check", within=2.0):
    res, took = redirect(b, user)
    assert res.redirected and res.address == "127.0.0.2", res
    assert took < within, f"redirect took {took:.2f} s"
    assert b.proc.poll() is None
    return took


def wait_closed(sock, timeout):
    """Seconds until the peer closed sock (EOF or reset), or None."""
    start = time.monotonic()
    sock.setblocking(False)
    while time.monotonic() - start < timeout:
        r, _, _ = select.select([sock], [], [], 0.1)
        if r:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - start
            except (ConnectionError, OSError):
                return time.monotonic() - start
    return None


def handshakes_held(clients):
    """True while every client's TLS handshake is under way at the broker:
    its answer to the ClientHello has arrived (unread) and it is still open."""
    for c in clients:
        if not select.select([c.sock], [], [], 0)[0]:
            return False
        try:
            if c.sock.recv(1, socket.MSG_PEEK) == b"":
                return False
        except OSError:
            return False
    return True


def all_closed(socks, timeout):
    """Waits until the peer has closed every socket in socks; returns the
    ones still open after timeout."""
    deadline = time.monotonic() + timeout
    open_ = {s.fileno(): s for s in socks}
    for s in socks:
        s.setblocking(False)
    while open_ and time.monotonic() < deadline:
        p = select.poll()
        for fd in open_:
            p.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        for fd, _ in p.poll(200):
            try:
                if open_[fd].recv(65536) == b"":
                    del open_[fd]
            except BlockingIOError:
                pass
            except OSError:
                del open_[fd]
    return list(open_.values())


def tls_client_hello():
    """The bytes of a TLS ClientHello (and an object that would go on)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


# ---- RDP endpoint -----------------------------------------------------------

def test_1000_idle_connections(up_broker, target_factory):
    """1,000 TCP connections that send nothing cost a descriptor each, not a
    handshake slot: real clients are redirected in their usual time while
    they are open, and the broker closes them all at handshake_timeout."""
    assert raise_nofile(4096) >= 2200
    b = up_broker(rdp__handshake_timeout=6)
    pid = b.proc.pid
    target_factory(b)
    usual = max(assert_serves(b, f"warm{i}") for i in range(20))
    probe_usual = probe(b)
    rss0, fds0 = rss_kb(pid), nfds(pid)
    idle = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", b.rdp_port), timeout=5))
        opened = time.monotonic()
        wait_until(lambda: nfds(pid) >= fds0 + 1000 or (fds0, nfds(pid)) and False, 5,
                   f"the broker to accept 1,000 (fds {fds0} -> {nfds(pid)})")
        # real clients (the raw one and FreeRDP's) while they are all open
        took = [assert_serves(b, f"real{i}", within=max(1.0, 5 * usual)) for i in range(20)]
        probe_took = probe(b)
        assert probe_took < max(1.0, 3 * probe_usual), (probe_took, probe_usual)
        assert time.monotonic() - opened < 5, "the checks outlived handshake_timeout"
        rss1 = rss_kb(pid)
        if not SANITIZED:
            assert rss1 - rss0 < 16 * 1024, f"RSS grew {rss0} -> {rss1} kB"
        print(f"\n1000 idle: RSS {rss0} -> {rss1} kB, fds {fds0} -> {nfds(pid)}, "
              f"redirects max {max(took) * 1000:.1f} ms (usual {usual * 1000:.1f} ms), "
              f"rdpprobe {probe_took:.2f} s (usual {probe_usual:.2f} s)")
        # all cut at handshake_timeout (6 s from their accept), not before
        left = all_closed(idle, 6 + 4 - (time.monotonic() - opened))
        assert not left, f"{len(left)} idle connections still open"
        assert time.monotonic() - opened >= 5
        wait_until(lambda: nfds(pid) <= fds0 + 2, 5, "the broker to close their descriptors")
    finally:
        for s in idle:
            s.close()
    assert_serves(b, "after")
    assert not b.events("redirect_failed"), "nameless connections are no events"


def test_tpkt_length_65535_and_stop(up_broker):
    b = up_broker(rdp__handshake_timeout=10)
    s = socket.create_connection(("127.0.0.1", b.rdp_port), timeout=5)
    s.sendall(b"\x03\x00\xff\xff")
    took = wait_closed(s, 5)
    s.close()
    assert took is not None and took < 2, "a TPKT length over 260 is refused at once"
    # the same with a plausible length and a stall: cut at handshake_timeout
    b2 = up_broker(name="b2", rdp__handshake_timeout=2)
    s = socket.create_connection(("127.0.0.1", b2.rdp_port), timeout=5)
    s.sendall(b"\x03\x00\x00\x40\x3b\xe0")
    took = wait_closed(s, 6)
    s.close()
    assert took is not None and 1.5 < took < 4, took
    assert_serves(b)
    assert_serves(b2)


def test_random_bytes(up_broker):
    b = up_broker(rdp__handshake_timeout=3)
    rng = random.Random(8)
    socks = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", b.rdp_port), timeout=5)
        n = rng.choice([1, 3, 4, 7, 19, 64, 259, 260, 261, 1000, 65536])
        data = bytes(rng.getrandbits(8) for _ in range(min(n, 4096))) * max(1, n // 4096)
        if i % 4 == 0:
            data = b"\x03\x00" + data	# a TPKT version byte, random after it
        try:
            s.sendall(data)
        except OSError:
            pass	# already refused
        socks.append(s)
    try:
        left = all_closed(socks, 3 + 4)
        assert not left, f"{len(left)} connections with random bytes still open"
    finally:
        for s in socks:
            s.close()
    assert_serves(b)
    assert not b.events("redirect_failed")


def test_tls_handshake_that_stalls(up_broker):
    """A valid X.224 request, a ClientHello, then nothing: the handshake
    slot is freed at handshake_timeout. Stalling max_handshakes of them holds
    other clients back for at most that long."""
    b = up_broker(rdp__handshake_timeout=3, rdp__max_handshakes=4)
    hello = tls_client_hello()
    threads = nthreads(b.proc.pid)	# the broker's own (the HTTPS pool's too)

    def stall():
        c = rawrdp.Client("127.0.0.1", b.rdp_port, timeout=5)
        assert c.x224("stall") == rawrdp.PROTOCOL_SSL
        c.sock.sendall(hello)
        return c

    one = stall()
    assert_serves(b, "beside")		# three slots left
    took = wait_closed(one.sock, 6)
    one.close()
    assert took is not None and 1.5 < took < 4.5, took
    # every slot stalled: a client waits for a slot (up to handshake_timeout)
    # and is served once the stalled are cut, with a whole handshake left
    stalled = [stall() for _ in range(4)]
    since = time.monotonic()
    # the four hold every slot (each got the broker's answer to its
    # ClientHello and is still open) for a third of handshake_timeout
    wait_until(lambda: handshakes_held(stalled) and time.monotonic() - since >= 1, 5,
               "four stalled handshakes holding the slots for 1 s")
    t = time.monotonic()
    try:
        res, _ = redirect(b, "after-stall", timeout=15)
        waited = time.monotonic() - t
        assert all(wait_closed(c.sock, 1) is not None for c in stalled)
    finally:
        for c in stalled:
            c.close()
    assert res.redirected, res
    assert 1 < waited < 3, waited
    # a client that finds no slot within handshake_timeout is closed
    stalled = [stall() for _ in range(4)]
    try:
        late = rawrdp.Client("127.0.0.1", b.rdp_port, timeout=10)
        late.sock.sendall(rawrdp.x224_request("late"))
        took = wait_closed(late.sock, 6)
        late.close()
        assert took is not None and 2 < took < 4.5, took
    finally:
        for c in stalled:
            c.close()
    assert_serves(b, "after")
    assert nthreads(b.proc.pid) < threads + 4 + 16
    wait_until(lambda: "waited handshake_timeout for a handshake slot" in b.log(), 15,
               "the slot timeout logged")


# ---- agent API ----------------------------------------------------------------

def test_10000_bad_agent_tokens(up_broker):
    """10,000 heartbeats with bad tokens over keep-alive connections: each
    401, at most a log line a second, and a good agent's heartbeats keep
    succeeding during the flood."""
    b = up_broker(health__down_after=30)
    good_body = json.dumps(heartbeat_body("ts1")).encode()
    bad_token = "0" * 64
    n_threads, per_thread = 4, 2500
    codes, errors, good = {}, [], []
    stop = threading.Event()
    log_before = len(b.log().splitlines())

    def flood():
        conn = http.client.HTTPSConnection("127.0.0.1", b.http_port, timeout=10,
                                           context=b.ssl_context())
        try:
            for i in range(per_thread):
                tok = bad_token if i % 2 else f"{i:064x}"
                conn.request("POST", "/api/v1/heartbeat", good_body,
                             {"Authorization": f"Bearer {tok}",
                              "Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                codes[r.status] = codes.get(r.status, 0) + 1
        except Exception as e:	# reported below
            errors.append(repr(e))
        finally:
            conn.close()

    def agent():
        while not stop.is_set():
            t = time.monotonic()
            status, answer = b.heartbeat(b.token, heartbeat_body("ts1"))
            good.append((status, time.monotonic() - t))
            time.sleep(0.2)

    a = threading.Thread(target=agent)
    a.start()
    floods = [threading.Thread(target=flood) for _ in range(n_threads)]
    t0 = time.monotonic()
    for t in floods:
        t.start()
    for t in floods:
        t.join(300)
    flood_s = time.monotonic() - t0
    stop.set()
    a.join(30)
    assert not errors, errors[:3]
    assert codes == {401: n_threads * per_thread}, codes
    assert len(good) >= 3 and all(s == 200 for s, _ in good), good
    worst = max(d for _, d in good)
    assert worst < 2.0, f"a good heartbeat took {worst:.2f} s during the flood"
    lines = b.log().splitlines()[log_before:]
    rejected = [l for l in lines if "rejected" in l]
    assert 1 <= len(rejected) <= flood_s + 5, (len(rejected), flood_s)
    assert any("more rejected heartbeats" in l for l in rejected)
    assert len(lines) < 200, f"{len(lines)} log lines for 10,000 bad tokens"
    status, metrics = b.request("GET", "/metrics")
    assert f"tsbroker_heartbeats_rejected_total {n_threads * per_thread}" in metrics
    assert b.server("ts1")["state"] == "up"
    print(f"\n10000 bad tokens in {flood_s:.1f} s, {len(rejected)} log lines, "
          f"good heartbeats {len(good)}, worst {worst * 1000:.0f} ms")


def raw_https(b, method, path, body=b"", headers=None, chunked=False, expect=False):
    """(status, text) of one request whose body is sent by another thread
    while this one reads the answer, as a careful client does: a broker that
    answers 413 before the body is all sent, then closes, is still heard."""
    raw = socket.create_connection(("127.0.0.1", b.http_port), timeout=30)
    sock = b.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")
    sock.setblocking(True)
    h = {"Host": "127.0.0.1", **(headers or {})}
    if chunked:
        h["Transfer-Encoding"] = "chunked"
        data = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                        for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    else:
        h["Content-Length"] = str(len(body))
        data = body
    if expect:
        h["Expect"] = "100-continue"
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    sock.sendall(head.encode() + b"\r\n")
    sender = None
    if not expect:
        def send():
            try:
                sock.sendall(data)
            except OSError:
                pass	# the broker answered and closed first
        sender = threading.Thread(target=send)
        sender.start()
    try:
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        if resp.status == 100:
            raise AssertionError("100 Continue for a body over the limit")
        return resp.status, resp.read().decode(errors="replace")
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if sender is not None:
            sender.join(30)
        sock.close()


def test_oversized_and_nested_json(up_broker):
    b = up_broker()
    auth = {"Authorization": f"Bearer {b.token}", "Content-Type": "application/json"}
    big = b'{"name": "ts1", "pad": "' + b"x" * (2 << 20) + b'"}'
    assert raw_https(b, "POST", "/api/v1/heartbeat", big, auth, expect=True)[0] == 413
    assert raw_https(b, "POST", "/api/v1/heartbeat", big, auth)[0] == 413
    assert raw_https(b, "POST", "/api/v1/heartbeat", big, auth, chunked=True)[0] == 413
    assert raw_https(b, "POST", "/api/v1/login", big,
                     {"Content-Type": "application/json"})[0] == 413
    deep_array = b"[" * 200000 + b"]" * 200000
    deep_object = b'{"a":' * 100000 + b"1" + b"}" * 100000
    body = heartbeat_body("ts1")
    inner = json.dumps(body)[:-1] + ', "extra": ' + "[" * 50000 + "]" * 50000 + "}"
    for payload in (deep_array, deep_object, inner.encode()):
        assert len(payload) < 1 << 20
        status, text = raw_https(b, "POST", "/api/v1/heartbeat", payload, auth)
        assert status == 400, (status, text[:200])
        assert "error" in json.loads(text)
        status, text = raw_https(b, "POST", "/api/v1/login", payload,
                                 {"Content-Type": "application/json"})
        assert status == 400, (status, text[:200])
    # nesting where a string is expected, and a valid heartbeat after all that
    body["sessions"] = [{"user": [[[[["x"]]]]], "id": "1", "state": "active"}]
    assert b.heartbeat(b.token, body)[0] == 400
    assert b.heartbeat(b.token, heartbeat_body("ts1"))[0] == 200
    assert b.proc.poll() is None
    assert_serves(b)


# ---- leak check -------------------------------------------------------------

def test_leak_1000_redirects(up_broker, monkeypatch):
    """N redirects (TSBROKER_LEAK_REDIRECTS, default 1,000; make leakcheck:
    10,000) by 4 clients at once, after a warm-up of 300: the broker's RSS
    grows by less than 4 MB (10,000 grew about 1 MB here: SQLite's page
    cache and the events table). glibc's mmap threshold is pinned for this
    broker: FreeRDP allocates about 5 MB per handshake, and with the dynamic
    threshold such blocks stay in whichever thread arena served them, a
    step of several MB in RSS at random that is no leak. Under ASan, RSS is
    not checked: LeakSanitizer checks the broker at exit."""
    n = int(os.environ.get("TSBROKER_LEAK_REDIRECTS", "1000"))
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
    b = up_broker()
    pid = b.proc.pid
    errors = []

    def run(count, tag):
        def one(k):
            for i in range(k, count, 4):
                try:
                    res = rawrdp.redirect("127.0.0.1", b.rdp_port, f"{tag}{i % 50}")
                    if not res.redirected:
                        errors.append(res)
                except Exception as e:	# reported below
                    errors.append(repr(e))
        threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)

    run(300, "u")
    rss = [rss_kb(pid)]
    t0 = time.monotonic()
    run(n // 2, "u")
    rss.append(rss_kb(pid))
    run(n - n // 2, "u")
    rss.append(rss_kb(pid))
    took = time.monotonic() - t0
    assert not errors, errors[:3]
    wait_until(lambda: len(b.events("reconnect")) + len(b.events("placement")) >= 300 + n,
               30, "every redirect recorded")
    print(f"\n{n} redirects in {took:.1f} s ({took / n * 1000:.1f} ms each), "
          f"RSS {rss[0]} -> {rss[1]} -> {rss[2]} kB")
    if not SANITIZED:
        assert rss[2] - rss[0] < 4096, rss
