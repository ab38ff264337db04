"""`make ha-demo` (tools/ha-demo.sh) in its check mode (HA_DEMO_CHECK=1):
two brokers on PostgreSQL under Patroni with etcd, three terminal servers;
both status pages show the three servers up and a logon lands through
each broker; then it stops, and nothing it started is left running."""
import os
import re
import socket
import subprocess

import pytest

from farm import BUILD, ROOT, free_port, group_members, needs_tools

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
