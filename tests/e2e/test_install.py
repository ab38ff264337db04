"""make install (issue 8): DESTDIR and PREFIX honoured, every file present
with its mode, the example configs check out after the edits docs/install.md
("Installing from the source tree") documents, the systemd units pass
`systemd-analyze verify` (skipped only if systemd-analyze is missing), and
the installed broker runs from the installed example config and serves the
installed status page.
"""
import os
import re
import shutil
import stat
import subprocess

import pytest

from farm import ROOT, free_port, ini_set, wait_until

MODES = {
    "usr/bin/tsbroker": 0o755,
    "usr/bin/tsagent": 0o755,
    "usr/share/tsbroker/schema/001_init.sql": 0o644,
    "usr/share/tsbroker/web/index.html": 0o644,
    "usr/share/tsbroker/web/app.js": 0o644,
    "usr/share/tsbroker/web/style.css": 0o644,
    "usr/share/doc/tsbroker/README.md": 0o644,
    "usr/share/doc/tsbroker/docs/install.md": 0o644,
    "usr/share/doc/tsbroker/tsbroker.conf.example": 0o644,
    "usr/share/doc/tsbroker/tsagent.conf.example": 0o644,
    "etc/systemd/system/tsbroker.service": 0o644,
    "etc/systemd/system/tsagent.service": 0o644,
    "etc/tsbroker": 0o700,
    "etc/tsagent": 0o700,
}


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("install") / "root"
    # the default build/ (make install builds it if needed), whatever
    # TSBROKER_BUILD says: another B without its flags would spoil that build
    p = subprocess.run(["make", "-s", "install", f"DESTDIR={d}", "PREFIX=/usr"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return d


def test_files_and_modes(destdir):
    for rel, mode in MODES.items():
        st = os.stat(destdir / rel)
        assert stat.S_IMODE(st.st_mode) == mode, (rel, oct(st.st_mode))
    # both engines' migrations (schema/*.sql and schema/postgresql/*.sql)
    for sub in ("", "postgresql"):
        installed = sorted(f for f in os.listdir(destdir / "usr/share/tsbroker/schema" / sub)
                           if f.endswith(".sql"))
        shipped = sorted(f for f in os.listdir(os.path.join(ROOT, "schema", sub))
                         if f.endswith(".sql"))
        assert installed == shipped and shipped, sub
    # PREFIX reached the units and the example config; nothing under /usr/local
    for rel in ("etc/systemd/system/tsbroker.service", "etc/systemd/system/tsagent.service",
                "usr/share/doc/tsbroker/tsbroker.conf.example"):
        text = (destdir / rel).read_text()
        assert "/usr/local" not in text, rel
    unit = (destdir / "etc/systemd/system/tsbroker.service").read_text()
    assert "ExecStart=/usr/bin/tsbroker -f /etc/tsbroker/tsbroker.conf" in unit
    conf = (destdir / "usr/share/doc/tsbroker/tsbroker.conf.example").read_text()
    assert "web_root = /usr/share/tsbroker/web" in conf
    # the binaries run from where they were installed
    p = subprocess.run([destdir / "usr/bin/tsbroker", "-D"], capture_output=True, text=True)
    assert p.returncode == 0 and "[rdp]" in p.stdout


def test_example_configs_check_after_the_documented_edits(destdir, tmp_path):
    broker = destdir / "etc/tsbroker/tsbroker.conf"
    shutil.copy(destdir / "usr/share/doc/tsbroker/tsbroker.conf.example", broker)
    os.chmod(broker, 0o600)
    text = ini_set(broker.read_text(), "http", "listen", "192.0.2.10:8443")
    broker.write_text(text)
    p = subprocess.run([destdir / "usr/bin/tsbroker", "-f", broker, "-t"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "configuration ok" in p.stdout

    agent = destdir / "etc/tsagent/tsagent.conf"
    ca = destdir / "etc/tsagent/broker.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=broker", "-keyout", tmp_path / "k", "-out", ca],
                   check=True, capture_output=True, timeout=60)
    text = (destdir / "usr/share/doc/tsbroker/tsagent.conf.example").read_text()
    for key, value in (("name", "ts1"), ("broker", "https://192.0.2.10:8443"),
                       ("token", "ab" * 32), ("ca", str(ca))):
        text = ini_set(text, "agent", key, value)
    agent.write_text(text)
    os.chmod(agent, 0o600)
    p = subprocess.run([destdir / "usr/bin/tsagent", "-f", agent, "-t"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # the untouched agent example is refused with the line to fix
    p = subprocess.run([destdir / "usr/bin/tsagent", "-f",
                        destdir / "usr/share/doc/tsbroker/tsagent.conf.example", "-t"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "'ca': cannot read" in p.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze (systemd: tools/deps.sh test) is missing")
def test_systemd_units_verify(destdir, tmp_path):
    """verify needs the commands to exist: the units are checked as installed
    with their ExecStart paths pointed into DESTDIR."""
    for name in ("tsbroker.service", "tsagent.service"):
        text = (destdir / "etc/systemd/system" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/bin/", f"{destdir}/usr/bin/"))
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
                        "tsbroker.service", "tsagent.service"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr
    for name in ("tsbroker.service", "tsagent.service"):
        p = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                            name], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", p.stdout)
        assert m and float(m.group(1)) <= 2.0, p.stdout[-500:]


def test_installed_broker_runs(destdir, tmp_path):
    """The installed binary on the installed example config (state, keys and
    listen addresses moved into a temp dir) serves the installed web files."""
    conf = tmp_path / "tsbroker.conf"
    text = (destdir / "usr/share/doc/tsbroker/tsbroker.conf.example").read_text()
    text = text.replace("/var/lib/tsbroker/", f"{tmp_path}/state/")
    text = text.replace("/usr/share/tsbroker/web", str(destdir / "usr/share/tsbroker/web"))
    http_port = free_port()
    text = ini_set(text, "rdp", "listen", f"127.0.0.1:{free_port()}")
    text = ini_set(text, "http", "listen", f"127.0.0.1:{http_port}")
    conf.write_text(text)
    with open(tmp_path / "broker.log", "w") as log:
        proc = subprocess.Popen([destdir / "usr/bin/tsbroker", "-f", conf], stdout=log,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_until(lambda: "tsbroker ready" in (tmp_path / "broker.log").read_text()
                       or proc.poll() is not None, 20, "the installed broker")
            assert proc.poll() is None, (tmp_path / "broker.log").read_text()
            st = os.stat(tmp_path / "state")
            assert stat.S_IMODE(st.st_mode) == 0o700
            for f in ("tsbroker.db", "tsbroker.key"):
                assert stat.S_IMODE(os.stat(tmp_path / "state" / f).st_mode) == 0o600, f
            p = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
                                f"https://127.0.0.1:{http_port}/"],
                               capture_output=True, text=True, timeout=30)
            assert p.stdout == "200", p
        finally:
            proc.terminate()
            assert proc.wait(15) == 0
