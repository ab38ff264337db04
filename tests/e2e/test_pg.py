"""The broker on engine = postgresql: the pytest process's throwaway
cluster (conftest pg_cluster), a fresh database per test; the broker, its CLI, heartbeats,
the admin API and a placement through rdpprobe, with a known password in
[state] url that must appear in no log and no output."""
import pytest

from farm import Broker, heartbeat_body, needs_pg, probe, wait_until, HAVE_TOOLS

PASSWORD = "Kn0wn-e2e-Pa55word"
pytestmark = needs_pg


@pytest.fixture
def pg_broker(pg_cluster, tmp_path):
    url = pg_cluster.url(pg_cluster.create_db("tsb_e2e"), password=PASSWORD,
                         connect_timeout=5)
    b = Broker(tmp_path / "broker", state__engine="postgresql", state__url=url)
    b.start()
    yield b
    b.stop()


def no_password(b, *outputs):
    for text in (b.log(), b.stdout(), *outputs):
        assert PASSWORD not in text


def test_cli_heartbeat_and_admin_api(pg_broker):
    b = pg_broker
    t = b.cli("-t")
    token = b.add_server("ts1", "127.0.0.2", max_sessions=5)
    status, _ = b.heartbeat(token, heartbeat_body("ts1", sessions=[("alice", "active")]))
    assert status == 200
    wait_until(lambda: "up" in b.cli("server", "list").stdout, 10, "ts1 up")
    sessions = b.cli("session", "list").stdout
    assert "alice" in sessions
    b.cli("server", "drain", "ts1")
    assert "draining" in b.cli("server", "list").stdout
    b.cli("server", "enable", "ts1")
    api = b.admin_token("e2e")
    status, body = b.request("GET", "/api/v1/servers", token=api)
    assert status == 200 and "ts1" in str(body)
    assert "e2e" in b.cli("admin", "token", "list").stdout
    b.cli("admin", "token", "remove", "e2e")
    b.cli("admin", "password", input="a-new-password-42\n")
    no_password(b, t.stdout, t.stderr, sessions)
    # a second broker's CLI on the same database sees the same farm
    assert "ts1" in b.cli("server", "list").stdout


@pytest.mark.skipif(not HAVE_TOOLS, reason="test peers not built")
def test_placement(pg_broker):
    b = pg_broker
    token = b.add_server("ts1", "127.0.0.2", max_sessions=5)
    assert b.heartbeat(token, heartbeat_body("ts1"))[0] == 200
    wait_until(lambda: " up " in b.cli("server", "list").stdout, 10, "ts1 up")
    # redirected to 127.0.0.2:3389, where nothing listens: the probe fails
    # after the redirect; the broker's placement is what is tested here
    probe(b.rdp_port, "bob", timeout=10)
    wait_until(lambda: "bob" in b.cli("session", "list").stdout, 10, "bob's placement")
    assert "pending" in b.cli("session", "list", "--user", "bob").stdout
    no_password(b)
