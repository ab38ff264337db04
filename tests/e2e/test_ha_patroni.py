"""The broker pair on PostgreSQL managed by Patroni with etcd (issue 13,
items 5 and 7; tests/pg/patroni.sh: two nodes, synchronous_mode not
strict, ttl 5, loop_wait 1, retry_timeout 2). b1 and b2, the targets and
agents are laid out as in test_ha_brokers (farm.broker_pair); [state] url
names both nodes with target_session_attrs=read-write.

  - the primary node crashes (its Patroni and postgres SIGKILLed): Patroni
    promotes the synchronous standby and the journey goes on (a logon, an
    existing user's reconnect, a new user); prints the time from the crash
    to the first placement;
  - the synchronous standby node is killed, or frozen (SIGSTOP: a machine
    gone without closing its connections): logons go on; prints how long
    they stalled and asserts it is within the policy of
    docs/high-availability.md ("The synchronous standby").
"""
import shutil
import threading
import time

import pytest

from farm import (HA_ADDRESSES, Patroni, all_confirmed, broker_pair, live_sessions, logon,
                  needs_pg, needs_tools, wait_until)

needs_patroni = pytest.mark.skipif(not (shutil.which("patroni") and shutil.which("etcd")),
                                   reason="patroni and etcd-server are needed "
                                   "(tools/deps.sh test)")
pytestmark = [needs_pg, needs_tools, needs_patroni,
              pytest.mark.usefixtures("module_wall_time")]

# The policy (docs/high-availability.md, "The synchronous standby"): non-strict
# synchronous_mode. When the synchronous standby is gone, the primary's
# Patroni drops it from synchronous_standby_names in the first HA loop that
# sees it gone, and commits wait until then: up to loop_wait when its
# connections closed (killed), up to ttl + loop_wait when it vanished
# without closing them (frozen: its member key must expire first). A logon
# waits for its placement's commit: it may take that much longer than a
# logon before, plus 1 s for the loop's own work.
TTL, LOOP_WAIT = 5, 1
POLICY = {"killed": LOOP_WAIT, "frozen": TTL + LOOP_WAIT}


@pytest.fixture(scope="module")
def patroni():
    p = Patroni().start()
    yield p
    p.stop()


@pytest.fixture
def healthy(patroni):
    """The cluster with a primary and a synchronous standby again: a node
    an earlier test killed is started and rejoins."""
    for n in (1, 2):
        if patroni.role(n) == "down":
            patroni.start_node(n)
    patroni.wait(90)
    return patroni


@pytest.fixture
def pair(healthy, tmp_path, stopped_at_teardown):
    db = healthy.create_db(f"tsb_patroni_{int(time.time() * 1000)}")
    # down_after at its default: above a failover's 5-7 s without heartbeats
    return broker_pair(tmp_path, healthy.url(db), stopped_at_teardown, health__down_after=15)


def placed(broker, user, deadline):
    """Logs user on through broker until it is placed (or the deadline):
    (RESULT, time.monotonic() when it was placed)."""
    while True:
        r = logon(broker, user, timeout=10)
        if r["ok"] or time.monotonic() > deadline:
            return r, time.monotonic()
        time.sleep(0.1)


def test_primary_node_crash(healthy, pair):
    p, f = healthy, pair
    r = logon(f.b1, "alice")
    assert r["ok"], r
    wait_until(lambda: all_confirmed(f.b2, {"alice"}), 15, "alice's session confirmed")
    old = p.primary()
    p.kill_node(old)
    crashed = time.monotonic()
    # the journey goes on: a new user first (the first placement after the crash)
    r, at = placed(f.b2, "bob", crashed + 60)
    assert r["ok"], r
    first = at - crashed
    promoted = p.primary()
    assert promoted == 3 - old, p.role(promoted or 1)
    # an existing user comes back to her session; a new user through b1
    home = live_sessions(f.b2, {"alice"})["alice"]
    r = logon(f.b1, "alice")
    assert r["ok"] and [r["host"]] == [h for h, _ in home], (r, home)
    r = logon(f.b1, "carol")
    assert r["ok"], r
    found = wait_until(lambda: all_confirmed(f.b1, {"alice", "bob", "carol"}), 20,
                       "every session confirmed on the new primary")
    assert all(len(v) == 1 for v in found.values()), found
    assert all(f.b1.server(n)["state"] == "up" for n in HA_ADDRESSES)
    assert f.b1.events("server_down") == []
    assert f.b1.proc.poll() is None and f.b2.proc.poll() is None
    print(f"\n[ha_patroni] primary node {old} crashed: node {promoted} promoted, the first "
          f"placement {first:.1f} s after the crash (ttl {TTL})")


def logons_across(f, event):
    """Two clients log new users on, one through each broker, without a
    pause; event() runs once six are placed, and the clients go on until
    ten more that began after it are placed. Returns (stall, slowest logon
    before, failed attempts, told {user: host}); the stall runs from the
    event (or a later start) to the end of the logons waiting across it."""
    attempts = []		# (start, end, ok, user, host) of each logon
    stop = threading.Event()

    def client(b, prefix):
        i = 0
        while not stop.is_set():
            t, u = time.monotonic(), f"{prefix}{i:03d}"
            r = logon(b, u, timeout=20)
            attempts.append((t, time.monotonic(), r["ok"], u, r.get("host")))
            i += 1

    threads = [threading.Thread(target=client, args=(b, name))
               for b, name in ((f.b1, "one"), (f.b2, "two"))]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: sum(a[2] for a in attempts) >= 6, 30, "logons under way")
        at = event()
        wait_until(lambda: sum(1 for a in attempts if a[0] > at and a[2]) >= 10,
                   TTL + 60, "logons after the standby's loss")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    stall = max(a[1] - max(a[0], at) for a in attempts if a[1] >= at)
    before = max(a[1] - a[0] for a in attempts if a[1] < at)
    failed = [a for a in attempts if not a[2]]
    return stall, before, failed, {a[3]: a[4] for a in attempts if a[2]}


def check_stall(f, what, policy, stall, before, failed, told):
    bound = policy + before + 1
    print(f"\n[ha_patroni] {what}: logons stalled {stall:.2f} s (a logon took at most "
          f"{before:.2f} s before: {stall - before:+.2f} s); {len(failed)} failed, "
          f"{len(told)} placed; the policy's wait {policy} s, bound {bound:.2f} s")
    assert not failed, failed
    assert stall <= bound, f"logons stalled {stall:.2f} s"
    # every logon told is in the database once, where the client was told
    found = live_sessions(f.b1, set(told))
    assert {u: [h for h, _ in v] for u, v in found.items()} == \
        {u: [h] for u, h in told.items()}


@pytest.mark.parametrize("how", ["frozen", "killed"])
def test_synchronous_standby_lost(healthy, pair, how):
    """frozen: the standby's machine stops without closing its connections
    (SIGSTOP), and the primary learns it is gone when its member key
    expires (ttl); killed: its Patroni and postgres die, their connections
    close."""
    p, f = healthy, pair
    standby = 3 - p.primary()
    assert p.role(standby) == "sync"

    def lose():
        (p.freeze_node if how == "frozen" else p.kill_node)(standby)
        return time.monotonic()

    try:
        check_stall(f, f"synchronous standby (node {standby}) {how}", POLICY[how],
                    *logons_across(f, lose))
        assert p.role(p.primary()) == "primary"
    finally:
        if how == "frozen":
            p.thaw_node(standby)
