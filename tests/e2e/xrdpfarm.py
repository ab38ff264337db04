"""A real xrdp 0.9 (Debian's xrdp + tigervnc-standalone-server) on a
loopback address for the end-to-end tests, with a throwaway user:
xrdp_server(tmp_path, address, port) edits /etc/xrdp (restored after),
starts sesman and xrdp, yields {port, user, password, uid, procs, dir} and
undoes it all. Needs root; the packages `tools/deps.sh test` installs.
Used by test_xrdp.py and test_lean.py (rdesktop 1.9 redirected to xrdp).
"""
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess

from farm import free_port, stop, wait_until

NEEDED = ["/usr/sbin/xrdp", "/usr/sbin/xrdp-sesman", "/usr/bin/Xvnc", "/usr/bin/xvfb-run",
          "/usr/share/xrdp/socksetup"]
CONFIGS = ["/etc/xrdp/xrdp.ini", "/etc/xrdp/sesman.ini", "/etc/xrdp/startwm.sh"]
MISSING = [p for p in NEEDED if not os.path.exists(p)]


def edit(path, pattern, repl):
    with open(path) as f:
        text = f.read()
    new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1, f"{path}: no line matches {pattern}"
    with open(path, "w") as f:
        f.write(new)


def spawn(args, log, **kw):
    out = open(log, "ab")
    try:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    finally:
        out.close()


def stop_group(p):
    """Ends a process we started in its own session, and all of its group."""
    stop(p, timeout=5, group=True)


def pids_of_uid(uid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    out.append(int(d))
            except FileNotFoundError:
                pass
    return out


def listening(port):
    with open("/proc/net/tcp") as f4, open("/proc/net/tcp6") as f6:
        text = f4.read() + f6.read()
    return re.search(rf":{port:04X} [0-9A-F:]+ 0A ", text) is not None


@contextlib.contextmanager
def xrdp_server(tmp_path, address="127.0.0.1", port=None):
    """xrdp on address:port (port None: a free one) and sesman on a free
    loopback port, a throwaway user; all undone."""
    saved = {p: open(p, "rb").read() for p in CONFIGS}
    modes = {p: os.stat(p).st_mode for p in CONFIGS}
    sockdir_existed = os.path.isdir("/run/xrdp/sockdir")
    user = "tsbx" + secrets.token_hex(3)
    password = "Pw-" + secrets.token_hex(8)
    procs = {}
    uid = None
    try:
        port, sesman_port = port or free_port(address), free_port()
        edit("/etc/xrdp/xrdp.ini", r"^port=.*$", f"port=tcp://{address}:{port}")
        edit("/etc/xrdp/xrdp.ini", r"^autorun=.*$", "autorun=Xvnc")
        edit("/etc/xrdp/sesman.ini", r"^ListenPort=.*$", f"ListenPort={sesman_port}")
        with open("/etc/xrdp/startwm.sh", "w") as f:
            f.write("#!/bin/sh\nexec sleep 100000\n")
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True)
        uid = pwd.getpwnam(user).pw_uid
        subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
        subprocess.run(["sh", "/usr/share/xrdp/socksetup"], check=True)
        procs["sesman"] = spawn(["/usr/sbin/xrdp-sesman", "--nodaemon"], tmp_path / "sesman.log")
        # Debian's user xrdp is not in ssl-cert: without it xrdp cannot read
        # its key and falls back to RDP security, which xfreerdp refuses
        procs["xrdp"] = spawn(["setpriv", "--reuid=xrdp", "--regid=xrdp",
                               "--groups=xrdp,ssl-cert", "/usr/sbin/xrdp", "--nodaemon"],
                              tmp_path / "xrdp.log")
        wait_until(lambda: listening(port) and listening(sesman_port), 10, "xrdp to listen")
        yield {"port": port, "user": user, "password": password, "uid": uid, "procs": procs,
               "dir": tmp_path}
    finally:
        stop_group(procs.pop("client", None))
        # end the user's session (its window manager and X server) first,
        # so that sesman cleans up after it
        if uid is not None:
            for pid in pids_of_uid(uid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                wait_until(lambda: not pids_of_uid(uid), 5, "the user's processes to end")
            finally:
                for pid in pids_of_uid(uid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for name in ("xrdp", "sesman"):
            stop_group(procs.pop(name, None))
        if uid is not None:
            wait_until(lambda: not pids_of_uid(uid), 5, "the user's processes to be gone")
            subprocess.run(["userdel", "-r", user], capture_output=True)
        for p, data in saved.items():
            with open(p, "wb") as f:
                f.write(data)
            os.chmod(p, modes[p])
        if not sockdir_existed:
            shutil.rmtree("/run/xrdp/sockdir", ignore_errors=True)
