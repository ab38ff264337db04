"""tools/check-links (run by `make check-links`, early in `make test`): on a
small tree it names every broken relative link and #anchor (GitHub's anchor
style) and nothing else, and exits 0 on a tree whose links all resolve."""
import subprocess

from farm import ROOT

CHECK = [f"{ROOT}/tools/check-links"]

README = """# Demo

[install](docs/install.md) [anchor](docs/install.md#from-the-debian-packages)
[second of two](docs/install.md#notes-1) [unicode](docs/install.md#jürgen-und-müller)
[code heading](docs/install.md#post-apiv1login) [dir](docs/) [web](https://example.org/x.md)
[self](#demo) [mail](mailto:a@example.org)
[missing file](docs/nope.md)
[missing anchor](docs/install.md#nowhere)
[outside](../elsewhere.md)
`[in code](docs/nope2.md)`

```
[in a fence](docs/nope3.md)
# not a heading
```

[ref]: docs/nope4.md
"""

INSTALL = """# Install

## From the Debian packages
## Notes
## Notes
## Jürgen und Müller
### `POST /api/v1/login`

[back](../README.md#demo) [fence](../README.md#not-a-heading)
"""


def run(root, *files):
    return subprocess.run(CHECK + ["--root", str(root), *files], cwd=root,
                          capture_output=True, text=True, timeout=30)


def tree(tmp_path, readme=README, install=INSTALL):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "docs" / "install.md").write_text(install)
    return tmp_path


def test_names_every_broken_link_and_only_those(tmp_path):
    p = run(tree(tmp_path))
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.splitlines() == [
        "README.md:7: docs/nope.md (no such file)",
        "README.md:8: docs/install.md#nowhere (no heading '#nowhere' in docs/install.md)",
        "README.md:9: ../elsewhere.md (outside the source tree)",
        "README.md:17: docs/nope4.md (no such file)",
        "docs/install.md:9: ../README.md#not-a-heading "
        "(no heading '#not-a-heading' in README.md)",
    ]
    assert "5 broken link(s) in 2 file(s)" in p.stderr


def test_a_tree_whose_links_resolve_passes(tmp_path):
    good = "\n".join(line for line in README.split("\n")
                     if "nope" not in line and "nowhere" not in line
                     and "elsewhere" not in line)
    p = run(tree(tmp_path, good, INSTALL.replace(" [fence](../README.md#not-a-heading)", "")))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout == ""


def test_an_unreadable_file_is_an_error(tmp_path):
    p = run(tree(tmp_path), "README.md", "docs/absent.md")
    assert p.returncode == 2
    assert "absent.md" in p.stderr
