"""End-to-end tests of the lean redirect engine ([rdp] engine = lean) with
clients beyond FreeRDP and names beyond ASCII: Debian's rdesktop 1.9
(which FreeRDP's server refuses at its Erect Domain Request) redirected by
the broker to a real xrdp at 127.0.0.2 in address mode, landing checked
through the agent; users `Jürgen` and `DOMAIN\\Müller` arrive at the target
with their names; a known password sent in Client Info is in no log, no
output and no core dump of the broker; a client whose cluster data says it
cannot follow a redirect is refused with a reason. (The other suites run on
this engine too with TSB_E2E_RDP_ENGINE=lean.)
"""
import os
import shutil
import subprocess
import urllib.parse

import pytest

import rawrdp
from farm import (Agent, XFreeRDP, children, free_port, needs_tools, needs_xfreerdp,
                  start_targets, stop, wait_until)
from xrdpfarm import MISSING, xrdp_server

pytestmark = needs_tools

LEAN = {"rdp__engine": "lean"}


@pytest.fixture
def lean_farm(broker_factory, tmp_path, stopped_at_teardown):
    """A lean-engine broker on 127.0.0.1:P and ts1 (rdptarget) on 127.0.0.2:P."""
    port = free_port("127.0.0.1", "127.0.0.2")
    broker = broker_factory(rdp_port=port, **LEAN)
    targets = start_targets(broker, tmp_path, {"ts1": ("127.0.0.2", port)})
    stopped_at_teardown.extend(targets.values())
    return broker, targets["ts1"]


def arrived(target, user):
    """The target's CONNECT records for user (names unescaped)."""
    out = []
    for c in target.connects():
        c = dict(c, user=urllib.parse.unquote(c["user"]),
                 domain=urllib.parse.unquote(c.get("domain", "")))
        if c["user"] == user:
            out.append(c)
    return out


@needs_xfreerdp
@pytest.mark.parametrize("user,domain", [("Jürgen", None), ("Müller", "DOMAIN")])
def test_non_ascii_names_reach_the_target(lean_farm, tmp_path, user, domain):
    broker, ts1 = lean_farm
    x = XFreeRDP(broker.rdp_port, user, tmp_path / "xfreerdp.log", domain=domain)
    try:
        got = wait_until(lambda: arrived(ts1, user), 30, f"{user} at ts1")[0]
        assert got["domain"] == (domain or "")
        assert "lean engine" in broker.log()
    finally:
        x.stop()


def redirect_with_password(port, user, password, cluster_flags=None):
    with rawrdp.Client("127.0.0.1", port, timeout=10) as c:
        assert c.x224(user) == rawrdp.PROTOCOL_SSL
        c.start_tls()
        c.mcs(cluster_flags)
        c.send_info(user, "CORP", password)
        return c.read_outcome()


def core_of(pid, path):
    """A core dump of the running process (gdb's gcore), its bytes."""
    subprocess.run(["gcore", "-o", str(path), str(pid)], capture_output=True, timeout=120,
                   check=True)
    with open(f"{path}.{pid}", "rb") as f:
        return f.read()


def test_password_in_no_log_and_no_core(lean_farm, tmp_path):
    broker, _ = lean_farm
    password = "Sw0rdf1sh-" + os.urandom(6).hex()
    for i in range(3):
        res = redirect_with_password(broker.rdp_port, f"pw{i}", password)
        assert res.redirected and res.address == "127.0.0.2", res
    wait_until(lambda: "pw2 from 127.0.0.1 -> ts1" in broker.log(), 10, "the redirect logged")
    forms = [password.encode(), password.encode("utf-16-le")]
    for text in (broker.log(), broker.stdout()):
        assert password not in text
    if shutil.which("gcore") is None:
        pytest.skip("gdb's gcore is needed for the core dump check (gdb: tools/deps.sh test)")
    core = core_of(broker.proc.pid, tmp_path / "core")
    assert len(core) > 1 << 20
    for form in forms:
        assert form not in core, "the password is in the broker's memory"
    # the check can fail: the user names sent beside it are there
    assert "pw2".encode("utf-16-le") in core or b"pw2" in core
    # the front processes parsed Client Info: the password wiped there too
    for pid in children(broker.proc.pid):
        core = core_of(pid, tmp_path / "front")
        for form in forms:
            assert form not in core, "the password is in a front process's memory"


def test_client_that_cannot_follow_a_redirect_is_refused(lean_farm):
    broker, _ = lean_farm
    res = redirect_with_password(broker.rdp_port, "old", "x", cluster_flags=0)
    assert not res.redirected and res.errinfo == 7, res	# ERRINFO_SERVER_DENIED_CONNECTION
    wait_until(lambda: "cannot follow a redirect" in broker.log(), 10, "the refusal logged")
    # with REDIRECTION_SUPPORTED (and version 4) it is redirected
    res = redirect_with_password(broker.rdp_port, "new", "x", cluster_flags=0x0d)
    assert res.redirected, res


RDESKTOP = "/usr/bin/rdesktop"
needs_rdesktop_xrdp = pytest.mark.skipif(
    not os.access(RDESKTOP, os.X_OK) or bool(MISSING) or os.geteuid() != 0,
    reason="rdesktop (rdesktop), xrdp (xrdp, tigervnc-standalone-server) and root "
           "(it edits /etc/xrdp) are needed: tools/deps.sh test")


@needs_rdesktop_xrdp
def test_rdesktop_redirected_to_xrdp(broker_factory, tmp_path):
    """rdesktop 1.9 through the broker (address mode) lands in an xrdp
    session at 127.0.0.2 on the broker's port; the agent reports it."""
    port = free_port("127.0.0.1", "127.0.0.2")
    broker = broker_factory(rdp_port=port, **LEAN)
    with xrdp_server(tmp_path, address="127.0.0.2", port=port) as x:
        token = broker.add_server("ts1", "127.0.0.2", port=port)
        agent = Agent(tmp_path / "agent", broker, token, rdp_address="127.0.0.2",
                      rdp_port=port, sessions="auto").start()
        client = None
        try:
            wait_until(lambda: broker.server("ts1")["state"] == "up", 15, "ts1 up")
            log = open(tmp_path / "rdesktop.log", "wb")
            # no /cert:ignore: it asks about each certificate (the broker's,
            # then xrdp's) on stdin
            client = subprocess.Popen(
                ["xvfb-run", "-a", RDESKTOP, "-u", x["user"], "-p", x["password"],
                 "-g", "800x600", f"127.0.0.1:{port}"],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=dict(os.environ, HOME=str(tmp_path)))
            client.stdin.write(b"yes\nyes\nyes\n")
            client.stdin.flush()
            wait_until(lambda: [r for r in broker.sessions() if r[2] == "active"], 60,
                       "rdesktop's session active at ts1 (the agent's report)")
            rows = broker.sessions()
            assert rows[0][:3] == (x["user"], "ts1", "active"), rows
            out = open(tmp_path / "rdesktop.log", errors="replace").read()
            assert f"Redirected to {x['user']}@127.0.0.2" in out, out
            assert f"{x['user']} from 127.0.0.1 -> ts1" in broker.log()
        finally:
            if client is not None:
                stop(client, group=True)
            agent.stop()
