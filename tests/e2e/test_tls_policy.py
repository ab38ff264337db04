"""The doors' TLS policy (docs/security.md): TLS 1.2 and 1.3 only,
forward-secret AEAD suites only, on the HTTPS door (GnuTLS priority string,
[http] tls_priority) and the RDP door ([rdp] tls_min_version, tls_ciphers,
tls_ciphersuites), probed with openssl s_client as an old client would. The
RDP door's TLS starts after X.224: tools/rdp-tls-relay makes it plain TLS.
A hello either door refuses is a tls_refused event naming the client and
what it offered."""
import os
import subprocess

import pytest

from farm import ROOT, TSBROKER, free_port, stop, wait_until

RELAY = os.path.join(ROOT, "tools", "rdp-tls-relay")
ENGINE = os.environ.get("TSB_E2E_RDP_ENGINE") or "lean"

# (name, s_client arguments, accepted)
CASES = [
    ("TLS 1.0", ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"], False),
    ("TLS 1.1", ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], False),
    ("static RSA", ["-tls1_2", "-cipher", "AES128-GCM-SHA256"], False),
    ("CBC", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"], False),
    ("TLS 1.2 ECDHE AES-GCM", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], True),
    ("TLS 1.3", ["-tls1_3"], True),
]


def s_client(port, args):
    """(handshake completed, protocol and cipher line, output) of one
    openssl s_client handshake with 127.0.0.1:port."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                        "-servername", "localhost", *args], input="", capture_output=True,
                       text=True, timeout=30)
    out = p.stdout + p.stderr
    line = next((l for l in out.splitlines() if ", Cipher is " in l), "")
    ok = p.returncode == 0 and line != "" and "(NONE)" not in line
    return ok, line, out


@pytest.fixture
def relay(broker_factory):
    """(broker, the relay's port to the broker's RDP door)."""
    b = broker_factory()
    port = free_port()
    proc = subprocess.Popen([RELAY, f"127.0.0.1:{port}", f"127.0.0.1:{b.rdp_port}"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "relay listening" in proc.stdout.readline()
        yield b, port
    finally:
        stop(proc)
        proc.stdout.close()


@pytest.mark.parametrize("name,args,accepted", CASES, ids=[c[0] for c in CASES])
def test_https_door(broker, name, args, accepted):
    ok, line, out = s_client(broker.http_port, args)
    assert ok == accepted, f"{name}: {line or out[-600:]}"


@pytest.mark.parametrize("name,args,accepted", CASES, ids=[c[0] for c in CASES])
def test_rdp_door(relay, name, args, accepted):
    b, port = relay
    ok, line, out = s_client(port, args)
    assert ok == accepted, f"{name}: {line or out[-600:]}"


def test_rdp_refusal_is_an_event_with_what_was_offered(relay):
    b, port = relay
    assert not s_client(port, ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"])[0]
    assert not s_client(port, ["-tls1_2", "-cipher", "AES128-GCM-SHA256"])[0]
    if ENGINE == "freerdp":
        # FreeRDP does not show the hello: refused, no event (docs/security.md)
        assert b.events("tls_refused") == []
        return
    wait_until(lambda: len(b.events("tls_refused")) >= 2, 10, "two tls_refused events")
    old, rsa = [e[4] for e in b.events("tls_refused")][:2]
    assert all(e[3] == "127.0.0.1" for e in b.events("tls_refused"))
    assert "TLSv1.0" in old and "TLSv1.2" not in old, old
    assert "TLSv1.2" in rsa and "AES128-GCM-SHA256" in rsa, rsa
    assert "tls_ciphers" in old


def test_https_refusal_is_an_event_with_what_was_offered(broker):
    assert s_client(broker.http_port, ["-tls1_3"])[0]	# accepted: no event
    assert not s_client(broker.http_port, ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])[0]
    assert not s_client(broker.http_port, ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"])[0]
    wait_until(lambda: len(broker.events("tls_refused")) >= 2, 10, "two tls_refused events")
    events = broker.events("tls_refused")
    assert len(events) == 2, events
    old, cbc = [e[4] for e in events]
    assert all(e[3] == "127.0.0.1" and e[4].startswith("HTTPS") for e in events)
    assert "TLSv1.1" in old and "TLSv1.2" not in old, old
    assert "TLSv1.2" in cbc and "ECDHE_RSA_AES_128_CBC_SHA1" in cbc, cbc
    assert "TLS refused by the policy" in broker.log()


def test_rdp_policy_relaxed_by_its_keys(broker_factory):
    """docs/security.md's keys let an old client in: TLS 1.0 and its suites."""
    b = broker_factory(rdp__tls_min_version="1.0", rdp__tls_ciphers="DEFAULT@SECLEVEL=0")
    port = free_port()
    proc = subprocess.Popen([RELAY, f"127.0.0.1:{port}", f"127.0.0.1:{b.rdp_port}"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "relay listening" in proc.stdout.readline()
        ok, line, out = s_client(port, ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"])
        assert ok, out[-600:]
        assert s_client(port, ["-tls1_2", "-cipher", "AES128-GCM-SHA256"])[0]
    finally:
        stop(proc)
        proc.stdout.close()


@pytest.mark.parametrize("key,value,says", [
    ("rdp", "tls_ciphers = NO-SUCH-CIPHER", "tls_ciphers"),
    ("rdp", "tls_ciphersuites = TLS_AES_999", "tls_ciphersuites"),
    ("rdp", "tls_min_version = 0.9", "tls_min_version"),
    ("rdp", "limits_exempt = 10.0.0.0/40", "10.0.0.0/40"),
    ("http", "tls_priority = NORMAL:+VERS-TLS9.9", "tls_priority"),
])
def test_config_check_names_a_bad_policy(tmp_path, key, value, says):
    conf = tmp_path / "bad.conf"
    conf.write_text(f"[{key}]\n{value}\n")
    p = subprocess.run([TSBROKER, "-f", str(conf), "-t"], capture_output=True, text=True)
    assert p.returncode == 1, p.stdout
    assert says in p.stderr, p.stderr


def test_config_check_takes_the_defaults_spelled_out(tmp_path):
    conf = tmp_path / "good.conf"
    conf.write_text("[rdp]\ntls_ciphers = ECDHE+AESGCM\ntls_min_version = 1.3\n"
                    "limits_exempt = 10.0.0.0/8, 192.168.0.0/16 fd00::/8\n"
                    "[http]\ntls_priority = SECURE256:-VERS-ALL:+VERS-TLS1.3\n")
    p = subprocess.run([TSBROKER, "-f", str(conf), "-t"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
