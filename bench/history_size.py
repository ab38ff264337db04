#!/usr/bin/python3
"""The database size of [history] at its defaults (a sample a minute, merged
into 15-minute samples after a day, kept 14 days), for N servers: builds a
SQLite file with the broker's schema (schema/NNN_*.sql) and the history a
farm of N servers reaches in steady state (1,440 raw + 13 x 96 merged
samples), and prints the history's share of the file. Usage:
bench/history_size.py [N ...] (default 100 1000)."""
import os
import random
import sqlite3
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DAY = 86400 * 1000


def build(path, servers):
    db = sqlite3.connect(path)
    for name in sorted(os.listdir(os.path.join(ROOT, "schema"))):
        if name[:3].isdigit() and name.endswith(".sql"):
            db.executescript(open(os.path.join(ROOT, "schema", name)).read())
    names = [f"ts{i:04d}" for i in range(servers)]
    now = 1_800_000_000_000
    samples = [(now - DAY - k * 900_000, 900_000) for k in range(13 * 96)]
    samples += [(now - k * 60_000, 60_000) for k in range(1440)]
    rnd = random.Random(1)
    with db:
        for ts, span in samples:
            db.execute("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (ts, span, rnd.randint(0, 50), rnd.randint(0, 50), rnd.randint(0, 3),
                        rnd.randint(2000, 9000), rnd.randint(9000, 90000), rnd.randint(-5, 500)))
            db.executemany("INSERT INTO history_servers VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(ts, span, n, rnd.randint(0, 40), rnd.randint(0, 10),
                             rnd.randint(0, 2), 0) for n in names])
    db.execute("VACUUM")
    db.close()
    return len(samples)


def upkeep_ms(path):
    """ms of the longest write transaction of the upkeep: one 15-minute
    bucket merged (store_sql.c's statements) and one batch of 10 samples
    deleted (health.c's batch)."""
    db = sqlite3.connect(path, isolation_level=None)
    span, first = 900_000, db.execute("SELECT min(ts) FROM history WHERE span < 900000").fetchone()[0]
    b = first - first % span
    t = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO history SELECT ?1, ?2, sum(logons), sum(reconnects), sum(refusals), "
               "CAST(avg(redirect_p50_us) AS bigint), max(redirect_p99_us), min(headroom) FROM "
               "history WHERE ts >= ?1 AND ts < ?1 + ?2 AND span < ?2 HAVING count(*) > 0 "
               "ON CONFLICT (ts, span) DO NOTHING", (b, span))
    db.execute("INSERT INTO history_servers SELECT ?1, ?2, server, CAST(round(avg(active)) AS "
               "integer), CAST(round(avg(disconnected)) AS integer), CAST(round(avg(pending)) AS "
               "integer), CAST(round(avg(lost)) AS integer) FROM history_servers WHERE ts >= ?1 "
               "AND ts < ?1 + ?2 AND span < ?2 GROUP BY server ON CONFLICT DO NOTHING", (b, span))
    for table in ("history_servers", "history"):
        db.execute(f"DELETE FROM {table} WHERE ts >= ?1 AND ts < ?1 + ?2 AND span < ?2", (b, span))
    db.execute("COMMIT")
    merge = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    cut = db.execute("SELECT ts FROM history ORDER BY ts LIMIT 1 OFFSET 10").fetchone()[0]
    for table in ("history_servers", "history"):
        db.execute(f"DELETE FROM {table} WHERE ts < ?", (cut,))
    db.execute("COMMIT")
    delete = (time.perf_counter() - t) * 1000
    db.close()
    return merge, delete


def main():
    for n in [int(a) for a in sys.argv[1:]] or [100, 1000]:
        with tempfile.TemporaryDirectory() as d:
            empty, full = os.path.join(d, "empty.db"), os.path.join(d, "full.db")
            build(empty, 0)
            count = build(full, n)
            size = os.path.getsize(full) - os.path.getsize(empty)
            merge, delete = upkeep_ms(full)
            print(f"{n} servers: {count} samples, {count * n} server rows, "
                  f"history {size / 2**20:.1f} MiB; upkeep: a bucket merged in "
                  f"{merge:.1f} ms, 10 samples deleted in {delete:.1f} ms")


if __name__ == "__main__":
    main()
