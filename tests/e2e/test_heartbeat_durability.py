"""Heartbeats by group commit (issue 15): beats arriving together share one
transaction and one commit, and each is answered only once that commit is
durable. Agents storm the broker over keep-alive connections, each beat
carrying a sequence number (mem_available_kb) and a session named after
it; the broker is killed with SIGKILL mid-storm. Every beat that got a 200
must be in the database after the restart: its server holds that sequence
or a later one, with the session of that sequence. (A SIGKILL loses what
the broker held in memory, not what the kernel held: that a commit also
waited for its fsync is the engine's synchronous=FULL, kept.)"""
import http.client
import json
import threading
import time

from farm import heartbeat_body, wait_until

AGENTS = 32


def test_kill9_mid_storm_every_acknowledged_beat_is_in_the_database(broker_factory):
    b = broker_factory(health__down_after=600)
    names = [f"hb{i:02d}" for i in range(AGENTS)]
    tokens = {n: b.add_server(n, address="127.0.0.2") for n in names}
    acked = {n: 0 for n in names}
    counts = {"ok": 0, "other": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def agent(name):
        conn = http.client.HTTPSConnection("127.0.0.1", b.http_port, timeout=10,
                                           context=b.ssl_context())
        seq = 0
        while not stop.is_set():
            seq += 1
            body = heartbeat_body(name, [(f"u{seq}", "active"), ("steady", "active")])
            body["load"]["mem_available_kb"] = seq
            try:
                conn.request("POST", "/api/v1/heartbeat", json.dumps(body),
                             {"Authorization": f"Bearer {tokens[name]}",
                              "Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException):	# the broker died
                return
            with lock:
                if r.status == 200:
                    acked[name] = seq
                    counts["ok"] += 1
                else:
                    counts["other"] += 1

    threads = [threading.Thread(target=agent, args=(n,)) for n in names]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    # every agent acknowledged a few times, then the kill mid-storm
    wait_until(lambda: min(acked.values()) >= 5, 90, "5 acknowledged beats of every agent")
    b.kill9()
    elapsed = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(30)
    assert counts["other"] == 0, counts
    b.start()
    for n in names:
        (seq,) = b.query("SELECT mem_available_kb FROM servers WHERE name = ?", n)[0]
        assert seq >= acked[n], (n, seq, acked[n])
        live = {u for u, _, st, _ in b.sessions(server=n) if st == "active"}
        assert live == {f"u{seq}", "steady"}, (n, seq, live)
    print(f"\n{counts['ok']} heartbeats of {AGENTS} agents acknowledged in {elapsed:.1f} s "
          "before SIGKILL; every one is in the database after the restart")
