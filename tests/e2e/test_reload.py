"""Reload (issue 17 item 4): SIGHUP re-reads the configuration. A bad file
(syntax, value, a certificate that does not load) is refused with -t's
message and the broker keeps serving on the old one; otherwise every live
key takes effect (a table: each one's value in GET /api/v1/config, and a
behaviour for those a client can see) and every restart-only key is
reported and kept. A certificate renewed in place reaches the RDP door and
the HTTPS door while a token-mode splice keeps flowing and an admin API
keep-alive connection opened before stays usable; that broker runs as
tsbroker.service runs it (setpriv: the unit's user, capabilities and
NoNewPrivileges) with its key root:group 0640. The agent re-reads its file
on SIGHUP (a new sessions source shows through the broker), and the
broker's heartbeat_interval changes the agents' spacing.
"""
import hashlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import threading

import pytest

import rawrdp
from farm import (ROOT, TSBROKER, Agent, Broker, heartbeat_body, make_cert,
                  unit_setpriv, wait_until)

UNIT = os.path.join(ROOT, "broker", "tsbroker.service")
OK = 'tsbroker_config_reloads_total{result="ok"}'
REFUSED = 'tsbroker_config_reloads_total{result="refused"}'
ACTIVE = "tsbroker_splices_active"


# ---- helpers ------------------------------------------------------------------

def reload(b, what="reloaded: "):
    """SIGHUP b; waits for one more log line with what (the summary, or
    "reload refused"); returns that line."""
    before = b.log().count(what)
    b.proc.send_signal(signal.SIGHUP)
    try:
        wait_until(lambda: b.log().count(what) > before, 30, f"'{what}' after SIGHUP")
    except BaseException:
        print(b.log()[-3000:])
        raise
    return [l for l in b.log().splitlines() if what in l][-1]


def edit(b, changes):
    """Rewrites b's file with changes {(section, key): value} (None: drop)."""
    sections, cur = {}, None
    with open(b.conf) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                cur = sections.setdefault(line[1:-1], {})
            elif "=" in line:
                k, v = line.split("=", 1)
                cur[k.strip()] = v.strip()
    for (s, k), v in changes.items():
        if v is None:
            sections.get(s, {}).pop(k, None)
        else:
            sections.setdefault(s, {})[k] = v
    with open(b.conf, "w") as f:
        for s, keys in sections.items():
            f.write(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))


def running_config(b, token):
    status, body = b.request("GET", "/api/v1/config", token=token)
    assert status == 200, body
    return {(k["section"], k["name"]): (k["value"], k["live"]) for k in body["keys"]}


def der_sha256(cert_path):
    with open(cert_path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def rdp_cert(b):
    """SHA-256 of the certificate the RDP door shows a new client (after X.224)."""
    with rawrdp.Client("127.0.0.1", b.rdp_port) as c:
        c.x224()
        return hashlib.sha256(c.start_tls().getpeercert(binary_form=True)).hexdigest()


def https_cert(b):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", b.http_port), timeout=10) as s:
        with ctx.wrap_socket(s) as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def threads(b):
    with open(f"/proc/{b.proc.pid}/status") as f:
        return int(next(l for l in f if l.startswith("Threads:")).split()[1])


def install_pair(src_cert, src_key, cert, key, gid):
    """Renews cert and key in place as certbot's deploy hook would: new
    files renamed over the old, the key root:gid 0640."""
    for src, dst, mode in ((src_cert, cert, 0o644), (src_key, key, 0o640)):
        tmp = dst + ".new"
        shutil.copyfile(src, tmp)
        os.chown(tmp, 0, gid)
        os.chmod(tmp, mode)
        os.rename(tmp, dst)


class Echo:
    """A terminal server: reads the X.224 request the relay sends first,
    then echoes every byte back, one connection at a time."""

    def __init__(self, address):
        self.ls = socket.create_server((address, 0))
        self.port = self.ls.getsockname()[1]
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with c:
                head = rawrdp.recv_exact(c, 4)
                rawrdp.recv_exact(c, int.from_bytes(head[2:4], "big") - 4)
                while data := c.recv(65536):
                    c.sendall(data)

    def stop(self):
        self.ls.close()


def server_up(b, name, address, port):
    token = b.add_server(name, address=address, port=port)
    status, _ = b.heartbeat(token, {**heartbeat_body(name, port=port),
                                    "rdp": {"address": address, "port": port,
                                            "accepting": True}})
    assert status == 200
    wait_until(lambda: (b.server(name) or {}).get("state") == "up", 10, f"{name} up")
    return token



# ---- the certificate renewed under a running splice ------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv to the unit's user)")
def test_certificate_renewed_under_a_running_splice(open_dir, stopped_at_teardown):
    nobody = pwd.getpwnam("nobody")
    etc = os.path.join(open_dir, "etc")
    os.mkdir(etc, 0o755)
    old = make_cert(open_dir, "old", "127.0.0.1")
    new = make_cert(open_dir, "new", "127.0.0.1")
    cert, key = os.path.join(etc, "tsbroker.crt"), os.path.join(etc, "tsbroker.key")
    install_pair(*old, cert, key, nobody.pw_gid)
    home = os.path.join(open_dir, "broker")
    b = Broker(home, wrap=unit_setpriv(UNIT, nobody.pw_uid), rdp__mode="token",
               rdp__token_key="token.key", rdp__certificate=cert, rdp__private_key=key,
               health__down_after=86400)
    b.cert = cert
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    stopped_at_teardown.append(b)
    b.start()
    with open(f"/proc/{b.proc.pid}/status") as f:
        assert f"Uid:\t{nobody.pw_uid}\t" in f.read()
    sink = Echo("127.0.0.2")
    stopped_at_teardown.append(sink)
    server_up(b, "ts1", "127.0.0.2", sink.port)
    admin = b.admin_token()
    res = rawrdp.redirect("127.0.0.1", b.rdp_port, "alice")
    assert res.redirected and res.token.startswith("Cookie: msts="), res
    splice = socket.create_connection(("127.0.0.1", b.rdp_port), timeout=20)
    splice.sendall(rawrdp.x224_request((res.token + "\r\n").encode()))
    splice.sendall(b"before")
    assert rawrdp.recv_exact(splice, 6) == b"before"
    # an admin API connection kept alive across the reload
    keep = http.client.HTTPSConnection("127.0.0.1", b.http_port, timeout=10,
                                       context=b.ssl_context())
    keep.request("GET", "/api/v1/servers", headers={"Authorization": f"Bearer {admin}"})
    r = keep.getresponse()
    assert r.status == 200 and json.loads(r.read())
    assert rdp_cert(b) == https_cert(b) == der_sha256(old[0])

    install_pair(*new, cert, key, nobody.pw_gid)
    assert "0 keys changed, 0 need a restart" in reload(b)
    serving = threads(b)        # the replaced HTTPS server's pool too

    # the splice flows both ways, the kept connection still answers (with
    # the certificate it began with), new clients see the new one
    splice.sendall(b"after")
    assert rawrdp.recv_exact(splice, 5) == b"after"
    keep.request("GET", "/api/v1/status", headers={"Authorization": f"Bearer {admin}"})
    r = keep.getresponse()
    assert r.status == 200 and "servers" in json.loads(r.read())
    assert hashlib.sha256(keep.sock.getpeercert(binary_form=True)).hexdigest() == \
        der_sha256(old[0])
    keep.close()
    # the replaced server stops once its last connection has gone
    wait_until(lambda: threads(b) <= serving - 16, 15, "the replaced HTTPS server stopped")
    assert rdp_cert(b) == https_cert(b) == der_sha256(new[0])
    assert b.request("GET", "/api/v1/servers", token=admin)[0] == 200  # verifies the new one
    assert b.metrics()[ACTIVE] == 1 and b.metrics()[OK] == 1
    splice.close()
    assert b.events("config_reload")[-1][4] == "reloaded: 0 keys changed, 0 need a restart"


# ---- every live key takes effect; restart-only keys are reported and kept --------

def live_keys(d, b):
    """{(section, key): new value} for every live key of the lead's list,
    each a change from what farm.Broker writes or the default."""
    web = os.path.join(d, "web2")
    os.makedirs(web, exist_ok=True)
    with open(os.path.join(web, "index.html"), "w") as f:
        f.write("<p>the second web root</p>")
    rdp2, http2 = make_cert(d, "rdp2"), make_cert(d, "http2", "127.0.0.1")
    return {
        ("state", "event_retention_days"): "20", ("state", "event_max"): "5000",
        ("state", "commit_timeout"): "7",
        ("history", "desk_keep_days"): "9", ("history", "period"): "30",
        ("history", "keep"): "3",
        ("rdp", "certificate"): rdp2[0], ("rdp", "private_key"): rdp2[1],
        ("rdp", "handshake_timeout"): "4", ("rdp", "max_handshakes"): "33",
        ("rdp", "max_connections"): "500", ("rdp", "max_handshakes_per_address"): "1",
        ("rdp", "placements_per_address_minute"): "50", ("rdp", "limits_exempt"): "",
        ("rdp", "tls_min_version"): "1.3", ("rdp", "tls_ciphers"): "ECDHE+AESGCM",
        ("rdp", "tls_ciphersuites"): "TLS_AES_128_GCM_SHA256", ("rdp", "token_ttl"): "30",
        ("rdp", "trust_cookie"): "yes", ("rdp", "splice_max"): "10",
        ("rdp", "splice_idle_timeout"): "600", ("rdp", "splice_keepalive"): "30",
        ("rdp", "splice_user_timeout"): "60", ("rdp", "connect_timeout"): "2",
        ("http", "certificate"): http2[0], ("http", "private_key"): http2[1],
        ("http", "tls_priority"): "NORMAL:-VERS-ALL:+VERS-TLS1.3",
        ("http", "body_limit"): "2048", ("http", "max_connections"): "200",
        ("http", "web_root"): web, ("http", "admin_session_idle"): "600",
        ("http", "admin_session_max"): "1200",
        ("health", "heartbeat_interval"): "2", ("health", "down_after"): "9",
        ("health", "quarantine_after"): "4", ("health", "quarantine_time"): "60",
        ("placement", "pending_ttl"): "40", ("placement", "pending_penalty"): "2",
        ("placement", "max_sessions"): "50",
    }


RESTART_KEYS = {
    ("state", "path"): "other.db", ("state", "url"): "host=/nonexistent",
    ("broker", "user"): "nobody", ("rdp", "listen"): "127.0.0.1:1",
    ("rdp", "mode"): "token", ("rdp", "engine"): None,   # the other engine
    ("rdp", "token_key"): "other.key", ("http", "listen"): "127.0.0.1:1",
    ("rdp", "fronts"): "3", ("rdp", "front_user"): "nobody",
}


def tls12_refused(connect):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        connect(ctx)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


def test_every_live_key_takes_effect_and_restart_keys_stay(broker, tmp_path):
    b = broker
    admin = b.admin_token()
    token = server_up(b, "ts1", "127.0.0.2", 3389)
    before = running_config(b, admin)
    live = live_keys(str(tmp_path), b)
    # the table covers exactly the keys the broker calls live
    assert {k for k, (_, is_live) in before.items() if is_live} == set(live)
    restart = {**RESTART_KEYS, ("rdp", "engine"):
               "lean" if before[("rdp", "engine")][0] == "freerdp" else "freerdp"}
    assert set(restart) | {("state", "engine")} == \
        {k for k, (_, is_live) in before.items() if not is_live}
    edit(b, {**live, **restart})
    line = reload(b)
    assert f"reloaded: {len(live) + len(restart)} keys changed, " \
           f"{len(restart)} need a restart" in line, line
    b.cert = live[("http", "certificate")]      # the CA of b.request from now on
    after = running_config(b, admin)
    for k, v in live.items():
        assert after[k][0] == v, (k, after[k], v)
    for (s, k) in restart:
        assert after[(s, k)] == before[(s, k)], (s, k)
        assert f"[{s}] {k} changed: needs a restart (the old value stays)" in b.log()

    # what a client sees
    assert rdp_cert(b) == der_sha256(live[("rdp", "certificate")])
    assert https_cert(b) == der_sha256(live[("http", "certificate")])
    status, ans = b.heartbeat(token, heartbeat_body("ts1"))
    assert status == 200 and ans["interval"] == 2          # [health] heartbeat_interval
    status, _ = b.request("POST", "/api/v1/heartbeat", raw=b"x" * 4096, token=token)
    assert status == 413                                   # [http] body_limit
    status, page = b.request("GET", "/")
    assert status == 200 and "the second web root" in page  # [http] web_root
    status, hist = b.request("GET", "/api/v1/history", token=admin)
    assert status == 200 and hist["period"] == 30           # [history] period
    # [http] tls_priority: TLS 1.3 only; [rdp] tls_min_version = 1.3
    assert tls12_refused(lambda ctx: ctx.wrap_socket(socket.create_connection(
        ("127.0.0.1", b.http_port), timeout=10)).close())

    def rdp12(ctx):
        s = socket.create_connection(("127.0.0.1", b.rdp_port), timeout=10)
        s.sendall(rawrdp.x224_request())
        rawrdp.recv_tpkt(s)
        ctx.wrap_socket(s).close()
    assert tls12_refused(rdp12)
    # [rdp] max_handshakes_per_address = 1 with limits_exempt emptied: while
    # one connection from 127.0.0.1 is in its handshake, a second is closed at
    # accept. The first is one that got its X.224 answer, so it is counted: the
    # connections above may still hold the address's one slot for a moment
    # (the FreeRDP engine notices a close late), and then it is refused too.
    def counted():
        s = socket.create_connection(("127.0.0.1", b.rdp_port), timeout=10)
        try:
            s.sendall(rawrdp.x224_request())
            rawrdp.recv_tpkt(s)
            return s
        except (ConnectionError, EOFError, rawrdp.RdpError):
            s.close()
            return None
    first = wait_until(counted, 10, "a connection from 127.0.0.1 answered")
    try:
        second = socket.create_connection(("127.0.0.1", b.rdp_port), timeout=10)
        try:
            second.sendall(rawrdp.x224_request())
            assert second.recv(1) == b"", "a second handshake from the address was served"
        except ConnectionError:
            pass
        finally:
            second.close()
    finally:
        first.close()
    # [http] admin_session_idle / admin_session_max: a login's answer
    status, body = b.request("POST", "/api/v1/login", {"password": b.admin_password},
                             headers={"Content-Type": "application/json"})
    assert status == 200 and body["idle_timeout"] == 600, body
    assert b.metrics()[OK] == 1


# ---- a broken configuration is refused, the broker keeps serving ----------------

def check_message(b):
    """What tsbroker -t says about b's file."""
    p = subprocess.run([TSBROKER, "-f", b.conf, "-t"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1, p.stdout
    return p.stderr.strip().removeprefix("tsbroker: ")


def test_broken_config_refused_and_the_broker_keeps_serving(broker_factory, tmp_path):
    b = broker_factory(health__down_after=86400)    # one heartbeat keeps ts1 up
    admin = b.admin_token()
    server_up(b, "ts1", "127.0.0.2", 3389)
    with open(b.conf) as f:
        good = f.read()
    before = running_config(b, admin)
    other = make_cert(str(tmp_path), "other")
    cases = [
        ("syntax", lambda: open(b.conf, "a").write("[rdp\n"), True),
        ("value", lambda: edit(b, {("rdp", "max_connections"): "0"}), True),
        ("policy", lambda: edit(b, {("rdp", "tls_ciphers"): "NOSUCHCIPHER"}), True),
        ("missing certificate", lambda: edit(b, {("rdp", "certificate"): "/nonexistent.crt"}),
         False),
        ("key mismatch", lambda: edit(b, {("http", "certificate"): other[0]}), False),
    ]
    for n, (what, breaks, checked_by_t) in enumerate(cases, 1):
        with open(b.conf, "w") as f:
            f.write(good)
        breaks()
        line = reload(b, "reload refused")
        if checked_by_t:      # the -t message, once
            msg = check_message(b)
            assert line.endswith(msg), (what, line, msg)
            assert b.log().count(msg) == 1, what
        assert b.metrics()[REFUSED] == n, what
        # still serving: redirects, the admin API, the old configuration
        assert rawrdp.redirect("127.0.0.1", b.rdp_port, f"user{n}").redirected, what
        assert running_config(b, admin) == before, what
        assert https_cert(b) == der_sha256(b.cert), what
    assert b.metrics()[OK] == 0
    assert len(b.events("config_reload")) == len(cases)
    # the good file again: accepted
    with open(b.conf, "w") as f:
        f.write(good)
    assert "reloaded: 0 keys changed" in reload(b)


def test_raised_max_handshakes_reaches_the_front_processes(broker_factory):
    """[rdp] max_handshakes raised by a reload: the core's table of the
    connections it passed to its fronts grows with it (it had the size
    the broker started with, and a connection past it was closed)."""
    b = broker_factory(rdp__fronts=2, rdp__max_handshakes=8, rdp__handshake_timeout=60)
    edit(b, {("rdp", "max_handshakes"): "100"})
    assert "1 keys changed" in reload(b)
    held = []
    try:
        for i in range(90):         # past the first 64 slots: the table grew
            s = socket.create_connection(("127.0.0.1", b.rdp_port), timeout=20)
            held.append(s)
            s.sendall(rawrdp.x224_request())
            try:
                rawrdp.recv_tpkt(s)                 # its X.224 Connection Confirm
            except ConnectionError:
                pytest.fail(f"connection {i} closed")
    finally:
        for s in held:
            s.close()
    assert "no free front slot" not in b.log()


# ---- the agent -------------------------------------------------------------------

def write_sessions(path, users):
    with open(path + ".tmp", "w") as f:
        json.dump([{"user": u, "id": f"id-{u}", "state": "active"} for u in users], f)
    os.rename(path + ".tmp", path)


def test_agent_rereads_its_file_and_follows_the_broker_interval(broker, tmp_path,
                                                                 stopped_at_teardown):
    b = broker
    rdp = socket.create_server(("127.0.0.1", 0))       # its RDP port accepting
    stopped_at_teardown.append(type("L", (), {"stop": rdp.close})())
    token = b.add_server("ts1", address="127.0.0.1", port=rdp.getsockname()[1])
    one, two = str(tmp_path / "one.json"), str(tmp_path / "two.json")
    write_sessions(one, ["alice"])
    write_sessions(two, ["bob"])
    a = Agent(tmp_path, b, token, rdp_port=rdp.getsockname()[1], sessions=f"file:{one}")
    stopped_at_teardown.append(a)
    a.start()
    wait_until(lambda: [s[0] for s in b.sessions()] == ["alice"], 15, "alice through ts1")
    # a live key (sessions) and a restart-only one (rdp_port) changed
    with open(a.conf) as f:
        text = f.read()
    with open(a.conf, "w") as f:
        f.write(text.replace(f"file:{one}", f"file:{two}").replace(
            f"rdp_port = {rdp.getsockname()[1]}", "rdp_port = 1"))
    a.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded: 2 keys changed, 1 need a restart" in a.log(), 10,
               "the agent's reload")
    assert "[agent] rdp_port changed: needs a restart" in a.log()
    wait_until(lambda: [s[0] for s in b.sessions()] == ["bob"], 15, "bob through ts1")
    assert b.server("ts1")["state"] == "up"        # still probing the old port
    # a bad file: refused, the agent goes on
    with open(a.conf, "a") as f:
        f.write("interval = 0\n")
    a.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in a.log(), 10, "the agent's refusal")
    assert a.proc.poll() is None

    # the broker's heartbeat_interval: the agent's beats spread out
    def spacing(n):
        seen = []
        wait_until(lambda: (seen.append(b.server("ts1")["last_heartbeat"]) or
                            len(set(seen)) > n), 30, f"{n} heartbeats", interval=0.1)
        stamps = sorted(set(seen))[1:]    # whole gaps only
        return min(y - x for x, y in zip(stamps, stamps[1:]))
    assert spacing(3) < 2000
    edit(b, {("health", "heartbeat_interval"): "3", ("health", "down_after"): "10"})
    reload(b)
    wait_until(lambda: "broker says: interval 3 s" in a.log(), 10, "the agent told")
    assert spacing(3) >= 2500
