"""End-to-end tests of the broker foundation: real tsbroker processes, real
HTTPS heartbeats, state read from the real SQLite file."""
import os
import signal
import sqlite3
import subprocess

from farm import TSBROKER, heartbeat_body, wait_until


def raw_post(broker, token, length):
    """Sends the headers of a heartbeat announcing `length` bytes and a few of
    them, then returns what the broker answers."""
    import socket
    with socket.create_connection(("127.0.0.1", broker.http_port), timeout=10) as raw:
        with broker.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(f"POST /api/v1/heartbeat HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Length: {length}\r\n"
                      f"\r\n".encode() + b"{" * 100)
            return s.recv(4096)


def test_config_check(tmp_path):
    good = tmp_path / "good.conf"
    good.write_text("[rdp]\nlisten = 127.0.0.1:3390\n")
    p = subprocess.run([TSBROKER, "-f", str(good), "-t"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("[rdp]\nmode = address\nlisten = here\n")
    p = subprocess.run([TSBROKER, "-f", str(bad), "-t"], capture_output=True, text=True)
    assert p.returncode == 1
    assert f"{bad}:3: 'listen' expects host:port" in p.stderr


def test_first_start_makes_certificate_and_admin_password(broker):
    assert os.stat(broker.key).st_mode & 0o777 == 0o600
    assert os.stat(broker.db).st_mode & 0o077 == 0
    assert broker.admin_password and len(broker.admin_password) >= 16
    stored = broker.query("SELECT password_hash FROM admin")[0][0]
    assert stored.startswith("scrypt$") and broker.admin_password not in stored
    assert broker.admin_password not in broker.log()
    out = broker.stdout()
    assert f"127.0.0.1:{broker.rdp_port}" in out and f"https://127.0.0.1:{broker.http_port}/" in out
    # a restart does not print a new password
    broker.stop()
    broker.start()
    assert broker.stdout().count("First admin password") == 1


def test_server_up_down_and_back(broker):
    token = broker.add_server("ts1", "127.0.0.2")
    assert broker.server("ts1")["state"] == "unknown"
    status, answer = broker.heartbeat(token, heartbeat_body("ts1", [("alice", "active")]))
    assert status == 200 and answer == {"interval": 1, "admin_state": "enabled"}
    s = broker.server("ts1")
    assert s["state"] == "up" and s["ncpu"] == 2 and s["cpu_percent"] == 10.0
    assert broker.sessions() == [("alice", "ts1", "active", "id-alice")]
    # no heartbeat for down_after (3 s): down, its sessions lost, not deleted
    wait_until(lambda: broker.server("ts1")["state"] == "down", 8, "ts1 to go down")
    assert broker.sessions() == [("alice", "ts1", "lost", "id-alice")]
    assert [e[1] for e in broker.events("server_down")] == ["ts1"]
    # it returns and still holds alice's session: restored
    status, _ = broker.heartbeat(token, heartbeat_body("ts1", [("alice", "disconnected")]))
    assert status == 200
    assert broker.server("ts1")["state"] == "up"
    assert broker.sessions() == [("alice", "ts1", "disconnected", "id-alice")]
    # an agent that reports the RDP port closed takes the server down at once
    broker.heartbeat(token, heartbeat_body("ts1", [("alice", "active")], accepting=False))
    assert broker.server("ts1")["state"] == "down"
    assert broker.sessions() == [("alice", "ts1", "lost", "id-alice")]


def test_sessions_reconcile(broker):
    token = broker.add_server("ts1")
    beat = lambda sessions, **kw: broker.heartbeat(token, heartbeat_body("ts1", sessions, **kw))
    assert beat([("alice", "active"), ("CORP\\Bob", "disconnected")])[0] == 200
    assert broker.sessions() == [("alice", "ts1", "active", "id-alice"),
                                 ("bob", "ts1", "disconnected", "id-CORP\\Bob")]
    # a provider failure ("sessions": null) keeps what the broker had
    assert beat([], known=False)[0] == 200
    assert len(broker.sessions()) == 2
    # vanished sessions end, new ones appear, states follow the snapshot
    assert beat([("alice", "disconnected"), ("carol", "active")])[0] == 200
    assert broker.sessions() == [("alice", "ts1", "disconnected", "id-alice"),
                                 ("carol", "ts1", "active", "id-carol")]
    assert beat([])[0] == 200
    assert broker.sessions() == []


def test_heartbeat_errors(broker):
    token = broker.add_server("ts1")
    other = broker.add_server("ts2", "127.0.0.3")
    body = heartbeat_body("ts1")
    assert broker.heartbeat(None, body) == (401, {"error": "missing bearer token"})
    assert broker.heartbeat("0" * 64, body) == (401, {"error": "invalid token"})
    assert broker.heartbeat("short", body) == (401, {"error": "invalid token"})
    status, answer = broker.heartbeat(other, body)
    assert status == 403 and "belongs to server 'ts2'" in answer["error"]
    status, answer = broker.request("POST", "/api/v1/heartbeat", token=token, raw=b"{not json")
    assert status == 400 and answer["error"].startswith("invalid JSON")
    bad = heartbeat_body("ts1")
    bad["rdp"]["port"] = 70000
    assert broker.heartbeat(token, bad) == (400, {"error": "'rdp.port' must be an integer "
                                                           "from 1 to 65535"})
    del bad["sessions"]
    bad["rdp"]["port"] = 1
    status, answer = broker.heartbeat(token, bad)
    assert status == 400 and "'sessions' is missing" in answer["error"]
    # an announced oversized body is refused before it is read
    assert raw_post(broker, token, 1024 * 1024 + 1).startswith(b"HTTP/1.1 413")
    assert broker.request("GET", "/api/v1/heartbeat")[0] == 405
    assert broker.request("GET", "/nothing-here")[0] == 404
    # none of this touched the server, and a good beat still works
    assert broker.server("ts1")["state"] == "unknown"
    assert broker.heartbeat(token, body)[0] == 200
    # rejections are logged (at most a line a second), tokens never
    assert "heartbeat from 127.0.0.1 rejected: missing bearer token" in broker.log()
    assert token not in broker.log() and other not in broker.log()


def test_state_survives_kill9(broker):
    token = broker.add_server("ts1")
    broker.add_server("ts2", "127.0.0.3")
    broker.cli("server", "drain", "ts2")
    assert broker.heartbeat(token, heartbeat_body("ts1", [("alice", "active")]))[0] == 200
    broker.kill9()
    broker.start()
    assert broker.server("ts2")["admin_state"] == "draining"
    assert broker.sessions() == [("alice", "ts1", "active", "id-alice")]
    assert broker.heartbeat(token, heartbeat_body("ts1", [("alice", "active")]))[0] == 200
    assert "First admin password" not in broker.stdout().split("tsbroker ready")[-1]


def test_admin_commands(broker):
    token = broker.add_server("ts1", "127.0.0.2", port=3390, weight=200, max_sessions=7)
    assert len(token) == 64
    p = broker.cli("server", "add", "ts1", "--address", "127.0.0.9", check=False)
    assert p.returncode == 1 and "server 'ts1' already exists" in p.stderr
    p = broker.cli("server", "add", "bad name!", "--address", "x", check=False)
    assert p.returncode == 2
    p = broker.cli("server", "add", "ts9", check=False)
    assert p.returncode == 2 and "--address" in p.stderr
    listing = broker.cli("server", "list").stdout
    assert "ts1" in listing and "127.0.0.2:3390" in listing and "0/7" in listing
    broker.cli("server", "drain", "ts1")
    assert broker.server("ts1")["admin_state"] == "draining"
    assert broker.heartbeat(token, heartbeat_body("ts1", [("alice", "active")]))[1] == \
        {"interval": 1, "admin_state": "draining"}
    broker.cli("server", "enable", "ts1")
    assert broker.server("ts1")["admin_state"] == "enabled"
    for verb in ("drain", "enable", "remove"):
        p = broker.cli("server", verb, "nosuch", check=False)
        assert p.returncode == 1 and "server 'nosuch' not found" in p.stderr
    sessions = broker.cli("session", "list", "--user", "ALICE").stdout
    assert "alice" in sessions and "ts1" in sessions
    sid = broker.query("SELECT id FROM sessions WHERE user = 'alice'")[0][0]
    assert broker.cli("session", "forget", sid).returncode == 0
    assert broker.sessions() == []
    p = broker.cli("session", "forget", sid, check=False)
    assert p.returncode == 1 and "not found" in p.stderr
    p = broker.cli("admin", "password", input="short\n", check=False)
    assert p.returncode == 1
    old = broker.query("SELECT password_hash FROM admin")[0][0]
    broker.cli("admin", "password", input="a much better password\n")
    assert broker.query("SELECT password_hash FROM admin")[0][0] != old
    broker.cli("server", "remove", "ts1")
    assert broker.server("ts1") is None
    assert broker.heartbeat(token, heartbeat_body("ts1"))[0] == 401
    kinds = [e[0] for e in broker.events()]
    for kind in ("server_added", "drain", "enable", "forget", "server_removed"):
        assert kind in kinds


def test_newer_database_refused(broker_factory):
    b = broker_factory(start=False)
    b.cli("server", "list")  # creates the database
    db = sqlite3.connect(b.db)
    db.execute("PRAGMA user_version = 999")
    db.close()
    b.start(expect_ready=False)
    assert b.proc.wait(10) == 1
    assert "schema version 999, newer than this tsbroker knows" in b.log()


def test_sigterm_stops_cleanly(broker):
    assert broker.stop(signal.SIGTERM) == 0


# every admin command, with arguments the dispatcher takes (run in order)
COMMANDS = [("server add", "ts9 --address 127.0.0.2"), ("server list", ""),
            ("server drain", "ts9"), ("server enable", "ts9"), ("session list", ""),
            ("session forget", "999"), ("admin password", ""), ("admin token add", "t1"),
            ("admin token list", ""), ("admin token remove", "t1"), ("server remove", "ts9")]


def usage_commands(text):
    """The commands a usage text names: "obj verb|verb, ..." on a Commands:
    line (tsbroker -h) and "tsbroker -f FILE obj verb ARGS | verb ARGS"
    lines (the admin commands' usage)."""
    found = set()
    for line in text.splitlines():
        if line.startswith("Commands:"):
            for group in line.split(":", 1)[1].split(","):
                *prefix, verbs = group.split()
                found.update(" ".join(prefix + [v]) for v in verbs.split("|"))
        elif "tsbroker -f FILE " in line:
            first, *rest = line.split("tsbroker -f FILE ", 1)[1].split(" | ")
            words = []
            for w in first.split():
                if not w.islower() or w.startswith(("-", "[", "(")):
                    break
                words.append(w)
            found.add(" ".join(words))
            found.update(" ".join(words[:-1] + [r.split()[0]]) for r in rest)
    return found


def test_usage_names_every_command(broker):
    commands = {c for c, _ in COMMANDS}
    p = subprocess.run([TSBROKER, "-h"], capture_output=True, text=True)
    assert p.returncode == 2 and commands <= usage_commands(p.stderr), p.stderr
    p = broker.cli("no-such-command", check=False)
    assert p.returncode == 2 and commands <= usage_commands(p.stderr), p.stderr
    # and each of them is a command: the dispatcher takes it (no usage text)
    for command, args in COMMANDS:
        p = broker.cli(*command.split(), *args.split(), check=False,
                       input="a new admin password\n" if command == "admin password" else None)
        assert "usage:" not in p.stderr, (command, p.stderr)
