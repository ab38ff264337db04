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

from farm import Agent, Xrdp, needs_xrdp, wait_until

pytestmark = needs_xrdp


@pytest.fixture
def xrdp(tmp_path):
    """xrdp and sesman on free loopback ports, a throwaway user; all undone."""
    x = Xrdp(tmp_path)
    try:
        yield x.start()
    finally:
        x.stop()


def test_xrdp_sessions_reach_the_broker(xrdp, broker, tmp_path):
    user = xrdp.user
    token = broker.add_server("ts1")
    agent = Agent(tmp_path / "agent", broker, token, rdp_port=xrdp.port, sessions="auto")
    agent.start()
    try:
        wait_until(lambda: broker.server("ts1")["state"] == "up", 10, "ts1 up")
        assert "sessions = auto: now reading xrdp sessions" in agent.log()
        assert broker.sessions() == []

        t0 = time.monotonic()
        xrdp.connect()
        rows = wait_until(lambda: [r for r in broker.sessions() if r[2] == "active"], 30,
                          "an active xrdp session")
        assert len(rows) == 1 and rows[0][:3] == (user, "ts1", "active")
        sid = rows[0][3]
        # the session id is the pid of sesman's child, parent of Xvnc
        with open(f"/proc/{sid}/comm") as f:
            assert f.read().strip() == "xrdp-sesman"
        connect_s = time.monotonic() - t0

        # the client goes: the session stays, disconnected
        xrdp.disconnect_client()
        wait_until(lambda: broker.sessions() == [(user, "ts1", "disconnected", sid)], 10,
                   "the session disconnected")

        # it comes back to the same session
        xrdp.connect()
        wait_until(lambda: broker.sessions() == [(user, "ts1", "active", sid)], 30,
                   "the session active again")

        # the session ends when its window manager exits
        wm = xrdp.user_pids("sleep")
        assert wm, "no window manager"
        os.kill(wm[0], signal.SIGTERM)
        wait_until(lambda: broker.sessions() == [], 15, "the session to end")
        log = agent.log()
        assert "sessions unknown" not in log
        print(f"first connect to active in the broker: {connect_s:.1f} s")
    finally:
        agent.stop()
