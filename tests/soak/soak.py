#!/usr/bin/python3
"""make soak (issue 14 item 6): mixed load on loopback for --minutes, then
the durability and flatness verdict. Not part of make test.

The farm (tests/e2e/farm.py): one broker on SQLite, three rdptargets with
their tsagents (ts1..ts3 on 127.0.0.2-4), and --agents simulated agents
(bench/hbload --interval, draining, so nothing is placed on them). The load:

  storms      bench/rdpload, every minute --storm users (a fresh prefix),
              then the same users again at once (reconnects)
  logons      build/rdpprobe (FreeRDP) every 10 s, a full logon at a
              target; every fourth one reconnects an earlier user
  admin       GET servers, sessions, events, /metrics every 2 s; a cookie
              login and logout every 30 s
  hostile     tests/e2e/rawrdp.py and raw sockets: garbage, half X.224,
              a TLS handshake that stalls, garbage on the HTTPS port
  chaos       the broker SIGKILLed and restarted at 1/6 and 1/3 of the run
              (and killed at its end), so that the second half, which is
              judged, lies in one lifetime well past its warm-up (a new
              broker's RSS rises for its first minutes, 50 -> 60 MiB in
              the 2026-12-03 run); ts2 or
              ts3 (rdptarget and agent) SIGKILLed and restarted with its
              sessions (--restore) every --minutes/7

Every --sample seconds one row: RSS, fds and threads of the broker and of
ts1's agent (never killed), the database's size (file + WAL). At the end the
broker is SIGKILLed and its database read: every placement a client was
told (rdpload's ok lines, rdpprobe's RESULT) must be a session row of that
user on that server, no user/server pair may have two live rows, and
integrity_check is ok. Flatness: RSS and fds over the second half, fitted
within each broker lifetime (its first --warmup seconds left out), may not
grow by more than --rss-bound KiB / --fd-bound fds over that half.
Exit 0 on a pass, 1 on a failure.
"""
import argparse
import os
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import farm     # noqa: E402
import rawrdp   # noqa: E402

STOP = threading.Event()
LOCK = threading.Lock()
COUNTS = {}     # what the load threads did: name -> count


def count(name, n=1):
    with LOCK:
        COUNTS[name] = COUNTS.get(name, 0) + n


def loop(name, period, fn):
    """Runs fn every period seconds until STOP; an exception is counted
    (the broker may be down: that is part of the load)."""
    def run():
        while not STOP.is_set():
            try:
                fn()
            except Exception as e:      # noqa: BLE001 - counted, the soak goes on
                count(f"{name}_exc")
                count(f"{name}_exc:{type(e).__name__}")
            STOP.wait(period)
    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


def proc_stats(pid):
    """(RSS KiB, open fds, threads) of pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kv = dict(line.split(":", 1) for line in f if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return int(kv["VmRSS"].split()[0]), fds, int(kv["Threads"])


def db_kib(path):
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s)) // 1024


def within_slope(samples, key):
    """The slope (per second) of samples' key fitted within each lifetime
    (one line per lifetime, a common slope): [(lifetime, t, value)]."""
    groups = {}
    for life, t, v in samples:
        groups.setdefault(life, []).append((t, v))
    sxy = sxx = 0.0
    for pts in groups.values():
        if len(pts) < 2:
            continue
        mt = sum(t for t, _ in pts) / len(pts)
        mv = sum(v for _, v in pts) / len(pts)
        sxy += sum((t - mt) * (v - mv) for t, v in pts)
        sxx += sum((t - mt) ** 2 for t, _ in pts)
    return sxy / sxx if sxx else None


class Soak:
    def __init__(self, args):
        self.a = args
        self.root = args.dir or tempfile.mkdtemp(prefix="tsb-soak-")
        self.bench = os.path.join(farm.BUILD, "bench")
        self.told = []          # (user, address) a client was told
        self.life = 0           # the broker's lifetime number
        self.life_start = 0.0
        self.procs = []

    # -- the farm ---------------------------------------------------------
    def start(self):
        a = self.a
        # the redirection names an address: the targets listen on the broker's port
        port = farm.free_port("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
        self.b = farm.Broker(os.path.join(self.root, "broker"), rdp_port=port,
                             placement__pending_ttl=120,
                             # rdpload's clients never reach the target they
                             # are sent to: not a black hole to quarantine
                             health__quarantine_after=1000,
                             health__heartbeat_interval=a.hb_interval,
                             health__down_after=3 * a.hb_interval)
        self.b.start()
        self.life_start = time.monotonic()
        self.ts = farm.start_targets(self.b, self.root, {
            f"ts{i}": (f"127.0.0.{i + 1}", port) for i in (1, 2, 3)}, max_sessions=1000000)
        self.tokens = os.path.join(self.root, "sim-tokens.txt")
        with open(self.tokens, "w") as f:
            for i in range(a.agents):
                name = f"sim{i:03d}"
                tok = self.b.add_server(name, f"10.9.{i // 250}.{i % 250 + 1}")
                self.b.cli("server", "drain", name)
                f.write(f"{name} {tok}\n")
        self.admin = farm.Api(self.b, self.b.admin_token("soak"))

    def restart_broker(self):
        self.b.kill9()
        count("broker_kills")
        self.b.start()
        self.life += 1
        self.life_start = time.monotonic()

    def restart_target(self, n):
        t = self.ts[f"ts{2 + n % 2}"]
        t.kill9()
        for f in t.files:
            f.close()
        t.files = []
        t.start(restore=True)
        count("target_kills")

    # -- load -------------------------------------------------------------
    def run_proc(self, cmd, timeout):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        with LOCK:
            self.procs.append(p)
        try:
            out, _ = p.communicate(timeout=timeout)
        finally:
            with LOCK:
                self.procs.remove(p)
        return out

    def heartbeats(self):
        out = self.run_proc([os.path.join(self.bench, "hbload"), "--url", self.b.url, "--ca",
                             self.b.cert, "--tokens", self.tokens, "--threads", "2",
                             "--interval", str(self.a.hb_interval), "--sessions", "5",
                             "--duration", "30"], 60)
        import json
        r = json.loads(out)
        count("hb_ok", r["ok"])
        count("hb_err", r["errors"])

    def storm(self):
        self.nstorm = getattr(self, "nstorm", 0) + 1
        prefix = f"st{self.nstorm}u"
        for phase in ("storm", "reconnect"):
            out = os.path.join(self.root, f"{prefix}-{phase}.txt")
            self.run_proc([os.path.join(self.bench, "rdpload"), "--host", "127.0.0.1",
                           "--port", str(self.b.rdp_port), "--count", str(self.a.storm),
                           "--rate", str(self.a.storm / 10), "--concurrency", "16",
                           "--user-prefix", prefix, "--timeout", "20", "--out", out], 120)
            with open(out) as f:
                for line in f:
                    w = line.split()
                    if w[0] == "ok":
                        with LOCK:
                            self.told.append((w[1], w[2]))
                    count(f"{phase}_{w[0]}")

    def logon(self):
        self.nlogon = getattr(self, "nlogon", 0) + 1
        n = self.nlogon
        user = f"real{random.randrange(1, n)}" if n % 4 == 0 and n > 1 else f"real{n}"
        out = self.run_proc(farm.probe_cmd(self.b.rdp_port, user, timeout=15), 45)
        line = next((l for l in out.splitlines() if l.startswith("RESULT ")), "RESULT none")
        res = farm.parse_kv(line)
        if line.startswith("RESULT ok"):
            with LOCK:
                self.told.append((user, res["host"]))
            count("logon_ok")
        else:
            count(f"logon_fail:{res.get('reason')}")

    def poll_admin(self):
        for path in ("/api/v1/servers", "/api/v1/sessions?limit=50",
                     "/api/v1/events?limit=50", "/metrics"):
            status, _ = self.b.request("GET", path, token=self.admin.token)
            count("admin_ok" if status == 200 else f"admin_{status}")
        self.npoll = getattr(self, "npoll", 0) + 1
        if self.npoll % 15 == 0:
            hdrs = self.b.login()
            status, _ = self.b.request("POST", "/api/v1/logout", headers=hdrs)
            count("admin_login_ok" if status in (200, 204) else f"admin_logout_{status}")

    def hostile(self):
        kind = random.randrange(5)
        count(f"hostile_{kind}")
        port = self.b.rdp_port
        if kind == 0:           # random bytes
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(os.urandom(random.randrange(1, 4096)))
        elif kind == 1:         # half a Connection Request
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(rawrdp.x224_request("half")[:9])
                time.sleep(1)
        elif kind == 2:         # X.224, TLS, then nothing
            with rawrdp.Client("127.0.0.1", port, timeout=5) as c:
                c.x224("stall")
                c.start_tls()
                time.sleep(2)
        elif kind == 3:         # a TPKT claiming 65535 bytes, 10 given
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"\x03\x00\xff\xff" + os.urandom(10))
                time.sleep(1)
        else:                   # garbage, then a half TLS hello, on the HTTPS port
            with socket.create_connection(("127.0.0.1", self.b.http_port), timeout=5) as s:
                s.sendall(b"\x16\x03\x01\x02\x00\x01" + os.urandom(64))
            ctx = ssl.create_default_context(cafile=self.b.cert)
            ctx.check_hostname = False
            with socket.create_connection(("127.0.0.1", self.b.http_port), timeout=5) as s:
                with ctx.wrap_socket(s) as t:
                    t.sendall(b"POST /api/v1/heartbeat HTTP/1.1\r\nContent-Length: 99\r\n\r\n{")

    # -- the run ----------------------------------------------------------
    def row(self, t0):
        b = proc_stats(self.b.proc.pid) or (0, 0, 0)
        g = proc_stats(self.ts["ts1"].agent.proc.pid) or (0, 0, 0)
        t = time.monotonic() - t0
        with LOCK:
            c = dict(COUNTS)
        r = {"t": t, "life": self.life, "age": time.monotonic() - self.life_start,
             "rss": b[0], "fds": b[1], "thr": b[2], "arss": g[0], "afds": g[1], "athr": g[2],
             "db": db_kib(self.b.sqlite_db), "c": c}
        print(f"{t / 60:5.1f} {self.life:4d} {b[0] / 1024:8.1f} {b[1]:5d} {b[2]:4d} "
              f"{g[0] / 1024:8.1f} {g[1]:5d} {g[2]:4d} {r['db']:8d} {c.get('hb_ok', 0):8d} "
              f"{c.get('storm_ok', 0) + c.get('reconnect_ok', 0):7d} {c.get('logon_ok', 0):6d} "
              f"{c.get('admin_ok', 0):6d} {sum(v for k, v in c.items() if k.startswith('hostile_')):6d}",
              flush=True)
        return r

    def run(self):
        a = self.a
        dur = a.minutes * 60
        self.start()
        print(f"soak: {a.minutes} min in {self.root}; broker {self.b.url}, rdp "
              f"{self.b.rdp_port}; {a.agents} simulated agents; load {os.getloadavg()[0]:.2f}",
              flush=True)
        print("  min life  rss_MiB   fds  thr a_rss_MiB a_fds a_thr   db_KiB   hb_ok "
              "redirs logons  admin hostile", flush=True)
        for name, period, fn in (("hb", 0, self.heartbeats), ("storm", 30, self.storm),
                                 ("logon", 10, self.logon), ("admin", 2, self.poll_admin),
                                 ("hostile", 0.5, self.hostile)):
            loop(name, period, fn)
        t0 = time.monotonic()
        rows = []
        broker_at, target_every = [dur / 6, dur / 3], dur / 7
        nt = 1
        while time.monotonic() - t0 < dur:
            time.sleep(min(a.sample, max(0.0, dur - (time.monotonic() - t0))))
            rows.append(self.row(t0))
            el = time.monotonic() - t0
            if broker_at and el >= broker_at[0] and el < dur - 1:
                broker_at.pop(0)
                self.restart_broker()
            if el >= nt * target_every and el < dur - 1:
                nt += 1
                self.restart_target(nt)
        STOP.set()
        for p in list(self.procs):
            p.kill()
        time.sleep(0.5)
        return self.verdict(rows, dur)

    def verdict(self, rows, dur):
        a = self.a
        self.b.kill9()          # durability: nothing a client was told may be lost
        ok = True
        rows_db = self.b.query("SELECT e.user, v.address, e.state FROM sessions e "
                               "JOIN servers v ON v.id = e.server_id")
        have, live = set(), {}
        for user, address, state in rows_db:
            have.add((user, address))
            if state != "ended":
                live[(user, address)] = live.get((user, address), 0) + 1
        told = set(self.told)
        missing = sorted(told - have)
        dups = sorted(k for k, n in live.items() if n > 1)
        integ = self.b.query("PRAGMA integrity_check")[0][0]
        with LOCK:
            c = dict(COUNTS)
        print(f"counts: {dict(sorted(c.items()))}")
        print(f"placements told: {len(self.told)} ({len(told)} distinct user/server); "
              f"missing on disk: {len(missing)} {missing[:5]}; user/server pairs with two "
              f"live rows: {len(dups)} {dups[:5]}; integrity_check: {integ}")
        ok &= not missing and not dups and integ == "ok" and len(told) > 0
        half = [r for r in rows if r["t"] >= dur / 2 and r["age"] >= a.warmup]
        span = dur / 2
        for who, rk, fk, bound_r, bound_f in (("broker", "rss", "fds", a.rss_bound, a.fd_bound),
                                             ("agent ts1", "arss", "afds", a.rss_bound,
                                              a.fd_bound)):
            life = "life" if who == "broker" else None
            sr = within_slope([(r[life] if life else 0, r["t"], r[rk]) for r in half], rk)
            sf = within_slope([(r[life] if life else 0, r["t"], r[fk]) for r in half], fk)
            if sr is None or sf is None:
                print(f"{who}: second half too short for a slope ({len(half)} samples): "
                      "not judged")
                continue
            gr, gf = sr * span, sf * span
            flat = gr <= bound_r and gf <= bound_f
            print(f"{who}: second half ({len(half)} samples) RSS {sr * 60:+.1f} KiB/min "
                  f"({gr:+.0f} KiB over {span / 60:.0f} min, bound {bound_r}), fds "
                  f"{sf * 60:+.3f}/min ({gf:+.1f}, bound {bound_f}): "
                  f"{'flat' if flat else 'GROWS'}")
            ok &= flat
        print(f"soak: {'PASS' if ok else 'FAIL'} (load {os.getloadavg()[0]:.2f})")
        return ok

    def stop(self):
        STOP.set()
        for t in getattr(self, "ts", {}).values():
            t.stop()
        if getattr(self, "b", None):
            self.b.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--sample", type=float, default=60, help="seconds between rows")
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--hb-interval", type=int, default=3)
    ap.add_argument("--storm", type=int, default=150, help="users per storm")
    ap.add_argument("--warmup", type=float, default=90,
                    help="seconds of a broker lifetime left out of the slope")
    ap.add_argument("--rss-bound", type=int, default=4096, help="KiB over the second half")
    ap.add_argument("--fd-bound", type=int, default=8, help="fds over the second half")
    ap.add_argument("--dir", help="work directory (default: a new one under /tmp)")
    s = Soak(ap.parse_args())
    try:
        ok = s.run()
    finally:
        s.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
