"""End-to-end tests of token mode: the broker (127.0.0.1:P) redirects with a
signed routing token and no address, the client comes back to the broker
with "Cookie: msts=<token>" and the broker splices it to the terminal server
of the token's session. The servers are build/rdptarget on ports the client
never sees (127.0.0.2:P2, 127.0.0.3:P3, P, P2, P3 all different), each with
a real build/tsagent (file: provider). Clients: build/rdpprobe, Debian's
stock xfreerdp under Xvfb, and crafted X.224 requests on raw sockets. Every
wait polls a condition.
"""
import base64
import hashlib
import hmac
import os
import re
import signal
import socket
import struct
import time
import types

import pytest

from farm import (XFreeRDP, connects_at, free_port, needs_tools, needs_xfreerdp, probe,
                  start_targets, wait_until)

ADDRESSES = {"ts1": "127.0.0.2", "ts2": "127.0.0.3"}

pytestmark = needs_tools

TOKEN_RE = re.compile(r"^Cookie: msts=(tsb1\.(\d+)\.(\d+)\.[A-Za-z0-9_-]{22})$")


# ---- helpers -----------------------------------------------------------------

def token_of(connect):
    """(token, session id) from a CONNECT record's "Cookie: msts=..." line."""
    m = TOKEN_RE.match(connect["token"])
    assert m, f"not a tsb1 routing token line: {connect['token']!r}"
    return m.group(1), int(m.group(2))


def mint(broker, session, expires):
    """A token signed with the broker's own key file (as token.c does)."""
    with open(os.path.join(broker.dir, "token.key"), "rb") as f:
        key = f.read()
    body = f"tsb1.{session}.{expires}"
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()[:16]
    return body + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def x224_request(line=None, protocols=1):
    """An X.224 Connection Request with an optional cookie/token line and an
    RDP_NEG_REQ, laid out as xfreerdp sends it."""
    var = (line.encode() + b"\r\n") if line else b""
    body = b"\xe0\x00\x00\x00\x00\x00" + var + struct.pack("<BBHI", 1, 0, 8, protocols)
    return struct.pack(">BBH", 3, 0, 5 + len(body)) + bytes([len(body)]) + body


def raw_until_closed(port, data, timeout=5):
    """Sends data to the broker; returns what came back until it closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = b""
    try:
        s.sendall(data)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk
    except ConnectionResetError:
        return got
    except socket.timeout:
        pytest.fail(f"the broker did not close the connection within {timeout}s")
    finally:
        s.close()


def recv_exact(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        assert chunk, f"closed after {len(got)} of {n} bytes"
        got += chunk
    return got


SPLICED = 'tsbroker_splices_total{outcome="spliced"}'
ACTIVE = "tsbroker_splices_active"


def session_ids(broker, user):
    return [r[0] for r in broker.query("SELECT id FROM sessions WHERE user = ? AND "
                                       "state != 'ended'", user)]


def other(name):
    return "ts2" if name == "ts1" else "ts1"


@pytest.fixture
def token_farm(broker_factory, tmp_path, stopped_at_teardown):
    """token_farm(**broker_conf): a token-mode broker on 127.0.0.1:P and
    ts1/ts2 on their own ports, both up (a frozen agent is thawed at the
    end: Target.stop)."""
    def make(**conf):
        port = free_port("127.0.0.1")
        ports = {}
        for name, address in ADDRESSES.items():
            p = free_port(address)
            while p == port or p in ports.values():
                p = free_port(address)
            ports[name] = p
        conf.setdefault("rdp__mode", "token")
        conf.setdefault("rdp__token_key", "token.key")
        conf.setdefault("rdp__connect_timeout", 2)
        broker = broker_factory(rdp_port=port, **conf)
        targets = start_targets(broker, tmp_path,
                                {n: (a, ports[n]) for n, a in ADDRESSES.items()})
        stopped_at_teardown.extend(targets.values())
        return types.SimpleNamespace(broker=broker, port=port, ports=ports, ts=targets)
    return make


def freeze_agent(t):
    """The agent stops reporting: the broker still believes the server up."""
    t.agent.proc.send_signal(signal.SIGSTOP)


def spliced_session(farm, user):
    """Connects user through the broker once (redirect, token, splice) and
    returns (server, token, session id) as the target received them."""
    res = probe(farm.port, user)
    assert res["ok"] and res["redirected"] == "1", res
    # the client only ever talked to the broker
    assert res["host"] == "127.0.0.1" and res["port"] == str(farm.port), res
    found = wait_until(lambda: connects_at(farm.ts, user), 5, f"{user} at a target")
    assert len(found) == 1, found
    server, connect = found[0]
    token, sid = token_of(connect)
    return server, token, sid


# ---- tests -----------------------------------------------------------------

def test_probe_reaches_targets_on_ports_it_never_sees(token_farm):
    farm = token_farm()
    b = farm.broker
    assert len({farm.port, *farm.ports.values()}) == 3
    server, token, sid = spliced_session(farm, "alice")
    # the token names the session the broker committed for alice, and expires
    # token_ttl (60 s) after it was issued
    assert session_ids(b, "alice") == [sid]
    assert b.user_server("alice") == server
    expires = int(token.split(".")[2])
    assert 50 <= expires - time.time() <= 61
    assert not farm.ts[other(server)].connects()
    # the splice ends when the client leaves
    wait_until(lambda: b.metrics()[ACTIVE] == 0, 10, "no splice left")
    assert b.metrics()[SPLICED] == 1
    ev = [e for e in b.events("splice") if e[2] == "alice"]
    assert len(ev) == 1 and ev[0][1] == server and f"session {sid}" in ev[0][4], ev
    # alice again: the same server and session; bob goes to the other server
    again = probe(farm.port, "alice")
    assert again["ok"] and again["host"] == "127.0.0.1", again
    wait_until(lambda: len(farm.ts[server].connects("alice")) == 2, 5, "alice back")
    second = farm.ts[server].connects("alice")[1]
    assert token_of(second)[1] == sid and second["session"] == farm.ts[server].connects(
        "alice")[0]["session"]
    wait_until(lambda: b.user_server("alice") == server, 10, "alice confirmed")
    assert probe(farm.port, "bob")["ok"]
    wait_until(lambda: farm.ts[other(server)].connects("bob"), 5, "bob on the other")
    # no secret in the log: the MAC of a token is never written
    assert token.split(".")[3] not in b.log()


@needs_xfreerdp
def test_stock_xfreerdp_follows_the_token(token_farm, tmp_path):
    farm = token_farm()
    b = farm.broker
    x = XFreeRDP(farm.port, "frank", tmp_path / "xfreerdp.log", domain="CORP")
    try:
        server, connect = wait_until(lambda: connects_at(farm.ts, "frank"), 30,
                                     "xfreerdp's session on a target")[0]
        # the stock client sent LoadBalanceInfo back verbatim as its routing
        # token: "Cookie: msts=tsb1.<session>.<expires>.<mac>" (and no cookie)
        token, sid = token_of(connect)
        assert connect["domain"] == "CORP" and connect["cookie"] == ""
        assert session_ids(b, "frank") == [sid]
        wait_until(lambda: b.user_server("frank", "active") == server, 10,
                   "frank active in the broker's database")
        assert b.metrics()[ACTIVE] == 1
        assert x.proc.poll() is None, "xfreerdp exited while connected"
    finally:
        x.stop()
    wait_until(lambda: b.metrics()[ACTIVE] == 0, 10, "the splice closed after xfreerdp")


def test_bad_tokens_never_reach_a_server(token_farm):
    farm = token_farm()
    b = farm.broker
    server, token, sid = spliced_session(farm, "alice")
    wait_until(lambda: b.metrics()[ACTIVE] == 0, 10, "no splice left")
    before = {n: len(t.connects()) for n, t in farm.ts.items()}
    body, mac = token.rsplit(".", 1)
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    cases = {
        "forged": body + "." + flipped,                              # MAC wrong
        "forged-session": f"tsb1.{sid + 1}.{token.split('.')[2]}.{mac}",  # body changed
        "expired": mint(b, sid, int(time.time()) - 5),               # good MAC, too old
        "malformed": "3640205228.15629.0000",                        # Microsoft's format
        "unknown": mint(b, 999999, int(time.time()) + 60),           # no such session
    }
    for name, tok in cases.items():
        got = raw_until_closed(farm.port, x224_request("Cookie: msts=" + tok))
        assert got == b"", f"{name}: the broker answered {got!r}"
    details = [e[4] for e in b.events("token_refused")]
    assert sum("forged routing token" in d for d in details) == 2, details
    assert sum("expired routing token" in d for d in details) == 1, details
    assert sum("malformed routing token" in d for d in details) == 1, details
    assert sum("unknown session 999999" in d for d in details) == 1, details
    m = b.metrics()
    assert m[SPLICED] == 1 and m['tsbroker_splices_total{outcome="refused"}'] == 5, m
    assert {n: len(t.connects()) for n, t in farm.ts.items()} == before
    assert "unreachable" not in b.log()
    assert all((b.server(n) or {})["state"] == "up" for n in farm.ts)
    assert mac not in b.log() and flipped not in b.log()
    # tokens FreeRDP 2.11 cannot take are refused at the X.224 level
    got = raw_until_closed(farm.port, x224_request(
        "tsv://MS Terminal Services Plugin.1.Sessions"))
    assert len(got) == 19 and got[11] == 3, got          # RDP_NEG_FAILURE
    # and the real token still works
    res = probe(farm.port, "alice", extra=("--load-balance-info", "Cookie: msts=" + token))
    assert res["ok"] and res["redirected"] == "0", res
    wait_until(lambda: len(farm.ts[server].connects("alice")) == 2, 5, "token replay")


def test_server_killed_before_the_reconnect_fails_over(token_farm):
    # the broker still believes ts_a up (its agent is frozen), so the token's
    # server is tried, found unreachable, marked down, and alice placed again
    farm = token_farm(health__down_after=60)
    b = farm.broker
    server, token, sid = spliced_session(farm, "alice")
    survivor = other(server)
    freeze_agent(farm.ts[server])
    farm.ts[server].kill_target()
    assert b.server(server)["state"] == "up"
    # the client comes back with the token it was given
    res = probe(farm.port, "alice", extra=("--load-balance-info", "Cookie: msts=" + token))
    assert res["ok"] and res["host"] == "127.0.0.1", res
    landed = wait_until(lambda: farm.ts[survivor].connects("alice"), 5,
                        "alice on the survivor")
    assert landed[0]["token"] == "Cookie: msts=" + token     # request bytes unchanged
    assert b.server(server)["state"] == "down"
    reason = b.query("SELECT state_reason FROM servers WHERE name = ?", server)[0][0]
    assert reason.startswith("unreachable from the broker"), reason
    downs = [e for e in b.events("server_down") if e[1] == server]
    assert len(downs) == 1 and "unreachable from the broker" in downs[0][4], downs
    splice = [e for e in b.events("splice") if e[2] == "alice"][-1]
    assert splice[1] == survivor and f"failover from {server}" in splice[4], splice
    assert b.metrics()["tsbroker_splice_failovers_total"] == 1
    # the broker recorded alice's new placement on the survivor (her session on
    # the dead server, if its agent had reported it, stays there as lost)
    assert [r[1] for r in b.sessions() if r[0] == "alice" and r[2] != "lost"] == \
        [survivor], b.sessions()
    # the whole path again, through the redirect: straight to the survivor
    res = probe(farm.port, "alice")
    assert res["ok"], res
    wait_until(lambda: len(farm.ts[survivor].connects("alice")) == 2, 5,
               "alice back on the survivor")


def test_server_down_then_no_server_left(token_farm):
    farm = token_farm(health__down_after=60)
    b = farm.broker
    server, token, sid = spliced_session(farm, "carol")
    survivor = other(server)
    # the agent reports the killed server: it is down before the token returns
    farm.ts[server].kill_target()
    wait_until(lambda: b.server(server)["state"] == "down", 10, f"{server} down")
    res = probe(farm.port, "carol", extra=("--load-balance-info", "Cookie: msts=" + token))
    assert res["ok"], res
    wait_until(lambda: farm.ts[survivor].connects("carol"), 5, "carol on the survivor")
    splice = [e for e in b.events("splice") if e[2] == "carol"][-1]
    assert splice[1] == survivor and f"on {server} (down)" in splice[4], splice
    # now the survivor dies too, unseen by the broker: no server is left
    freeze_agent(farm.ts[survivor])
    farm.ts[survivor].kill_target()
    got = raw_until_closed(farm.port, x224_request("Cookie: msts=" + token))
    assert got == b""
    assert b.server(survivor)["state"] == "down"
    refusals = [e for e in b.events("refusal") if e[2] == "carol"]
    assert len(refusals) == 1 and "no server" in refusals[0][4], refusals
    assert b.metrics()['tsbroker_splices_total{outcome="refused"}'] == 1


def test_idle_and_half_closed_splices_are_cleaned_up(token_farm):
    farm = token_farm(rdp__splice_idle_timeout=3)
    b = farm.broker
    server, token, sid = spliced_session(farm, "dave")
    wait_until(lambda: b.metrics()[ACTIVE] == 0, 10, "no splice left")
    request = x224_request("Cookie: msts=" + token)

    # half-closed: the client sends its request and shuts down its side; the
    # server answers, sees the end of the stream and closes: the pair ends
    half = socket.create_connection(("127.0.0.1", farm.port), timeout=10)
    half.sendall(request)
    confirm = recv_exact(half, 19)        # the target's Connection Confirm, spliced
    assert confirm[:2] == b"\x03\x00" and confirm[5] == 0xD0 and confirm[11] == 2, confirm
    half.shutdown(socket.SHUT_WR)
    start = time.monotonic()
    assert half.recv(100) == b""
    wait_until(lambda: b.metrics()[ACTIVE] == 0, 5, "the half-closed splice to end")
    assert time.monotonic() - start < 3, "ended by the idle timeout, not the half-close"
    half.close()

    # idle: the client sends its request and then nothing; the broker closes
    # the pair after splice_idle_timeout although the server keeps waiting
    idle = socket.create_connection(("127.0.0.1", farm.port), timeout=10)
    idle.sendall(request)
    recv_exact(idle, 19)
    wait_until(lambda: b.metrics()[ACTIVE] == 1, 5, "the idle splice")
    start = time.monotonic()
    assert idle.recv(100) == b""          # closed by the broker
    assert 2 <= time.monotonic() - start <= 8
    wait_until(lambda: b.metrics()[ACTIVE] == 0, 5, "the idle splice to end")
    idle.close()
    assert "spliced connection idle for 3 s: closed" in b.log()
    assert len(farm.ts[server].connects("dave")) == 1   # neither got a session


def test_trust_cookie_splices_to_the_live_session(token_farm):
    farm = token_farm(rdp__trust_cookie="yes")
    b = farm.broker
    server, token, sid = spliced_session(farm, "erin")
    wait_until(lambda: b.user_server("erin", "disconnected") == server, 10,
               "erin's session disconnected")
    # erin again: her cookie takes her straight to her session, no redirect
    res = probe(farm.port, "erin")
    assert res["ok"] and res["redirected"] == "0" and res["host"] == "127.0.0.1", res
    second = wait_until(lambda: farm.ts[server].connects("erin")[1:], 5,
                        "erin's second connection")[0]
    assert second["cookie"] == "erin" and second["token"] == ""
    ev = [e for e in b.events("splice") if e[2] == "erin"]
    assert len(ev) == 2 and "cookie" in ev[1][4] and ev[1][1] == server, ev
    # a user without a session takes the normal path: redirect, token, splice
    res = probe(farm.port, "fred")
    assert res["ok"] and res["redirected"] == "1", res
    fred = wait_until(lambda: [c for t in farm.ts.values()
                               for c in t.connects("fred")], 5, "fred at a target")
    assert TOKEN_RE.match(fred[0]["token"]) and fred[0]["cookie"] == ""
    # erin's server unreachable: the cookie is not spliced, it is marked down
    # and FreeRDP places erin on the survivor as usual
    freeze_agent(farm.ts[server])
    farm.ts[server].kill_target()
    res = probe(farm.port, "erin")
    assert res["ok"] and res["redirected"] == "1", res
    wait_until(lambda: farm.ts[other(server)].connects("erin"), 5, "erin moved")
    assert b.server(server)["state"] == "down"


def test_tokens_survive_a_broker_kill9(token_farm):
    farm = token_farm()
    b = farm.broker
    server, token, sid = spliced_session(farm, "gina")
    key = os.path.join(b.dir, "token.key")
    mode, size = os.stat(key).st_mode & 0o777, os.path.getsize(key)
    assert mode == 0o600 and size == 32
    with open(key, "rb") as f:
        before = f.read()
    b.kill9()
    b.start()
    with open(key, "rb") as f:
        assert f.read() == before
    wait_until(lambda: b.server(server)["state"] == "up", 15, f"{server} up again")
    # the token issued before the crash still leads to gina's session
    res = probe(farm.port, "gina", extra=("--load-balance-info", "Cookie: msts=" + token))
    assert res["ok"] and res["redirected"] == "0", res
    connects = wait_until(lambda: farm.ts[server].connects("gina")[1:], 5,
                          "gina back after the restart")
    assert token_of(connects[0]) == (token, sid)
    assert connects[0]["session"] == farm.ts[server].connects("gina")[0]["session"]
    # a token the restarted broker issues is signed with the same key
    res = probe(farm.port, "gina")
    assert res["ok"] and res["redirected"] == "1", res
    third = wait_until(lambda: farm.ts[server].connects("gina")[2:], 5,
                       "gina through a fresh token")[0]
    assert token_of(third)[1] == sid
