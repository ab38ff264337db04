"""End-to-end tests of tsagent: real agents reporting over HTTPS to a real
tsbroker on loopback, the broker's view read from its database.

TSAGENT_E2E_OUTAGE (seconds, default 8) sets how long the broker stays down
in test_broker_outage; the design's figure is 30 s.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import types

import pytest

from farm import TSAGENT, Agent, wait_until

OUTAGE = float(os.environ.get("TSAGENT_E2E_OUTAGE", "8"))


class RdpPort:
    """A listening socket standing for the terminal server's RDP port; it
    accepts and closes, so the agent's checks never fill its backlog."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def rdp_port():
    listener = RdpPort()
    yield listener.port
    listener.close()


@pytest.fixture
def agents(tmp_path):
    made = []

    def make(*args, start=True, **kw):
        a = Agent(tmp_path / "agent", *args, **kw)
        made.append(a)
        return a.start() if start else a

    yield make
    for a in made:
        a.stop()
        assert a.token not in a.log(), "the token was logged"


def write_sessions(path, sessions):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump([{"user": u, "id": f"id-{u}", "state": s} for u, s in sessions], f)
    os.rename(tmp, path)


def proc_ncpu_memtotal():
    with open("/proc/stat") as f:
        ncpu = sum(1 for line in f if line.startswith("cpu") and line[3].isdigit())
    with open("/proc/meminfo") as f:
        mem = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return ncpu, mem


def test_config_check(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    a = Agent(tmp_path, types.SimpleNamespace(http_port=1, cert=str(ca)), "x" * 64)
    p = subprocess.run([TSAGENT, "-f", a.conf, "-t"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cases = [
        ("[agent]\nbroker = https://127.0.0.1:1\ntoken = t\ninterval = 0\n",
         ":4: 'interval' expects an integer from 1 to 3600"),
        ("[agent]\nbroker = http://127.0.0.1:1\ntoken = t\n",
         ":2: 'broker' expects an https://HOST[:PORT] URL"),
        ("[agent]\n# no token\nbroker = https://b:1\n\nsessions = nope\n",
         ": 'token' is required"),
        ("[agent]\nbroker = https://b:1\ntoken = t\n\nsessions = nope\n",
         ":5: 'sessions' expects auto, xrdp, utmp, logind, file:PATH or command:CMD"),
        ("[agent]\nbroker = https://b:1\ntoken = t\nca = /no/such.pem\n",
         ":4: 'ca': cannot read /no/such.pem"),
        ("[agent]\nbroker = https://b:1\ncolour = blue\n", ":3: unknown key 'colour' in [agent]"),
        ("[agnet]\nname = x\n", ":2: unknown section [agnet]"),
    ]
    for text, message in cases:
        path = tmp_path / "bad.conf"
        path.write_text(text)
        p = subprocess.run([TSAGENT, "-f", str(path), "-t"], capture_output=True, text=True)
        assert p.returncode == 1, text
        assert f"{path}{message}" in p.stderr, p.stderr
    p = subprocess.run([TSAGENT, "-f", str(tmp_path / "none.conf")], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "none.conf: No such file" in p.stderr


def test_once(tmp_path, broker, rdp_port):
    token = broker.add_server("ts1")
    sessions = tmp_path / "sessions.json"
    write_sessions(sessions, [("alice", "active")])
    a = Agent(tmp_path, broker, token, rdp_port=rdp_port, sessions=f"file:{sessions}")
    p = a.once()
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"interval": 1, "admin_state": "enabled"}
    assert broker.server("ts1")["state"] == "up"
    assert broker.sessions() == [("alice", "ts1", "active", "id-alice")]
    assert token not in p.stderr + p.stdout
    # exits 1 when the broker is not there
    broker.stop()
    p = a.once()
    assert p.returncode == 1 and "heartbeat failed (unreachable)" in p.stderr


def test_server_up_with_load_down_on_kill_and_back(broker, agents, rdp_port, tmp_path):
    token = broker.add_server("ts1")
    sessions = tmp_path / "sessions.json"
    write_sessions(sessions, [("alice", "active"), ("bob", "disconnected")])
    a = agents(broker, token, rdp_port=rdp_port, sessions=f"file:{sessions}")
    wait_until(lambda: broker.server("ts1")["state"] == "up", 10, "ts1 up")
    s = broker.server("ts1")
    ncpu, mem_total = proc_ncpu_memtotal()
    assert s["ncpu"] == ncpu and s["mem_total_kb"] == mem_total
    assert 0 < s["mem_available_kb"] <= mem_total
    assert 0 <= s["cpu_percent"] <= 100 and s["load1"] >= 0
    wait_until(lambda: len(broker.sessions()) == 2, 5, "the sessions")
    assert broker.sessions() == [("alice", "ts1", "active", "id-alice"),
                                 ("bob", "ts1", "disconnected", "id-bob")]
    log = a.log()
    assert "broker reachable: heartbeat accepted" in log
    assert "broker says: interval 1 s, enabled" in log
    assert f"RDP port 127.0.0.1:{rdp_port} is accepting" in log

    # SIGKILL: no more heartbeats, down after down_after (3 s), not before
    last = broker.server("ts1")["last_heartbeat"]
    a.proc.kill()
    a.proc.wait()
    killed = time.monotonic()
    wait_until(lambda: broker.server("ts1")["state"] == "down", 10, "ts1 down")
    assert time.monotonic() - killed >= 1.5
    assert broker.server("ts1")["last_heartbeat"] == last
    assert {r[2] for r in broker.sessions()} == {"lost"}

    # a new agent brings it and its sessions back
    a.start()
    wait_until(lambda: broker.server("ts1")["state"] == "up", 10, "ts1 up again")
    wait_until(lambda: {r[2] for r in broker.sessions()} == {"active", "disconnected"}, 5,
               "the sessions back")


def test_sessions_file_changes(broker, agents, rdp_port, tmp_path):
    token = broker.add_server("ts1")
    sessions = tmp_path / "sessions.json"
    write_sessions(sessions, [("alice", "active")])
    agents(broker, token, rdp_port=rdp_port, sessions=f"file:{sessions}")
    wait_until(lambda: broker.sessions() == [("alice", "ts1", "active", "id-alice")], 10,
               "alice active")
    write_sessions(sessions, [("alice", "disconnected"), ("carol", "active")])
    wait_until(lambda: broker.sessions() == [("alice", "ts1", "disconnected", "id-alice"),
                                             ("carol", "ts1", "active", "id-carol")], 5,
               "alice disconnected, carol active")
    write_sessions(sessions, [])
    wait_until(lambda: broker.sessions() == [], 5, "no sessions")


def test_failing_provider_keeps_sessions(broker, agents, rdp_port, tmp_path):
    token = broker.add_server("ts1")
    sessions = tmp_path / "sessions.json"
    fail = tmp_path / "fail"
    script = tmp_path / "provider.sh"
    script.write_text(f"#!/bin/sh\nif [ -e {fail} ]; then echo 'directory down' >&2; exit 1; fi\n"
                      f"exec cat {sessions}\n")
    script.chmod(0o755)
    write_sessions(sessions, [("alice", "active"), ("bob", "active")])
    a = agents(broker, token, rdp_port=rdp_port, sessions=f"command:{script}")
    want = [("alice", "ts1", "active", "id-alice"), ("bob", "ts1", "active", "id-bob")]
    wait_until(lambda: broker.sessions() == want, 10, "alice and bob")

    fail.touch()
    wait_until(lambda: "sessions unknown (command provider): command exited with status 1: "
               "directory down" in a.log(), 5, "the provider failure logged")
    # heartbeats go on, the broker keeps the sessions it had
    beat = broker.server("ts1")["last_heartbeat"]
    wait_until(lambda: broker.server("ts1")["last_heartbeat"] > beat, 5, "a heartbeat")
    beat = broker.server("ts1")["last_heartbeat"]
    wait_until(lambda: broker.server("ts1")["last_heartbeat"] > beat, 5, "another heartbeat")
    assert broker.server("ts1")["state"] == "up"
    assert broker.sessions() == want
    assert a.log().count("sessions unknown") == 1

    fail.unlink()
    write_sessions(sessions, [("bob", "disconnected")])
    wait_until(lambda: broker.sessions() == [("bob", "ts1", "disconnected", "id-bob")], 5,
               "the provider back")
    assert "sessions readable (command provider): 1" in a.log()


def test_broker_outage(broker, agents, rdp_port, tmp_path):
    token = broker.add_server("ts1")
    sessions = tmp_path / "sessions.json"
    write_sessions(sessions, [("alice", "active")])
    a = agents(broker, token, rdp_port=rdp_port, sessions=f"file:{sessions}")
    wait_until(lambda: broker.server("ts1")["state"] == "up", 10, "ts1 up")
    broker.stop()
    down_since = time.monotonic()
    wait_until(lambda: "broker unreachable" in a.log(), 5, "the agent to notice")
    # the outage itself lasts OUTAGE seconds; the agent keeps retrying
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_since)))
    write_sessions(sessions, [("alice", "disconnected")])
    broker.start()
    last = broker.server("ts1")["last_heartbeat"]
    # backoff is capped at retry_max (2 s)
    wait_until(lambda: broker.server("ts1")["last_heartbeat"] != last, 10,
               "the agent to reconnect by itself")
    wait_until(lambda: broker.sessions() == [("alice", "ts1", "disconnected", "id-alice")], 5,
               "the sessions updated")
    log = a.log()
    # one line per change of state, not one per failed beat
    assert log.count("broker unreachable") == 1, log
    assert log.count("broker reachable again after") == 1, log
    assert a.proc.poll() is None


def test_wrong_token(broker, agents, rdp_port):
    broker.add_server("ts1")
    a = agents(broker, "f" * 64, rdp_port=rdp_port, sessions="utmp", start=False)
    p = a.once()
    assert p.returncode == 1
    assert "token rejected" in p.stderr and "f" * 64 not in p.stderr
    a.start()
    wait_until(lambda: "heartbeat from 127.0.0.1 rejected" in broker.log(), 10,
               "the broker to reject it")
    # logged once, however often it is retried (-v logs each beat)
    wait_until(lambda: a.log().count("agent_snapshot: load") >= 3, 10, "more attempts")
    assert a.log().count("token rejected") == 1
    assert broker.server("ts1")["state"] == "unknown"


def test_rdp_port_closed_takes_server_down(broker, agents, tmp_path):
    token = broker.add_server("ts1")
    listener = RdpPort()
    port = listener.port
    a = agents(broker, token, rdp_port=port, sessions="utmp")
    wait_until(lambda: broker.server("ts1")["state"] == "up", 10, "ts1 up")
    listener.close()
    wait_until(lambda: broker.server("ts1")["state"] == "down", 10, "ts1 down")
    assert f"RDP port 127.0.0.1:{port} is not accepting" in a.log()


def test_drain_and_signals(broker, agents, rdp_port):
    token = broker.add_server("ts1")
    a = agents(broker, token, rdp_port=rdp_port, sessions="utmp")
    wait_until(lambda: broker.server("ts1")["state"] == "up", 10, "ts1 up")
    broker.cli("server", "drain", "ts1")
    wait_until(lambda: "broker says: interval 1 s, draining" in a.log(), 5, "drain noticed")
    t0 = time.monotonic()
    assert a.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 2
    assert "stopping" in a.log()
    # SIGINT too, also while it backs off from an unreachable broker
    broker.stop()
    a.start()
    wait_until(lambda: "broker unreachable" in a.log(), 10, "unreachable")
    assert a.stop(signal.SIGINT) == 0
