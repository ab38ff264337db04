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
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time

import pytest

from farm import Agent, free_port, stop, wait_until

NEEDED = ["/usr/sbin/xrdp", "/usr/sbin/xrdp-sesman", "/usr/bin/Xvnc", "/usr/bin/xfreerdp",
          "/usr/bin/xvfb-run", "/usr/share/xrdp/socksetup"]
CONFIGS = ["/etc/xrdp/xrdp.ini", "/etc/xrdp/sesman.ini", "/etc/xrdp/startwm.sh"]

missing = [p for p in NEEDED if not os.path.exists(p)]
pytestmark = [
    pytest.mark.skipif(bool(missing), reason="xrdp is not installed (missing "
                       f"{', '.join(missing)}; `sh tools/deps.sh test` installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: edits /etc/xrdp, adds a user"),
]


def edit(path, pattern, repl):
    with open(path) as f:
        text = f.read()
    new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1, f"{path}: no line matches {pattern}"
    with open(path, "w") as f:
        f.write(new)


def spawn(args, log, **kw):
    out = open(log, "ab")
    try:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    finally:
        out.close()


def stop_group(p):
    """Ends a process we started in its own session, and all of its group."""
    stop(p, timeout=5, group=True)


def pids_of_uid(uid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    out.append(int(d))
            except FileNotFoundError:
                pass
    return out


def listening(port):
    with open("/proc/net/tcp") as f4, open("/proc/net/tcp6") as f6:
        text = f4.read() + f6.read()
    return re.search(rf":{port:04X} [0-9A-F:]+ 0A ", text) is not None


@pytest.fixture
def xrdp(tmp_path):
    """xrdp and sesman on free loopback ports, a throwaway user; all undone."""
    saved = {p: open(p, "rb").read() for p in CONFIGS}
    modes = {p: os.stat(p).st_mode for p in CONFIGS}
    sockdir_existed = os.path.isdir("/run/xrdp/sockdir")
    user = "tsbx" + secrets.token_hex(3)
    password = "Pw-" + secrets.token_hex(8)
    procs = {}
    uid = None
    try:
        port, sesman_port = free_port(), free_port()
        edit("/etc/xrdp/xrdp.ini", r"^port=.*$", f"port=tcp://127.0.0.1:{port}")
        edit("/etc/xrdp/xrdp.ini", r"^autorun=.*$", "autorun=Xvnc")
        edit("/etc/xrdp/sesman.ini", r"^ListenPort=.*$", f"ListenPort={sesman_port}")
        with open("/etc/xrdp/startwm.sh", "w") as f:
            f.write("#!/bin/sh\nexec sleep 100000\n")
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True)
        uid = pwd.getpwnam(user).pw_uid
        subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
        subprocess.run(["sh", "/usr/share/xrdp/socksetup"], check=True)
        procs["sesman"] = spawn(["/usr/sbin/xrdp-sesman", "--nodaemon"], tmp_path / "sesman.log")
        # Debian's user xrdp is not in ssl-cert: without it xrdp cannot read
        # its key and falls back to RDP security, which xfreerdp refuses
        procs["xrdp"] = spawn(["setpriv", "--reuid=xrdp", "--regid=xrdp",
                               "--groups=xrdp,ssl-cert", "/usr/sbin/xrdp", "--nodaemon"],
                              tmp_path / "xrdp.log")
        wait_until(lambda: listening(port) and listening(sesman_port), 10, "xrdp to listen")
        yield {"port": port, "user": user, "password": password, "uid": uid, "procs": procs,
               "dir": tmp_path}
    finally:
        stop_group(procs.pop("client", None))
        # end the user's session (its window manager and X server) first,
        # so that sesman cleans up after it
        if uid is not None:
            for pid in pids_of_uid(uid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                wait_until(lambda: not pids_of_uid(uid), 5, "the user's processes to end")
            finally:
                for pid in pids_of_uid(uid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for name in ("xrdp", "sesman"):
            stop_group(procs.pop(name, None))
        if uid is not None:
            wait_until(lambda: not pids_of_uid(uid), 5, "the user's processes to be gone")
            subprocess.run(["userdel", "-r", user], capture_output=True)
        for p, data in saved.items():
            with open(p, "wb") as f:
                f.write(data)
            os.chmod(p, modes[p])
        if not sockdir_existed:
            shutil.rmtree("/run/xrdp/sockdir", ignore_errors=True)


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
