"""End-to-end tests of the desk (issue 16, item 2): the computer name a
client claims (Client Core Data clientName) and its address, recorded with
every placement and reconnect, shown per session by the admin API and the
CLI, searchable (?desk=, --desk), and kept in each user's trail
(GET /api/v1/users/USER/trail). Clients: Debian's xfreerdp with
/client-hostname:DESK-7, and the raw client (rawrdp.py) sending an empty,
an overlong, an unprintable and a markup name, which are stored as cleaned
and shown escaped; a trust_cookie splice (before any MCS data) records the
desk as unknown. The page's side is in tests/web/desk.test.mjs.
"""
import urllib.parse

import pytest

import rawrdp
from farm import (Api, XFreeRDP, free_port, needs_tools, needs_xfreerdp, probe,
                  start_targets, wait_until)

pytestmark = needs_tools


@pytest.fixture
def desk_farm(broker_factory, tmp_path, stopped_at_teardown):
    """desk_farm(**broker_conf): a broker on 127.0.0.1:P, ts1 on 127.0.0.2:P and
    ts2 on 127.0.0.3:P (address mode), both up, and its API."""
    def make(**conf):
        port = free_port("127.0.0.1", "127.0.0.2", "127.0.0.3")
        broker = broker_factory(rdp_port=port, **conf)
        targets = start_targets(broker, tmp_path, {"ts1": ("127.0.0.2", port),
                                                   "ts2": ("127.0.0.3", port)})
        stopped_at_teardown.extend(targets.values())
        return broker, Api(broker, broker.admin_token()), targets
    return make


def trail(api, user):
    return api.call("GET", f"/api/v1/users/{urllib.parse.quote(user)}/trail")["trail"]


def cli_rows(broker, *args):
    """`session list` rows as {column: value}, split on the header's columns."""
    out = broker.cli("session", "list", *args).stdout
    lines = out.splitlines()
    head = lines[0]
    starts = [i for i, c in enumerate(head) if c != " " and (i == 0 or head[i - 1] == " ")]
    names = head.split()
    rows = []
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows.append(dict(zip(names, cells)))
    return out, rows


def raw_place(broker, user, client_name, source="127.0.0.1"):
    res = rawrdp.redirect("127.0.0.1", broker.rdp_port, user, source=source,
                          client_name=client_name)
    assert res.redirected, res
    return res


@needs_xfreerdp
def test_xfreerdp_desk_in_api_cli_and_trail(desk_farm, tmp_path):
    broker, api, ts = desk_farm()
    x = XFreeRDP(broker.rdp_port, "alice", tmp_path / "xfreerdp.log", client_hostname="DESK-7")
    try:
        s = wait_until(lambda: api.sessions(user="alice"), 30, "alice placed")[0]
    finally:
        x.stop()
    assert s["desk"] == "DESK-7" and s["client"] == "127.0.0.1", s
    first = s["server"]
    # where is alice sitting? by user, and by desk (case aside)
    assert [e["id"] for e in api.sessions(desk="desk-7")] == [s["id"]]
    assert api.sessions(desk="DESK-8") == []
    out, rows = cli_rows(broker, "--user", "alice")
    assert "DESK(CLAIMED)" in out and "CLIENT(CLAIMED)" in out, out
    assert rows[0]["DESK(CLAIMED)"] == "DESK-7" and rows[0]["CLIENT(CLAIMED)"] == "127.0.0.1"
    _, rows = cli_rows(broker, "--desk", "DESK-7")
    assert [r["USER"] for r in rows] == ["alice"]
    # back from another desk and address: a reconnect to the same session
    res = raw_place(broker, "alice", "LAPTOP-2", source="127.0.0.5")
    assert res.address == ts[first].address, (res.address, first)
    t = trail(api, "alice")
    assert [(r["kind"], r["desk"], r["client"], r["server"], r["session"]) for r in t] == [
        ("reconnect", "LAPTOP-2", "127.0.0.5", first, s["id"]),
        ("new", "DESK-7", "127.0.0.1", first, s["id"])], t
    assert t[0]["ts"] >= t[1]["ts"] > 0
    s = api.sessions(user="alice")[0]
    assert s["desk"] == "LAPTOP-2" and s["client"] == "127.0.0.5", s
    assert api.sessions(desk="DESK-7") == []
    assert trail(api, "CORP\\Alice") == t		# normalised like placement
    assert trail(api, "bob") == []


# name sent -> stored and shown (the wire's clientName: 32 bytes, 16 UTF-16 units)
ODD_NAMES = {
    "empty": ("", ""),
    "overlong": ("ABCDEFGHIJKLMNOPQRSTUV".encode("utf-16-le"), "ABCDEFGHIJKLMNOP"),
    "unprintable": ("\x1b[2J\x07BEL\x00x".encode("utf-16-le"), "?[2J?BEL"),
    "c1": ("A\u009bB\u0085".encode("utf-16-le"), "A?B?"),
    "markup": ('<b>"x"&\'</b>', '<b>"x"&\'</b>'),
    "broken": (b"A\x00\x00\xd8B\x00", "A\ufffdB"),	# an unpaired surrogate
}


def test_odd_names_stored_safely_shown_escaped(desk_farm):
    broker, api, _ = desk_farm()
    for user, (sent, _) in ODD_NAMES.items():
        raw_place(broker, user, sent)
    for user, (_, shown) in ODD_NAMES.items():
        got = api.sessions(user=user)[0]["desk"]
        assert got == shown, (user, got)
        assert [r["desk"] for r in trail(api, user)] == [shown]
    # no control character reaches the API; the markup is a plain string
    desks = [s["desk"] for s in api.sessions()]
    assert not [d for d in desks if any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in d)]
    out, rows = cli_rows(broker)
    assert "\x1b" not in out and "\x07" not in out and "\u009b" not in out
    desks = {r["USER"]: r["DESK(CLAIMED)"] for r in rows}
    assert desks["empty"] == "(none)" and desks["overlong"] == "ABCDEFGHIJKLMNOP", desks
    assert desks["unprintable"] == "?[2J?BEL" and desks["c1"] == "A?B?", desks
    # a search by the odd name finds it (prepared statements, no injection)
    assert [e["user"] for e in api.sessions(desk='<b>"x"&\'</b>')] == ["markup"]
    assert api.call("GET", "/api/v1/sessions?desk=" + "x" * 64, expect=400)


def test_trust_cookie_splice_records_the_desk_unknown(broker_factory, tmp_path,
                                                      stopped_at_teardown):
    port = free_port("127.0.0.1")
    p1 = free_port("127.0.0.2")
    while p1 == port:
        p1 = free_port("127.0.0.2")
    broker = broker_factory(rdp_port=port, rdp__mode="token", rdp__token_key="token.key",
                            rdp__trust_cookie="yes")
    targets = start_targets(broker, tmp_path, {"ts1": ("127.0.0.2", p1)})
    stopped_at_teardown.extend(targets.values())
    api = Api(broker, broker.admin_token())
    res = probe(port, "erin")
    assert res["ok"] and res["redirected"] == "1", res
    wait_until(lambda: broker.user_server("erin", "disconnected") == "ts1", 15,
               "erin's session disconnected")
    first = api.sessions(user="erin")[0]
    assert first["desk"] is not None, first		# rdpprobe sent its name
    res = probe(port, "erin")			# her cookie: spliced, no MCS data seen
    assert res["ok"] and res["redirected"] == "0", res
    t = wait_until(lambda: (lambda t: t if len(t) == 2 else None)(trail(api, "erin")), 10,
                   "erin's splice in her trail")
    assert (t[0]["kind"], t[0]["desk"], t[0]["server"]) == ("reconnect", None, "ts1"), t
    assert (t[1]["kind"], t[1]["desk"]) == ("new", first["desk"]), t
    assert api.sessions(user="erin")[0]["desk"] is None
    _, rows = cli_rows(broker, "--user", "erin")
    assert rows[0]["DESK(CLAIMED)"] == "(unknown)", rows
