"""`make ha-demo` (tools/ha-demo.sh): two brokers on PostgreSQL under
Patroni with etcd, three terminal servers. In its check mode
(HA_DEMO_CHECK=1) both status pages show the three servers up and a logon
lands through each broker, then it stops; interactive, a terminal's Ctrl-C
stops it. Either way nothing it started is left running."""
import os
import re
import signal
import socket
import subprocess

import pytest

from farm import BUILD, ROOT, free_port, group_members, needs_tools, probe, wait_until

SCRIPT = os.path.join(ROOT, "tools", "ha-demo.sh")
HOSTS = ("127.0.0.1", "127.0.0.10")
TARGETS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")

pytestmark = [needs_tools, pytest.mark.skipif(
    os.getuid() != 0 or not all(os.access(p, os.X_OK) for p in (
        "/usr/bin/patroni", "/usr/bin/etcd", "/usr/lib/postgresql/15/bin/postgres")),
    reason="root, patroni, etcd-server and postgresql-15 are needed (tools/deps.sh test)")]


def processes_under(*paths):
    """{pid: command line} of live processes whose command line names a path."""
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in "ZX" and any(p in cmd for p in paths):
            found[int(d)] = cmd
    return found


def test_ha_demo_check_mode_starts_serves_and_stops(tmp_path):
    state = tmp_path / "ha-demo"
    rdp, http = free_port(*HOSTS, *TARGETS), free_port(*HOSTS)
    env = dict(os.environ, HA_DEMO_DIR=str(state), HA_DEMO_CHECK="1", TSBROKER_BUILD=BUILD,
               HA_DEMO_RDP_PORT=str(rdp), HA_DEMO_HTTP_PORT=str(http))
    p = subprocess.Popen(["sh", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
            p.wait(10)
    pg = (state / "pg.path").read_text().strip()
    print(out)
    assert p.returncode == 0, out
    for i, host in enumerate(HOSTS, 1):
        assert re.search(rf"check: https://{re.escape(host)}:{http} shows 3 servers up; check{i} "
                         rf"logged on through {re.escape(host)}: ok host=127\.0\.0\.[234] ", out), out
    assert "ha-demo: check passed" in out and "ha-demo: stopped" in out, out

    # nothing left: not in its group, no postgres/patroni/etcd of its database,
    # its directory under /tmp removed, the ports closed
    assert not group_members(p.pid), group_members(p.pid)
    assert not processes_under(pg, str(state)), processes_under(pg, str(state))
    assert not os.path.exists(pg)
    for host, port in [(h, rdp) for h in HOSTS + TARGETS] + [(h, http) for h in HOSTS]:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=2).close()


def test_ha_demo_ctrl_c_in_a_terminal_stops_everything(tmp_path):
    """Interactive: the banner names both pages; a logon through B lands;
    SIGINT to the whole group (a terminal's Ctrl-C) ends it with 130 and
    nothing it started is left."""
    state = tmp_path / "ha-demo"
    rdp, http = free_port(*HOSTS, *TARGETS), free_port(*HOSTS)
    env = dict(os.environ, HA_DEMO_DIR=str(state), TSBROKER_BUILD=BUILD,
               HA_DEMO_RDP_PORT=str(rdp), HA_DEMO_HTTP_PORT=str(http))
    env.pop("HA_DEMO_CHECK", None)
    out_path = tmp_path / "out"
    with open(out_path, "w") as out:
        p = subprocess.Popen(["sh", SCRIPT], stdout=out, stderr=subprocess.STDOUT, env=env,
                             cwd=ROOT, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_until(lambda: "Press Ctrl-C to stop." in out_path.read_text() or p.poll() is not None,
                   60, "the banner")
        text = out_path.read_text()
        assert p.poll() is None, text
        for host in HOSTS:
            assert f"status page https://{host}:{http}/" in text, text
        assert re.search(r"Admin password \(both pages, one shared store\): \S+", text), text
        assert "kill -9 " in text and "patroni.sh kill-node" in text, text
        res = probe(rdp, "ctrlc", host=HOSTS[1], timeout=10)
        assert res["ok"] and res["host"] in TARGETS, res
        pg = (state / "pg.path").read_text().strip()
        os.killpg(p.pid, signal.SIGINT)
        assert p.wait(60) == 130, out_path.read_text()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert "ha-demo: stopped" in out_path.read_text()
    wait_until(lambda: not processes_under(pg, str(state)), 10, "the demo's processes to end")
    assert not os.path.exists(pg)
