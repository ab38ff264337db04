"""End-to-end tests of the admin API, its login, /metrics and the static
status page files: a real tsbroker, real HTTPS, state read from the real
SQLite file. docs/admin-api.md describes what is tested here."""
import http.client
import json
import os
import re
import time

from farm import ROOT, heartbeat_body, wait_until

COOKIE = "__Host-tsbroker_session"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Answer:
    def __init__(self, status, headers, text):
        self.status = status
        self.headers = headers            # [(name lower-case, value)]
        self.text = text
        try:
            self.json = json.loads(text)
        except ValueError:
            self.json = None

    def header(self, name):
        values = [v for k, v in self.headers if k == name.lower()]
        return values[0] if values else None


def call(broker, method, path, body=None, headers=None, raw=None):
    """One HTTPS request; the answer with its headers."""
    conn = http.client.HTTPSConnection("127.0.0.1", broker.http_port,
                                       context=broker.ssl_context(), timeout=10)
    hdrs = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Answer(r.status, [(k.lower(), v) for k, v in r.getheaders()],
                      r.read().decode())
    finally:
        conn.close()


class Admin:
    """A logged-in browser session: cookie and CSRF token."""

    def __init__(self, broker, password=None):
        self.broker = broker
        a = call(broker, "POST", "/api/v1/login", {"password": password or broker.admin_password})
        assert a.status == 200, a.text
        self.login_answer = a
        cookie = a.header("Set-Cookie")
        self.cookie = cookie.split(";", 1)[0]
        self.csrf = a.json["csrf_token"]

    def __call__(self, method, path, body=None, csrf=True, headers=None):
        h = {"Cookie": self.cookie}
        if csrf and method not in ("GET", "HEAD"):
            h["X-CSRF-Token"] = self.csrf
        h.update(headers or {})
        return call(self.broker, method, path, body, h)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def farm(broker):
    """ts1 (alice active, bob disconnected), ts2 (carol active), ts3 never seen."""
    tokens = {n: broker.add_server(n, max_sessions=10) for n in ("ts1", "ts2", "ts3")}
    assert broker.heartbeat(tokens["ts1"], heartbeat_body(
        "ts1", [("alice", "active"), ("CORP\\Bob", "disconnected")]))[0] == 200
    assert broker.heartbeat(tokens["ts2"], heartbeat_body("ts2", [("carol", "active")]))[0] == 200
    return tokens


ADMIN_ENDPOINTS = [
    ("GET", "/api/v1/status"), ("GET", "/api/v1/servers"), ("GET", "/api/v1/servers/ts1"),
    ("GET", "/api/v1/sessions"), ("GET", "/api/v1/events"), ("GET", "/api/v1/session"),
    ("POST", "/api/v1/servers/ts1/drain"), ("POST", "/api/v1/servers/ts1/enable"),
    ("DELETE", "/api/v1/sessions/1"), ("POST", "/api/v1/logout"),
]


def test_every_endpoint_needs_a_login(broker):
    farm(broker)
    for method, path in ADMIN_ENDPOINTS:
        a = call(broker, method, path)
        assert a.status == 401, (method, path, a.text)
        assert a.json["error"].startswith("login required")
        # a forged or stale cookie is no better
        a = call(broker, method, path, headers={"Cookie": f"{COOKIE}={'a' * 64}"})
        assert a.status == 401, (method, path)
    assert broker.query("SELECT admin_state FROM servers WHERE name = 'ts1'")[0][0] == "enabled"


def test_login_cookie_csrf_logout(broker):
    farm(broker)
    assert call(broker, "POST", "/api/v1/login", raw=b'{"password": "x"}',
                headers={"Content-Type": "text/plain"}).status == 415
    assert call(broker, "POST", "/api/v1/login", raw=b'{"password": ',
                headers={"Content-Type": "application/json"}).status == 400
    assert call(broker, "POST", "/api/v1/login", {"pw": "x"}).status == 400
    a = call(broker, "POST", "/api/v1/login", {"password": "wrong-password"})
    assert a.status == 401 and a.header("Set-Cookie") is None

    admin = Admin(broker)
    cookie = admin.login_answer.header("Set-Cookie")
    name, value = cookie.split(";")[0].split("=", 1)
    flags = [f.strip() for f in cookie.split(";")[1:]]
    assert name == COOKIE and HEX64.match(value)
    assert {"HttpOnly", "Secure", "SameSite=Strict", "Path=/"} <= set(flags)
    assert "Max-Age=28800" in flags
    assert HEX64.match(admin.csrf) and admin.csrf != value
    assert admin.login_answer.json["idle_timeout"] == 3600
    # the session id and the CSRF token never reach the log or the database
    for secret in (value, admin.csrf, broker.admin_password):
        assert secret not in broker.log()
    dump = open(broker.db, "rb").read() + (open(broker.db + "-wal", "rb").read()
                                            if os.path.exists(broker.db + "-wal") else b"")
    assert value.encode() not in dump and admin.csrf.encode() not in dump
    assert [e[0] for e in broker.events("admin_login")] == ["admin_login"]
    assert [e[3] for e in broker.events("admin_login_failed")] == ["127.0.0.1"]

    # a reloaded page gets its CSRF token back with the cookie
    a = admin("GET", "/api/v1/session")
    assert a.status == 200 and a.json["csrf_token"] == admin.csrf
    # state changes need the CSRF token
    assert admin("POST", "/api/v1/servers/ts1/drain", csrf=False).status == 403
    a = admin("POST", "/api/v1/servers/ts1/drain", headers={"X-CSRF-Token": "0" * 64})
    assert a.status == 403 and "X-CSRF-Token" in a.json["error"]
    assert admin("DELETE", "/api/v1/sessions/1", csrf=False).status == 403
    assert admin("POST", "/api/v1/logout", csrf=False).status == 403
    assert broker.query("SELECT admin_state FROM servers WHERE name = 'ts1'")[0][0] == "enabled"
    assert admin("POST", "/api/v1/servers/ts1/drain").status == 200
    # reads do not
    assert admin("GET", "/api/v1/status").status == 200

    a = admin("POST", "/api/v1/logout")
    assert a.status == 200
    assert a.header("Set-Cookie").startswith(f"{COOKIE}=;") and "Max-Age=0" in a.header("Set-Cookie")
    assert admin("GET", "/api/v1/status").status == 401
    assert admin("POST", "/api/v1/servers/ts1/enable").status == 401


def test_bearer_tokens_for_scripts(broker):
    tokens = farm(broker)
    out = broker.cli("admin", "token", "add", "nightly").stdout
    token = out.strip().splitlines()[-1]
    assert re.match(r"^tsba_[0-9a-f]{64}$", token)
    assert broker.cli("admin", "token", "add", "nightly", check=False).returncode == 1
    stored = broker.query("SELECT token_hash FROM admin_tokens WHERE name = 'nightly'")[0][0]
    assert HEX64.match(stored) and token not in stored
    # no CSRF token needed with a bearer token
    a = call(broker, "POST", "/api/v1/servers/ts2/drain", headers=bearer(token))
    assert a.status == 200 and a.json["admin_state"] == "draining"
    a = call(broker, "GET", "/api/v1/session", headers=bearer(token))
    assert a.json == {"user": "nightly", "auth": "bearer"}
    assert "server ts2 draining by nightly from 127.0.0.1" in broker.log()
    assert "nightly" in broker.cli("admin", "token", "list").stdout
    assert broker.query("SELECT last_used FROM admin_tokens")[0][0] > 0
    # wrong, malformed, agent tokens and other schemes are refused
    for bad in ("tsba_" + "0" * 64, token[:-1], token + "0", tokens["ts1"]):
        a = call(broker, "GET", "/api/v1/status", headers=bearer(bad))
        assert a.status == 401 and a.header("WWW-Authenticate").startswith("Bearer")
    assert call(broker, "GET", "/api/v1/status",
                headers={"Authorization": "Basic YWRtaW46eA=="}).status == 401
    broker.cli("admin", "token", "remove", "nightly")
    assert call(broker, "GET", "/api/v1/status", headers=bearer(token)).status == 401
    assert broker.cli("admin", "token", "remove", "nightly", check=False).returncode == 1
    assert token not in broker.log()


def test_status_servers_and_n_plus_1(broker):
    farm(broker)
    admin = Admin(broker)
    s = admin("GET", "/api/v1/status").json
    assert s["servers"] == {"total": 3, "up": 2, "down": 0, "unknown": 1, "draining": 0,
                            "quarantined": 0, "accepting_new": 2, "capacity": 20, "free": 17}
    assert s["sessions"] == {"active": 2, "disconnected": 1, "pending": 0, "lost": 0}
    # losing ts1 (2 sessions) leaves ts2's 9 places; losing ts2 (1) leaves 8
    assert s["n_plus_1"] == {"ok": True, "up_servers": 2, "worst": "ts1", "busiest": "ts1",
                             "worst_sessions": 2, "spare": 9, "headroom": 7,
                             "busiest_sessions": 2}
    assert s["heartbeat_interval"] == 1 and s["down_after"] == 3

    servers = admin("GET", "/api/v1/servers").json["servers"]
    assert [x["name"] for x in servers] == ["ts1", "ts2", "ts3"]
    ts1 = servers[0]
    assert ts1["state"] == "up" and ts1["admin_state"] == "enabled" and ts1["accepting_new"]
    assert ts1["sessions"] == {"active": 1, "disconnected": 1, "pending": 0, "lost": 0, "load": 2}
    assert ts1["max_sessions"] == 10 and ts1["cpu_percent"] == 10.0 and ts1["mem_percent"] == 50.0
    assert 0 <= ts1["heartbeat_age_ms"] < 60000 and ts1["address"] == "127.0.0.2"
    assert servers[2]["state"] == "unknown" and servers[2]["heartbeat_age_ms"] is None
    assert admin("GET", "/api/v1/servers/ts2").json["sessions"]["active"] == 1
    assert admin("GET", "/api/v1/servers/nope").status == 404
    assert admin("GET", "/api/v1/servers/ts2/extra").status == 404
    assert admin("GET", "/api/v1/servers/b%20d").status == 400

    # ts1 goes down: the n+1 figure follows
    wait_until(lambda: admin("GET", "/api/v1/status").json["servers"]["down"] == 2, 10,
               "ts1 and ts2 to go down without heartbeats")
    s = admin("GET", "/api/v1/status").json
    assert s["n_plus_1"]["up_servers"] == 0 and s["n_plus_1"]["ok"] is False
    assert s["n_plus_1"]["worst"] is None
    assert s["sessions"]["lost"] == 3


def test_sessions_filters_and_errors(broker):
    farm(broker)
    admin = Admin(broker)
    a = admin("GET", "/api/v1/sessions")
    assert a.status == 200 and a.json["total"] == 3 and a.json["truncated"] is False
    assert sorted(x["user"] for x in a.json["sessions"]) == ["alice", "bob", "carol"]
    bob = next(x for x in a.json["sessions"] if x["user"] == "bob")
    assert bob["login"] == "CORP\\Bob" and bob["server"] == "ts1" and bob["state"] == "disconnected"
    users = lambda q: sorted(x["user"] for x in admin("GET", "/api/v1/sessions" + q).json["sessions"])
    assert users("?user=ALI") == ["alice"]
    assert users("?user=CORP%5Cbo") == ["bob"]          # normalised, then a part of the name
    assert users("?server=ts1") == ["alice", "bob"]
    assert users("?server=ts1&state=active") == ["alice"]
    assert users("?state=disconnected") == ["bob"]
    assert users("?server=ts3") == []
    assert users("?state=ended") == []
    a = admin("GET", "/api/v1/sessions?limit=1")
    assert len(a.json["sessions"]) == 1 and a.json["total"] == 3 and a.json["truncated"] is True
    for q in ("?state=gone", "?limit=0", "?limit=abc", "?limit=-1", "?server=a%2Fb", "?user=CORP%5C"):
        a = admin("GET", "/api/v1/sessions" + q)
        assert a.status == 400, q
        assert a.json["error"]
    a = admin("GET", "/api/v1/sessions?server=nope")
    assert a.status == 404 and a.json["error"] == "no server 'nope'"


def test_drain_enable_forget(broker):
    tokens = farm(broker)
    admin = Admin(broker)
    a = admin("POST", "/api/v1/servers/ts1/drain")
    assert a.status == 200 and a.json["name"] == "ts1" and a.json["admin_state"] == "draining"
    assert a.json["accepting_new"] is False
    assert broker.server("ts1")["admin_state"] == "draining"
    assert broker.heartbeat(tokens["ts1"], heartbeat_body("ts1", [("alice", "active")]))[1] == \
        {"interval": 1, "admin_state": "draining"}
    st = admin("GET", "/api/v1/status").json
    assert st["servers"]["draining"] == 1 and st["servers"]["accepting_new"] == 1
    a = admin("POST", "/api/v1/servers/ts1/enable")
    assert a.status == 200 and a.json["admin_state"] == "enabled"
    assert broker.server("ts1")["admin_state"] == "enabled"
    assert [e[0] for e in broker.events() if e[0] in ("drain", "enable")] == ["drain", "enable"]
    assert admin("POST", "/api/v1/servers/nope/drain").status == 404
    assert admin("POST", "/api/v1/servers/ts1/reboot").status == 404
    assert admin("POST", "/api/v1/servers/ts1").status == 404
    assert admin("POST", "/api/v1/servers/b%20d/drain").status == 400
    assert admin("POST", "/api/v1/servers/" + "x" * 80 + "/drain").status == 400
    assert admin("PUT", "/api/v1/servers/ts1/drain").status == 405

    # forget: the lost session of a server that went down
    # (ts1 beat last, so it goes down after ts2: wait for alice's own)
    wait_until(lambda: [r for r in broker.sessions(state="lost") if r[0] == "alice"], 10,
               "alice's session on ts1 to be lost")
    lost = admin("GET", "/api/v1/sessions?state=lost&user=alice").json["sessions"]
    assert len(lost) == 1
    sid = lost[0]["id"]
    a = admin("DELETE", f"/api/v1/sessions/{sid}")
    assert a.status == 200 and a.json == {"forgotten": sid}
    assert broker.query("SELECT state FROM sessions WHERE id = ?", sid)[0][0] == "ended"
    assert broker.events("forget")[-1][2] == "alice"
    a = admin("DELETE", f"/api/v1/sessions/{sid}")
    assert a.status == 404 and "has ended" in a.json["error"]
    assert admin("DELETE", "/api/v1/sessions/999999").status == 404
    for bad in ("abc", "0", "-1", "1x", "", "99999999999999999999999"):
        assert admin("DELETE", f"/api/v1/sessions/{bad}").status == 400, bad
    assert admin("GET", "/api/v1/sessions/1").status == 405


def test_events_since_and_limit(broker):
    farm(broker)
    admin = Admin(broker)
    ev = admin("GET", "/api/v1/events").json["events"]
    ids = [e["id"] for e in ev]
    assert ids == sorted(ids, reverse=True), "newest first"
    assert ev[0]["kind"] == "admin_login" and ev[0]["client"] == "127.0.0.1"
    assert {"server_added", "server_up"} <= {e["kind"] for e in ev}
    assert set(ev[0]) == {"id", "ts", "kind", "server", "user", "client", "detail", "duration_us"}
    newest = ids[0]
    assert admin("GET", f"/api/v1/events?since={newest}").json["events"] == []
    admin("POST", "/api/v1/servers/ts2/drain")
    ev2 = admin("GET", f"/api/v1/events?since={newest}").json["events"]
    assert [(e["kind"], e["server"]) for e in ev2] == [("drain", "ts2")]
    assert len(admin("GET", "/api/v1/events?limit=2").json["events"]) == 2
    for q in ("?since=-1", "?since=x", "?limit=0", "?limit=1001", "?since=1e3"):
        assert admin("GET", "/api/v1/events" + q).status == 400, q


def test_login_rate_limit(broker):
    wrong = {"password": "wrong-password-123"}
    for i in range(3):
        a = call(broker, "POST", "/api/v1/login", wrong)
        assert a.status == 401, i
    # the fourth failure starts a lockout (1 s, doubling)
    assert call(broker, "POST", "/api/v1/login", wrong).status == 401
    a = call(broker, "POST", "/api/v1/login", {"password": broker.admin_password})
    assert a.status == 429, "even the right password waits: it is not checked"
    assert int(a.header("Retry-After")) >= 1 and a.header("Set-Cookie") is None
    # each failed attempt is logged once, without the password
    log = broker.log()
    assert log.count("admin login from 127.0.0.1 failed: wrong password") == 4
    assert "(4 in a row)" in log and "too many failed logins" in log
    assert "wrong-password-123" not in log and broker.admin_password not in log
    assert len(broker.events("admin_login_failed")) == 4
    # the lockout ends; a success clears the count
    a = wait_until(lambda: (lambda r: r if r.status != 429 else None)(
        call(broker, "POST", "/api/v1/login", {"password": broker.admin_password})),
        10, "the lockout to end")
    assert a.status == 200
    assert call(broker, "POST", "/api/v1/login", wrong).status == 401
    assert call(broker, "POST", "/api/v1/login", wrong).status == 401
    metrics = call(broker, "GET", "/metrics").text
    assert 'tsbroker_admin_logins_total{result="failed"} 6' in metrics
    assert re.search(r'tsbroker_admin_logins_total\{result="limited"\} [1-9]', metrics)


def test_sessions_expire(broker_factory):
    b = broker_factory(http__admin_session_idle=2, http__admin_session_max=4)
    admin = Admin(b)
    t0 = time.monotonic()
    assert admin.login_answer.json["idle_timeout"] == 2
    assert "Max-Age=4;" in admin.login_answer.header("Set-Cookie")
    # used every half second it outlives the idle timeout, not the maximum age
    wait_until(lambda: admin("GET", "/api/v1/status").status == 401 or None, 15,
               "the session to reach its maximum age", interval=0.5)
    assert time.monotonic() - t0 >= 3.5
    # unused, it ends after the idle timeout (a timeout to test: the test waits it out)
    idle = Admin(b)
    t1 = time.monotonic()
    assert idle("GET", "/api/v1/status").status == 200
    wait_until(lambda: time.monotonic() - t1 > 2.3, 5, "the idle timeout to pass")
    assert idle("GET", "/api/v1/status").status == 401
    assert Admin(b)("GET", "/api/v1/status").status == 200


def test_metrics(broker):
    tokens = farm(broker)
    broker.heartbeat("f" * 64, heartbeat_body("ts1"))          # rejected: unknown token
    a = call(broker, "GET", "/metrics")                          # no login needed
    assert a.status == 200 and a.header("Content-Type").startswith("text/plain; version=0.0.4")
    m = a.text
    for line in ('tsbroker_servers{state="up"} 2', 'tsbroker_servers{state="unknown"} 1',
                 'tsbroker_servers{state="down"} 0', "tsbroker_servers_draining 0",
                 'tsbroker_sessions{state="active"} 2', 'tsbroker_sessions{state="disconnected"} 1',
                 'tsbroker_sessions{state="lost"} 0', 'tsbroker_redirects_total{outcome="redirected"} 0',
                 'tsbroker_redirects_total{outcome="refused"} 0',
                 "tsbroker_heartbeats_received_total 3", "tsbroker_heartbeats_rejected_total 1",
                 'tsbroker_redirect_seconds_bucket{le="0.00025"} 0',
                 'tsbroker_redirect_seconds_bucket{le="+Inf"} 0', "tsbroker_redirect_seconds_count 0",
                 "tsbroker_n_plus_1_headroom 7", "tsbroker_n_plus_1_ok 1",
                 "# TYPE tsbroker_redirect_seconds histogram"):
        assert line in m.splitlines(), line
    # counts only: no names, users, addresses or tokens
    for secret in ("ts1", "alice", "127.0.0.2", tokens["ts1"]):
        assert secret not in m
    call(broker, "POST", "/api/v1/servers/ts1/drain", headers={})   # 401, changes nothing
    assert "tsbroker_servers_draining 0" in call(broker, "GET", "/metrics").text


def test_static_files(broker_factory, tmp_path):
    b = broker_factory(http__web_root=os.path.join(ROOT, "web"))
    for path, ctype in (("/", "text/html"), ("/index.html", "text/html"),
                        ("/app.js", "text/javascript"), ("/style.css", "text/css"),
                        ("/favicon.svg", "image/svg+xml")):
        a = call(b, "GET", path)
        assert a.status == 200, path
        assert a.header("Content-Type").startswith(ctype), path
        assert "default-src 'self'" in a.header("Content-Security-Policy")
        assert a.header("X-Content-Type-Options") == "nosniff"
    assert "<title>tsbroker</title>" in call(b, "GET", "/").text
    # only the fixed set: nothing else of web_root, nothing outside it
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<p>hello</p>")
    (root / "secret.txt").write_text("secret")
    (root / "app.js").mkdir()                                    # not a regular file
    c = broker_factory("other", http__web_root=str(root))
    assert call(c, "GET", "/").text == "<p>hello</p>"
    for path in ("/secret.txt", "/../broker.conf", "/%2e%2e/broker.conf", "/index.html/../secret.txt",
                 "/web/index.html", "/app.js", "/style.css", "//etc/passwd"):
        a = call(c, "GET", path)
        assert a.status == 404, path
        assert "secret" not in a.text
    assert call(c, "POST", "/").status == 405
