"""History with two brokers on one PostgreSQL database ([history] period =
1): every period is sampled exactly once (whichever broker comes first),
each sample holds the servers' sessions, and both brokers' API answer the
same samples."""
import pytest

from farm import Broker, heartbeat_body, needs_pg, wait_until

pytestmark = needs_pg


def test_two_brokers_sample_each_period_once(pg_cluster, tmp_path, stopped_at_teardown):
    url = pg_cluster.url(pg_cluster.create_db("tsb_history"), connect_timeout=5)
    brokers = []
    for name in ("b1", "b2"):
        b = Broker(tmp_path / name, state__engine="postgresql", state__url=url,
                   history__period=1)
        stopped_at_teardown.append(b)
        brokers.append(b.start())
    tokens = {n: brokers[0].add_server(n, max_sessions=10) for n in ("ts1", "ts2")}
    sessions = {"ts1": [("alice", "active"), ("bob", "disconnected")], "ts2": [("carol", "active")]}

    def beat():
        for i, (n, tok) in enumerate(tokens.items()):	# each agent to another broker
            brokers[i].heartbeat(tok, heartbeat_body(n, sessions[n]))
        return False

    token = brokers[1].admin_token()

    def samples(b):
        status, body = b.request("GET", "/api/v1/history?since=0", token=token)
        assert status == 200, body
        return body["samples"]

    def full():
        beat()
        s = [x for x in samples(brokers[1]) if set(x["servers"]) == {"ts1", "ts2"}]
        return len(s) >= 6 and s
    got = wait_until(full, 30, "6 samples with both servers", interval=0.3)
    rows = pg_cluster.psql("SELECT ts, count(*) FROM history GROUP BY ts HAVING count(*) > 1",
                        db="tsb_history")
    assert rows.strip() == "", f"periods sampled twice: {rows}"
    ts = [x["ts"] for x in samples(brokers[0])]
    assert ts == sorted(set(ts)) and all(t % 1000 == 0 for t in ts)
    last = got[-1]
    assert last["servers"]["ts1"] == {"active": 1, "disconnected": 1, "pending": 0, "lost": 0}
    assert last["servers"]["ts2"]["active"] == 1
    # losing ts1 puts its 2 users on ts2 (9 free): 7 left
    assert last["headroom"] == 7
    assert samples(brokers[0])[:len(got)] == samples(brokers[1])[:len(got)]
    for b in brokers:
        assert "[error]" not in b.log(), b.log()
