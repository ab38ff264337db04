"""The Debian packages (issue 17), built once (`make deb`) and installed for
real on this machine with apt-get: lintian and blhc clean, tsagent without
FreeRDP, SQLite or libpq, the files, users and modes the packages promise,
`systemd-analyze verify` on the installed units, then the units' own
ExecStart lines run (no systemd as PID 1 here) under the units' users and
capabilities through setpriv: the broker on its packaged state directory
with the FreeRDP engine (its PEM interposition must be in effect in the
Debian-built binary), the agent against it on loopback with a heartbeat
accepted, the agent's tokenless shipped config refused by its unit's
ExecCondition. Last, a purge leaves nothing but the system users (Debian
keeps those); a fixture purges too, so a failed test leaves nothing.

Root only (it installs packages), and one run at a time on a machine
(/tmp/deb.lock); a missing tool fails.
"""
import fcntl
import json
import os
import pwd
import grp
import re
import shutil
import socket
import ssl
import stat
import subprocess
import urllib.request

import pytest

import rawrdp
from farm import ROOT, free_port, ini_set, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (installs packages)")

DEB = os.path.join(ROOT, "build", "deb")
PKGS = ("tsbroker", "tsagent")
TOOLS = ("dpkg-buildpackage", "dh", "lintian", "blhc", "apt-get", "setpriv",
         "systemd-analyze", "git")
# a uid from systemd's DynamicUser range, free here: the agent's dynamic user
AGENT_UID = 61999
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]


def run(cmd, **kw):
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def installed(pkg):
    p = run(["dpkg-query", "-W", "-f=${Status}", pkg])
    return p.returncode == 0 and "installed" in p.stdout and "not-installed" not in p.stdout


def purge():
    return run(APT + ["purge"] + list(PKGS), env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


@pytest.fixture(scope="module")
def debs():
    """The built .debs, installed; purged at the end whatever happened."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, f"missing {missing}: sh tools/deps.sh test"
    lock = open("/tmp/deb.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        for pkg in PKGS:
            assert not installed(pkg), f"{pkg} is installed here already: not touching it"
        p = run(["make", "-s", "deb"], cwd=ROOT, timeout=900)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        files = {pkg: os.path.join(DEB, f"{pkg}_{version()}_{arch()}.deb") for pkg in PKGS}
        for f in files.values():
            assert os.path.exists(f), os.listdir(DEB)
        try:
            p = run(APT + ["install", "--no-install-recommends"] + list(files.values()),
                    env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
            yield {"files": files, "install_output": p.stdout + p.stderr}
        finally:
            if any(installed(pkg) for pkg in PKGS):
                purge()
    finally:
        lock.close()


def version():
    with open(os.path.join(ROOT, "debian", "changelog")) as f:
        return re.match(r"\S+ \(([^)]+)\)", f.readline()).group(1)


def arch():
    return run(["dpkg", "--print-architecture"]).stdout.strip()


# ---- the units: parsed, and their commands run the way systemd would ---------

def unit(name):
    """[Service] of an installed unit: {key: [values]} in order."""
    out, section = {}, None
    with open(f"/lib/systemd/system/{name}") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "Service":
                k, _, v = line.partition("=")
                out.setdefault(k, []).append(v)
    return out


def caps(value):
    return ",".join(["-all"] + ["+" + c.lower().removeprefix("cap_") for c in value.split()])


def setpriv(svc, uid, gid, init_groups):
    """setpriv's arguments for the unit's user, capabilities and no-new-privs."""
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}",
           "--init-groups" if init_groups else "--clear-groups"]
    amb = " ".join(svc.get("AmbientCapabilities", []))
    bound = " ".join(svc.get("CapabilityBoundingSet", []))
    cmd += [f"--inh-caps={caps(amb)}", f"--ambient-caps={caps(amb)}",
            f"--bounding-set={caps(bound)}"]
    if svc.get("NoNewPrivileges") == ["yes"]:
        cmd.append("--no-new-privs")
    return cmd


def service_user(svc):
    """(uid, gid, init_groups) the unit runs as: its User=, or for
    DynamicUser=yes a free uid of systemd's dynamic range."""
    if svc.get("DynamicUser") == ["yes"]:
        assert "User" not in svc
        with pytest.raises(KeyError):
            pwd.getpwuid(AGENT_UID)
        return AGENT_UID, AGENT_UID, False
    pw = pwd.getpwnam(svc["User"][0])
    assert grp.getgrnam(svc["Group"][0]).gr_gid == pw.pw_gid
    return pw.pw_uid, pw.pw_gid, True


def exec_line(value, creds=None):
    argv = value.split()
    return [a.replace("%d", creds) if creds else a for a in argv]


def start(svc, value, log, creds=None):
    uid, gid, init = service_user(svc)
    umask = int(svc.get("UMask", ["0022"])[0], 8)
    return subprocess.Popen(setpriv(svc, uid, gid, init) + exec_line(value, creds),
                            cwd=svc.get("WorkingDirectory", ["/"])[0], stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=lambda: os.umask(umask))


def run_as(svc, value, creds=None):
    if value.startswith("+"):		# systemd's "+": with full privileges
        return run(exec_line(value[1:], creds), timeout=60)
    uid, gid, init = service_user(svc)
    return run(setpriv(svc, uid, gid, init) + exec_line(value, creds), timeout=60)


def execed(proc, exe):
    """proc's status once setpriv has exec'd exe (None before)."""
    with open(f"/proc/{proc.pid}/cmdline") as f:
        if not f.read().startswith(exe + "\0"):
            return None
    return proc_status(proc.pid)


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict((k, v.split()) for k, _, v in (l.partition(":") for l in f))


# ---- the tests ---------------------------------------------------------------

def test_lintian_and_blhc(debs):
    p = run(["lintian", "--fail-on", "error,warning", *debs["files"].values()])
    bad = [l for l in p.stdout.splitlines() if re.match(r"[EW]: ", l)]
    assert p.returncode == 0 and not bad, p.stdout + p.stderr
    p = run(["blhc", os.path.join(DEB, "build.log")])
    assert p.returncode == 0 and p.stdout == "", p.stdout
    # the compiles and links blhc read carried dpkg-buildflags' hardening
    with open(os.path.join(DEB, "build.log")) as f:
        links = [l for l in f if re.match(r"cc .* -o build/ts(broker|agent) ", l)]
    assert len(links) == 2 and all("-Wl,-z,now" in l and "-Wl,-z,relro" in l for l in links)


def test_dependencies(debs):
    for pkg in PKGS:
        dep = run(["dpkg-deb", "-f", debs["files"][pkg], "Depends"]).stdout
        assert "libc6" in dep, dep			# ${shlibs:Depends} computed
    agent = run(["dpkg-deb", "-f", debs["files"]["tsagent"], "Depends"]).stdout
    assert not re.search(r"freerdp|winpr|sqlite|libpq", agent), agent
    needed = run(["readelf", "-d", "/usr/sbin/tsagent"]).stdout
    assert not re.search(r"freerdp|winpr|sqlite|libpq", needed), needed
    assert re.search(r"libfreerdp2.*libsqlite3|libsqlite3.*libfreerdp2", " ".join(
        run(["dpkg-deb", "-f", debs["files"]["tsbroker"], "Depends"]).stdout.split()))


def test_installed_files_users_and_modes(debs):
    # nothing secret printed by the maintainer scripts
    assert "password" not in debs["install_output"].lower()
    for rel in ("/usr/sbin/tsbroker", "/usr/sbin/tsagent"):
        assert stat.S_IMODE(os.stat(rel).st_mode) == 0o755
        assert run([rel, "-V"]).stdout.split() == [os.path.basename(rel), version()]
    for rel in ("/usr/share/tsbroker/web/index.html", "/usr/share/tsbroker/web/vendor/uPlot.iife.min.js",
                "/usr/share/tsbroker/prometheus/tsbroker.rules.yml",
                "/usr/share/tsbroker/grafana/tsbroker.json",
                "/usr/share/doc/tsbroker/copyright", "/usr/share/doc/tsagent/copyright",
                "/usr/share/doc/tsbroker/examples/tsbroker.conf.example",
                "/usr/share/doc/tsagent/examples/tsagent.conf.example"):
        assert os.path.isfile(rel), rel
    for sub in ("", "postgresql"):
        shipped = sorted(f for f in os.listdir(os.path.join(ROOT, "schema", sub)) if f.endswith(".sql"))
        assert sorted(f for f in os.listdir(os.path.join("/usr/share/tsbroker/schema", sub))
                      if f.endswith(".sql")) == shipped
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "tsbroker", "tsagent"]).stdout
    assert "/etc/tsbroker/tsbroker.conf" in conffiles and "/etc/tsagent/tsagent.conf" in conffiles
    tsb = pwd.getpwnam("tsbroker")
    pwd.getpwnam("tsbroker-front")
    grp.getgrnam("tsbroker-front")
    for path, uid, gid, mode in (("/etc/tsbroker", 0, tsb.pw_gid, 0o750),
                                 ("/var/lib/tsbroker", tsb.pw_uid, tsb.pw_gid, 0o700),
                                 ("/etc/tsbroker/admin-password", 0, 0, 0o600),
                                 ("/etc/tsagent/tsagent.conf", 0, 0, 0o600),
                                 ("/var/lib/tsbroker/tsbroker.db", tsb.pw_uid, tsb.pw_gid, 0o600)):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, mode), path
    # neither unit enabled nor started before it is configured
    for name in ("tsbroker.service", "tsagent.service"):
        assert not os.path.exists(f"/etc/systemd/system/multi-user.target.wants/{name}")
    assert run(["pgrep", "-f", "^/usr/sbin/ts(broker|agent) "]).returncode == 1


def test_units_verify(debs):
    p = run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
             "/lib/systemd/system/tsbroker.service", "/lib/systemd/system/tsagent.service"])
    assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr
    broker = unit("tsbroker.service")
    assert broker["User"] == ["tsbroker"] and "DynamicUser" not in broker
    assert broker["ExecStart"] == ["/usr/sbin/tsbroker -f /etc/tsbroker/tsbroker.conf"]
    assert unit("tsagent.service")["DynamicUser"] == ["yes"]


def https(port, path, body=None, cookie=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", method="POST" if body else "GET",
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Cookie": cookie} if cookie else {})})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return r.headers.get("Set-Cookie"), r.read().decode()


def test_units_run_under_their_users(debs, tmp_path):
    """The installed configs edited as an admin would (loopback ports, the
    FreeRDP engine, a token), the units' commands run as the units run them."""
    broker, agent = unit("tsbroker.service"), unit("tsagent.service")
    rdp_port, http_port, ts_port = free_port(), free_port(), free_port("127.0.0.2")
    conf = "/etc/tsbroker/tsbroker.conf"
    text = open(conf).read()
    for section, key, value in (("rdp", "listen", f"127.0.0.1:{rdp_port}"), ("rdp", "engine", "freerdp"),
                                ("http", "listen", f"127.0.0.1:{http_port}")):
        text = ini_set(text, section, key, value)
    open(conf, "w").write(text)
    for pre in broker.get("ExecStartPre", []):
        p = run_as(broker, pre)
        assert p.returncode == 0, p.stdout + p.stderr
    # an admin command as the broker's user: the agent's token
    p = run_as(broker, f"/usr/sbin/tsbroker -f {conf} server add ts1 --address 127.0.0.2 "
               f"--port {ts_port}")
    assert p.returncode == 0, p.stderr
    token = re.search(r"\b[0-9a-f]{64}\b", p.stdout).group(0)

    # the agent's unit refuses the shipped config (no token) in ExecCondition
    creds = tmp_path / "credentials"
    creds.mkdir()
    os.chown(creds, AGENT_UID, AGENT_UID)
    os.chmod(creds, 0o500)
    name, _, src = agent["LoadCredential"][0].partition(":")
    cred = creds / name

    def hand_credential():		# what systemd does for LoadCredential=
        shutil.copy(src, cred)
        os.chown(cred, AGENT_UID, AGENT_UID)
        os.chmod(cred, 0o400)
    hand_credential()
    p = run_as(agent, agent["ExecCondition"][0], str(creds))
    assert p.returncode == 1 and "'token' is required" in p.stdout + p.stderr, p

    atext = open(src).read()
    ca = "/etc/tsagent/broker.crt"
    for key, value in (("name", "ts1"), ("broker", f"https://127.0.0.1:{http_port}"),
                       ("token", token), ("ca", ca), ("rdp_address", "127.0.0.2"),
                       ("rdp_port", str(ts_port)), ("sessions", "utmp"), ("interval", "1")):
        atext = ini_set(atext, "agent", key, value)
    open(src, "w").write(atext)
    os.chmod(cred, 0o600)
    hand_credential()

    # a terminal server's RDP port for the agent's probe and the redirect
    ts = socket.socket()
    ts.bind(("127.0.0.2", ts_port))
    ts.listen(8)
    blog, alog = open(tmp_path / "broker.log", "w"), open(tmp_path / "agent.log", "w")
    bproc = aproc = None
    try:
        bproc = start(broker, broker["ExecStart"][0], blog)
        wait_until(lambda: execed(bproc, "/usr/sbin/tsbroker"), 10, "setpriv's exec of tsbroker")
        wait_until(lambda: "tsbroker ready" in (tmp_path / "broker.log").read_text()
                   or bproc.poll() is not None, 30, "the packaged broker")
        assert bproc.poll() is None, (tmp_path / "broker.log").read_text()
        s = proc_status(bproc.pid)
        tsb = pwd.getpwnam("tsbroker")
        assert s["Uid"] == [str(tsb.pw_uid)] * 4, s["Uid"]
        # CAP_NET_BIND_SERVICE, and CAP_SETUID + CAP_SETGID to start the fronts as
        # tsbroker-front (docs/security.md)
        assert s["CapAmb"] == s["CapEff"] == ["00000000000004c0"], s
        assert s["NoNewPrivs"] == ["1"]
        blog_text = (tmp_path / "broker.log").read_text()
        assert "PEM interposition not in effect" not in blog_text, blog_text
        # the broker's certificate, generated in its state directory, pinned by the agent
        shutil.copy("/var/lib/tsbroker/tsbroker.crt", ca)
        os.chmod(ca, 0o644)
        for cond in agent.get("ExecCondition", []):
            p = run_as(agent, cond, str(creds))
            assert p.returncode == 0, p.stdout + p.stderr
        aproc = start(agent, agent["ExecStart"][0], alog, str(creds))
        s = wait_until(lambda: execed(aproc, "/usr/sbin/tsagent"), 10, "setpriv's exec of tsagent")
        assert s["Uid"] == [str(AGENT_UID)] * 4 and s["NoNewPrivs"] == ["1"]
        assert s["CapAmb"] == ["0000000000080024"], s		# KILL, DAC_READ_SEARCH, SYS_PTRACE

        # the heartbeat accepted: ts1 up, through the admin API with the
        # first admin password postinst left in its root-only file
        pw = open("/etc/tsbroker/admin-password").read().strip()
        cookie = https(http_port, "/api/v1/login", {"password": pw})[0].split(";")[0]

        def ts1_up():
            servers = json.loads(https(http_port, "/api/v1/servers", cookie=cookie)[1])["servers"]
            return [x for x in servers if x["name"] == "ts1" and x.get("state") == "up"]
        wait_until(ts1_up, 20, "ts1 up from the packaged agent's heartbeats")
        # a client redirected by the Debian-built FreeRDP engine, its key
        # parsed once: the PEM interposition in effect (two reads a handshake)
        res = rawrdp.redirect("127.0.0.1", rdp_port, "alice")
        assert res.redirected and res.address == "127.0.0.2", res
        metrics = https(http_port, "/metrics")[1]
        hits = float(re.search(r"^tsbroker_pem_cache_hits_total (\S+)$", metrics, re.M).group(1))
        assert hits >= 2, metrics
        assert aproc.poll() is None, (tmp_path / "agent.log").read_text()
    finally:
        for proc in (aproc, bproc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        ts.close()
        if os.path.exists(ca):	# the admin's file, not the package's: purge keeps it
            os.unlink(ca)
        blog.close()
        alog.close()
    assert bproc.returncode == 0, (tmp_path / "broker.log").read_text()


def test_purge_leaves_nothing(debs):
    owned = {pkg: run(["dpkg-query", "-L", pkg]).stdout.split() for pkg in PKGS}
    p = purge()
    assert p.returncode == 0, p.stdout + p.stderr
    for pkg in PKGS:
        assert not installed(pkg)
        left = [f for f in owned[pkg] if os.path.lexists(f) and not os.path.isdir(f)]
        assert left == [], left
        assert run(["dpkg", "-S", pkg]).stdout.count(f"{pkg}:") == 0
    for path in ("/etc/tsbroker", "/etc/tsagent", "/var/lib/tsbroker", "/usr/share/tsbroker",
                 "/usr/share/doc/tsbroker", "/usr/share/doc/tsagent"):
        assert not os.path.lexists(path), (path, os.listdir(path) if os.path.isdir(path) else "")
    assert run(["dpkg-statoverride", "--list"]).stdout.count("tsbroker") == 0
    # the system users stay (Debian's practice: files may still carry their ids)
    pwd.getpwnam("tsbroker")
