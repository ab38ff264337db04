"""End-to-end tests of the RDP endpoint: real RDP clients (build/rdpprobe on
libfreerdp-client2, and Debian's stock xfreerdp under Xvfb) connect to
tsbroker on 127.0.0.1:P and are redirected to terminal servers played by
build/rdptarget on 127.0.0.2:P and 127.0.0.3:P (address mode: the client
keeps the port), each with a real build/tsagent reading the target's
sessions file (file: provider). Every wait polls a condition.
"""
import contextlib
import threading
import types

import pytest

from farm import (Holder, XFreeRDP, address_server, connects_at, free_port, needs_tools,
                  needs_xfreerdp, probe, start_targets, wait_until)

ADDRESSES = {"ts1": "127.0.0.2", "ts2": "127.0.0.3"}

pytestmark = needs_tools


def assert_redirected(res, server):
    assert res["ok"], f"expected a redirect to {server}, got {res}"
    assert res["redirected"] == "1" and res["host"] == ADDRESSES[server], res


@pytest.fixture
def farm_factory(broker_factory, tmp_path, stopped_at_teardown):
    """farm(max_sessions=None, **broker_conf): a broker and ts1/ts2, both up."""
    def make(max_sessions=None, **conf):
        port = free_port("127.0.0.1", *ADDRESSES.values())
        broker = broker_factory(rdp_port=port, **conf)
        opts = {} if max_sessions is None else {"max_sessions": max_sessions}
        targets = start_targets(broker, tmp_path, {n: (a, port) for n, a in ADDRESSES.items()},
                                **opts)
        stopped_at_teardown.extend(targets.values())
        return types.SimpleNamespace(broker=broker, port=port, ts=targets)
    return make


@pytest.fixture
def farm(farm_factory):
    return farm_factory()


@contextlib.contextmanager
def hold_direct(farm, server, users, seconds=120):
    """Keeps users connected straight to a target (not via the broker), waits
    until the broker sees them active there, and gives the Holders; they are
    stopped at the end of the block."""
    holders = [Holder(farm.port, u, hold=seconds, host=ADDRESSES[server]) for u in users]
    try:
        wait_until(lambda: all(farm.broker.user_server(u, "active") == server for u in users),
                   20, f"{users} active on {server}")
        yield holders
    finally:
        for h in holders:
            h.stop()


def disconnected_on(farm, server, user):
    """user gets a session on server by connecting there directly for a
    second; waits until the broker has it disconnected there."""
    with hold_direct(farm, server, [user], seconds=1) as holders:
        holders[0].proc.wait(30)
    wait_until(lambda: farm.broker.user_server(user, "disconnected") == server, 10,
               f"{user} disconnected on {server}")


def test_new_user_reconnect_and_second_user(farm):
    b = farm.broker
    first = probe(farm.port, "alice")
    assert first["ok"] and first["redirected"] == "1", first
    a_srv = address_server(ADDRESSES, first["host"])
    other = "ts2" if a_srv == "ts1" else "ts1"
    # the target saw alice (user from the redirect PDU, the cookie kept)
    wait_until(lambda: farm.ts[a_srv].connects("alice"), 5, "alice at the target")
    assert b.user_server("alice") == a_srv
    # alice again: back to the same server, even though it is now the busier one
    assert_redirected(probe(farm.port, "alice"), a_srv)
    wait_until(lambda: len(farm.ts[a_srv].connects("alice")) >= 2, 5, "alice back at the target")
    assert len(farm.ts[a_srv].connects("alice")) == 2
    assert len(set(c["session"] for c in farm.ts[a_srv].connects("alice"))) == 1, "one session id"
    # a second user goes to the other server
    assert_redirected(probe(farm.port, "bob"), other)
    wait_until(lambda: b.user_server("bob") == other, 10, "bob's session on the other server")
    kinds = [(e[0], e[1], e[2]) for e in b.events() if e[2] in ("alice", "bob")]
    assert ("reconnect", a_srv, "alice") in kinds
    assert not farm.ts[other].connects("alice") and not farm.ts[a_srv].connects("bob")


def test_new_user_goes_to_least_loaded(farm):
    with hold_direct(farm, "ts1", ["u1", "u2"]):
        assert_redirected(probe(farm.port, "carol"), "ts2")
        # carol's new session is on ts2 now; ts1 still has two
        wait_until(lambda: farm.broker.user_server("carol") == "ts2", 10, "carol on ts2")
        assert_redirected(probe(farm.port, "dave"), "ts2")


def test_draining_keeps_reconnects_but_no_new_user(farm):
    b = farm.broker
    # alice gets a session on ts1 by connecting there directly
    disconnected_on(farm, "ts1", "alice")
    # make ts2 the busier server, then drain ts1
    with hold_direct(farm, "ts2", ["x1", "x2"]):
        b.cli("server", "drain", "ts1")
        assert b.server("ts1")["admin_state"] == "draining"
        assert_redirected(probe(farm.port, "alice"), "ts1")        # reconnect wins
        assert_redirected(probe(farm.port, "newbie"), "ts2")       # no new user on ts1
        b.cli("server", "enable", "ts1")
        assert_redirected(probe(farm.port, "newbie2"), "ts1")      # least loaded again


def test_down_server_users_go_to_survivor(farm):
    b = farm.broker
    disconnected_on(farm, "ts1", "erin")
    farm.ts["ts1"].stop_agent()          # no more heartbeats: ts1 goes down
    wait_until(lambda: b.server("ts1")["state"] == "down", 15, "ts1 down")
    assert_redirected(probe(farm.port, "erin"), "ts2")
    wait_until(lambda: farm.ts["ts2"].connects("erin"), 5, "erin at ts2")
    assert farm.ts["ts2"].connects("erin")


def test_no_capacity_is_refused_cleanly(farm_factory):
    farm = farm_factory(max_sessions=1)
    b = farm.broker
    a, c = probe(farm.port, "u1"), probe(farm.port, "u2")
    assert a["ok"] and c["ok"] and {a["host"], c["host"]} == set(ADDRESSES.values())
    refused = probe(farm.port, "u3")
    assert not refused["ok"]
    # a clean refusal: the client got a Set Error Info PDU, not a dropped socket
    assert refused["reason"].startswith("ERRINFO_"), refused
    refusals = [e for e in b.events("refusal") if e[2] == "u3"]
    assert len(refusals) == 1 and refusals[0][4], refusals   # logged once, with a reason
    assert b.user_server("u3") is None
    assert not any(t.connects("u3") for t in farm.ts.values())
    # the broker keeps serving: a user with a session still gets in
    assert probe(farm.port, "u1")["ok"]


def test_100_concurrent_users_spread_evenly(farm_factory):
    farm = farm_factory(rdp__handshake_timeout=30)
    b = farm.broker
    users = [f"storm{i:03d}" for i in range(100)]
    results = {}

    def run(u):
        results[u] = probe(farm.port, u, timeout=60)

    threads = [threading.Thread(target=run, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    failed = {u: r for u, r in results.items() if not r["ok"]}
    assert len(results) == 100 and not failed, failed
    def storm_connects():
        return {n: len([c for c in t.connects() if c["user"].startswith("storm")])
                for n, t in farm.ts.items()}
    # a client may report its session a moment before the target writes it
    wait_until(lambda: sum(storm_connects().values()) >= 100, 10,
               "the targets to record 100 connections")
    per_target = storm_connects()
    assert sum(per_target.values()) == 100
    assert abs(per_target["ts1"] - per_target["ts2"]) <= 1, per_target
    # every client went where the broker recorded it, and all are in the database
    for u, r in results.items():
        server = address_server(ADDRESSES, r["host"])
        assert farm.ts[server].connects(u), u
    wait_until(lambda: sorted(r[0] for r in b.sessions() if r[0].startswith("storm")) == users,
               20, "100 sessions in the database")
    counts = {}
    for user, server, _, _ in b.sessions():
        if user.startswith("storm"):
            counts[server] = counts.get(server, 0) + 1
    assert abs(counts.get("ts1", 0) - counts.get("ts2", 0)) <= 1, counts


@needs_xfreerdp
def test_stock_xfreerdp_reaches_a_session(farm, tmp_path):
    b = farm.broker
    # the stock client with its defaults (offers TLS and NLA), certificates ignored
    x = XFreeRDP(farm.port, "frank", tmp_path / "xfreerdp.log", domain="CORP")
    try:
        server, connect = wait_until(lambda: connects_at(farm.ts, "frank"), 30,
                                     "xfreerdp's session on a target")[0]
        assert connect["domain"] == "CORP"
        # the session is active at the target and the broker sees it there
        wait_until(lambda: b.user_server("frank", "active") == server, 10,
                   "frank active in the broker's database")
        assert x.proc.poll() is None, "xfreerdp exited while connected"
    finally:
        x.stop()
