"""Admins log off and disconnect sessions through the agents (issue 16, item
1): the broker queues a command in the store, the agent takes it with its
next heartbeat answer, carries it out through its session provider and
reports the outcome; every step is an event naming who asked.

Every agent here runs as agent/tsagent.service runs it: setpriv with the
unit's made-up user (DynamicUser), its capabilities (CAP_KILL,
CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE) and no new privileges, never as plain
root.

  - command: provider: logoff_command/disconnect_command run without a
    shell with the session id and user; API and CLI, refusals (409, exit 1)
  - a deadline that passes while the agent is stopped: failed, with an
    event; never run late, not after the agent's restart either
  - a real xrdp through a token-mode broker: disconnect keeps the display
    and the next connection re-attaches it; log off ends the user's Xvnc
    and the session leaves the broker (about 30 s; root, xrdp installed)
"""
import json
import os
import pwd
import random
import shutil
import tempfile
import time

import pytest

from farm import ROOT, Agent, Api, Target, free_port, needs_tools, unit_setpriv, wait_until
from xrdpfarm import MISSING, pids_of_uid, spawn, stop_group, xrdp_server

UNIT = os.path.join(ROOT, "agent", "tsagent.service")

pytestmark = [needs_tools,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv to the "
                                 "unit's user)")]


def unit_uid():
    """A uid in DynamicUser's range that no account has."""
    while True:
        uid = random.randint(61184, 65519)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid


@pytest.fixture
def unit_agent(tmp_path):
    """unit_agent(broker, token, **keys): an Agent started as the unit runs
    it, its files in a directory that user can read (its config its own,
    0600); unit_agent.home is that directory (world-writable: the test's
    scripts write there)."""
    uid = unit_uid()
    home = tempfile.mkdtemp(prefix="tsb-act-")
    os.chmod(home, 0o777)	# not sticky: the scripts replace the files
    made = []

    def make(broker, token, **keys):
        ca = os.path.join(home, f"broker-{broker.http_port}.crt")
        shutil.copy(broker.cert, ca)
        os.chmod(ca, 0o644)
        a = Agent(home, broker, token, ca=ca, wrap=unit_setpriv(UNIT, uid), **keys)
        os.chown(a.conf, uid, uid)
        a.log_path = str(tmp_path / f"agent{len(made)}.log")
        made.append(a)
        return a.start()

    make.home = home
    yield make
    for a in made:
        a.stop()
        assert a.token not in a.log(), "the token was logged"
    shutil.rmtree(home, ignore_errors=True)


def script(home, name, body):
    path = os.path.join(home, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def write_sessions(home, sessions):
    path = os.path.join(home, "sessions.json")
    with open(path + ".tmp", "w") as f:
        json.dump([{"user": u, "id": i, "state": s} for u, i, s in sessions], f)
    os.chmod(path + ".tmp", 0o666)
    os.rename(path + ".tmp", path)
    return path


def session_ids(api):
    return {s["user"]: s for s in api.sessions()}


@pytest.fixture
def command_farm(broker, unit_agent, tmp_path):
    """ts1 (an rdptarget for its RDP port) whose agent reads alice's and
    bob's sessions from a file (command: provider) and logs off / disconnects
    by scripts that record their arguments and change the file."""
    home = unit_agent.home
    target = Target(tmp_path / "ts1", "ts1", "127.0.0.1", free_port())
    target.start_target()
    token = broker.add_server("ts1", address="127.0.0.1", port=target.port)
    sessions = write_sessions(home, [("alice", "s-1", "active"), ("bob", "s-2", "active")])
    bob_only = json.dumps([{"user": "bob", "id": "s-2", "state": "active"}])
    bob_disc = json.dumps([{"user": "bob", "id": "s-2", "state": "disconnected"}])
    logoff = script(home, "logoff", f'echo "$@" >> {home}/logoff.args\n'
                    f"printf '%s' '{bob_only}' > {sessions}.new && mv {sessions}.new {sessions}\n"
                    'echo "$2 logged off"\n')
    disconnect = script(home, "disconnect", f'echo "$@" >> {home}/disconnect.args\n'
                        f"printf '%s' '{bob_disc}' > {sessions}.new && "
                        f"mv {sessions}.new {sessions}\n"
                        'echo "$2 disconnected"\n')
    keys = dict(rdp_port=target.port, sessions=f"command:cat {sessions}",
                logoff_command=logoff, disconnect_command=disconnect)
    agent = unit_agent(broker, token, **keys)
    api = Api(broker, broker.admin_token("ops"))
    wait_until(lambda: {u: s["state"] for u, s in session_ids(api).items()} ==
               {"alice": "active", "bob": "active"}, 15, "alice and bob active")
    yield type("CommandFarm", (), dict(api=api, agent=agent, home=home, keys=keys,
                                       token=token, target=target,
                                       restart=lambda: unit_agent(broker, token, **keys)))
    target.stop()


def read(path):
    return open(path).read() if os.path.exists(path) else ""


def test_command_provider_logoff_and_disconnect(broker, command_farm):
    f = command_farm
    api = f.api
    ids = session_ids(api)
    since = api.last_event_id()

    t0 = time.monotonic()
    cmd = api.act(ids["alice"]["id"], "logoff")
    assert cmd["state"] == "queued" and cmd["kind"] == "logoff", cmd
    assert cmd["user"] == "alice" and cmd["server"] == "ts1", cmd
    assert cmd["by"] == "token ops from 127.0.0.1", cmd
    assert cmd["deadline"] - cmd["created"] == 30000, cmd
    out = api.command_outcome(cmd["id"])
    took = time.monotonic() - t0
    assert out["state"] == "done" and out["outcome"] == "alice logged off", out
    # run once, without a shell, with the agent's session id and the user
    assert read(os.path.join(f.home, "logoff.args")) == "s-1 alice\n"
    wait_until(lambda: "alice" not in session_ids(api), 10, "alice's session to end")
    kinds = [(e["kind"], e["detail"]) for e in api.events(since)]
    assert ("command_queued", f"logoff of session {ids['alice']['id']} queued by token ops "
            "from 127.0.0.1 (deadline 30 s)") in kinds, kinds
    done = [d for k, d in kinds if k == "command_done"]
    assert len(done) == 1 and "asked by token ops from 127.0.0.1" in done[0], kinds
    print(f"log off through the API to done: {took:.2f} s")

    # an ended session: refused at once with the reason
    status, body = broker.request("POST", f"/api/v1/sessions/{ids['alice']['id']}/logoff",
                                  token=api.token)
    assert (status, body) == (409, {"error": "the session is ended"})

    # the CLI waits for the outcome and exits 0 only when done
    p = broker.cli("session", "disconnect", ids["bob"]["id"])
    assert f"disconnect of session {ids['bob']['id']} (bob on ts1) queued" in p.stdout
    assert p.stdout.rstrip().endswith("done: bob disconnected"), p.stdout
    assert read(os.path.join(f.home, "disconnect.args")) == "s-2 bob\n"
    wait_until(lambda: session_ids(api)["bob"]["state"] == "disconnected", 10,
               "bob disconnected")
    ev = api.events(since, kind="command_done")
    assert any("asked by cli user root" in e["detail"] for e in ev), ev
    p = broker.cli("session", "disconnect", ids["bob"]["id"], check=False)
    assert p.returncode == 1
    assert "refused: the session is disconnected already" in p.stderr, p.stderr
    status, body = broker.request("POST", f"/api/v1/sessions/{ids['bob']['id']}/reboot",
                                  token=api.token)
    assert status == 404, body
    assert read(os.path.join(f.home, "logoff.args")).count("\n") == 1
    assert "sessions unknown" not in f.agent.log()


def test_deadline_passes_with_the_agent_stopped(broker, command_farm):
    f = command_farm
    api = f.api
    bob = session_ids(api)["bob"]
    f.agent.stop()
    since = api.last_event_id()
    t0 = time.monotonic()
    cmd = api.act(bob["id"], "logoff", timeout=2)
    out = api.command_outcome(cmd["id"], timeout=15)
    took = time.monotonic() - t0
    assert out["state"] == "failed", out
    assert out["outcome"].startswith("deadline passed"), out
    ev = api.events(since, kind="command_failed")
    assert len(ev) == 1 and "asked by token ops from 127.0.0.1" in ev[0]["detail"], ev
    assert ev[0]["server"] == "ts1" and ev[0]["user"] == "bob", ev
    print(f"a 2 s deadline shown failed after {took:.1f} s")

    # the server down, its sessions lost: refused at once, API and CLI
    wait_until(lambda: api.servers()["ts1"]["state"] == "down", 15, "ts1 down")
    status, body = broker.request("POST", f"/api/v1/sessions/{bob['id']}/logoff",
                                  token=api.token)
    assert (status, body) == (409, {"error": "the session is lost"})
    p = broker.cli("session", "logoff", bob["id"], check=False)
    assert p.returncode == 1 and "refused: the session is lost" in p.stderr, p.stderr

    # the agent back: the late command is never run
    agent = f.restart()
    wait_until(lambda: session_ids(api).get("bob", {}).get("state") == "active", 15,
               "bob back")
    beat = broker.server("ts1")["last_heartbeat"]
    wait_until(lambda: broker.server("ts1")["last_heartbeat"] > beat + 1000, 10,
               "two more heartbeats")
    assert read(os.path.join(f.home, "logoff.args")) == ""
    assert api.call("GET", f"/api/v1/commands/{cmd['id']}")["state"] == "failed"
    assert f"command {cmd['id']}" not in agent.log()


def connect(x, port):
    """xfreerdp (under Xvfb) logs x's user in at 127.0.0.1:port."""
    stop_group(x["procs"].pop("client", None))
    x["procs"]["client"] = spawn(
        ["xvfb-run", "-a", "xfreerdp", f"/v:127.0.0.1:{port}", f"/u:{x['user']}",
         f"/p:{x['password']}", "/cert:ignore", "/sec:tls", "/size:800x600"],
        x["dir"] / "xfreerdp.log")


def user_pids(x, comm):
    out = []
    for pid in pids_of_uid(x["uid"]):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == comm:
                    out.append(pid)
        except FileNotFoundError:
            pass
    return out


@pytest.mark.skipif(bool(MISSING) or not os.path.exists("/usr/bin/xfreerdp"),
                    reason="xrdp or xfreerdp is not installed (`sh tools/deps.sh test`)")
def test_xrdp_disconnect_reattach_and_logoff(broker_factory, unit_agent, tmp_path):
    broker = broker_factory(rdp__mode="token", rdp__token_key="token.key",
                            rdp__connect_timeout=2)
    xdir = tmp_path / "xrdp"
    os.makedirs(xdir)
    with xrdp_server(xdir) as x:
        token = broker.add_server("ts1", address="127.0.0.1", port=x["port"])
        agent = unit_agent(broker, token, rdp_port=x["port"], sessions="xrdp")
        run_xrdp_actions(broker, agent, x)
        agent.stop()


def run_xrdp_actions(broker, agent, x):
    api = Api(broker, broker.admin_token("ops"))
    wait_until(lambda: api.servers()["ts1"]["state"] == "up", 15, "ts1 up")
    connect(x, broker.rdp_port)
    sess = wait_until(lambda: [s for s in api.sessions() if s["state"] == "active"], 40,
                      "an active xrdp session through the broker")
    assert len(sess) == 1 and sess[0]["user"] == x["user"], sess
    sid, remote = sess[0]["id"], sess[0]["remote_id"]
    xvnc = user_pids(x, "Xvnc")
    assert len(xvnc) == 1, xvnc

    # disconnect: the client's connection ends, the session and its display stay
    t0 = time.monotonic()
    out = api.command_outcome(api.act(sid, "disconnect")["id"])
    took = time.monotonic() - t0
    assert out["state"] == "done", out
    assert out["outcome"].startswith(f"session {remote} (display :"), out
    wait_until(lambda: [(s["id"], s["state"]) for s in api.sessions()] ==
               [(sid, "disconnected")], 15, "the session disconnected")
    assert user_pids(x, "Xvnc") == xvnc, "the display must stay"
    print(f"xrdp disconnect to done: {took:.2f} s")

    # the next connection through the broker re-attaches the same display
    connect(x, broker.rdp_port)
    wait_until(lambda: [(s["id"], s["state"], s["remote_id"]) for s in api.sessions()] ==
               [(sid, "active", remote)], 40, "the same session active again")
    assert user_pids(x, "Xvnc") == xvnc

    # log off: the session's processes end, Xvnc too, and it leaves the broker
    t0 = time.monotonic()
    out = api.command_outcome(api.act(sid, "logoff")["id"])
    took = time.monotonic() - t0
    assert out["state"] == "done" and out["outcome"].endswith("logged off"), out
    wait_until(lambda: not user_pids(x, "Xvnc"), 10, "the user's Xvnc to end")
    wait_until(lambda: api.sessions() == [], 15, "the session to leave the broker")
    done = api.events(kind="command_done")
    assert len(done) == 2 and all("token ops from 127.0.0.1" in e["detail"] for e in done), done
    print(f"xrdp log off to done: {took:.2f} s")
    log = agent.log()
    assert "sessions unknown" not in log, log
