#!/usr/bin/python3
"""The broker's memory with N RDP handshakes in flight (issue 15: <= 100 MB
at 2,000): a broker on the given [rdp] engine (default fronts), N raw
clients (tests/e2e/rawrdp.py) each through TLS and the MCS Connect
Response, then stalled; the broker's and its front processes' RSS and PSS
(smaps_rollup: shared pages divided among the processes that map them, so
the libraries count once) summed, before and after, per handshake, and
their threads. Part of `make bench` (bench.py's inflight row); alone, from
the repository root:

  /usr/bin/python3 bench/inflight.py 2000 lean
  /usr/bin/python3 bench/inflight.py 2000 lean 0     # [rdp] fronts = 0: one process
  /usr/bin/python3 bench/inflight.py 50 freerdp
"""
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import farm  # noqa: E402
import rawrdp  # noqa: E402


def family(pid):
    """pid and its children (the front processes)."""
    return [pid] + farm.children(pid)


def summed(pid, path, key):
    """A /proc/PID/<path> value (kB, or a count) summed over pid's family."""
    total = 0
    for p in family(pid):
        try:
            with open(f"/proc/{p}/{path}") as f:
                total += next((int(l.split()[1]) for l in f if l.startswith(key + ":")), 0)
        except OSError:
            continue
    return total


def usage(pid):
    return {"rss_kb": summed(pid, "status", "VmRSS"),
            "pss_kb": summed(pid, "smaps_rollup", "Pss"),
            "threads": summed(pid, "status", "Threads"),
            "processes": len(family(pid))}


def measure(n=2000, engine="lean", build=None, fronts=None):
    """The figures as a dict: before/after usage, n, engine, set-up seconds.
    fronts: [rdp] fronts (None: the default, one per CPU; 0: one process)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 100:
        raise RuntimeError(f"RLIMIT_NOFILE {hard} is too low for {n} connections")
    root = tempfile.mkdtemp(prefix="tsb-inflight-")
    extra = {} if fronts is None else {"rdp__fronts": fronts}
    b = farm.Broker(root, rdp__engine=engine, rdp__max_handshakes=n + 10,
                    rdp__max_connections=n + 100, rdp__handshake_timeout=120, **extra).start()
    clients = []
    try:
        # the fronts up and their engines warm (a few handshakes through) first
        for i in range(4):
            with rawrdp.Client("127.0.0.1", b.rdp_port, timeout=60) as c:
                c.x224(f"w{i}")
                c.start_tls()
                c.tls.sendall(rawrdp.x224_data(rawrdp.mcs_connect_initial()))
                rawrdp.recv_tpkt(c.tls)
        time.sleep(1)
        before = usage(b.proc.pid)
        t0 = time.monotonic()
        for i in range(n):
            c = rawrdp.Client("127.0.0.1", b.rdp_port, timeout=60)
            clients.append(c)
            c.x224(f"u{i}")
            c.start_tls()
            c.tls.sendall(rawrdp.x224_data(rawrdp.mcs_connect_initial()))
            rawrdp.recv_tpkt(c.tls)		# the Connect Response: in flight past TLS
        setup = time.monotonic() - t0
        time.sleep(1)
        after = usage(b.proc.pid)
    finally:
        for c in clients:
            c.close()
        b.stop()
    return {"n": n, "engine": engine, "before": before, "after": after, "setup_s": setup,
            "pss_per_kb": (after["pss_kb"] - before["pss_kb"]) / n,
            "rss_per_kb": (after["rss_kb"] - before["rss_kb"]) / n}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    engine = sys.argv[2] if len(sys.argv) > 2 else "lean"
    fronts = int(sys.argv[3]) if len(sys.argv) > 3 else None
    r = measure(n, engine, fronts=fronts)
    a, b = r["after"], r["before"]
    print(f"{engine}: {n} handshakes in flight ({a['processes']} processes): "
          f"RSS {b['rss_kb']} -> {a['rss_kb']} kB ({r['rss_per_kb']:.1f} kB each), "
          f"PSS {b['pss_kb']} -> {a['pss_kb']} kB ({r['pss_per_kb']:.1f} kB each), "
          f"threads {b['threads']} -> {a['threads']}, set up in {r['setup_s']:.1f} s")


if __name__ == "__main__":
    main()
