"""The shipped Prometheus rules and Grafana dashboard (contrib/) against a
real broker: promtool checks and unit-tests the rules; Debian's Prometheus
(evaluation_interval 1s) scrapes the broker over HTTPS, pinned to its
certificate, and the n+1 alert fires when a server is killed; every metric
the dashboard's queries name is in /metrics and answers through Prometheus."""
import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from farm import HAVE_TOOLS, ROOT, Holder, free_port, start_targets, stop, wait_until

RULES = os.path.join(ROOT, "contrib", "prometheus", "tsbroker.rules.yml")
RULES_TEST = os.path.join(ROOT, "contrib", "prometheus", "tsbroker.rules.test.yml")
DASHBOARD = os.path.join(ROOT, "contrib", "grafana", "tsbroker.json")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

need_prometheus = pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK) or
                                     not os.access(PROMTOOL, os.X_OK),
                                     reason="prometheus is missing (tools/deps.sh test)")


@need_prometheus
def test_promtool_checks_and_unit_tests_the_rules():
    for args in (["check", "rules", RULES], ["test", "rules", RULES_TEST]):
        p = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "SUCCESS" in p.stdout


class Prometheus:
    """Debian's prometheus scraping one broker every second with the shipped
    rules, in its own directory on a free loopback port."""

    def __init__(self, workdir, broker, ca):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        conf = os.path.join(self.dir, "prometheus.yml")
        with open(conf, "w") as f:
            json.dump({   # YAML is a superset of JSON
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [RULES],
                "scrape_configs": [{
                    "job_name": "tsbroker", "scheme": "https",
                    "tls_config": {"ca_file": ca, "server_name": "127.0.0.1"},
                    "static_configs": [{"targets": [f"127.0.0.1:{broker.http_port}"]}],
                }],
            }, f)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={conf}",
                                      f"--storage.tsdb.path={self.dir}/data",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.proc.poll() is not None or self._ready(), 30, "prometheus to start")
        assert self.proc.poll() is None, open(self.log.name).read()

    def _ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path, **query):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            data = json.loads(r.read())
        assert data["status"] == "success", data
        return data["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def alerts(self, state="firing"):
        return [a for a in self.api("alerts")["alerts"] if a["state"] == state]

    def stop(self):
        stop(self.proc)
        self.log.close()


def broker_cert(directory):
    """A certificate for 127.0.0.1 with the IP in subjectAltName (Go's TLS,
    hence Prometheus, ignores the CN), written where the broker reads it."""
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, "broker.crt"), os.path.join(directory, "broker.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    return cert


def dashboard_exprs():
    d = json.load(open(DASHBOARD))
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


@need_prometheus
@pytest.mark.skipif(not HAVE_TOOLS, reason="build the test tools (make all)")
def test_prometheus_fires_the_n1_alert_when_a_server_is_killed(broker_factory, tmp_path,
                                                                stopped_at_teardown):
    cert = broker_cert(str(tmp_path / "broker"))
    b = broker_factory()
    # two servers of two places, one user on each: losing either leaves the
    # other's last free place for its one user (headroom 0); once ts2 is
    # gone, ts1's user has nowhere to go (headroom -1)
    targets = start_targets(b, tmp_path, {"ts1": ("127.0.0.2", b.rdp_port),
                                          "ts2": ("127.0.0.3", b.rdp_port)}, max_sessions=2)
    stopped_at_teardown.extend(targets.values())
    for user in ("alice", "bob"):
        h = Holder(b.rdp_port, user)
        stopped_at_teardown.append(h)
        wait_until(lambda u=user: b.user_server(u, "active"), 30, f"{user}'s session")
    wait_until(lambda: b.metrics().get("tsbroker_n_plus_1_headroom") == 0, 15, "headroom 0")

    prom = Prometheus(tmp_path / "prometheus", b, cert)
    stopped_at_teardown.append(prom)
    wait_until(lambda: prom.query('up{job="tsbroker"} == 1'), 30, "prometheus to scrape the broker")
    wait_until(lambda: prom.query("tsbroker_n_plus_1_headroom == 0"), 30, "the headroom scraped")
    assert not [a for a in prom.alerts() if a["labels"]["alertname"] == "TsbrokerNPlus1Lost"]

    # every metric the dashboard names is in /metrics and answers through Prometheus
    names = {re.sub(r"\{.*", "", k) for k in b.metrics()}
    for expr in dashboard_exprs():
        for metric in re.findall(r"\btsbroker_[a-z0-9_]+", expr):
            assert metric in names, f"the dashboard's {metric} is not in /metrics"
        r = prom.api("query", query=expr)
        assert r["resultType"] == "vector", (expr, r)
        if "rate(" not in expr and "histogram_quantile" not in expr:
            assert r["result"], f"no answer for {expr}"

    targets["ts2"].kill9()
    firing = wait_until(lambda: [a for a in prom.alerts()
                                 if a["labels"]["alertname"] == "TsbrokerNPlus1Lost"],
                        60, "the n+1 alert to fire")
    assert float(firing[0]["value"]) < 0
    down = wait_until(lambda: [a for a in prom.alerts()
                               if a["labels"]["alertname"] == "TsbrokerServerDown"], 30,
                      "the server-down alert")
    assert float(down[0]["value"]) == 1
    print(f"\nn+1 alert: {firing[0]['annotations']['summary']}")
