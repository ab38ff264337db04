"""The e2e farm library: every suite builds its farm from these pieces, and
no test module is imported by another.

  Broker            a tsbroker process with its config, admin CLI, HTTPS
                    requests, /metrics and read-only views of its database
  Agent             a tsagent process with its own config and log
  Target            a terminal server: build/rdptarget and the Agent that
                    reports its sessions file; start_targets() adds and
                    starts several and waits until the broker has them up
  probe, Holder     build/rdpprobe, once (its RESULT parsed) or held open
  XFreeRDP          Debian's stock client under Xvfb, in its own group
  Api               the admin JSON API with a bearer token (act: log off,
                    disconnect; command_outcome)
  unit_setpriv      the setpriv command running a program as a unit file would
  make_cert         a self-signed certificate for a name
  PgCluster         a throwaway PostgreSQL primary, with a synchronous
                    standby if asked (tests/pg/cluster.sh): kill, promote
  Patroni           two PostgreSQL nodes under Patroni on etcd
                    (tests/pg/patroni.sh): kill_node, primary, wait
  broker_pair       two brokers on one PostgreSQL database, targets whose
                    agents list both; logon, live_sessions, all_confirmed
  wait_until, free_port, stop, group_members, heartbeat_body, ...

Processes are owned by the object that started them and ended by its
stop(); the fixtures (conftest.py) and the suites call stop() at teardown.
TSBROKER_BUILD selects the binaries (default build/; make asan-test uses
build-asan/). The raw RDP client is its own module, rawrdp.py.

TSB_E2E_ENGINE=postgresql (make e2e-pg): a Broker not given [state] engine
runs on engine = postgresql with a fresh database on one PgCluster of this
pytest process (shared_pg(): started at first use, stopped by conftest.py at
session end); Broker.query, server, sessions and events then read the same
tables from that database (psycopg2), and Broker.db is a pg_dump of it.
"""
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import time
import types
import urllib.error
import urllib.parse
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("TSBROKER_BUILD") or os.path.join(ROOT, "build"))
TSBROKER = os.path.join(BUILD, "tsbroker")
TSAGENT = os.path.join(BUILD, "tsagent")
RDPTARGET = os.path.join(BUILD, "rdptarget")
RDPPROBE = os.path.join(BUILD, "rdpprobe")
HAVE_TOOLS = all(os.access(p, os.X_OK) for p in (RDPTARGET, RDPPROBE, TSAGENT))

# skip marks for what `make` and `tools/deps.sh test` provide (under
# TSBROKER_NO_SKIP=1 a skip fails the run: conftest.py)
needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="build/rdptarget, build/rdpprobe "
                                 "and build/tsagent are needed (make)")
needs_xfreerdp = pytest.mark.skipif(
    not (os.access("/usr/bin/xfreerdp", os.X_OK) and os.access("/usr/bin/xvfb-run", os.X_OK)),
    reason="xfreerdp (freerdp2-x11) and xvfb-run (xvfb) are needed (tools/deps.sh test)")


# ---- waiting, ports, processes ------------------------------------------------

def ini_set(text, section, key, value):
    """Sets key in [section] of an INI text (uncommenting or adding it)."""
    lines, out, cur, done = text.splitlines(), [], None, False
    for line in lines:
        m = re.match(r"\s*\[(\w+)\]", line)
        if m:
            if cur == section and not done:
                out.append(f"{key} = {value}")
                done = True
            cur = m.group(1)
        elif cur == section and re.match(rf"\s*[#;]?\s*{key}\s*=", line):
            if not done:
                out.append(f"{key} = {value}")
                done = True
            continue
        out.append(line)
    if not done:
        if cur != section:
            out.append(f"[{section}]")
        out.append(f"{key} = {value}")
    return "\n".join(out) + "\n"


def children(pid):
    """The pids of pid's live children (a broker's front processes)."""
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
        except OSError:
            continue
    return out


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


def group_members(pgid):
    """{pid: command line} of the live (not zombie) processes in group pgid."""
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()     # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            found[int(d)] = cmd
    return found


def stop(proc, sig=signal.SIGTERM, timeout=10, group=False):
    """Ends proc and reaps it: sig, then SIGKILL after timeout. group=True
    (a process started with start_new_session=True): the signals go to its
    whole process group, and it waits until the group is gone."""
    if proc is None:
        return
    for s in (sig, signal.SIGKILL):
        try:
            if group:
                os.killpg(proc.pid, s)
            elif proc.poll() is None:
                proc.send_signal(s)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                proc.wait(0.05)
            except subprocess.TimeoutExpired:
                continue
            if not group or not group_members(proc.pid):
                return
        timeout = 5


def parse_kv(line):
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


def make_cert(directory, cn, ip=None):
    """(certificate, key) paths of a new self-signed RSA certificate for cn
    (and the IP address ip, if given)."""
    cert, key = os.path.join(directory, f"{cn}.crt"), os.path.join(directory, f"{cn}.key")
    san = ["-addext", f"subjectAltName=IP:{ip}"] if ip else []
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={cn}", *san, "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return cert, key


# ---- the engine axis (TSB_E2E_ENGINE) -----------------------------------------------

ENGINE = os.environ.get("TSB_E2E_ENGINE") or "sqlite"
assert ENGINE in ("sqlite", "postgresql"), f"TSB_E2E_ENGINE={ENGINE}: sqlite or postgresql"
_shared_pg = None
_pg_db_serial = itertools.count(1)


def shared_pg():
    """The PgCluster of this pytest process (TSB_E2E_ENGINE=postgresql),
    started at the first call; shared_pg_stop() ends it."""
    global _shared_pg
    if _shared_pg is None:
        _shared_pg = PgCluster().start()
    return _shared_pg


def shared_pg_stop():
    global _shared_pg
    if _shared_pg is not None:
        _shared_pg.stop()
        _shared_pg = None


def pg_sql(sql):
    """A test's SQLite-dialect query for PostgreSQL: ? placeholders as %s,
    the reserved word user quoted."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    return re.sub(r'(?<!["\w])user(?!["\w])', '"user"', sql)


def pg_query(url, sql, args=()):
    """Rows (tuples) of a read-only query on the database at libpq url."""
    import psycopg2     # python3-psycopg2; only the PostgreSQL axis needs it
    db = psycopg2.connect(url)
    try:
        db.set_session(readonly=True, autocommit=True)
        with db.cursor() as cur:
            cur.execute(pg_sql(sql), args)
            return cur.fetchall()
    finally:
        db.close()


# ---- the broker -----------------------------------------------------------------

class Broker:
    """A tsbroker in its own directory; conf as section__key=value, e.g.
    rdp__mode="token". wrap: a command the broker and its admin commands
    run under (unit_setpriv's)."""

    def __init__(self, workdir, rdp_port=None, wrap=None, **conf):
        self.wrap = list(wrap or [])
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.rdp_port = rdp_port or free_port()
        self.http_port = free_port()
        # a test naming the engine or the SQLite file keeps what it named
        if ENGINE == "postgresql" and not {"state__engine", "state__path"} & set(conf):
            pg = shared_pg()
            name = pg.create_db(f"tsb_e2e_{os.getpid()}_{next(_pg_db_serial)}")
            conf = {"state__engine": "postgresql", "state__url": pg.url(name), **conf}
        self.cert = os.path.join(self.dir, "broker.crt")
        self.key = os.path.join(self.dir, "broker.key")
        sections = {
            "state": {"path": os.path.join(self.dir, "state.db")},
            "rdp": {"listen": f"127.0.0.1:{self.rdp_port}", "certificate": self.cert,
                    "private_key": self.key, "handshake_timeout": 5,
                    # tests' clients share loopback: per-address limits only
                    # where a test sets them (test_address_limits.py)
                    "limits_exempt": "127.0.0.0/8"},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "health": {"heartbeat_interval": 1, "down_after": 3},
            "placement": {"pending_ttl": 30},
        }
        if os.environ.get("TSB_E2E_RDP_ENGINE"):   # the engine axis: lean | freerdp
            sections["rdp"]["engine"] = os.environ["TSB_E2E_RDP_ENGINE"]
        for key, value in conf.items():
            section, name = key.split("__", 1)
            sections.setdefault(section, {})[name] = value
        self.sqlite_db = sections["state"]["path"]
        self.rdp_host = sections["rdp"]["listen"].rsplit(":", 1)[0]
        self.url = f"https://127.0.0.1:{self.http_port}"
        # the readers below go to PostgreSQL when the broker does
        self.pg_url = (sections["state"].get("url")
                       if sections["state"].get("engine") == "postgresql" else None)
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
        self.proc = subprocess.Popen(self.wrap + [TSBROKER, "-f", self.conf, "-v"], stdout=self.out,
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
        p = subprocess.run(self.wrap + [TSBROKER, "-f", self.conf, *map(str, args)], input=input,
                           capture_output=True, text=True, timeout=30, cwd=self.dir)
        if check and p.returncode != 0:
            raise AssertionError(f"tsbroker {' '.join(map(str, args))}: {p.returncode} "
                                 f"{p.stdout} {p.stderr}")
        return p

    def add_server(self, name, address="127.0.0.2", **opts):
        """server add; returns the agent's token."""
        args = ["server", "add", name, "--address", address]
        for k, v in opts.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        return self.cli(*args).stdout.strip().splitlines()[-1]

    def admin_token(self, name="tests"):
        """A bearer token for the admin API (admin token add)."""
        return self.cli("admin", "token", "add", name).stdout.strip().splitlines()[-1]

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

    def login(self):
        """Headers of a cookie session for the admin API (no store write per
        request, unlike a bearer token's last-used stamp; held in memory, so
        it answers while the state database is unreachable)."""
        import http.cookiejar
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self.ssl_context()),
            urllib.request.HTTPCookieProcessor(jar))
        req = urllib.request.Request(f"https://127.0.0.1:{self.http_port}/api/v1/login",
                                     data=json.dumps({"password": self.admin_password}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with opener.open(req, timeout=10) as r:
            csrf = json.loads(r.read())["csrf_token"]
        # the cookie is __Host- and Secure: send it by hand to 127.0.0.1
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        return {"Cookie": cookie, "X-CSRF-Token": csrf}

    def metrics(self):
        """{series: value} from /metrics (open to loopback without a login;
        it reads the store, so it answers while a writer holds the lock)."""
        status, text = self.request("GET", "/metrics")
        assert status == 200, text
        return {k: float(v) for k, v in re.findall(r"^([^#\s]\S*) (\S+)$", text, re.M)}

    # -- state, read straight from the database (read-only) ---------------
    @property
    def db(self):
        """The state database's file: SQLite's own, or on PostgreSQL a
        pg_dump of the database taken now (state.dump)."""
        if not self.pg_url:
            return self.sqlite_db
        dump = os.path.join(self.dir, "state.dump")
        subprocess.run(["pg_dump", "-f", dump, "-d", self.pg_url], check=True,
                       capture_output=True, timeout=60)
        return dump

    @db.setter
    def db(self, path):
        self.sqlite_db = path

    def query(self, sql, *args):
        """Rows of sql (SQLite's dialect, ? placeholders) on the broker's
        database, on either engine."""
        if self.pg_url:
            return pg_query(self.pg_url, sql, args)
        db = sqlite3.connect(f"file:{self.sqlite_db}?mode=ro", uri=True, timeout=10)
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

    def user_server(self, user, state=None):
        """The server the broker has user's session on (None if none)."""
        rows = [r for r in self.sessions(state=state) if r[0] == user]
        return rows[0][1] if rows else None

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


# ---- agents and terminal servers ------------------------------------------------

class Agent:
    """A tsagent process with its own config file (NAME.conf) and log
    (NAME.log) in workdir; extra config keys override the defaults. broker:
    a Broker, or a list of them (the agent's broker list, in that order;
    the first one's certificate is the CA)."""

    def __init__(self, workdir, broker, token, name="ts1", rdp_port=3389, sessions="auto",
                 wrap=(), **extra):
        """wrap: a command the agent runs under (unit_setpriv's)."""
        self.dir = str(workdir)
        self.wrap = list(wrap)
        os.makedirs(self.dir, exist_ok=True)
        self.token = token
        self.conf = os.path.join(self.dir, f"{name}.conf")
        self.log_path = os.path.join(self.dir, f"{name}.log")
        brokers = broker if isinstance(broker, (list, tuple)) else [broker]
        keys = {"name": name,
                "broker": " ".join(f"https://127.0.0.1:{b.http_port}" for b in brokers),
                "token": token, "ca": brokers[0].cert, "rdp_address": "127.0.0.1",
                "rdp_port": rdp_port, "sessions": sessions, "interval": 1,
                "retry_max": 2, "connect_timeout": 2, "timeout": 5}
        keys.update(extra)
        with open(self.conf, "w") as f:
            f.write("[agent]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
        os.chmod(self.conf, 0o600)
        self.proc = None
        self.err = None

    def start(self):
        self.err = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.wrap + [TSAGENT, "-f", self.conf, "-v"],
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        return self

    def _close(self):
        if self.err:
            self.err.close()
            self.err = None

    def stop(self, sig=signal.SIGTERM, timeout=5):
        """Ends the agent with sig; fails the test if it does not stop."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                pytest.fail(f"tsagent did not stop on signal {sig}")
        self._close()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def once(self):
        return subprocess.run([TSAGENT, "-f", self.conf, "--once"], capture_output=True,
                              text=True, timeout=30)

    def log(self):
        with open(self.log_path) as f:
            return f.read()


class Target:
    """One terminal server: an rdptarget on ADDRESS:PORT (its own certificate
    for ADDRESS, or cert=(certificate, key)) and, with a broker and token, the
    tsagent that reports its sessions file (file: provider) to the broker.
    Restart semantics: start(restore=True) starts rdptarget on the sessions
    file it left (--restore, sessions held across a crash); output(new=True)
    is what the current run printed."""

    def __init__(self, workdir, name, address, port, broker=None, token=None, cert=None):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.name, self.address, self.port = name, address, port
        self.broker, self.token = broker, token
        self.sessions = os.path.join(self.dir, "sessions.json")
        self.out_path = os.path.join(self.dir, "rdptarget.out")
        self.cert, self.key = cert or make_cert(self.dir, address)
        self.target = self.agent = None
        self.files = []

    def _open(self, name):
        f = open(os.path.join(self.dir, name), "a")
        self.files.append(f)
        return f

    def start_target(self, restore=False):
        cmd = [RDPTARGET, "--listen", f"{self.address}:{self.port}", "--cert", self.cert,
               "--key", self.key, "--sessions", self.sessions, "--name", self.name]
        if restore:
            cmd.append("--restore")
        self.out_offset = os.path.getsize(self.out_path) if os.path.exists(self.out_path) else 0
        self.target = subprocess.Popen(cmd, stdout=self._open("rdptarget.out"),
                                       stderr=self._open("rdptarget.log"))
        wait_until(lambda: "LISTENING" in self.output(new=True) or self.target.poll() is not None,
                   10, f"{self.name}'s rdptarget to listen")
        assert self.target.poll() is None, f"rdptarget {self.name} exited"

    def start_agent(self):
        self.agent = Agent(self.dir, self.broker, self.token, name=self.name,
                           rdp_address=self.address, rdp_port=self.port,
                           sessions=f"file:{self.sessions}").start()

    def start(self, restore=False):
        self.start_target(restore)
        self.start_agent()

    def stop_agent(self):
        """The agent stops (SIGTERM): no more heartbeats."""
        if self.agent is not None:
            self.agent.stop()
        self.agent = None

    def kill_target(self):
        """SIGKILL the RDP service (the agent is left alone)."""
        self.target.send_signal(signal.SIGKILL)
        self.target.wait(10)

    def kill9(self):
        """The server fails: its RDP service and its agent die at once."""
        for p in (self.target, self.agent and self.agent.proc):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
        if self.target is not None:
            self.target.wait(10)
        if self.agent is not None:
            self.agent.kill9()

    def stop(self):
        if self.agent is not None:
            if self.agent.proc.poll() is None:
                self.agent.proc.send_signal(signal.SIGCONT)   # a test may have frozen it
            self.agent.stop()
        stop(self.target)
        for f in self.files:
            f.close()
        self.files = []

    def output(self, new=False):
        with open(self.out_path) as f:
            if new:
                f.seek(self.out_offset)
            return f.read()

    def connects(self, user=None):
        """[{user, domain, token, cookie, client, session}] of the CONNECT lines
        (all runs); token and cookie as the target received them (unescaped)."""
        found = []
        for line in self.output().splitlines():
            if line.startswith("CONNECT "):
                c = parse_kv(line)
                for k in ("token", "cookie"):
                    if k in c:
                        c[k] = urllib.parse.unquote(c[k])
                found.append(c)
        return [c for c in found if user is None or c["user"] == user]


def connects_at(targets, user):
    """[(name, CONNECT record)] of user's connections at targets {name: Target}."""
    return [(n, c) for n, t in targets.items() for c in t.connects(user)]


def start_targets(broker, root, servers, report_to=None, **opts):
    """Adds each of servers {name: (address, port)} to the broker (opts:
    server add's options, e.g. max_sessions=100), starts its target and
    agent under root/NAME, and waits until the broker has them all up.
    report_to: the agents' broker list (default: the broker).
    Returns {name: Target}; the caller stops them (Target.stop)."""
    targets = {}
    try:
        for name, (address, port) in servers.items():
            token = broker.add_server(name, address, port=port, **opts)
            targets[name] = Target(os.path.join(str(root), name), name, address, port,
                                   report_to or broker, token)
            targets[name].start()
        wait_until(lambda: all((broker.server(n) or {}).get("state") == "up" for n in targets),
                   15, f"{', '.join(targets)} up")
    except BaseException:
        for t in targets.values():
            t.stop()
        raise
    return targets


# ---- clients ----------------------------------------------------------------

def probe_cmd(port, user, host="127.0.0.1", hold=0, timeout=20, source=None, extra=()):
    cmd = [RDPPROBE, "--host", host, "--port", str(port), "--user", user, "--password", "pw",
           "--timeout", str(timeout), *extra]
    if hold:
        cmd += ["--hold", str(hold)]
    if source:
        cmd += ["--source", source]
    return cmd


def parse_result(stdout, returncode):
    """rdpprobe's RESULT line as a dict (ok: bool, host, port, redirected, reason)."""
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert len(lines) == 1, f"rdpprobe printed {stdout!r}"
    words = lines[0].split()
    res = parse_kv(lines[0])
    res["ok"] = words[1] == "ok"
    assert res["ok"] == (returncode == 0), (stdout, returncode)
    return res


def probe(port, user, host="127.0.0.1", hold=0, timeout=20, source=None, extra=()):
    """One rdpprobe connection through the broker (or to host): its RESULT,
    parsed. extra: more rdpprobe arguments (--load-balance-info ...)."""
    p = subprocess.run(probe_cmd(port, user, host, hold, timeout, source, extra),
                       capture_output=True, text=True, timeout=timeout + hold + 30)
    return parse_result(p.stdout, p.returncode)


class Holder:
    """An rdpprobe that stays connected (--hold) until it is stopped or killed."""

    def __init__(self, port, user, hold=600, source=None, timeout=60, host="127.0.0.1"):
        self.user = user
        self.proc = subprocess.Popen(probe_cmd(port, user, host, hold=hold, timeout=timeout,
                                               source=source),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)

    def result(self, timeout=30):
        out, _ = self.proc.communicate(timeout=timeout)
        return parse_result(out, self.proc.returncode)

    def stop(self, sig=signal.SIGTERM):
        stop(self.proc, sig)
        if self.proc.stdout:
            self.proc.stdout.close()


class XFreeRDP:
    """The stock client under Xvfb (its defaults: TLS and NLA offered,
    certificates ignored); its own process group, ended as a whole."""

    def __init__(self, port, user, logpath, domain=None, host="127.0.0.1",
                 client_hostname=None):
        self.log = open(logpath, "w")
        who = f"{domain}\\{user}" if domain else user
        desk = [f"/client-hostname:{client_hostname}"] if client_hostname else []
        self.proc = subprocess.Popen(["xvfb-run", "-a", "xfreerdp", f"/v:{host}:{port}",
                                      f"/u:{who}", "/p:pw", "/cert:ignore"] + desk,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self):
        stop(self.proc, group=True)
        self.log.close()


# ---- the broker's admin API ----------------------------------------------------

class Api:
    """The admin JSON API with a bearer token (tsbroker admin token add)."""

    def __init__(self, broker, token):
        self.broker, self.token = broker, token

    def call(self, method, path, expect=200):
        status, body = self.broker.request(method, path, token=self.token)
        assert status == expect, f"{method} {path}: {status} {body}"
        return body

    def servers(self):
        return {s["name"]: s for s in self.call("GET", "/api/v1/servers")["servers"]}

    def sessions(self, **query):
        query.setdefault("limit", 100000)
        body = self.call("GET", "/api/v1/sessions?" + urllib.parse.urlencode(query))
        assert not body["truncated"], body["total"]
        return body["sessions"]

    def live(self, users=None):
        """{user: [session, ...]} of the sessions that are not ended."""
        out = {}
        for s in self.sessions():
            if users is None or s["user"] in users:
                out.setdefault(s["user"], []).append(s)
        return out

    def events(self, since=0, kind=None):
        """Events after id `since`, oldest first."""
        body = self.call("GET", f"/api/v1/events?since={since}&limit=1000")
        assert len(body["events"]) < 1000, "too many events to read at once"
        evs = sorted(body["events"], key=lambda e: e["id"])
        return [e for e in evs if kind is None or e["kind"] == kind]

    def last_event_id(self):
        evs = self.call("GET", "/api/v1/events?limit=1")["events"]
        return evs[0]["id"] if evs else 0

    def drain(self, name):
        return self.call("POST", f"/api/v1/servers/{name}/drain")

    def enable(self, name):
        return self.call("POST", f"/api/v1/servers/{name}/enable")

    def act(self, session_id, kind, timeout=None, expect=202):
        """POST /api/v1/sessions/ID/logoff|disconnect: the command queued."""
        q = f"?timeout={timeout}" if timeout else ""
        return self.call("POST", f"/api/v1/sessions/{session_id}/{kind}{q}", expect=expect)

    def command_outcome(self, command_id, timeout=40):
        """The command once it is no longer queued or sent."""
        return wait_until(lambda: (lambda c: c if c["state"] not in ("queued", "sent")
                                   else None)(self.call("GET", f"/api/v1/commands/{command_id}")),
                          timeout, f"command {command_id}'s outcome", interval=0.2)


# ---- a unit's privileges -------------------------------------------------------

def unit_setpriv(unit, uid):
    """The setpriv command that runs a program as a systemd unit file runs
    it: as uid (its User=, or DynamicUser's made-up one) with no groups,
    the unit's ambient capabilities (also its bounding set) and
    NoNewPrivileges."""
    keys = {}
    with open(unit) as f:
        for line in f:
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.strip().split("=", 1)
                keys[k] = v
    assert keys.get("DynamicUser") == "yes" or "User" in keys, unit
    ambient = keys.get("AmbientCapabilities", "").split()
    bounding = keys.get("CapabilityBoundingSet", "").split()
    assert sorted(ambient) == sorted(bounding), "ambient capabilities = the bounding set"
    caps = ",".join(["-all"] + ["+" + c.lower().removeprefix("cap_") for c in ambient])
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
           f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}"]
    if keys.get("NoNewPrivileges") == "yes":
        cmd.append("--no-new-privs")
    return cmd + ["--"]


# ---- PostgreSQL ------------------------------------------------------------

PG_BIN = "/usr/lib/postgresql/15/bin"
needs_pg = pytest.mark.skipif(not os.access(os.path.join(PG_BIN, "initdb"), os.X_OK),
                              reason="postgresql-15 is needed (tools/deps.sh test)")


def pg_psql(port, sql, db="postgres"):
    """Runs sql on the server at 127.0.0.1:port; its unaligned output."""
    p = subprocess.run(["psql", "-q", "-X", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h",
                        "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-c",
                        sql], check=True, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})
    return p.stdout.strip()


def pg_create_db(port, name):
    """A fresh, empty database name on the primary at port (dropped first
    if it exists)."""
    pg_psql(port, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg_psql(port, f"CREATE DATABASE {name}")
    return name


def pg_url(ports, dbname, **extra):
    """A libpq conninfo naming a server on 127.0.0.1 at each of ports, the
    writable one chosen (target_session_attrs=read-write)."""
    opts = {"host": ",".join("127.0.0.1" for _ in ports),
            "port": ",".join(str(p) for p in ports), "user": "postgres", "dbname": dbname,
            "target_session_attrs": "read-write", "connect_timeout": 2, **extra}
    return " ".join(f"{k}={v}" for k, v in opts.items())


def free_port_block(count):
    """The first of count consecutive TCP ports free on 127.0.0.1."""
    for _ in range(200):
        base = free_port()
        if base + count >= 65536:
            continue
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            pass
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


class PgCluster:
    """A primary on 127.0.0.1 and, with standby=True, a streaming standby
    the primary waits for (FIRST 1). kill_primary() crashes the primary,
    promote() makes the standby the primary (waiting for none, as Patroni
    would); url() lists both hosts with target_session_attrs=read-write, so
    libpq finds whichever is the primary."""

    SCRIPT = os.path.join(ROOT, "tests", "pg", "cluster.sh")

    def __init__(self, standby=False):
        # its own directory under /tmp: the postgres user cannot enter
        # pytest's tmp_path (mode 0700, root's)
        self.dir = tempfile.mkdtemp(prefix="tsb-pg-")
        os.chmod(self.dir, 0o755)
        self.nodes = [{"dir": os.path.join(self.dir, "n1"), "port": free_port(), "up": False}]
        if standby:
            self.nodes.append({"dir": os.path.join(self.dir, "n2"), "port": free_port(),
                               "up": False})
        self.primary = 0

    def _sh(self, *args):
        subprocess.run(["sh", self.SCRIPT, *map(str, args)], check=True, timeout=120)

    def start(self):
        n1 = self.nodes[0]
        self._sh("start", n1["dir"], n1["port"])
        n1["up"] = True
        if len(self.nodes) > 1:
            n2 = self.nodes[1]
            self._sh("standby", n2["dir"], n2["port"], n1["port"], "s2")
            n2["up"] = True
            self._sh("sync", n1["port"], "s2")
        return self

    @property
    def port(self):
        """The primary's port."""
        return self.nodes[self.primary]["port"]

    def url(self, dbname, **extra):
        """A libpq conninfo naming every node."""
        return pg_url([n["port"] for n in self.nodes], dbname, **extra)

    def psql(self, sql, db="postgres", node=None):
        """Runs sql on the primary (or node i); its unaligned output."""
        return pg_psql(self.nodes[self.primary if node is None else node]["port"], sql, db)

    def create_db(self, name):
        return pg_create_db(self.port, name)

    def kill(self, i):
        """SIGKILL to node i's postmaster and backends."""
        self._sh("kill", self.nodes[i]["dir"])
        self.nodes[i]["up"] = False

    def kill_primary(self):
        self.kill(self.primary)

    def kill_standby(self):
        self.kill(1 - self.primary)

    def promote(self):
        """The standby becomes the primary; returns time.monotonic() when
        it accepts writes."""
        i = 1 - self.primary
        self._sh("promote", self.nodes[i]["dir"], self.nodes[i]["port"])
        self.primary = i
        return time.monotonic()

    def stop(self):
        for n in self.nodes:
            if n["up"]:
                self._sh("stop", n["dir"])
                n["up"] = False
        shutil.rmtree(self.dir, ignore_errors=True)


class Patroni:
    """Two PostgreSQL nodes managed by Patroni on one etcd member
    (tests/pg/patroni.sh: synchronous_mode, not strict; ttl 5). Nodes are
    1 and 2; node 1 is the first primary. url() names both nodes with
    target_session_attrs=read-write; kill_node(n) crashes node n (Patroni
    and postgres SIGKILLed), and Patroni promotes the other."""

    SCRIPT = os.path.join(ROOT, "tests", "pg", "patroni.sh")

    def __init__(self):
        # under /tmp: the postgres user cannot enter pytest's tmp_path
        self.top = tempfile.mkdtemp(prefix="tsb-patroni-")
        os.chmod(self.top, 0o755)
        self.dir = os.path.join(self.top, "c")
        self.base = free_port_block(6)
        self.started = False

    def _sh(self, *args, timeout=120):
        p = subprocess.run(["sh", self.SCRIPT, *map(str, args)], capture_output=True,
                           text=True, timeout=timeout)
        return p.returncode, p.stdout.strip(), p.stderr.strip()

    def _must(self, *args, timeout=120):
        rc, out, err = self._sh(*args, timeout=timeout)
        assert rc == 0, f"patroni.sh {' '.join(map(str, args))}: {rc} {out} {err}"
        return out

    def start(self):
        """etcd and both nodes; returns once node 1 is the primary and node
        2 its synchronous standby."""
        self.started = True
        self._must("start", self.dir, self.base)
        return self

    def port(self, n):
        """Node n's postgres port."""
        return self.base + 2 * n

    def url(self, dbname, **extra):
        return pg_url([self.port(1), self.port(2)], dbname, **extra)

    def primary(self):
        """The primary's node number, or None while there is none."""
        rc, out, _ = self._sh("primary", self.dir)
        return int(out) if rc == 0 and out else None

    def role(self, n):
        """'primary', 'sync', 'replica' or 'down'."""
        return self._must("role", self.dir, n)

    def psql(self, sql, db="postgres", node=None):
        """Runs sql on the primary (or node n)."""
        return pg_psql(self.port(node or self.primary()), sql, db)

    def create_db(self, name):
        """As pg_create_db, on the primary; returns once the standby has it
        too: libpq does not go on to the next host after a FATAL error at
        connection ("database does not exist"), so a url listing the
        standby first would fail until the standby replays the CREATE."""
        primary = self.primary()
        pg_create_db(self.port(primary), name)
        standby = 3 - primary
        if self.role(standby) != "down":
            wait_until(lambda: pg_psql(self.port(standby), "SELECT count(*) FROM pg_database "
                                       f"WHERE datname = '{name}'") == "1",
                       30, f"database {name} on the standby")
        return name

    def kill_node(self, n):
        self._must("kill-node", self.dir, n)

    def start_node(self, n):
        self._must("start-node", self.dir, n)

    def freeze_node(self, n):
        """SIGSTOP to node n's Patroni and postgres (thaw_node: SIGCONT)."""
        self._must("freeze-node", self.dir, n)

    def thaw_node(self, n):
        self._must("thaw-node", self.dir, n)

    def wait(self, timeout=60):
        """Waits for a primary with a synchronous standby again."""
        self._must("wait", self.dir, timeout, timeout=timeout + 30)

    def log(self, n):
        with open(os.path.join(self.dir, f"n{n}", "patroni.log"), errors="replace") as f:
            return f.read()

    def stop(self):
        if self.started:
            self._sh("stop", self.dir)
            self.started = False
        shutil.rmtree(self.top, ignore_errors=True)


# ---- HA: two brokers on one PostgreSQL database ---------------------------------

HA_ADDRESSES = {"ts1": "127.0.0.2", "ts2": "127.0.0.3"}


def broker_pair(root, url, stopped, targets=True, max_sessions=100, **conf):
    """b1 (RDP on 127.0.0.1:P) and b2 (127.0.0.10:P, the same port) on the
    PostgreSQL database at url, sharing b1's certificate and one token key
    file (root/token.key); with targets, ts1 on 127.0.0.2:P and ts2 on
    127.0.0.3:P (HA_ADDRESSES) are up, their agents listing [b1, b2]. Each
    part is appended to stopped (a test's stopped_at_teardown). Returns
    SimpleNamespace(b1, b2, port, ts={name: Target})."""
    port = free_port("127.0.0.1", "127.0.0.10", *HA_ADDRESSES.values())
    conf = {"state__engine": "postgresql", "state__url": url,
            "rdp__token_key": os.path.join(str(root), "token.key"), **conf}
    b1 = Broker(os.path.join(str(root), "b1"), rdp_port=port, **conf)
    stopped.append(b1)
    b1.start()
    b2 = Broker(os.path.join(str(root), "b2"), rdp_port=port, rdp__listen=f"127.0.0.10:{port}",
                rdp__certificate=b1.cert, rdp__private_key=b1.key, **conf)
    b2.cert = b1.cert
    stopped.append(b2)
    b2.start()
    ts = {}
    if targets:
        ts = start_targets(b1, root, {n: (a, port) for n, a in HA_ADDRESSES.items()},
                           report_to=[b1, b2], max_sessions=max_sessions)
        stopped.extend(ts.values())
    return types.SimpleNamespace(b1=b1, b2=b2, port=port, ts=ts)


def logon(broker, user, timeout=15, **kw):
    """One rdpprobe logon through broker (on its RDP address): its RESULT."""
    return probe(broker.rdp_port, user, host=broker.rdp_host, timeout=timeout, **kw)


def live_sessions(broker, users):
    """{user: [(server address, state)]} of users' sessions that are not
    ended, read from broker's database."""
    rows = broker.query("SELECT e.user, v.address, e.state FROM sessions e JOIN servers v "
                        "ON v.id = e.server_id WHERE e.state != 'ended'")
    found = {}
    for u, address, state in rows:
        if u in users:
            found.setdefault(u, []).append((address, state))
    return found


def all_confirmed(broker, users):
    """live_sessions(...) once every user has one session and none is
    pending, else None."""
    found = live_sessions(broker, users)
    ok = len(found) == len(users) and all(len(v) == 1 and v[0][1] != "pending"
                                          for v in found.values())
    return found if ok else None


def address_server(addresses, host):
    """The server name whose address is host (None for another host)."""
    return next((n for n, a in addresses.items() if a == host), None)
