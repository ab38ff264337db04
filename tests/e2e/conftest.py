"""Shared harness for the end-to-end tests: real tsbroker/tsagent processes on
loopback, each test in its own temp dir with free ports.

Fixtures:
  broker_factory(**conf) -> Broker   a started broker (stopped at teardown)
  broker                             broker_factory() with short health timings
Helpers: wait_until(pred, timeout, what), free_port(*hosts).

TSBROKER_BUILD selects the binaries (default build/; make asan-test uses
build-asan/). Sanitizers: every process started here inherits ASAN_OPTIONS,
UBSAN_OPTIONS and LSAN_OPTIONS that halt on the first error and write reports
to files under SAN_DIR; an autouse fixture fails the test whose processes
left a report there, or whose logs hold one.
"""
import glob
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("TSBROKER_BUILD") or os.path.join(ROOT, "build"))
TSBROKER = os.path.join(BUILD, "tsbroker")
TSAGENT = os.path.join(BUILD, "tsagent")


# ---- sanitizers -------------------------------------------------------------
SAN_DIR = os.environ.get("TSBROKER_SAN_DIR") or tempfile.mkdtemp(prefix="tsbroker-san-")
os.makedirs(SAN_DIR, exist_ok=True)
SAN_PATTERNS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                "WARNING: AddressSanitizer", "ERROR: UndefinedBehaviorSanitizer")


def _san_env():
    lsan_supp = os.path.join(ROOT, "tests", "asan", "lsan.supp")
    opts = {
        "ASAN_OPTIONS": f"halt_on_error=1:abort_on_error=0:log_exe_name=1:"
                        f"log_path={SAN_DIR}/asan",
        "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:log_exe_name=1:log_path={SAN_DIR}/ubsan",
        "LSAN_OPTIONS": f"suppressions={lsan_supp}:print_suppressions=0",
    }
    for k, v in opts.items():
        os.environ[k] = v


_san_env()


def sanitizer_reports(paths=()):
    """{file: text} of sanitizer reports in SAN_DIR and in the given log files."""
    found = {}
    for f in glob.glob(os.path.join(SAN_DIR, "*")):
        if f.endswith(".seen"):
            continue
        with open(f, errors="replace") as fh:
            found[f] = fh.read()
    for f in paths:
        try:
            with open(f, errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        if any(p in text for p in SAN_PATTERNS):
            found[f] = text
    return found


@pytest.fixture(autouse=True)
def no_sanitizer_reports(tmp_path):
    """Fails a test whose processes (stopped by then: this fixture is torn
    down last) reported an ASan/UBSan/LSan error."""
    early = sanitizer_reports()
    if early:	# left by a fixture torn down after the previous test
        for f in early:
            os.rename(f, f + ".seen")
        pytest.fail("sanitizer reports from an earlier teardown:\n" +
                    "\n".join(f"== {f}\n{t[-6000:]}" for f, t in early.items()), pytrace=False)
    yield
    logs = glob.glob(os.path.join(str(tmp_path), "**", "*.log"), recursive=True)
    logs += glob.glob(os.path.join(str(tmp_path), "**", "*.out"), recursive=True)
    found = sanitizer_reports(logs)
    if found:
        text = "\n".join(f"== {f}\n{t[-6000:]}" for f, t in found.items())
        for f in found:
            if f.startswith(SAN_DIR):
                os.rename(f, f + ".seen")
        pytest.fail(f"sanitizer reports:\n{text}", pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    """Reports written after the last test's check fail the run too."""
    late = sanitizer_reports()
    if late:
        print("\nsanitizer reports after the last test:\n" +
              "\n".join(f"== {f}\n{t[-6000:]}" for f, t in late.items()))
        session.exitstatus = 1
    else:
        seen = glob.glob(os.path.join(SAN_DIR, "*.seen"))
        if not seen and "TSBROKER_SAN_DIR" not in os.environ:
            os.rmdir(SAN_DIR)


def wait_until(pred, timeout=10.0, what="condition", interval=0.05):
    """Polls pred() until it returns a true value (returned) or fails the test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port(*hosts):
    """A TCP port free on every host given (default 127.0.0.1)."""
    hosts = hosts or ("127.0.0.1",)
    for _ in range(200):
        s = socket.socket()
        s.bind((hosts[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for h in hosts[1:]:
            t = socket.socket()
            try:
                t.bind((h, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise RuntimeError("no free port")


class Broker:
    def __init__(self, workdir, rdp_port=None, **conf):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.rdp_port = rdp_port or free_port()
        self.http_port = free_port()
        self.db = os.path.join(self.dir, "state.db")
        self.cert = os.path.join(self.dir, "broker.crt")
        self.key = os.path.join(self.dir, "broker.key")
        sections = {
            "state": {"path": self.db},
            "rdp": {"listen": f"127.0.0.1:{self.rdp_port}", "certificate": self.cert,
                    "private_key": self.key, "handshake_timeout": 5},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "health": {"heartbeat_interval": 1, "down_after": 3},
            "placement": {"pending_ttl": 30},
        }
        for key, value in conf.items():
            section, name = key.split("__", 1)
            sections.setdefault(section, {})[name] = value
        self.conf = os.path.join(self.dir, "broker.conf")
        with open(self.conf, "w") as f:
            for section, keys in sections.items():
                f.write(f"[{section}]\n")
                for k, v in keys.items():
                    f.write(f"{k} = {v}\n")
        self.proc = None
        self.log_path = os.path.join(self.dir, "broker.log")
        self.out_path = os.path.join(self.dir, "broker.out")
        self.admin_password = None

    # -- process --------------------------------------------------------
    def start(self, expect_ready=True):
        self.out_offset = os.path.getsize(self.out_path) if os.path.exists(self.out_path) else 0
        self.out = open(self.out_path, "a")
        self.err = open(self.log_path, "a")
        self.proc = subprocess.Popen([TSBROKER, "-f", self.conf, "-v"], stdout=self.out,
                                     stderr=self.err, cwd=self.dir)
        if expect_ready:
            wait_until(lambda: "tsbroker ready" in self.stdout(new=True)
                       or self.proc.poll() is not None, 15, "the broker to start")
            assert self.proc.poll() is None, f"broker exited: {self.log()}"
            for line in self.stdout(new=True).splitlines():
                if line.startswith("First admin password"):
                    self.admin_password = line.rsplit(" ", 1)[1]
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (getattr(self, "out", None), getattr(self, "err", None)):
            if f:
                f.close()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.out.close()
        self.err.close()

    def stdout(self, new=False):
        """What the broker printed; new=True: since the last start."""
        with open(self.out_path) as f:
            f.seek(self.out_offset if new else 0)
            return f.read()

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    # -- admin commands -----------------------------------------------------
    def cli(self, *args, input=None, check=True):
        p = subprocess.run([TSBROKER, "-f", self.conf, *map(str, args)], input=input,
                           capture_output=True, text=True, timeout=30, cwd=self.dir)
        if check and p.returncode != 0:
            raise AssertionError(f"tsbroker {' '.join(map(str, args))}: {p.returncode} "
                                 f"{p.stdout} {p.stderr}")
        return p

    def add_server(self, name, address="127.0.0.2", **opts):
        args = ["server", "add", name, "--address", address]
        for k, v in opts.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        return self.cli(*args).stdout.strip().splitlines()[-1]

    # -- HTTPS ----------------------------------------------------------
    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        return ctx

    def request(self, method, path, body=None, token=None, headers=None, raw=None):
        """(status, parsed JSON or text) for one HTTPS request to the broker."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"https://127.0.0.1:{self.http_port}{path}", data=data,
                                     method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=10) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def heartbeat(self, token, body):
        return self.request("POST", "/api/v1/heartbeat", body, token=token)

    # -- state, read straight from the database (read-only) ---------------
    def query(self, sql, *args):
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def server(self, name):
        rows = self.query("SELECT state, admin_state, cpu_percent, mem_total_kb, "
                          "mem_available_kb, ncpu, load1, last_heartbeat, quarantined_until "
                          "FROM servers WHERE name = ?", name)
        if not rows:
            return None
        keys = ("state", "admin_state", "cpu_percent", "mem_total_kb", "mem_available_kb",
                "ncpu", "load1", "last_heartbeat", "quarantined_until")
        return dict(zip(keys, rows[0]))

    def sessions(self, server=None, state=None):
        """[(user, server, state, remote_id)] of sessions that are not ended."""
        sql = ("SELECT e.user, v.name, e.state, e.remote_id FROM sessions e JOIN servers v "
               "ON v.id = e.server_id WHERE e.state != 'ended'")
        rows = self.query(sql + " ORDER BY e.user, v.name")
        return [r for r in rows if (server is None or r[1] == server)
                and (state is None or r[2] == state)]

    def events(self, kind=None):
        rows = self.query("SELECT kind, server, user, client, detail FROM events ORDER BY id")
        return [r for r in rows if kind is None or r[0] == kind]


def heartbeat_body(name, sessions=(), accepting=True, port=3389, known=True):
    body = {
        "name": name, "version": "test",
        "rdp": {"address": "127.0.0.2", "port": port, "accepting": accepting},
        "load": {"ncpu": 2, "cpu_percent": 10.0, "load1": 0.5, "mem_total_kb": 1000000,
                 "mem_available_kb": 500000},
        "sessions": [{"user": u, "domain": "", "id": f"id-{u}", "state": s, "since": 0}
                     for (u, s) in sessions] if known else None,
    }
    if not known:
        body["sessions_error"] = "test: provider failed"
    return body


@pytest.fixture
def broker_factory(tmp_path):
    made = []

    def make(name="broker", start=True, **conf):
        b = Broker(tmp_path / name, **conf)
        made.append(b)
        return b.start() if start else b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()
