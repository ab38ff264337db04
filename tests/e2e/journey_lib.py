"""Helpers for the whole-journey tests (test_journey.py) and the demo test:
terminal servers played by build/rdptarget with a real build/tsagent each,
real RDP clients (build/rdpprobe, the stock xfreerdp under xvfb-run), and
the broker's admin API with a bearer token.

Every process started here is tracked by its owner object and ended by
its stop()/kill9(); the fixtures in the tests call them from finalizers.
"""
import os
import signal
import subprocess
import urllib.parse

from conftest import BUILD, TSAGENT, wait_until

RDPTARGET = os.path.join(BUILD, "rdptarget")
RDPPROBE = os.path.join(BUILD, "rdpprobe")
HAVE_TOOLS = all(os.access(p, os.X_OK) for p in (RDPTARGET, RDPPROBE, TSAGENT))


def make_cert(directory, cn):
    cert, key = os.path.join(directory, f"{cn}.crt"), os.path.join(directory, f"{cn}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={cn}", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def stop(proc, sig=signal.SIGTERM, timeout=10, group=False):
    """Ends proc (its process group with group=True) and reaps it."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            except ProcessLookupError:
                pass
            proc.wait(5)
    elif group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)    # what the leader left behind
        except ProcessLookupError:
            pass


def parse_kv(line):
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


class Target:
    """One terminal server: an rdptarget on ADDRESS:PORT and the tsagent that
    reports its sessions file (file: provider) to the broker."""

    def __init__(self, workdir, name, address, port, broker, token):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.name, self.address, self.port = name, address, port
        self.broker, self.token = broker, token
        self.sessions = os.path.join(self.dir, "sessions.json")
        self.out_path = os.path.join(self.dir, "rdptarget.out")
        self.cert, self.key = make_cert(self.dir, address)
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
        conf = os.path.join(self.dir, "agent.conf")
        keys = {"name": self.name, "broker": f"https://127.0.0.1:{self.broker.http_port}",
                "token": self.token, "ca": self.broker.cert, "rdp_address": self.address,
                "rdp_port": self.port, "sessions": f"file:{self.sessions}", "interval": 1,
                "retry_max": 2, "connect_timeout": 2, "timeout": 5}
        with open(conf, "w") as f:
            f.write("[agent]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
        os.chmod(conf, 0o600)
        self.agent = subprocess.Popen([TSAGENT, "-f", conf], stdout=subprocess.DEVNULL,
                                      stderr=self._open("agent.log"))

    def start(self, restore=False):
        self.start_target(restore)
        self.start_agent()

    def kill9(self):
        """The server fails: its RDP service and its agent die at once."""
        for p in (self.target, self.agent):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in (self.target, self.agent):
            if p is not None:
                p.wait(10)

    def stop(self):
        stop(self.agent)
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
        """[{user, domain, client, session, ...}] of the CONNECT lines (all runs)."""
        found = [parse_kv(l) for l in self.output().splitlines() if l.startswith("CONNECT ")]
        return [c for c in found if user is None or c["user"] == user]


# ---- clients ----------------------------------------------------------------

def probe_cmd(port, user, host="127.0.0.1", hold=0, timeout=20, source=None):
    cmd = [RDPPROBE, "--host", host, "--port", str(port), "--user", user, "--password", "pw",
           "--timeout", str(timeout)]
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


def probe(port, user, host="127.0.0.1", timeout=20, source=None):
    """One connection through the broker (or to host): the RESULT, parsed."""
    p = subprocess.run(probe_cmd(port, user, host, 0, timeout, source), capture_output=True,
                       text=True, timeout=timeout + 30)
    return parse_result(p.stdout, p.returncode)


class Holder:
    """An rdpprobe that stays connected (--hold) until it is stopped or killed."""

    def __init__(self, port, user, hold=600, source=None, timeout=60):
        self.user = user
        self.proc = subprocess.Popen(probe_cmd(port, user, hold=hold, timeout=timeout,
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
    """The stock client under Xvfb; its own process group, killed as a whole."""

    def __init__(self, port, user, logpath, domain=None):
        self.log = open(logpath, "w")
        who = f"{domain}\\{user}" if domain else user
        self.proc = subprocess.Popen(["xvfb-run", "-a", "xfreerdp", f"/v:127.0.0.1:{port}",
                                      f"/u:{who}", "/p:pw", "/cert:ignore"],
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


def address_server(addresses, host):
    """The server name whose address is host (None for another host)."""
    return next((n for n, a in addresses.items() if a == host), None)

