"""End-to-end tests of the RDP endpoint: real RDP clients (build/rdpprobe on
libfreerdp-client2, and Debian's stock xfreerdp under Xvfb) connect to
tsbroker on 127.0.0.1:P and are redirected to terminal servers played by
build/rdptarget on 127.0.0.2:P and 127.0.0.3:P (address mode: the client
keeps the port), each with a real build/tsagent reading the target's
sessions file (file: provider). Every wait polls a condition.
"""
import os
import re
import shutil
import signal
import subprocess
import threading
import types

import pytest

from conftest import BUILD, TSAGENT, free_port, wait_until

RDPTARGET = os.path.join(BUILD, "rdptarget")
RDPPROBE = os.path.join(BUILD, "rdpprobe")
ADDRESSES = {"ts1": "127.0.0.2", "ts2": "127.0.0.3"}

pytestmark = pytest.mark.skipif(
    not all(os.access(p, os.X_OK) for p in (RDPTARGET, RDPPROBE, TSAGENT)),
    reason="build/rdptarget, build/rdpprobe and build/tsagent are needed (make)")


def make_cert(directory, cn):
    cert, key = os.path.join(directory, f"{cn}.crt"), os.path.join(directory, f"{cn}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={cn}", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Target:
    """One terminal server: an rdptarget and the tsagent that reports it."""

    def __init__(self, workdir, name, address, port, broker, token):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.name, self.address, self.port = name, address, port
        self.broker, self.token = broker, token
        self.sessions = os.path.join(self.dir, "sessions.json")
        self.out_path = os.path.join(self.dir, "rdptarget.out")
        self.cert, self.key = make_cert(self.dir, address)
        self.target = self.agent = None

    def start_target(self):
        self.target_out = open(self.out_path, "a")
        self.target_err = open(os.path.join(self.dir, "rdptarget.log"), "a")
        self.target = subprocess.Popen(
            [RDPTARGET, "--listen", f"{self.address}:{self.port}", "--cert", self.cert,
             "--key", self.key, "--sessions", self.sessions, "--name", self.name],
            stdout=self.target_out, stderr=self.target_err)
        wait_until(lambda: "LISTENING" in self.output() or self.target.poll() is not None,
                   10, f"{self.name}'s rdptarget to listen")
        assert self.target.poll() is None, f"rdptarget {self.name} exited"

    def start_agent(self):
        conf = os.path.join(self.dir, "agent.conf")
        keys = {"name": self.name, "broker": f"https://127.0.0.1:{self.broker.http_port}",
                "token": self.token, "ca": self.broker.cert, "rdp_address": self.address,
                "rdp_port": self.port, "sessions": f"file:{self.sessions}", "interval": 1,
                "retry_max": 2, "connect_timeout": 2, "timeout": 5}
        with open(conf, "w") as f:
            f.write("[agent]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
        os.chmod(conf, 0o600)
        self.agent_err = open(os.path.join(self.dir, "agent.log"), "a")
        self.agent = subprocess.Popen([TSAGENT, "-f", conf], stdout=subprocess.DEVNULL,
                                      stderr=self.agent_err)

    def stop_agent(self):
        stop(self.agent)
        self.agent = None

    def stop(self):
        stop(self.agent)
        stop(self.target)
        for name in ("target_out", "target_err", "agent_err"):
            if hasattr(self, name):
                getattr(self, name).close()

    def output(self):
        with open(self.out_path) as f:
            return f.read()

    def connects(self, user=None):
        """[(user, domain, session)] of the CONNECT lines, optionally for one user."""
        found = re.findall(r"^CONNECT user=(\S*) domain=(\S*) .* session=(\S+)$",
                           self.output(), re.M)
        return [c for c in found if user is None or c[0] == user]


def stop(proc, timeout=10):
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def stop_group(proc, timeout=10):
    """Stops a process started with start_new_session=True (xvfb-run and its
    children): SIGTERM to its group, SIGKILL after timeout."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def probe(port, user, host="127.0.0.1", hold=0, timeout=20, extra=()):
    """Runs rdpprobe; returns its RESULT line parsed into a dict
    (ok: bool, host, port, redirected, reason)."""
    cmd = [RDPPROBE, "--host", host, "--port", str(port), "--user", user, "--password", "pw",
           "--timeout", str(timeout), *extra]
    if hold:
        cmd += ["--hold", str(hold)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + hold + 30)
    return parse_result(p.stdout, p.returncode)


def parse_result(stdout, returncode):
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert len(lines) == 1, f"rdpprobe printed {stdout!r}"
    words = lines[0].split()
    res = dict(w.split("=", 1) for w in words[2:])
    res["ok"] = words[1] == "ok"
    assert res["ok"] == (returncode == 0), (stdout, returncode)
    return res


def assert_redirected(res, server):
    assert res["ok"], f"expected a redirect to {server}, got {res}"
    assert res["redirected"] == "1" and res["host"] == ADDRESSES[server], res


@pytest.fixture
def farm_factory(broker_factory, tmp_path):
    """farm(max_sessions=None, **broker_conf): a broker and ts1/ts2, both up."""
    made = []

    def make(max_sessions=None, **conf):
        port = free_port("127.0.0.1", *ADDRESSES.values())
        broker = broker_factory(rdp_port=port, **conf)
        targets = {}
        for name, address in ADDRESSES.items():
            opts = {"port": port}
            if max_sessions is not None:
                opts["max_sessions"] = max_sessions
            token = broker.add_server(name, address, **opts)
            t = Target(tmp_path / name, name, address, port, broker, token)
            made.append(t)
            t.start_target()
            t.start_agent()
            targets[name] = t
        for name in targets:
            wait_until(lambda: (broker.server(name) or {}).get("state") == "up", 15,
                       f"{name} up")
        return types.SimpleNamespace(broker=broker, port=port, ts=targets)

    yield make
    for t in made:
        t.stop()


@pytest.fixture
def farm(farm_factory):
    return farm_factory()


def user_server(broker, user, state=None):
    """The server the broker has user's session on (None if none)."""
    rows = [r for r in broker.sessions(state=state) if r[0] == user]
    return rows[0][1] if rows else None


def hold_direct(farm, server, users, seconds=120):
    """Keeps users connected straight to a target (not via the broker) and
    waits until the broker sees them active there. Returns the processes."""
    procs = [subprocess.Popen([RDPPROBE, "--host", ADDRESSES[server], "--port",
                               str(farm.port), "--user", u, "--hold", str(seconds)],
                              stdout=subprocess.PIPE, text=True) for u in users]
    wait_until(lambda: all(user_server(farm.broker, u, "active") == server for u in users),
               20, f"{users} active on {server}")
    return procs


def test_new_user_reconnect_and_second_user(farm):
    b = farm.broker
    first = probe(farm.port, "alice")
    assert first["ok"] and first["redirected"] == "1", first
    a_srv = next(n for n, a in ADDRESSES.items() if a == first["host"])
    other = "ts2" if a_srv == "ts1" else "ts1"
    # the target saw alice (user from the redirect PDU, the cookie kept)
    wait_until(lambda: farm.ts[a_srv].connects("alice"), 5, "alice at the target")
    assert user_server(b, "alice") == a_srv
    # alice again: back to the same server, even though it is now the busier one
    assert_redirected(probe(farm.port, "alice"), a_srv)
    assert len(farm.ts[a_srv].connects("alice")) == 2
    assert len(set(c[2] for c in farm.ts[a_srv].connects("alice"))) == 1, "one session id"
    # a second user goes to the other server
    assert_redirected(probe(farm.port, "bob"), other)
    wait_until(lambda: user_server(b, "bob") == other, 10, "bob's session on the other server")
    kinds = [(e[0], e[1], e[2]) for e in b.events() if e[2] in ("alice", "bob")]
    assert ("reconnect", a_srv, "alice") in kinds
    assert not farm.ts[other].connects("alice") and not farm.ts[a_srv].connects("bob")


def test_new_user_goes_to_least_loaded(farm):
    holders = hold_direct(farm, "ts1", ["u1", "u2"])
    try:
        assert_redirected(probe(farm.port, "carol"), "ts2")
        # carol's new session is on ts2 now; ts1 still has two
        wait_until(lambda: user_server(farm.broker, "carol") == "ts2", 10, "carol on ts2")
        assert_redirected(probe(farm.port, "dave"), "ts2")
    finally:
        for p in holders:
            stop(p)


def test_draining_keeps_reconnects_but_no_new_user(farm):
    b = farm.broker
    # alice gets a session on ts1 by connecting there directly
    holders = hold_direct(farm, "ts1", ["alice"], seconds=1)
    for p in holders:
        p.wait(30)
    wait_until(lambda: user_server(b, "alice", "disconnected") == "ts1", 10,
               "alice disconnected on ts1")
    # make ts2 the busier server, then drain ts1
    holders = hold_direct(farm, "ts2", ["x1", "x2"])
    try:
        b.cli("server", "drain", "ts1")
        assert b.server("ts1")["admin_state"] == "draining"
        assert_redirected(probe(farm.port, "alice"), "ts1")        # reconnect wins
        assert_redirected(probe(farm.port, "newbie"), "ts2")       # no new user on ts1
        b.cli("server", "enable", "ts1")
        assert_redirected(probe(farm.port, "newbie2"), "ts1")      # least loaded again
    finally:
        for p in holders:
            stop(p)


def test_down_server_users_go_to_survivor(farm):
    b = farm.broker
    holders = hold_direct(farm, "ts1", ["erin"], seconds=1)
    for p in holders:
        p.wait(30)
    wait_until(lambda: user_server(b, "erin", "disconnected") == "ts1", 10, "erin on ts1")
    farm.ts["ts1"].stop_agent()          # no more heartbeats: ts1 goes down
    wait_until(lambda: b.server("ts1")["state"] == "down", 15, "ts1 down")
    assert_redirected(probe(farm.port, "erin"), "ts2")
    assert farm.ts["ts2"].connects("erin")


def test_no_capacity_is_refused_cleanly(farm_factory):
    farm = farm_factory(max_sessions=1)
    b = farm.broker
    a, c = probe(farm.port, "u1"), probe(farm.port, "u2")
    assert a["ok"] and c["ok"] and {a["host"], c["host"]} == set(ADDRESSES.values())
    refused = probe(farm.port, "u3")
    assert not refused["ok"]
    # a clean refusal: the client got a Set Error Info PDU, not a dropped socket
    assert refused["reason"].startswith("ERRINFO_"), refused
    refusals = [e for e in b.events("refusal") if e[2] == "u3"]
    assert len(refusals) == 1 and refusals[0][4], refusals   # logged once, with a reason
    assert user_server(b, "u3") is None
    assert not any(t.connects("u3") for t in farm.ts.values())
    # the broker keeps serving: a user with a session still gets in
    assert probe(farm.port, "u1")["ok"]


def test_100_concurrent_users_spread_evenly(farm_factory):
    farm = farm_factory(rdp__handshake_timeout=30)
    b = farm.broker
    users = [f"storm{i:03d}" for i in range(100)]
    results = {}

    def run(u):
        results[u] = probe(farm.port, u, timeout=60)

    threads = [threading.Thread(target=run, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    failed = {u: r for u, r in results.items() if not r["ok"]}
    assert len(results) == 100 and not failed, failed
    per_target = {n: len([c for c in t.connects() if c[0].startswith("storm")])
                  for n, t in farm.ts.items()}
    assert sum(per_target.values()) == 100
    assert abs(per_target["ts1"] - per_target["ts2"]) <= 1, per_target
    # every client went where the broker recorded it, and all are in the database
    for u, r in results.items():
        server = next(n for n, a in ADDRESSES.items() if a == r["host"])
        assert farm.ts[server].connects(u), u
    wait_until(lambda: sorted(r[0] for r in b.sessions() if r[0].startswith("storm")) == users,
               20, "100 sessions in the database")
    counts = {}
    for user, server, _, _ in b.sessions():
        if user.startswith("storm"):
            counts[server] = counts.get(server, 0) + 1
    assert abs(counts.get("ts1", 0) - counts.get("ts2", 0)) <= 1, counts


@pytest.mark.skipif(not (shutil.which("xfreerdp") and shutil.which("xvfb-run")),
                    reason="xfreerdp (freerdp2-x11) and xvfb-run (xvfb) are needed")
def test_stock_xfreerdp_reaches_a_session(farm, tmp_path):
    b = farm.broker
    log = open(tmp_path / "xfreerdp.log", "w")
    # the stock client with its defaults (offers TLS and NLA), certificates ignored
    proc = subprocess.Popen(["xvfb-run", "-a", "xfreerdp", f"/v:127.0.0.1:{farm.port}",
                             "/u:CORP\\frank", "/p:pw", "/cert:ignore"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found = wait_until(lambda: [(n, c) for n, t in farm.ts.items()
                                    for c in t.connects("frank")], 30,
                           "xfreerdp's session on a target")
        server, (user, domain, _) = found[0]
        assert domain == "CORP"
        # the session is active at the target and the broker sees it there
        wait_until(lambda: user_server(b, "frank", "active") == server, 10,
                   "frank active in the broker's database")
        assert proc.poll() is None, "xfreerdp exited while connected"
    finally:
        stop_group(proc)
        log.close()
