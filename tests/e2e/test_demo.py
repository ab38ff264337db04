"""`make demo` (tools/demo.sh): it starts a live farm (a broker, three
rdptargets with their agents) on loopback, prints how to connect and where
the status page is, serves a real RDP client, and SIGINT (Ctrl-C) stops
every process it started.
"""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import urllib.request

import pytest

from farm import BUILD, ROOT, free_port, group_members, needs_tools, probe, wait_until

DEMO = os.path.join(ROOT, "tools", "demo.sh")
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")

pytestmark = needs_tools


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture
def demo(tmp_path):
    state = tmp_path / "demo"
    out_path = tmp_path / "demo.out"
    env = dict(os.environ, DEMO_DIR=str(state), TSBROKER_BUILD=BUILD,
               DEMO_RDP_PORT=str(free_port("127.0.0.1", *ADDRESSES)),
               DEMO_HTTP_PORT=str(free_port()))
    out = open(out_path, "w")
    # its own process group (as a terminal's job), SIGINT not inherited as ignored
    proc = subprocess.Popen(["sh", DEMO], stdout=out, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.out_path, proc.state = out_path, state
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # whatever it left behind
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait(5)
        out.close()


@pytest.mark.parametrize("ctrl_c", ["terminal", "script"])
def test_demo_farm_serves_and_stops_cleanly_on_ctrl_c(demo, ctrl_c):
    """ctrl_c: 'terminal' sends SIGINT to the whole process group (as a
    terminal does); 'script' to demo.sh alone, which must stop the rest."""
    output = lambda: demo.out_path.read_text()
    wait_until(lambda: "Press Ctrl-C to stop." in output() or demo.poll() is not None, 60,
               "the demo's banner")
    text = output()
    assert demo.poll() is None, text
    port = int(re.search(r"^RDP endpoint: 127\.0\.0\.1:(\d+)$", text, re.M).group(1))
    assert re.search(rf"xfreerdp /v:127\.0\.0\.1(:{port})? /u:\w+ /p:\S+ /cert:ignore", text), text
    page = re.search(r"Status page:\s+(https://127\.0\.0\.1:(\d+)/)\s+password: (\S+)", text)
    assert page, text
    url, password = page.group(1), page.group(3)
    token = re.search(r"Bearer (tsba_[0-9a-f]{64})", text).group(1)

    # the farm: a broker, three targets and three agents, all in the demo's group
    members = group_members(demo.pid)
    names = [os.path.basename(c.split()[0]) for c in members.values()]
    for prog, n in (("tsbroker", 1), ("rdptarget", 3), ("tsagent", 3)):
        assert names.count(prog) == n, members

    # a real RDP client goes through the broker to a target, and back there again
    first = probe(port, "newcomer")
    assert first["ok"] and first["redirected"] == "1" and first["host"] in ADDRESSES, first
    assert probe(port, "newcomer")["host"] == first["host"]

    # the status page answers, the printed password logs in, the token reads the API
    ctx = ssl.create_default_context(cafile=str(demo.state / "tsbroker.crt"))
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        assert r.status == 200 and b"<html" in r.read().lower()
    req = urllib.request.Request(url + "api/v1/login", method="POST",
                                 data=json.dumps({"password": password}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        assert r.status == 200 and json.load(r)["user"] == "admin"
    req = urllib.request.Request(url + "api/v1/sessions?user=newcomer",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        sessions = json.load(r)["sessions"]
    assert [s["user"] for s in sessions] == ["newcomer"], sessions

    # Ctrl-C: everything it started is gone, the ports are free again
    members = group_members(demo.pid)
    if ctrl_c == "terminal":
        os.killpg(demo.pid, signal.SIGINT)
    else:
        demo.send_signal(signal.SIGINT)
    assert demo.wait(20) == 130, output()
    assert "demo: stopped" in output(), output()
    wait_until(lambda: not group_members(demo.pid), 5, "the demo's processes to end")
    assert not [p for p in members if alive(p)], members
    for host in ("127.0.0.1",) + ADDRESSES:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=2).close()
