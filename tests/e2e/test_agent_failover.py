"""The agent's broker list (issue 13, item 6): two real brokers on their own
SQLite files, the same server (same token) enrolled in both, sharing one
certificate as an HA pair does. The agent moves on when its broker dies,
stays where it is when the first comes back, and does not flap while every
broker answers 503 (their databases on a full tmpfs, as test_faults does).
"""
import hashlib
import os
import sqlite3
import subprocess
import time

import pytest

from farm import TSAGENT, Agent, heartbeat_body, wait_until


def enrol_same(b1, b2, name="ts1", port=3389):
    """Enrols name in both brokers with one token (the CLI makes a new one
    each time, so the second broker's hash is set to the first token's)."""
    token = b1.add_server(name, address="127.0.0.1", port=port)
    b2.add_server(name, address="127.0.0.1", port=port)
    db = sqlite3.connect(b2.db, timeout=10)
    try:
        db.execute("UPDATE servers SET token_hash = ? WHERE name = ?",
                   (hashlib.sha256(token.encode()).hexdigest(), name))
        db.commit()
    finally:
        db.close()
    return token


def pair(broker_factory, db_dir=None):
    """Two brokers sharing b1's certificate; with db_dir, both databases there."""
    conf = {} if db_dir is None else {"state__path": os.path.join(db_dir, "b1.db")}
    b1 = broker_factory("b1", **conf)
    if db_dir is not None:
        b1.db = conf["state__path"]
        conf = {"state__path": os.path.join(db_dir, "b2.db")}
    b2 = broker_factory("b2", rdp__certificate=b1.cert, rdp__private_key=b1.key, **conf)
    b2.cert = b1.cert
    if db_dir is not None:
        b2.db = conf["state__path"]
    return b1, b2


def url(b):
    return f"https://127.0.0.1:{b.http_port}"


def beats(b, name="ts1"):
    s = b.server(name)
    return (s["last_heartbeat"] or None) if s else None


def reporting_lines(agent):
    return [l for l in agent.log().splitlines() if "reporting to " in l]


@pytest.fixture
def rdp_port():
    """A listening socket standing in for the server's RDP port."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def agent_on(tmp_path, stopped_at_teardown):
    def make(brokers, token, port, **extra):
        a = Agent(tmp_path / "agent", brokers[0], token, rdp_port=port, **extra)
        with open(a.conf) as f:	# farm's Agent writes one URL: the list instead
            text = f.read().replace(f"broker = {url(brokers[0])}\n",
                                    "broker = " + " , ".join(url(b) for b in brokers) + "\n")
        with open(a.conf, "w") as f:
            f.write(text)
        stopped_at_teardown.append(a)
        return a.start()
    return make


@pytest.mark.parametrize("broker,message", [
    ("https://a:1, https://b:2/ https://c", None),
    ("https://a:1 http://b:2", ":3: 'broker' expects an https://HOST[:PORT] URL, not 'http://b:2'"),
    ("https://a " * 9, ":3: 'broker' takes at most 8 URLs"),
    (" , ", ":3: 'broker' is required"),
])
def test_config_list(tmp_path, broker, message):
    conf = tmp_path / "agent.conf"
    conf.write_text(f"[agent]\ntoken = t\nbroker = {broker}\n")
    p = subprocess.run([TSAGENT, "-f", str(conf), "-t"], capture_output=True, text=True)
    assert p.returncode == (0 if message is None else 1), p.stderr
    assert message is None or f"{conf}{message}" in p.stderr, p.stderr


def test_failover_and_stay(broker_factory, agent_on, rdp_port):
    b1, b2 = pair(broker_factory)
    token = enrol_same(b1, b2, port=rdp_port)
    a = agent_on([b1, b2], token, rdp_port)
    wait_until(lambda: reporting_lines(a), 10, "the agent to report")
    assert reporting_lines(a)[0].endswith(f"reporting to {url(b1)}"), a.log()
    assert beats(b1) is not None
    assert beats(b2) is None

    b1.kill9()
    killed = time.monotonic()
    wait_until(lambda: beats(b2) is not None, 10, "a heartbeat at the second broker")
    took = time.monotonic() - killed
    assert took < 4, f"{took:.1f} s to move to the second broker"	# interval 1 s
    lines = reporting_lines(a)
    assert len(lines) == 2 and f"reporting to {url(b2)} ({url(b1)}: " in lines[1], a.log()
    assert b2.server("ts1")["state"] == "up"

    # the first comes back: the agent stays on the second
    b1.start()
    since = beats(b1)
    seen = beats(b2)
    wait_until(lambda: beats(b2) >= seen + 3000, 15, "three more beats at the second broker")
    assert beats(b1) == since, "the agent went back to the first broker"
    assert len(reporting_lines(a)) == 2, a.log()

    # --once tries the list the same way
    b2.kill9()
    p = a.once()
    assert p.returncode == 0, p.stderr
    assert f"reporting to {url(b1)}" in p.stderr
    assert beats(b1) > since


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MB tmpfs for the brokers' databases (unmounted at the end)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = str(tmp_path / "db")
    os.mkdir(mnt)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    yield mnt
    for _ in range(50):
        if subprocess.run(["umount", mnt], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)	# a broker still stopping
    subprocess.run(["umount", "-l", mnt], capture_output=True)


def test_all_503_no_flap(broker_factory, agent_on, rdp_port, tmpfs):
    b1, b2 = pair(broker_factory, db_dir=tmpfs)
    token = enrol_same(b1, b2, port=rdp_port)
    a = agent_on([b1, b2], token, rdp_port)
    wait_until(lambda: reporting_lines(a), 10, "the agent to report")
    # fill the filesystem both databases live on: both answer 503
    filler = os.path.join(tmpfs, "filler")
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
    assert b1.heartbeat(token, heartbeat_body("ts1", port=rdp_port))[0] == 503
    wait_until(lambda: "HTTP 503" in a.log(), 10, "the agent to see a 503")
    # both tried in a beat, each once, the current one kept: no new
    # "reporting to" line while they fail
    wait_until(lambda: a.log().count(f"{url(b2)}: HTTP 503") >= 3, 30,
               "three beats failing at both brokers")
    assert len(reporting_lines(a)) == 1, a.log()
    # the disk is freed: the agent reports to the first again
    os.unlink(filler)
    since = beats(b1)
    wait_until(lambda: beats(b1) > since, 15, "a heartbeat at the first broker again")
    assert len(reporting_lines(a)) == 1, a.log()
    assert beats(b2) is None
