"""A real xrdp 0.9 (Debian's xrdp + tigervnc-standalone-server) on loopback,
a throwaway user logged in with xfreerdp under Xvfb, and tsagent's xrdp
provider (through sessions = auto) reporting to a real broker: the session
shows up active, turns disconnected when the client goes, active again on
reconnect (same session id), and ends when its window manager exits.

Needs root (it edits /etc/xrdp and adds a user; both are restored) and the
packages that `tools/deps.sh test` installs: xrdp tigervnc-standalone-server
freerdp2-x11 xvfb. About 15 s.
"""
import os
import signal
import time

import pytest

from farm import Agent, wait_until
from xrdpfarm import MISSING, pids_of_uid, spawn, stop_group, xrdp_server

missing = MISSING + [p for p in ["/usr/bin/xfreerdp"] if not os.path.exists(p)]
pytestmark = [
    pytest.mark.skipif(bool(missing), reason="xrdp is not installed (missing "
                       f"{', '.join(missing)}; `sh tools/deps.sh test` installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: edits /etc/xrdp, adds a user"),
]


@pytest.fixture
def xrdp(tmp_path):
    """xrdp and sesman on free loopback ports, a throwaway user; all undone."""
    with xrdp_server(tmp_path) as x:
        yield x


def connect(x):
    stop_group(x["procs"].pop("client", None))
    x["procs"]["client"] = spawn(
        ["xvfb-run", "-a", "xfreerdp", f"/v:127.0.0.1:{x['port']}", f"/u:{x['user']}",
         f"/p:{x['password']}", "/cert:ignore", "/sec:tls", "/size:800x600"],
        x["dir"] / "xfreerdp.log")


def test_xrdp_sessions_reach_the_broker(xrdp, broker, tmp_path):
    user = xrdp["user"]
    token = broker.add_server("ts1")
    agent = Agent(tmp_path / "agent", broker, token, rdp_port=xrdp["port"], sessions="auto")
    agent.start()
    try:
        wait_until(lambda: broker.server("ts1")["state"] == "up", 10, "ts1 up")
        assert "sessions = auto: now reading xrdp sessions" in agent.log()
        assert broker.sessions() == []

        t0 = time.monotonic()
        connect(xrdp)
        rows = wait_until(lambda: [r for r in broker.sessions() if r[2] == "active"], 30,
                          "an active xrdp session")
        assert len(rows) == 1 and rows[0][:3] == (user, "ts1", "active")
        sid = rows[0][3]
        # the session id is the pid of sesman's child, parent of Xvnc
        with open(f"/proc/{sid}/comm") as f:
            assert f.read().strip() == "xrdp-sesman"
        connect_s = time.monotonic() - t0

        # the client goes: the session stays, disconnected
        stop_group(xrdp["procs"].pop("client"))
        wait_until(lambda: broker.sessions() == [(user, "ts1", "disconnected", sid)], 10,
                   "the session disconnected")

        # it comes back to the same session
        connect(xrdp)
        wait_until(lambda: broker.sessions() == [(user, "ts1", "active", sid)], 30,
                   "the session active again")

        # the session ends when its window manager exits
        wm = [p for p in pids_of_uid(xrdp["uid"])
              if open(f"/proc/{p}/comm").read().strip() == "sleep"]
        assert wm, "no window manager"
        os.kill(wm[0], signal.SIGTERM)
        wait_until(lambda: broker.sessions() == [], 15, "the session to end")
        log = agent.log()
        assert "sessions unknown" not in log
        print(f"first connect to active in the broker: {connect_s:.1f} s")
    finally:
        agent.stop()
