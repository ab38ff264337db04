"""Two active brokers on one PostgreSQL primary with a synchronous standby
(issue 13, item 7): b1 listens for RDP on 127.0.0.1:P and b2 on
127.0.0.10:P (the same port: in address mode the client keeps it, and the
targets listen on 127.0.0.2:P and 127.0.0.3:P). Both present the same
certificate and, in token mode, the same token key; the agents list both
brokers (b1 first). Clients are rdpprobe and Debian's xfreerdp.

  - a logon storm split across both brokers places every user once and
    spreads +-1, never over max_sessions;
  - kill -9 of b1 mid-storm: its clients go to b2 (the test sends them, as
    a floating address or DNS would), the agents move to b2, every told
    placement is in the database once, the servers stay up;
  - a routing token minted by b1 is spliced by b2 after b1 is killed;
  - background work (down detection, pending expiry) lands once.
"""
import collections
import itertools
import os
import socket
import threading
import time

import pytest

from farm import (HA_ADDRESSES as ADDRESSES, Agent, PgCluster, XFreeRDP, all_confirmed,
                  broker_pair, connects_at, live_sessions as live, logon, needs_pg,
                  needs_tools, needs_xfreerdp, wait_until)

pytestmark = [needs_pg, needs_tools, pytest.mark.usefixtures("module_wall_time")]

_serial = itertools.count(1)


@pytest.fixture(scope="module")
def cluster():
    c = PgCluster(standby=True).start()
    yield c
    c.stop()


@pytest.fixture
def pair(cluster, tmp_path, stopped_at_teardown):
    """pair(**broker_pair's options): b1 and b2 on a fresh database."""
    def make(**opts):
        db = cluster.create_db(f"tsb_ha_{os.getpid()}_{next(_serial)}")
        return broker_pair(tmp_path, cluster.url(db), stopped_at_teardown, **opts)
    return make


def per_server(broker):
    rows = broker.query("SELECT v.name, count(e.id) FROM servers v LEFT JOIN sessions e "
                        "ON e.server_id = v.id AND e.state != 'ended' GROUP BY v.name")
    return dict(rows)


def storm(pairs):
    """Logs on each (broker, user) at once; {user: RESULT}."""
    results = {}

    def one(b, u):
        results[u] = logon(b, u)

    threads = [threading.Thread(target=one, args=bu) for bu in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


@needs_xfreerdp
def test_storm_split_across_brokers(pair, tmp_path):
    cap = 20
    f = pair(max_sessions=cap)
    users = [f"user{i:02d}" for i in range(28)]
    stock = {"xa": f.b1, "xb": f.b2}	# one stock client through each broker
    t0 = time.monotonic()
    xs = [XFreeRDP(f.port, u, tmp_path / f"{u}.log", host=b.rdp_host) for u, b in stock.items()]
    try:
        results = storm([(f.b1 if i % 2 == 0 else f.b2, u) for i, u in enumerate(users)])
        bad = {u: r for u, r in results.items() if not r["ok"]}
        assert not bad, bad
        for u in stock:
            wait_until(lambda: connects_at(f.ts, u), 60, f"xfreerdp {u} at a target")
        everyone = set(users) | set(stock)
        found = wait_until(lambda: all_confirmed(f.b2, everyone), 30, "every session confirmed")
        took = time.monotonic() - t0
        # once each, where the client was told (rdpprobe) or went (xfreerdp)
        for u, r in results.items():
            assert found[u][0][0] == r["host"], (u, r, found[u])
            assert [n for n, _ in connects_at(f.ts, u)] == \
                [n for n, a in ADDRESSES.items() if a == r["host"]], u
        for u in stock:
            at = connects_at(f.ts, u)
            assert len(at) == 1 and ADDRESSES[at[0][0]] == found[u][0][0], (u, at, found[u])
        counts = per_server(f.b1)
        assert max(counts.values()) - min(counts.values()) <= 1, counts
        assert sum(counts.values()) == len(everyone)
        print(f"\n[ha_brokers] storm of {len(everyone)} logons over two brokers "
              f"({len(stock)} stock xfreerdp): {counts}, confirmed in {took:.1f} s")

        # more users than room left: the farm fills to max_sessions exactly
        more = [f"late{i:02d}" for i in range(2 * cap - len(everyone) + 4)]
        results = storm([(f.b1 if i % 2 == 0 else f.b2, u) for i, u in enumerate(more)])
        placed = [u for u, r in results.items() if r["ok"]]
        assert len(placed) == 2 * cap - len(everyone), results
        counts = per_server(f.b2)
        assert counts == {n: cap for n in ADDRESSES}, counts
        assert set(live(f.b1, set(more))) == set(placed)
    finally:
        for x in xs:
            x.stop()


def test_broker_kill9_mid_storm(pair):
    # down_after as in production, well above a beat's move to b2 (about 1 s)
    f = pair(health__down_after=8)
    b1, b2 = f.b1, f.b2
    users = [f"storm{i:02d}" for i in range(40)]
    home = {u: (b1 if i % 2 == 0 else b2) for i, u in enumerate(users)}
    told, lock, fails = {}, threading.Lock(), collections.Counter()
    attempts = []		# [start, end] of each logon
    dead = threading.Event()
    moved = []			# times b1's clients were placed by b2

    def client(i, u):
        time.sleep(0.1 * i)	# the storm spreads over 4 s: the kill lands in it
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            b = b2 if dead.is_set() else home[u]
            a = [time.monotonic(), None]
            with lock:
                attempts.append(a)
            r = logon(b, u)
            with lock:
                a[1] = time.monotonic()
                if r["ok"]:
                    told[u] = r["host"]
                    if home[u] is b1 and b is b2:
                        moved.append(a[1])
                    return
                fails[u] += 1
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=iu) for iu in enumerate(users)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(told) >= 10, 60, "the storm under way")
        b1.kill9()
        t_kill = time.monotonic()
        dead.set()
        told_at_kill = len(told)
    finally:
        for t in threads:
            t.join(150)
    assert sorted(told) == users, sorted(set(users) - set(told))
    # every told placement once in the database, on the server the client was told
    found = live(b2, set(users))
    assert {u: [a for a, _ in v] for u, v in found.items()} == \
        {u: [h] for u, h in told.items()}, found
    found = wait_until(lambda: all_confirmed(b2, set(users)), 30, "every session confirmed")
    counts = per_server(b2)
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    # the agents moved to b2 and say so; the servers stayed up
    for t in f.ts.values():
        wait_until(lambda: f"reporting to {b2.url} ({b1.url}: " in t.agent.log(), 15,
                   f"{t.name}'s agent to move to b2")
    assert all(b2.server(n)["state"] == "up" for n in ADDRESSES)
    assert b2.events("server_down") == []
    assert b2.proc.poll() is None
    first = min(m for m in moved if m > t_kill) - t_kill if moved else None
    print(f"\n[ha_brokers] b1 killed when {told_at_kill} of {len(users)} were told; "
          f"{len(moved)} of b1's clients placed by b2, the first "
          f"{first:.2f} s after the kill; {sum(fails.values())} failed attempts retried; "
          f"spread {counts}")


def test_token_minted_by_one_spliced_by_the_other(pair):
    f = pair(rdp__mode="token", rdp__connect_timeout=2)
    b1, b2 = f.b1, f.b2
    res = logon(b1, "gina")
    assert res["ok"] and res["redirected"] == "1", res
    # token mode: the client came back to b1, which spliced it to the target
    assert (res["host"], res["port"]) == (b1.rdp_host, str(f.port)), res
    (server, first), = wait_until(lambda: connects_at(f.ts, "gina"), 5, "gina at a target")
    token = first["token"]
    assert token.startswith("Cookie: msts=tsb1."), first
    b1.kill9()
    # the same token, presented to b2, reaches the same session
    res = logon(b2, "gina", extra=("--load-balance-info", token))
    assert res["ok"] and res["redirected"] == "0", res
    again = wait_until(lambda: f.ts[server].connects("gina")[1:], 5, "gina through b2")
    assert again[0]["token"] == token and again[0]["session"] == first["session"], again
    assert b2.metrics()['tsbroker_splices_total{outcome="spliced"}'] == 1
    # and a token b2 mints is good too
    res = logon(b2, "hugo")
    assert res["ok"] and res["redirected"] == "1", res
    assert res["host"] == b2.rdp_host, res
    wait_until(lambda: connects_at(f.ts, "hugo"), 5, "hugo at a target")


def test_background_work_lands_once(pair, tmp_path, stopped_at_teardown):
    f = pair(targets=False, health__down_after=3, placement__pending_ttl=3)
    b1, b2 = f.b1, f.b2
    # a server whose agent reports no sessions: a placement on it stays pending
    rdp = socket.socket()
    rdp.bind(("127.0.0.2", 0))
    rdp.listen(8)
    try:
        sessions = tmp_path / "sessions.json"
        sessions.write_text("[]")
        token = b1.add_server("ts1", "127.0.0.2", port=rdp.getsockname()[1])
        agent = Agent(tmp_path / "agent", [b1, b2], token, name="ts1",
                      rdp_address="127.0.0.2", rdp_port=rdp.getsockname()[1],
                      sessions=f"file:{sessions}")
        stopped_at_teardown.append(agent)
        agent.start()
        wait_until(lambda: (b2.server("ts1") or {}).get("state") == "up", 15, "ts1 up")
        logon(b2, "pete")	# placed; the redirect leads nowhere
        wait_until(lambda: b1.events("pending_expired"), 15, "pete's placement to expire")
        # both brokers sweep every second: three more sweeps each
        time.sleep(3)
        assert [e[2] for e in b1.events("pending_expired")] == ["pete"]
        assert live(b1, {"pete"}) == {}

        agent.kill9()
        wait_until(lambda: b2.events("server_down"), 15, "ts1 down")
        time.sleep(3)		# three more sweeps on each broker
        downs = b1.events("server_down")
        assert [e[1] for e in downs] == ["ts1"], downs
        assert b1.server("ts1")["state"] == "down"
        assert b1.proc.poll() is None and b2.proc.poll() is None
    finally:
        rdp.close()
