"""Privileges (issue 8): started as root with [broker] user = nobody, the
broker binds a privileged RDP port and reads its root-only key, then runs as
nobody: no capabilities, no groups but nobody's, the state directory it
created (0700) and the database (0600) owned by nobody; a root-only file is
out of its reach (its status page file), and it still serves heartbeats,
redirects and admin commands, across a restart. Root only (skipped
otherwise, which fails a TSBROKER_NO_SKIP=1 run).
"""
import os
import pwd
import random
import socket
import stat

import pytest

import rawrdp
from farm import Broker, heartbeat_body

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def privileged_port():
    """A port below 1024 free on 127.0.0.1, drawn at random from 600-1023 so
    that runs side by side (other checkouts' tests) do not pick the same."""
    ports = list(range(600, 1024))
    random.shuffle(ports)
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.fail("no free port in 600-1023 on 127.0.0.1")


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out



def test_runs_as_nobody(broker_factory, open_dir):
    nobody = pwd.getpwnam("nobody")
    web = open_dir / "web"
    web.mkdir(mode=0o755)
    (web / "index.html").write_text("<p>root only</p>")
    os.chmod(web / "index.html", 0o600)		# root's, unreadable for nobody
    (web / "app.js").write_text("// readable")
    os.chmod(web / "app.js", 0o644)
    state = open_dir / "state"			# missing: the broker creates it
    b = broker_factory(start=False, rdp_port=privileged_port(), broker__user="nobody",
                       state__path=str(state / "tsbroker.db"), http__web_root=str(web))
    b.db = str(state / "tsbroker.db")
    b.start()
    assert os.stat(b.key).st_uid == 0 and stat.S_IMODE(os.stat(b.key).st_mode) == 0o600
    s = proc_status(b.proc.pid)
    assert s["Uid"] == [str(nobody.pw_uid)] * 4 and s["Gid"] == [str(nobody.pw_gid)] * 4, s
    assert s["Groups"] in ([], [str(nobody.pw_gid)]), s["Groups"]
    # CAP_SETGID and CAP_SETUID alone, kept to start the fronts as their own
    # user (docs/security.md "What runs with which privileges"); nothing else
    assert s["CapEff"] == s["CapPrm"] == ["00000000000000c0"], s
    assert "running as user nobody" in b.log()
    # the state directory and the database are nobody's, private
    st = os.stat(state)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, 0o700)
    for f in ("tsbroker.db", "tsbroker.db-wal", "tsbroker.db-shm"):
        st = os.stat(state / f)
        assert st.st_uid == nobody.pw_uid and st.st_mode & 0o077 == 0, (f, st)
    # a root-only file is out of its reach; a readable one is served
    assert b.request("GET", "/")[0] == 404
    assert b.request("GET", "/app.js")[0] == 200
    # and it serves: heartbeats, a redirect on the privileged port, the CLI (root)
    token = b.add_server("ts1", address="127.0.0.2")
    assert b.heartbeat(token, heartbeat_body("ts1"))[0] == 200
    res = rawrdp.redirect("127.0.0.1", b.rdp_port, "alice")
    assert res.redirected and res.address == "127.0.0.2", res
    assert "ts1" in b.cli("server", "list").stdout
    # files the root CLI made are still nobody's
    for f in os.listdir(state):
        assert os.stat(state / f).st_uid == nobody.pw_uid, f
    # a restart on the existing state
    assert b.stop() == 0
    b.start()
    assert proc_status(b.proc.pid)["Uid"][0] == str(nobody.pw_uid)
    assert b.heartbeat(token, heartbeat_body("ts1", [("alice", "active")]))[0] == 200
    assert b.sessions() == [("alice", "ts1", "active", "id-alice")]


def test_state_directory_not_writable_by_the_user(broker_factory, tmp_path, open_dir):
    # root's, not nobody's; and nobody's but behind a root-only parent
    (open_dir / "rootdir").mkdir(mode=0o755)
    hidden = tmp_path / "hidden" / "state"
    hidden.mkdir(parents=True)
    os.chown(hidden, pwd.getpwnam("nobody").pw_uid, -1)
    for i, state in enumerate((open_dir / "rootdir", hidden)):
        b = broker_factory(name=f"b{i}", start=False, broker__user="nobody",
                           state__path=str(state / "tsbroker.db"))
        b.start(expect_ready=False)
        assert b.proc.wait(15) == 1
        assert f"state directory '{state}' is not writable by user 'nobody'" in b.log()
        assert not os.path.exists(state / "tsbroker.db")


def test_unknown_user(broker_factory):
    b = broker_factory(start=False, broker__user="no-such-user-here")
    b.start(expect_ready=False)
    assert b.proc.wait(15) == 1
    assert "[broker] user 'no-such-user-here': no such user" in b.log()


@pytest.mark.parametrize("how", ["[broker] user", "owner of the state directory"])
def test_root_cli_before_the_first_start_leaves_the_broker_its_files(stopped_at_teardown,
                                                                       open_dir, how):
    """The command line as root on a database that is not there yet (a
    server added before the broker's first start): the files it creates are
    the broker's user's, who then runs on them. That user is [broker] user,
    or, without it (a unit's User= or DynamicUser=), the owner of the state
    directory."""
    nobody = pwd.getpwnam("nobody")
    state = open_dir / "state"
    conf = {"state__path": str(state / "tsbroker.db")}
    if how == "[broker] user":
        conf["broker__user"] = "nobody"         # the CLI makes the directory too
    else:
        state.mkdir(mode=0o700)
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
    b = Broker(open_dir / "broker", **conf)
    stopped_at_teardown.append(b)
    b.db = str(state / "tsbroker.db")
    token = b.add_server("ts1", address="127.0.0.2")
    files = os.listdir(state)
    assert "tsbroker.db" in files, files
    for f in files:
        st = os.stat(state / f)
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), (f, st)
    if how != "[broker] user":          # the unit's User=: the broker starts as nobody
        for f in os.listdir(b.dir):
            os.chown(os.path.join(b.dir, f), nobody.pw_uid, nobody.pw_gid)
        os.chown(b.dir, nobody.pw_uid, nobody.pw_gid)
        b.wrap = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                  "--clear-groups"]
    b.start()
    assert b.heartbeat(token, heartbeat_body("ts1"))[0] == 200
    assert "ts1" in b.cli("server", "list").stdout
