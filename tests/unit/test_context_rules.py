"""Where global state may be read or set: only at entry points (a source scan; no imports)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mlops_ray"
ENTRY_POINTS = {"cli.py", "serve/app.py"}  # build the one Context of a process (jobs/ go through cli.py)


def _calls(name: str) -> dict[str, int]:
    """``{module path: count}`` of calls to a function or attribute named ``name``."""
    out: dict[str, int] = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if called == name:
                    out[rel] = out.get(rel, 0) + 1
    return out


def test_only_entry_points_build_a_context():
    assert set(_calls("create")) <= ENTRY_POINTS | {"context.py"}, _calls("create")


def test_only_the_context_reads_the_workspace_environment():
    assert set(_calls("get_workspace")) == {"context.py"}
    readers = [
        p.relative_to(PKG).as_posix()
        for p in PKG.rglob("*.py")
        if "os.environ" in p.read_text() and "ENV_VAR" in p.read_text()
    ]
    assert readers == ["workspace.py"]


def test_only_the_tracking_glue_sets_mlflow_uris():
    # through the versioned seam (compat/mlflow_*.py), which only the tracking glue calls
    for fn in ("set_tracking_uri", "set_registry_uri"):
        assert all(p.startswith("compat/mlflow_") for p in _calls(fn)), (fn, _calls(fn))
    assert set(_calls("set_fluent_uris")) == {"registry/tracking.py"}, _calls("set_fluent_uris")


def test_the_rule_checker_sees_calls():
    # guards against a scan that silently finds nothing
    assert _calls("get_workspace")["context.py"] >= 1 and _calls("set_fluent_uris")["registry/tracking.py"] >= 2


def _unannotated(names: tuple[str, ...]) -> list[str]:
    """``path:line function(param)`` of every parameter named in ``names`` that has no annotation."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p]
                out += [
                    f"{path.relative_to(PKG).as_posix()}:{node.lineno} {node.name}({p.arg})"
                    for p in params
                    if p.arg in names and p.annotation is None
                ]
    return out


def test_ctx_and_cfg_parameters_are_annotated():
    """Every ``ctx`` (a Context, or click's in the CLI) and ``cfg`` (a PipelineConfig or one of its
    sections) says which it is, so a reader follows it without opening the callers."""
    assert _unannotated(("ctx", "cfg")) == []


def test_the_annotation_scan_sees_multi_line_signatures(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text(
        "def f(\n    ctx,\n    cfg: int,\n    *, x=1,\n):\n    pass\n\nasync def g(*, cfg): ...\n"
    )
    monkeypatch.setitem(globals(), "PKG", tmp_path)
    assert _unannotated(("ctx", "cfg")) == ["m.py:1 f(ctx)", "m.py:8 g(cfg)"]
