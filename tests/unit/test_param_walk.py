"""scripts/param_walk.py on a tiny synthetic package whose walk is counted by hand."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "param_walk.py"

PKG = {
    "__init__.py": "",
    "a.py": """
from pkg import b, only_attr, shadow
from pkg.c import helper as h
from pkg.e import Runner


def start(cfg, other):
    b.f(1, cfg)
    h(other)
    only_attr.use(cfg.sub)
    ignored = lambda cfg: shadow.s(cfg)
    Runner(cfg).go()
    local(cfg)
    return ignored


def local(conf):
    def inner():
        return h(x=conf)

    return inner
""",
    "b.py": """
def f(n, conf):
    from pkg import c

    c.helper(x=conf)
    g2(conf)


def g2(conf):
    from pkg.d import g

    g(conf)
""",
    "c.py": "def helper(x=None):\n    return x\n",
    "d.py": "def g(v):\n    return v\n",
    "e.py": """
from pkg import c


class Runner:
    def __init__(self, conf):
        self.conf = conf

    def go(self):
        return c.helper(self.conf)

    def unrelated(self):
        return c.helper(1)
""",
    "only_attr.py": "def use(sub):\n    return sub\n",
    "shadow.py": "def s(cfg):\n    return cfg\n",
}


@pytest.fixture(scope="module")
def pw():
    spec = importlib.util.spec_from_file_location("param_walk", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["param_walk"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("param_walk", None)


def write_pkg(root: Path, files: dict[str, str]) -> None:
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / "pkg" / name).write_text(text)


def test_value_walk_counts(pw, tmp_path):
    write_pkg(tmp_path, PKG)
    r = pw.walk(tmp_path, "pkg.a:start", "cfg")
    assert r["modules"] == ["pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e"]
    assert r["transitions"] == [
        "pkg.a -> pkg.b",
        "pkg.b -> pkg.c",
        "pkg.c -> pkg.b",  # climb: back up to b to read on (g2)
        "pkg.b -> pkg.d",
        "pkg.d -> pkg.a",  # climb
        "pkg.a -> pkg.e",  # Runner.__init__, then Runner.go (reads self.conf)
        "pkg.e -> pkg.c",  # revisit (helper already explored), not a climb
        "pkg.c -> pkg.a",  # climb
        "pkg.a -> pkg.c",  # the closure inside local(): revisit
    ]
    assert (r["module_count"], r["transition_count"], r["revisits"], r["climbs"]) == (5, 9, 5, 3)
    assert "pkg.e:Runner.go(self.conf)" in r["functions"]
    assert not any("unrelated" in f for f in r["functions"])
    assert "pkg.shadow" not in r["modules"]  # the lambda's own `cfg` shadows the tracked one


def test_attribute_walk_counts(pw, tmp_path):
    write_pkg(tmp_path, PKG)
    r = pw.walk(tmp_path, "pkg.a:start", "cfg", attrs=True)
    assert r["modules"] == ["pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.only_attr", "pkg.e"]
    assert r["transitions"][4:7] == ["pkg.d -> pkg.a", "pkg.a -> pkg.only_attr", "pkg.only_attr -> pkg.a"]
    assert (r["module_count"], r["transition_count"], r["revisits"], r["climbs"]) == (6, 11, 6, 4)


def test_cli_json_and_ref(pw, tmp_path):
    """--ref analyses the committed tree, not the working tree."""
    write_pkg(tmp_path, PKG)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "pkg"], check=True)
    subprocess.run([*git, "commit", "-qm", "pkg"], check=True)
    # working tree: start no longer hands cfg to anyone
    (tmp_path / "pkg" / "a.py").write_text("def start(cfg):\n    return cfg\n")
    now = pw.analyse("pkg.a:start", "cfg", src_root=tmp_path)
    then = pw.analyse("pkg.a:start", "cfg", ref="HEAD", src_root=tmp_path)
    assert now["value"]["modules"] == ["pkg.a"] and now["value"]["transition_count"] == 0
    assert then["value"]["module_count"] == 5 and then["value_and_attrs"]["module_count"] == 6
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "pkg.a:start", "cfg", "--root", str(tmp_path), "--ref", "HEAD", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert '"module_count": 5' in out
