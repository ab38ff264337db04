#!/usr/bin/python3
"""The broker's RSS with N RDP handshakes in flight (issue 15: <= 100 MB at
2,000): a broker on the given [rdp] engine, N raw clients (tests/e2e/rawrdp.py)
each through TLS and the MCS Connect Response, then stalled; prints RSS
before and after, per handshake, and the thread count. Not yet part of
`make bench` (bench.py); run from the repository root:

  /usr/bin/python3 bench/inflight.py 2000 lean
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


def status(pid, key):
    """A /proc status value of the broker, summed with its front processes'."""
    total = 0
    for d in [str(pid)] + [d for d in os.listdir("/proc") if d.isdigit()]:
        try:
            with open(f"/proc/{d}/stat") as f:
                if d != str(pid) and int(f.read().rsplit(")", 1)[1].split()[1]) != pid:
                    continue
            with open(f"/proc/{d}/status") as f:
                total += next((int(l.split()[1]) for l in f if l.startswith(key + ":")), 0)
        except OSError:
            continue
    return total


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    engine = sys.argv[2] if len(sys.argv) > 2 else "lean"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    root = tempfile.mkdtemp(prefix="tsb-inflight-")
    b = farm.Broker(root, rdp__engine=engine, rdp__max_handshakes=n + 10,
                    rdp__max_connections=n + 100, rdp__handshake_timeout=120).start()
    clients = []
    try:
        base = status(b.proc.pid, "VmRSS")
        t0 = time.monotonic()
        for i in range(n):
            c = rawrdp.Client("127.0.0.1", b.rdp_port, timeout=60)
            c.x224(f"u{i}")
            c.start_tls()
            c.tls.sendall(rawrdp.x224_data(rawrdp.mcs_connect_initial()))
            rawrdp.recv_tpkt(c.tls)		# the Connect Response: in flight past TLS
            clients.append(c)
        time.sleep(1)
        rss = status(b.proc.pid, "VmRSS")
        print(f"{engine}: {n} handshakes in flight: RSS {base} -> {rss} kB "
              f"({(rss - base) / n:.1f} kB each), threads {status(b.proc.pid, 'Threads')}, "
              f"set up in {time.monotonic() - t0:.1f} s")
    finally:
        for c in clients:
            c.close()
        b.stop()


if __name__ == "__main__":
    main()
