#!/usr/bin/python3
"""make bench (issue 9): what users of a broker care about, each figure beside
a reference measured in the same run on the same machine.

  redirects   bench/rdpload (a minimal RDP client in C) against a broker in
              address mode; reference: bench/tlsref, a bare OpenSSL accept
              loop with the same certificate and key, loaded by the same
              client in TLS-only mode; profile: callgrind on a small run
  storm       1,000 users in 10 s over 4 servers; durability checked after
              a SIGKILL of the broker
  heartbeats  bench/hbload (libcurl, keep-alive) posting real HTTPS
              heartbeats of agents with 20 sessions each
  placement   bench/placebench: store_placement_commit at 10,000 servers and
              200,000 sessions; the broker's RSS on that database
  splice      bench/splicebench through the broker's token-mode splice and
              through HAProxy 2.6 (mode tcp, balance rdp-cookie), and direct

Prints the table and writes bench/results/latest.md; raw outputs go to
bench/results/run/ (not committed). Never fails because a target is missed:
exit 1 only if the run itself broke.
"""
import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESULTS = os.path.join(ROOT, "bench", "results")
RUN = os.path.join(RESULTS, "run")
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_s(pid):
    """utime + stime of a process (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_json(cmd, timeout=300, name=None):
    """Runs a bench tool, keeps its output under RUN, returns its JSON line."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if name:
        with open(os.path.join(RUN, name + ".out"), "w") as f:
            f.write(" ".join(cmd) + "\n" + p.stdout + p.stderr)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{cmd[0]} gave no result (exit {p.returncode}): {p.stderr[-500:]}")


class Broker:
    def __init__(self, build, name, mode="address", db=None, **extra):
        self.build = build
        self.dir = os.path.join(RUN, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.rdp_port = free_port()
        self.http_port = free_port()
        self.db = db or os.path.join(self.dir, "state.db")
        self.cert = os.path.join(RUN, "broker.crt")
        self.key = os.path.join(RUN, "broker.key")
        conf = {
            "state": {"path": self.db},
            "rdp": {"listen": f"127.0.0.1:{self.rdp_port}", "mode": mode,
                    "certificate": self.cert, "private_key": self.key,
                    "token_key": os.path.join(self.dir, "token.key")},
            "http": {"listen": f"127.0.0.1:{self.http_port}",
                     "web_root": os.path.join(ROOT, "web")},
            # the bench posts heartbeats itself: servers stay up for the run
            "health": {"heartbeat_interval": 5, "down_after": 3600},
            "placement": {"pending_ttl": 3600},
        }
        if os.environ.get("TSB_BENCH_RDP_ENGINE"):	# lean | freerdp, else the default
            conf["rdp"]["engine"] = os.environ["TSB_BENCH_RDP_ENGINE"]
        for k, v in extra.items():
            sec, key = k.split("__", 1)
            conf.setdefault(sec, {})[key] = v
        self.conf = os.path.join(self.dir, "broker.conf")
        with open(self.conf, "w") as f:
            for sec, keys in conf.items():
                f.write(f"[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
        self.proc = None
        self.tokens = {}

    def cli(self, *args):
        p = subprocess.run([os.path.join(self.build, "tsbroker"), "-f", self.conf, *args],
                           capture_output=True, text=True, timeout=60, cwd=self.dir)
        if p.returncode != 0:
            raise RuntimeError(f"tsbroker {' '.join(args)}: {p.stderr}")
        return p.stdout

    def start(self, wrapper=(), timeout=30):
        self.out = open(os.path.join(self.dir, "broker.out"), "w")
        self.err = open(os.path.join(self.dir, "broker.log"), "w")
        self.proc = subprocess.Popen([*wrapper, os.path.join(self.build, "tsbroker"), "-f",
                                      self.conf], stdout=self.out, stderr=self.err,
                                     cwd=self.dir)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with open(self.out.name) as f:
                if "tsbroker ready" in f.read():
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {open(self.err.name).read()[-800:]}")
            time.sleep(0.05)
        raise RuntimeError("broker did not start")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (getattr(self, "out", None), getattr(self, "err", None)):
            if f:
                f.close()

    def log_text(self):
        with open(os.path.join(self.dir, "broker.log")) as f:
            return f.read()

    def add_server(self, name, address, port=3389, max_sessions=1000000):
        out = self.cli("server", "add", name, "--address", address, "--port", str(port),
                       "--max-sessions", str(max_sessions))
        self.tokens[name] = out.strip().splitlines()[-1].strip()

    def ssl_ctx(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False
        return ctx

    def get(self, path):
        with urllib.request.urlopen(f"https://127.0.0.1:{self.http_port}{path}",
                                    context=self.ssl_ctx(), timeout=60) as r:
            return r.read().decode()

    def heartbeat(self, name, address, port=3389, sessions=()):
        body = {"name": name, "version": "bench",
                "rdp": {"address": address, "port": port, "accepting": True},
                "load": {"ncpu": 8, "cpu_percent": 5.0, "load1": 0.5,
                         "mem_total_kb": 32000000, "mem_available_kb": 16000000},
                "sessions": list(sessions)}
        req = urllib.request.Request(f"https://127.0.0.1:{self.http_port}/api/v1/heartbeat",
                                     data=json.dumps(body).encode(), method="POST")
        req.add_header("Authorization", f"Bearer {self.tokens[name]}")
        with urllib.request.urlopen(req, context=self.ssl_ctx(), timeout=30) as r:
            assert r.status == 200

    def hist(self):
        """(cumulative buckets [(le_s, count)], sum_s, redirects by outcome)."""
        text = self.get("/metrics")
        buckets = []
        for m in re.finditer(r'tsbroker_redirect_seconds_bucket\{le="([^"]+)"\} (\d+)', text):
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, int(m.group(2))))
        outcomes = {m.group(1): int(m.group(2)) for m in re.finditer(
            r'tsbroker_redirects_total\{outcome="(\w+)"\} (\d+)', text)}
        return buckets, outcomes


def hist_quantile(before, after, q):
    """Prometheus-style quantile of the difference of two cumulative histograms
    (linear within a bucket), in microseconds."""
    diff = [(le, a - b) for (le, a), (_, b) in zip(after, before)]
    total = diff[-1][1] if diff else 0
    if total == 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0
    for le, c in diff:
        if c >= rank:
            if le == float("inf"):
                return prev_le * 1e6
            return (prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1)) * 1e6
        prev_le, prev_c = le, c
    return None


class Proc:
    """A helper process we start and stop ourselves (tlsref, sink, haproxy)."""

    def __init__(self, cmd, name, ready=None):
        self.log = open(os.path.join(RUN, name + ".log"), "w")
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        if ready:
            line = self.p.stdout.readline()
            if ready not in line:
                raise RuntimeError(f"{cmd[0]} did not start: {line}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.log.close()


# ---- the parts ---------------------------------------------------------------

SERVERS4 = [(f"ts{i}", f"127.0.0.{i + 1}") for i in range(1, 5)]


def farm(b):
    for name, addr in SERVERS4:
        b.add_server(name, addr)
    for name, addr in SERVERS4:
        b.heartbeat(name, addr)


def bench_redirects(build, args, R):
    b = Broker(build, "redirects").start()
    farm(b)
    rdpload = os.path.join(build, "bench", "rdpload")
    host = ["--host", "127.0.0.1"]
    # reference: bare TLS with the same certificate and key, same client
    tport = free_port()
    t = Proc([os.path.join(build, "bench", "tlsref"), "--listen", f"127.0.0.1:{tport}",
              "--cert", b.cert, "--key", b.key, "--threads", "8"], "tlsref", "LISTENING")
    c0 = cpu_s(t.p.pid)
    tls = run_json([rdpload, *host, "--port", str(tport), "--mode", "tls", "--concurrency",
                    str(args.concurrency), "--duration", str(args.duration)], name="rdpload-tls")
    tls["server_cpu_us"] = (cpu_s(t.p.pid) - c0) * 1e6 / max(tls["ok"], 1)
    t.stop()
    # the broker, same client, full RDP up to the redirection PDU
    h0, o0 = b.hist()
    c0 = cpu_s(b.pid)
    rdp = run_json([rdpload, *host, "--port", str(b.rdp_port), "--concurrency",
                    str(args.concurrency), "--duration", str(args.duration), "--user-prefix",
                    "load"], name="rdpload-rdp")
    cpu = cpu_s(b.pid) - c0
    h1, o1 = b.hist()
    rdp["broker_cpu_us"] = cpu * 1e6 / max(rdp["ok"], 1)
    rdp["broker_p50_us"] = hist_quantile(h0, h1, 0.5)
    rdp["broker_p99_us"] = hist_quantile(h0, h1, 0.99)
    rdp["broker_outcomes"] = {k: o1.get(k, 0) - o0.get(k, 0) for k in o1}
    rdp["rss_kb"] = status_kb(b.pid, "VmRSS")
    rdp["threads"] = status_kb(b.pid, "Threads")
    # the same at a light offered load (no queueing): the handling time itself
    h0, _ = b.hist()
    light = run_json([rdpload, *host, "--port", str(b.rdp_port), "--concurrency", "4",
                      "--rate", "40", "--count", "200", "--user-prefix", "light"],
                     name="rdpload-light")
    h1, _ = b.hist()
    light["broker_p50_us"] = hist_quantile(h0, h1, 0.5)
    light["broker_p99_us"] = hist_quantile(h0, h1, 0.99)
    R["redirect"] = {"tls": tls, "rdp": rdp, "light": light}
    R["redirect"]["verify"] = verify_against_freerdp(build, b)
    b.stop()
    if args.profile:
        R["redirect"]["profile"] = profile_callgrind(build, args)


def verify_against_freerdp(build, b):
    """rdpload and FreeRDP's client (rdpprobe) must look the same to the broker:
    the same user in its log and the same server for a reconnect."""
    rdpload = os.path.join(build, "bench", "rdpload")
    probe = os.path.join(build, "rdpprobe")
    addr = dict(SERVERS4)
    res = {"checks": [], "ok": True}

    def probe_user(user):
        subprocess.run([probe, "--host", "127.0.0.1", "--port", str(b.rdp_port), "--user", user,
                        "--domain", "BENCH", "--timeout", "5"], capture_output=True, timeout=30)

    def load_user(user):
        out = os.path.join(RUN, f"verify-{user}.txt")
        prefix, start = user[:-1], user[-1]
        run_json([rdpload, "--host", "127.0.0.1", "--port", str(b.rdp_port), "--count", "1",
                  "--concurrency", "1", "--user-prefix", prefix, "--user-start", start,
                  "--out", out])
        with open(out) as f:
            return f.read().split()

    def logged(user):
        return re.findall(rf"\] broker_done: {user} from 127\.0\.0\.1 -> (\S+) \((\w+)",
                          b.log_text())

    # FreeRDP first, then rdpload reconnects: the PDU must name the same server
    probe_user("verifya1")
    line = load_user("verifya1")
    first = logged("verifya1")
    ok = (len(first) == 2 and first[0][1] == "new" and first[1] == (first[0][0], "reconnect")
          and line[0] == "ok" and line[2] == addr[first[0][0]])
    res["checks"].append({"first": "rdpprobe", "log": first, "rdpload": line[:3], "ok": ok})
    res["ok"] &= ok
    # rdpload first, then FreeRDP
    line = load_user("verifyb1")
    probe_user("verifyb1")
    second = logged("verifyb1")
    ok = (len(second) == 2 and second[0][1] == "new" and
          second[1] == (second[0][0], "reconnect") and line[0] == "ok" and
          line[2] == addr[second[0][0]])
    res["checks"].append({"first": "rdpload", "log": second, "rdpload": line[:3], "ok": ok})
    res["ok"] &= ok
    return res


def profile_callgrind(build, args):
    """A small run of the broker under callgrind: where its instructions go,
    by library and by function (kernel time is not seen by callgrind)."""
    if not shutil.which("valgrind"):
        return {"skipped": "valgrind not installed"}
    b = Broker(build, "profile")
    out = os.path.join(b.dir, "callgrind.out")
    b.start(wrapper=("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                     "--dump-instr=no"), timeout=120)
    farm(b)
    run_json([os.path.join(build, "bench", "rdpload"), "--host", "127.0.0.1", "--port",
              str(b.rdp_port), "--concurrency", "4", "--count", str(args.profile_count),
              "--timeout", "60", "--user-prefix", "prof"], timeout=600, name="rdpload-profile")
    b.stop(signal.SIGINT)
    p = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", out],
                       capture_output=True, text=True, timeout=300)
    with open(os.path.join(RUN, "callgrind.txt"), "w") as f:
        f.write(p.stdout)
    total, by_obj, funcs = 0, {}, []
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S+):(\S+)(?: \[(.+)\])?", line)
        if m:
            n = int(m.group(1).replace(",", ""))
            obj = os.path.basename(m.group(5) or "?")
            obj = re.sub(r"\.so[.\d]*$", "", obj)
            by_obj[obj] = by_obj.get(obj, 0) + n
            fn = m.group(4)
            funcs.append((n, f"{obj}:{fn}" if fn.startswith("0x") else fn, obj))
    if total == 0:
        return {"skipped": "no callgrind totals"}
    inc = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
                         capture_output=True, text=True, timeout=300).stdout
    inclusive = []
    for fn in ("tls_accept", "SSL_do_handshake", "freerdp_peer_context_new",
               "store_placement_commit", "store_event_add"):
        m = re.search(rf"^\s*[\d,]+ \(\s*([\d.]+)%\)\s+\S+:{fn} ", inc, re.M)
        if m:
            inclusive.append((fn, float(m.group(1))))
    top_obj = sorted(by_obj.items(), key=lambda x: -x[1])[:6]
    return {"redirects": args.profile_count, "instr_per_redirect": total / args.profile_count,
            "by_object": [(o, round(100.0 * n / total, 1)) for o, n in top_obj],
            "top_functions": [(f, o, round(100.0 * n / total, 1)) for n, f, o in funcs[:8]],
            "inclusive": inclusive}


def bench_storm_checked(build, args, R):
    """The storm with the client's per-user view compared to the database."""
    b = Broker(build, "storm").start()
    farm(b)
    out = os.path.join(RUN, "storm.txt")
    run = run_json([os.path.join(build, "bench", "rdpload"), "--host", "127.0.0.1", "--port",
                    str(b.rdp_port), "--count", str(args.storm_users), "--rate",
                    str(args.storm_users / args.storm_seconds), "--concurrency", "200",
                    "--user-prefix", "storm", "--timeout", "30", "--out", out],
                   timeout=120, name="storm")
    b.stop(signal.SIGKILL)		# durability: nothing a client was told may be lost
    told = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if parts[0] == "ok":
                told[parts[1]] = parts[2]
    db = sqlite3.connect(f"file:{b.db}?mode=ro", uri=True)
    rows = db.execute("SELECT e.user, v.name, v.address FROM sessions e JOIN servers v "
                      "ON v.id = e.server_id WHERE e.user LIKE 'storm%' AND e.state = 'pending'"
                      ).fetchall()
    db.close()
    in_db = {u: a for u, _, a in rows}
    per = {name: 0 for name, _ in SERVERS4}
    for _, name, _ in rows:
        per[name] += 1
    lost = [u for u, a in told.items() if in_db.get(u) != a]
    R["storm"] = {"run": run, "told": len(told), "per_server": per,
                  "spread": max(per.values()) - min(per.values()), "lost": len(lost),
                  "users": args.storm_users}


def hb_broker(build, args, name, db=None):
    """A broker with args.agents enrolled agents; (broker, tokens file)."""
    b = Broker(build, name, db=db)
    for s in ("", "-wal", "-shm"):
        if os.path.exists(b.db + s):
            os.unlink(b.db + s)
    b.cli("server", "list")		# creates the database and its schema
    # many agents: enrolled in one transaction (server add is one durable
    # commit each); the tokens are ours, the database keeps their SHA-256
    tokens = os.path.join(RUN, f"{name}-tokens.txt")
    db = sqlite3.connect(b.db)
    now = int(time.time() * 1000)
    with open(tokens, "w") as f, db:
        for i in range(args.agents):
            tok = secrets.token_hex(32)
            name_i = f"agent{i:05d}"
            db.execute("INSERT INTO servers (name, address, port, weight, max_sessions, "
                       "token_hash, state_since, created) VALUES (?, ?, 3389, 100, 100, ?, ?, ?)",
                       (name_i, f"10.1.{i // 256}.{i % 256}",
                        hashlib.sha256(tok.encode()).hexdigest(), now, now))
            f.write(f"{name_i} {tok}\n")
    db.close()
    return b.start(), tokens


def hb_base(build, args, b, tokens):
    return [os.path.join(build, "bench", "hbload"), "--url", f"https://127.0.0.1:{b.http_port}",
            "--ca", b.cert, "--tokens", tokens, "--threads", str(args.hb_threads),
            "--sessions", "20"]


def bench_heartbeats(build, args, R, commit_ref):
    b, tokens = hb_broker(build, args, "heartbeats")
    base = hb_base(build, args, b, tokens)
    # first beats bring every agent up with its sessions (not timed)
    run_json([*base, "--duration", "3"], name="hb-warm")
    out = {}
    for kind, extra in (("steady", []), ("churn", ["--churn"])):
        c0 = cpu_s(b.pid)
        r = run_json([*base, "--duration", str(args.hb_duration), *extra], name=f"hb-{kind}")
        r["broker_cpu_us"] = (cpu_s(b.pid) - c0) * 1e6 / max(r["ok"], 1)
        out[kind] = r
    out["rss_kb"] = status_kb(b.pid, "VmRSS")
    b.stop()
    size = sum(os.path.getsize(b.db + s) for s in ("", "-wal", "-shm") if os.path.exists(b.db + s))
    db = sqlite3.connect(f"file:{b.db}?mode=ro", uri=True)
    out["sessions"] = db.execute("SELECT count(*) FROM sessions WHERE state != 'ended'"
                                 ).fetchone()[0]
    db.close()
    out["db_bytes"] = size
    out["agents"] = args.agents
    out["commit_ref"] = commit_ref
    # reference: the same broker and load with the database on tmpfs, where
    # a commit costs no fsync: what the CPU path alone would allow
    if os.path.isdir("/dev/shm"):
        shm = os.path.join("/dev/shm", f"tsbroker-bench-hb-{os.getpid()}.db")
        try:
            b, tokens = hb_broker(build, args, "heartbeats-tmpfs", db=shm)
            base = hb_base(build, args, b, tokens)
            run_json([*base, "--duration", "2"], name="hb-tmpfs-warm")
            c0 = cpu_s(b.pid)
            r = run_json([*base, "--duration", str(args.hb_duration)], name="hb-tmpfs")
            r["broker_cpu_us"] = (cpu_s(b.pid) - c0) * 1e6 / max(r["ok"], 1)
            out["tmpfs"] = r
            b.stop()
        finally:
            for s in ("", "-wal", "-shm"):
                if os.path.exists(shm + s):
                    os.unlink(shm + s)
    R["heartbeats"] = out


def bench_placement(build, args, R):
    pb = os.path.join(build, "bench", "placebench")
    disk = os.path.join(RUN, "place.db")
    common = ["--servers", str(args.servers), "--sessions-per-server",
              str(args.sessions // args.servers), "--decisions", "2000", "--reconnects", "1000",
              "--commits", "1000"]
    res = {"disk": run_json([pb, "--db", disk, *common], name="placebench-disk")}
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if shm:
        tmp = os.path.join(shm, f"tsbroker-bench-{os.getpid()}.db")
        try:
            res["tmpfs"] = run_json([pb, "--db", tmp, *common], name="placebench-tmpfs")
        finally:
            for s in ("", "-wal", "-shm"):
                if os.path.exists(tmp + s):
                    os.unlink(tmp + s)
    # the broker on that database: resident memory, a few redirects, /metrics
    b = Broker(build, "placement", db=disk).start(timeout=120)
    rss0 = status_kb(b.pid, "VmRSS")
    run_json([os.path.join(build, "bench", "rdpload"), "--host", "127.0.0.1", "--port",
              str(b.rdp_port), "--count", "200", "--concurrency", "8", "--user-prefix", "big"],
             name="placement-redirects")
    t0 = time.monotonic()
    b.get("/metrics")
    res["metrics_ms"] = (time.monotonic() - t0) * 1000
    res["broker_rss_kb"] = status_kb(b.pid, "VmRSS")
    res["broker_hwm_kb"] = status_kb(b.pid, "VmHWM")
    res["broker_rss_start_kb"] = rss0
    b.stop()
    R["placement"] = res


def bench_splice(build, args, R):
    sb = os.path.join(build, "bench", "splicebench")
    sport = free_port("127.0.0.2")
    sink = Proc([sb, "sink", "--listen", f"127.0.0.2:{sport}"], "sink", "LISTENING")
    b = Broker(build, "splice", mode="token").start()
    b.add_server("ts1", "127.0.0.2", port=sport)
    b.heartbeat("ts1", "127.0.0.2", port=sport)
    out = os.path.join(RUN, "splice-token.txt")
    run_json([os.path.join(build, "bench", "rdpload"), "--host", "127.0.0.1", "--port",
              str(b.rdp_port), "--count", "1", "--concurrency", "1", "--user-prefix", "splice",
              "--out", out])
    with open(out) as f:
        parts = f.read().split()
    token_line = " ".join(parts[3:-1])	# LoadBalanceInfo: "Cookie: msts=<token>"
    if parts[0] != "ok" or not token_line.startswith("Cookie: msts="):
        raise RuntimeError(f"no routing token from the broker: {parts}")
    res = {}
    hp = None
    hport = free_port()
    if shutil.which("haproxy"):
        cfg = os.path.join(RUN, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend rdp
    bind 127.0.0.1:{hport}
    tcp-request inspect-delay 5s
    tcp-request content accept if RDP_COOKIE
    default_backend terminal_servers
backend terminal_servers
    balance rdp-cookie
    server ts1 127.0.0.2:{sport}
""")
        hp = Proc(["haproxy", "-db", "-f", cfg], "haproxy")
        time.sleep(0.5)
        res["haproxy_version"] = subprocess.run(["haproxy", "-v"], capture_output=True,
                                                text=True).stdout.split("\n")[0]
    paths = [("direct", f"127.0.0.2:{sport}", "Cookie: mstshash=splice0", None),
             ("broker", f"127.0.0.1:{b.rdp_port}", token_line, b.pid)]
    if hp:
        paths.append(("haproxy", f"127.0.0.1:{hport}", "Cookie: mstshash=splice0", hp.p.pid))
    mb = args.splice_mb
    for name, to, cookie, pid in paths:
        c = ["client", "--connect", to, "--cookie", cookie]
        r = {}
        c0 = cpu_s(pid) if pid else 0
        runs = sorted((run_json([sb, *c, "--bytes", str(mb << 20)], name=f"splice-{name}-bulk1-{i}")
                       for i in range(3)), key=lambda x: x["mb_per_s"])
        r["bulk1"] = runs[1]		# the median of three
        r["bulk4"] = run_json([sb, *c, "--bytes", str((mb << 20) // 4), "--streams", "4"],
                              name=f"splice-{name}-bulk4")
        if pid:
            r["cpu_s_per_gb"] = (cpu_s(pid) - c0) / (4 * mb / 1024)
        r["rtt"] = run_json([sb, *c, "--pingpong", "20000", "--size", "64"],
                            name=f"splice-{name}-rtt")
        r["setup"] = run_json([sb, *c, "--setup", "300"], name=f"splice-{name}-setup")
        res[name] = r
    if hp:
        hp.stop()
    b.stop()
    sink.stop()
    R["splice"] = res


# ---- the table -------------------------------------------------------------------

def fmt(x, unit="", nd=0):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        x = round(x, nd)
        if nd == 0:
            x = int(x)
    s = f"{x:,}" if isinstance(x, int) else f"{x}"
    return s + unit


def table(R, meta):
    rows = []   # (part, figure, value, reference, target / verdict)
    if "redirect" in R:
        tls, rdp = R["redirect"]["tls"], R["redirect"]["rdp"]
        ratio = rdp["rate"] / tls["rate"] if tls["rate"] else 0
        rows += [
            ("redirects", "redirects/s (address mode, closed loop, "
             f"{rdp['concurrency']} clients)", fmt(rdp["rate"], "/s"),
             f"bare TLS handshakes {fmt(tls['rate'], '/s')}",
             f"ratio {ratio:.2f} (target >= 1,000/s and >= 0.5): "
             f"{'met' if rdp['rate'] >= 1000 and ratio >= 0.5 else 'missed'}"),
            ("", "broker CPU per redirect", fmt(rdp["broker_cpu_us"], " us"),
             f"TLS server CPU per handshake {fmt(tls['server_cpu_us'], ' us')}",
             f"x{rdp['broker_cpu_us'] / tls['server_cpu_us']:.1f}" if tls["server_cpu_us"] else ""),
            ("", "broker handling time p50 / p99 (/metrics histogram)",
             f"{fmt(rdp['broker_p50_us'], ' us')} / {fmt(rdp['broker_p99_us'], ' us')}", "", ""),
            ("", "the same at 40 redirects/s offered (no queueing): broker p50 / p99, client p50",
             f"{fmt(R['redirect']['light']['broker_p50_us'], ' us')} / "
             f"{fmt(R['redirect']['light']['broker_p99_us'], ' us')}, "
             f"{fmt(R['redirect']['light']['p50_us'], ' us')}", "", ""),
            ("", "client time p50 / p99 (connect to redirection PDU)",
             f"{fmt(rdp['p50_us'], ' us')} / {fmt(rdp['p99_us'], ' us')}",
             f"TLS only {fmt(tls['p50_us'], ' us')} / {fmt(tls['p99_us'], ' us')}", ""),
            ("", "errors (client) / broker outcomes", f"{rdp['errors']} / "
             + ", ".join(f"{k} {v}" for k, v in rdp["broker_outcomes"].items()), f"TLS {tls['errors']}", ""),
            ("", "load generator CPU per connection (its ceiling)",
             fmt(rdp["client_cpu_us_per_conn"], " us"),
             f"TLS only {fmt(tls['client_cpu_us_per_conn'], ' us')}",
             f"offers up to ~{fmt(1e6 / rdp['client_cpu_us_per_conn'], '/s')} per core, "
             f"x{rdp['broker_cpu_us'] / rdp['client_cpu_us_per_conn']:.1f} the broker's capacity"),
            ("", "rdpload vs FreeRDP client (rdpprobe): same user, same server in the broker's log",
             "ok" if R["redirect"]["verify"]["ok"] else "MISMATCH", "", ""),
        ]
        prof = R["redirect"].get("profile")
        if prof and "by_object" in prof:
            rows.append(("", f"profile (callgrind, {prof['redirects']} redirects): instructions by library",
                         ", ".join(f"{o} {p}%" for o, p in prof["by_object"]),
                         f"{fmt(prof['instr_per_redirect'] / 1e6, 'M', 1)} instr/redirect", ""))
            if prof.get("inclusive"):
                rows.append(("", "profile: inclusive cost of the broker's steps",
                             ", ".join(f"{f} {p}%" for f, p in prof["inclusive"]), "", ""))
            rows.append(("", "profile: top functions (self)",
                         ", ".join(f"{f} {p}%" for f, o, p in prof["top_functions"][:5]), "", ""))
    if "storm" in R:
        s = R["storm"]
        rows += [("storm", f"{s['users']} users offered in {meta['storm_seconds']} s, 4 servers: success",
                  f"{s['run']['ok']}/{s['users']} in {s['run']['wall_s']:.1f} s",
                  f"client p99 {fmt(s['run']['p99_us'] / 1000, ' ms', 1)}",
                  "target 100%: " + ("met" if s["run"]["ok"] == s["users"] else "missed")),
                 ("", "spread (max - min placements per server)", str(s["spread"]),
                  " / ".join(str(v) for v in s["per_server"].values()),
                  "target <= 1: " + ("met" if s["spread"] <= 1 else "missed")),
                 ("", "placements durable after SIGKILL (client's target == DB row)",
                  f"{s['told'] - s['lost']}/{s['told']}", "", "met" if s["lost"] == 0 else "LOST")]
    if "heartbeats" in R:
        h = R["heartbeats"]
        cr = h["commit_ref"]
        for kind in ("steady", "churn"):
            r = h[kind]
            rows.append(("heartbeats" if kind == "steady" else "",
                         f"{h['agents']} agents x 20 sessions, {r['threads']} connections, "
                         f"{'unchanged sessions' if kind == 'steady' else 'one session changes per beat'}",
                         f"{fmt(r['rate'], '/s')} (p50 {fmt(r['p50_us'], ' us')}, p99 {fmt(r['p99_us'], ' us')}, errors {r['errors']})",
                         f"durable SQLite commits {fmt(cr['rate'], '/s')}" if cr else "",
                         "target >= 5,000/s: " + ("met" if r["rate"] >= 5000 else "missed")))
        if "tmpfs" in h:
            t = h["tmpfs"]
            rows.append(("", "the same, unchanged sessions, database on tmpfs (no fsync)",
                         f"{fmt(t['rate'], '/s')} (p99 {fmt(t['p99_us'], ' us')})",
                         f"broker CPU {fmt(t['broker_cpu_us'], ' us')}/heartbeat", ""))
        rows.append(("", "broker CPU per heartbeat / DB size afterwards",
                     f"{fmt(h['steady']['broker_cpu_us'], ' us')} / {h['db_bytes'] / 1e6:.1f} MB "
                     f"({h['sessions']:,} sessions)", "", ""))
    if "placement" in R:
        p = R["placement"]
        d = p["disk"]
        rows += [("placement", f"{d['servers']:,} servers, {d['sessions']:,} sessions: "
                  "store_placement_commit (decide + durable commit), new users",
                  f"{fmt(d['new']['rate'], '/s')}, p50 {fmt(d['new']['p50_us'], ' us')}, p99 {fmt(d['new']['p99_us'], ' us')}",
                  f"one durable commit alone: p50 {fmt(d['commit_ref']['p50_us'], ' us')}, p99 {fmt(d['commit_ref']['p99_us'], ' us')}",
                  ""),
                 ("", "reconnects", f"{fmt(d['reconnect']['rate'], '/s')}, p99 {fmt(d['reconnect']['p99_us'], ' us')}", "", "")]
        if "tmpfs" in p:
            t = p["tmpfs"]
            rows.append(("", "the same on tmpfs (no fsync: the decision's CPU path)",
                         f"{fmt(t['new']['rate'], '/s')}, p50 {fmt(t['new']['p50_us'], ' us')}, p99 {fmt(t['new']['p99_us'], ' us')}",
                         f"commit alone p99 {fmt(t['commit_ref']['p99_us'], ' us')}",
                         "target p99 <= 100 us: " + ("met" if t["new"]["p99_us"] <= 100 else "missed")))
        rows.append(("", "placement_pick alone over the servers (pure decision, in memory)",
                     f"p50 {fmt(d['pick_ref']['p50_us'], ' us', 1)}, p99 {fmt(d['pick_ref']['p99_us'], ' us', 1)}", "", ""))
        rows.append(("", "broker RSS on that database (start / after redirects / peak)",
                     f"{p['broker_rss_start_kb'] / 1024:.0f} / {p['broker_rss_kb'] / 1024:.0f} / {p['broker_hwm_kb'] / 1024:.0f} MB",
                     f"GET /metrics {fmt(p['metrics_ms'], ' ms')}",
                     "target <= 200 MB: " + ("met" if p["broker_hwm_kb"] <= 200 * 1024 else "missed")))
    if "splice" in R:
        s = R["splice"]
        ref = s.get("haproxy")
        for name in ("broker", "haproxy", "direct"):
            if name not in s:
                continue
            r = s[name]
            label = {"broker": "broker token-mode splice", "haproxy": f"HAProxy ({s.get('haproxy_version', '')[:22]}, rdp-cookie)",
                     "direct": "direct to the sink (no relay)"}[name]
            verdict = ""
            if name == "broker" and ref:
                verdict = ("target >= HAProxy: " + ("met" if r["bulk1"]["mb_per_s"] >= ref["bulk1"]["mb_per_s"]
                                                     and r["bulk4"]["mb_per_s"] >= ref["bulk4"]["mb_per_s"] else "missed"))
            rows.append(("splice" if name == "broker" else "", label,
                         f"{fmt(r['bulk1']['mb_per_s'], ' MB/s')} (1 stream, median of 3), {fmt(r['bulk4']['mb_per_s'], ' MB/s')} (4)",
                         f"RTT 64 B p50 {r['rtt']['p50_us']:.0f} / p99 {r['rtt']['p99_us']:.0f} us; "
                         f"connection set-up p50 {r['setup']['p50_us']:.0f} us"
                         + (f"; {r['cpu_s_per_gb']:.2f} CPU s/GB" if "cpu_s_per_gb" in r else ""),
                         verdict))
        if "direct" in s and "broker" in s:
            d, bk = s["direct"], s["broker"]
            added = bk["rtt"]["p50_us"] - d["rtt"]["p50_us"]
            line = f"broker +{added:.0f} us"
            if ref:
                line += f", HAProxy +{ref['rtt']['p50_us'] - d['rtt']['p50_us']:.0f} us"
            rows.append(("", "added round-trip latency (p50, vs direct)", line, "", ""))
    return rows


def render(rows, meta):
    head = ("part", "figure", "value", "reference (same run)", "target")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    md = [f"# tsbroker benchmarks ({meta['date']})", "",
          f"Machine: {meta['nproc']} CPUs, {meta['cpu']}; load average before "
          f"{meta['load_before']}, after {meta['load_after']}; commit {meta['commit']}. "
          f"Command: `make bench` ({meta['seconds']:.0f} s).", "",
          "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    txt = ["  ".join(str(h).ljust(w) for h, w in zip(head, widths))]
    txt += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(md) + "\n", "\n".join(txt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--only", default="redirects,storm,heartbeats,placement,splice")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--profile", type=int, default=1)
    ap.add_argument("--profile-count", type=int, default=200)
    ap.add_argument("--storm-users", type=int, default=1000)
    ap.add_argument("--storm-seconds", type=float, default=10)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--hb-threads", type=int, default=16)
    ap.add_argument("--hb-duration", type=float, default=8)
    ap.add_argument("--servers", type=int, default=10000)
    ap.add_argument("--sessions", type=int, default=200000)
    ap.add_argument("--splice-mb", type=int, default=1024)
    ap.add_argument("--out", default=os.path.join(RESULTS, "latest.md"))
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    os.makedirs(RUN, exist_ok=True)
    t0 = time.monotonic()
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nproc": os.cpu_count(),
            "cpu": cpu, "load_before": loadavg(), "storm_seconds": args.storm_seconds,
            "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip() or "?"}
    # the broker's certificate and key, shared by every broker and tlsref
    cert, key = os.path.join(RUN, "broker.crt"), os.path.join(RUN, "broker.key")
    if not (os.path.exists(cert) and os.path.exists(key)):
        for p in (cert, key):
            if os.path.exists(p):
                os.unlink(p)
        tmp = Broker(build, "keys").start()
        tmp.stop()
    log(f"{meta['nproc']} CPUs ({cpu}), load {meta['load_before']}")
    R, failed = {}, []
    only = args.only.split(",")
    parts = [("placement", lambda: bench_placement(build, args, R)),
             ("redirects", lambda: bench_redirects(build, args, R)),
             ("storm", lambda: bench_storm_checked(build, args, R)),
             ("heartbeats", lambda: bench_heartbeats(
                 build, args, R, R.get("placement", {}).get("disk", {}).get("commit_ref"))),
             ("splice", lambda: bench_splice(build, args, R))]
    for name, fn in parts:
        if name not in only:
            continue
        log(f"{name} ...")
        t = time.monotonic()
        try:
            fn()
        except Exception as e:		# a broken part is reported, the others still run
            failed.append(f"{name}: {e}")
            log(f"{name} FAILED: {e}")
        log(f"{name} done in {time.monotonic() - t:.0f} s")
    meta["load_after"] = loadavg()
    meta["seconds"] = time.monotonic() - t0
    with open(os.path.join(RUN, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": R, "failed": failed}, f, indent=1, default=str)
    rows = table(R, meta)
    md, txt = render(rows, meta)
    if failed:
        md += "\nParts that did not run to the end: " + "; ".join(failed) + "\n"
    print("\n" + txt + "\n")
    print(f"machine: {meta['nproc']} CPUs, {cpu}; load {meta['load_before']} -> {meta['load_after']}; "
          f"{meta['seconds']:.0f} s")
    if failed:
        print("did not complete: " + "; ".join(failed))
    with open(args.out, "w") as f:
        f.write(md)
    log(f"written {os.path.relpath(args.out, ROOT)} (raw outputs in bench/results/run/)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
