"""Two brokers on one PostgreSQL database share what a pair must share: an
admin's browser session (a login on one works on the other; a logout on the
other ends it on the first) and the routing-token key (the first broker in
token mode records its fingerprint; a broker with another key refuses to
start, naming both fingerprints and its key file; with the same key and
certificate it starts, and `-t` shows the same fingerprints)."""
import http.client
import json
import os
import shutil
import subprocess

import pytest

from farm import Broker, needs_pg

pytestmark = needs_pg
COOKIE = "__Host-tsbroker_session"


@pytest.fixture
def url(pg_cluster, request):
    """A fresh database for the test: its libpq conninfo."""
    return pg_cluster.url(pg_cluster.create_db("tsb_" + request.node.name.lower()[:40]),
                       connect_timeout=5)


def pair_broker(tmp_path, name, url, **conf):
    return Broker(tmp_path / name, state__engine="postgresql", state__url=url, **conf)


def call(broker, method, path, body=None, cookie=None, csrf=None):
    """(status, JSON or None, Set-Cookie) of one HTTPS request."""
    conn = http.client.HTTPSConnection("127.0.0.1", broker.http_port,
                                       context=broker.ssl_context(), timeout=10)
    headers = {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if cookie:
        headers["Cookie"] = cookie
    if csrf:
        headers["X-CSRF-Token"] = csrf
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        r = conn.getresponse()
        text = r.read().decode()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return r.status, data, r.getheader("Set-Cookie")
    finally:
        conn.close()


def test_admin_session_on_both(tmp_path, url):
    a = pair_broker(tmp_path, "a", url).start()
    b = pair_broker(tmp_path, "b", url).start()
    try:
        assert a.admin_password and b.admin_password is None   # one password, a's
        status, login, set_cookie = call(a, "POST", "/api/v1/login",
                                         {"password": a.admin_password})
        assert status == 200, login
        cookie = set_cookie.split(";", 1)[0]
        csrf = login["csrf_token"]
        # the cookie works on b, with the same CSRF token and expiry
        status, s, _ = call(b, "GET", "/api/v1/session", cookie=cookie)
        assert status == 200 and s["csrf_token"] == csrf and s["expires"] == login["expires"]
        assert call(b, "GET", "/api/v1/servers", cookie=cookie)[0] == 200
        # CSRF as on one broker: a state change without the token is refused
        assert call(b, "POST", "/api/v1/logout", cookie=cookie)[0] == 403
        assert call(b, "POST", "/api/v1/logout", cookie=cookie, csrf="0" * 64)[0] == 403
        # logged out on b: a refuses the cookie too
        assert call(b, "POST", "/api/v1/logout", cookie=cookie, csrf=csrf)[0] == 200
        assert call(a, "GET", "/api/v1/session", cookie=cookie)[0] == 401
        assert call(b, "GET", "/api/v1/session", cookie=cookie)[0] == 401
        # the database keeps neither the cookie nor the CSRF token
        dump = subprocess.run(["pg_dump", "-a", url], capture_output=True, text=True,
                              check=True).stdout
        assert cookie.split("=", 1)[1] not in dump and csrf not in dump
    finally:
        a.stop()
        b.stop()


def fingerprints(broker):
    """`tsbroker -t`'s certificate and token-key fingerprints."""
    out = broker.cli("-t").stdout
    cert = [l.split(": ", 1)[1] for l in out.splitlines()
            if l.startswith("RDP certificate SHA-256 fingerprint: ")]
    key = [l.split(": ", 1)[1].split(" ", 1)[0] for l in out.splitlines()
           if l.startswith("routing-token key fingerprint: ")]
    return (cert[0] if cert else None), (key[0] if key else None)


def test_token_key_pair(tmp_path, url):
    a = pair_broker(tmp_path, "a", url, rdp__mode="token",
                    rdp__token_key=str(tmp_path / "a" / "token.key")).start()
    a.stop()
    a_cert, a_key = fingerprints(a)
    assert a_cert and len(a_key) == 64
    key_bytes = open(tmp_path / "a" / "token.key", "rb").read()
    assert key_bytes.hex() not in a.cli("-t").stdout
    a.start()
    assert "recorded the routing-token key's fingerprint" in a.log()
    # b with a key of its own: refused, naming both fingerprints and its file
    b_key_path = str(tmp_path / "b" / "token.key")
    b = pair_broker(tmp_path, "b", url, rdp__mode="token", rdp__token_key=b_key_path)
    b.start(expect_ready=False)
    try:
        assert b.proc.wait(20) != 0
    finally:
        b.stop()
    _, b_key = fingerprints(b)
    assert b_key and b_key != a_key
    log = b.log()
    assert a_key in log and b_key in log and b_key_path in log, log
    assert "ready" not in b.stdout()
    # b given a's key and certificate (docs/ha-keys.md): it starts, -t agrees
    for f in ("token.key", "broker.crt", "broker.key"):
        shutil.copy(tmp_path / "a" / f, tmp_path / "b" / f)
        os.chmod(tmp_path / "b" / f, 0o600 if f.endswith(".key") else 0o644)
    assert fingerprints(b) == (a_cert, a_key)
    b.start()
    b.stop()
    a.stop()
    # rotation on purpose: b records a new key; a (the old one) is refused now
    os.unlink(b_key_path)
    out = b.cli("admin", "token-key", "record").stdout
    _, new_key = fingerprints(b)
    assert new_key != a_key and new_key in out and a_key in out
    b.start()
    b.stop()
    a.start(expect_ready=False)
    assert a.proc.wait(20) != 0
    a.stop()
