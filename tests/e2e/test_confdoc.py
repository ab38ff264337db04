"""The configuration reference generated from the key tables (issue 17):
`make man` builds the four manual pages and each renders without a single
groff or man warning; every key of both tables (as `-D` prints them) is in
its .5 page under its section; docs/configuration.md is what the generator
prints; `-D` output of both daemons is a valid configuration."""
import os
import re
import subprocess

import pytest

from farm import ROOT, TSAGENT, TSBROKER

MAN = os.path.join(ROOT, "build", "man")
PAGES = ["tsbroker.8", "tsagent.8", "tsbroker.conf.5", "tsagent.conf.5"]


@pytest.fixture(scope="module")
def man_pages():
    # the default build/ as make man writes it (scdoc must be installed:
    # tools/deps.sh test; a missing one fails here)
    p = subprocess.run(["make", "-s", "man"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return MAN


def run(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)


def defaults(daemon):
    """{section: [key, ...]} from `daemon -D`."""
    p = run(daemon, "-D")
    assert p.returncode == 0, p.stderr
    keys, section, prev = {}, None, ""
    for line in p.stdout.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
        elif prev.startswith(("# (live) ", "# (restart) ")):
            m = re.fullmatch(r"(?:# )?(\w+) =.*", line)
            assert m, f"no key under {prev!r}: {line!r}"
            keys.setdefault(section, []).append(m.group(1))
        prev = line
    return keys


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(man_pages, page):
    path = os.path.join(man_pages, page)
    p = run("groff", "-ww", "-z", "-man", path)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    p = run("man", "--warnings", "-l", path, env=dict(os.environ, MANWIDTH="80"))
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert "NAME" in p.stdout and "SEE ALSO" in p.stdout


@pytest.mark.parametrize("daemon,page", [(TSBROKER, "tsbroker.conf.5"),
                                         (TSAGENT, "tsagent.conf.5")])
def test_every_key_in_its_section_of_the_page(man_pages, daemon, page):
    text = run("man", "-l", os.path.join(man_pages, page),
               env=dict(os.environ, MANWIDTH="80")).stdout
    keys = defaults(daemon)
    assert sum(len(k) for k in keys.values()) >= (40 if "broker" in page else 14)
    # the KEYS section: "   [section]" headings, then "       key" lines
    found, section = set(), None
    for line in text.split("\nKEYS\n", 1)[1].split("\nSEE ALSO\n", 1)[0].splitlines():
        if m := re.fullmatch(r"   \[(\w+)\]", line):
            section = m.group(1)
        elif m := re.fullmatch(r"       (\w+)", line):
            found.add((section, m.group(1)))
    want = {(s, k) for s, ks in keys.items() for k in ks}
    assert want - found == set(), "keys missing from the page"
    assert found - want == set(), "keys in the page that the daemon does not know"


def test_docs_configuration_is_what_the_generator_prints(man_pages):
    path = os.path.join(ROOT, "docs", "configuration.md")
    with open(path) as f:
        checked_in = f.read()
    text = checked_in
    for name in ("tsbroker", "tsagent"):
        p = run(os.path.join(ROOT, "build", "confdoc-" + name), name, "md", input=text)
        assert p.returncode == 0, p.stderr
        text = p.stdout
    assert text == checked_in, "docs/configuration.md is stale: run make docs-config"
    for keys in (defaults(TSBROKER), defaults(TSAGENT)):
        for k in (k for ks in keys.values() for k in ks):
            assert f"| `{k}` |" in checked_in


def test_printed_defaults_are_a_valid_configuration(tmp_path):
    conf = tmp_path / "tsbroker.conf"
    conf.write_text(run(TSBROKER, "-D").stdout)
    p = run(TSBROKER, "-f", str(conf), "-t", cwd=tmp_path)
    assert p.returncode == 0 and "configuration ok" in p.stdout, p.stdout + p.stderr
    text = run(TSAGENT, "-D").stdout
    assert "# (live)" in text and "# (restart)" in text
    # the agent's required keys are commented out: -t says so, then passes
    conf = tmp_path / "tsagent.conf"
    conf.write_text(text)
    p = run(TSAGENT, "-f", str(conf), "-t")
    assert p.returncode == 1 and "'broker'" in p.stderr, p.stderr
    conf.write_text(text.replace("# broker =", "broker = https://127.0.0.1:8443")
                    .replace("# token =", "token = x"))
    p = run(TSAGENT, "-f", str(conf), "-t")
    assert p.returncode == 0, p.stderr
