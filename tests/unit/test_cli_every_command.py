"""Every ``mlops-ray`` command and subcommand, given a bad input, exits 2 with one ``error:`` line and
no traceback (README: "they never print a traceback"). None of these reach Ray: the unit tier's guard
fails a test that starts it. A test lists the commands from the CLI itself, so a new command without a
case here fails.

Also: a workspace (``MLOPS_RAY_HOME``) without the quickstart's sample data says how to get it, at
once, and leaves no ``mlflow.db`` (or anything else) behind.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from mlops_ray.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "quickstart.yaml")


def _commands(group: click.Group, prefix=()) -> set[tuple[str, ...]]:
    out = set()
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        if isinstance(cmd, click.Group):
            out |= _commands(cmd, path)
            if cmd.invoke_without_command:
                out.add(path)
        else:
            out.add(path)
    return out


def _assert_one_error_line(args, r, *needles):
    assert r.exit_code == 2, (args, r.exit_code, r.output)
    err_lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("library logs: ")]
    assert "Traceback" not in r.output, (args, r.output)
    assert err_lines and err_lines[0].startswith("error: "), (args, r.stderr)
    # one message (some span lines, e.g. YAML's pointer to the bad spot), nothing after it
    assert "error:" not in "\n".join(err_lines[1:]), (args, r.stderr)
    for n in needles:
        assert n in r.stderr, (args, n, r.stderr)


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def files(tmp_path, small_config):
    """A valid config over a small generated source, a file that is not YAML, a missing path."""
    raw = {"data": small_config(rows=200, shards=1).data.model_dump(mode="json"), "registry": {"model_name": "m"}}
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(raw, sort_keys=False))
    not_yaml = tmp_path / "not-yaml.yaml"
    not_yaml.write_text("data: [unclosed\n  name: x: y\n")
    return {
        "good": str(good),
        "not_yaml": str(not_yaml),
        "missing": str(tmp_path / "missing.yaml"),
        "source": raw["data"]["source"],
        "tmp": tmp_path,
    }


# command path -> (args, expected text in the message); configs: not YAML, missing, or good with a bad value
def _cases(f) -> dict[tuple[str, ...], list[tuple[list[str], str]]]:
    tmp = f["tmp"]
    return {
        ("data", "generate"): [
            (["--rows", "3", "--shards", "5", "--out", str(tmp / "g")], "must not exceed"),
            (["--rows", "10", "--shards", "1", "--out", str(Path(f["source"]))], "already contains Parquet"),
        ],
        ("data", "split"): [
            (
                [f["source"], "--id-column", "customer_id", "--fractions", "train=abc", "--out", str(tmp / "s")],
                "not a number",
            ),
            (
                [f["source"], "--id-column", "customer_id", "--fractions", "train=0.5", "--out", str(tmp / "s")],
                "sum to 1",
            ),
            ([str(tmp / "nope"), "--id-column", "x", "--out", str(tmp / "s"), "--engine", "local"], "does not exist"),
        ],
        ("data", "fingerprint"): [([str(tmp / "nope")], "does not exist")],
        ("data", "prepare"): [
            (["--config", f["missing"]], "config file not found"),
            (["--config", f["not_yaml"]], f["not_yaml"]),
        ],
        ("data", "list"): [],  # takes no input: see test_a_corrupt_snapshot_manifest_is_a_clean_error
        ("data", "show"): [(["abcdef"], "no snapshot matches")],
        ("train",): [
            (["--config", f["not_yaml"]], f["not_yaml"]),
            (["--config", f["good"], "--snapshot", "unknown"], "no snapshot matches"),
        ],
        ("tune",): [
            (["--config", f["missing"]], "config file not found"),
            (["--config", f["good"], "--snapshot", "deadbeef"], "no snapshot matches"),
        ],
        ("promote",): [(["--config", f["not_yaml"]], f["not_yaml"])],
        ("rollback",): [(["--config", f["missing"]], "config file not found")],
        ("models",): [(["--config", f["not_yaml"]], f["not_yaml"])],
        ("reproduce",): [(["abc123", "--config", f["not_yaml"]], f["not_yaml"])],
        ("predict",): [
            (["--config", f["missing"], "--input", f["source"], "--output", str(tmp / "p")], "config file not found"),
        ],
        ("serve",): [([], "needs --config FILE"), (["--config", f["not_yaml"]], f["not_yaml"])],
        ("serve", "reload"): [
            ([], "needs --config FILE"),
            (["--config", f["good"]], "no running service recorded"),
        ],
        ("quickstart",): [(["--config", f["not_yaml"]], f["not_yaml"])],
        ("drift", "compare"): [
            (["--config", f["missing"], "--current", f["source"]], "config file not found"),
            (["--config", f["good"], "--current", f["source"], "--reference", "deadbeef"], "no snapshot matches"),
        ],
        ("drift", "report"): [
            (["--config", f["not_yaml"]], f["not_yaml"]),
            (["--config", f["good"], "--url", "http://127.0.0.1:9"], "no model service at http://127.0.0.1:9"),
        ],
        ("drift", "model"): [(["--config", f["missing"], "--current", f["source"]], "config file not found")],
        ("pipeline", "run"): [(["--config", f["not_yaml"]], f["not_yaml"])],
        ("pipeline", "watch"): [(["--config", f["missing"]], "config file not found")],
        ("pipeline", "history"): [(["--config", f["not_yaml"]], f["not_yaml"])],
        ("pipeline", "loop-demo"): [(["--config", f["missing"]], "config file not found")],
        ("deploy", "render"): [
            (["--config", f["missing"], "--target", "serve"], "config file not found"),
            (["--config", f["good"], "--target", "kuberay"], "needs --workspace"),
        ],
        # nothing starts: the input is checked before PostgreSQL or MLflow (tests/integration/test_tracking_server.py)
        ("tracking-server", "start"): [
            (["--data-dir", f["good"]], "is a file"),
            (["--data-dir", str(tmp / "ts"), "--host", "0.0.0.0"], "every interface"),
            (["--data-dir", str(tmp / "ts"), "--artifacts-destination", "ftp://host/x"], "unsupported scheme 'ftp'"),
        ],
        ("tracking-server", "stop"): [(["--data-dir", str(tmp / "ts")], "no tracking server recorded")],
    }


def test_every_command_has_a_bad_input_case(files):
    assert set(_cases(files)) == _commands(main)


def test_every_command_with_a_bad_input_is_one_clean_error(files):
    for path, cases in _cases(files).items():
        for args, needle in cases:
            full = [*path, *args]
            _assert_one_error_line(full, _invoke(*full), needle)


def test_commands_on_the_registry_with_bad_ids_are_clean_errors(files, workspace):
    """One workspace (its MLflow store is created once): unknown run, version, alias, URI."""
    good, src, tmp = files["good"], files["source"], files["tmp"]
    cases = [
        (["promote", "--config", good], "challenger"),
        (["promote", "--config", good, "--version", "99"], "model 'm' has no version 99"),
        (["rollback", "--config", good], "no previous 'champion' version"),
        (["reproduce", "0123456789abcdef0123456789abcdef"], "not found"),
        (
            ["predict", "--config", good, "--input", src, "--output", str(tmp / "p"), "--model-uri", "nonsense"],
            "expected models:/NAME@ALIAS",
        ),
        (["predict", "--config", good, "--input", src, "--output", str(tmp / "p")], "has no alias 'champion'"),
        (["drift", "compare", "--config", good, "--current", src], "has no alias 'champion'"),
        (["drift", "compare", "--config", good, "--current", src, "--model", "models:/m/3"], "no version 3"),
        (
            ["predict", "--config", good, "--input", src, "--output", str(tmp / "p"), "--model-uri", "models:/m/3"],
            "model 'm' has no version 3",
        ),
    ]
    for args, needle in cases:
        _assert_one_error_line(args, _invoke(*args), needle)
    assert not (tmp / "p").exists()


def test_a_corrupt_snapshot_manifest_is_a_clean_error(workspace):
    d = workspace.root / "datasets" / "x" / "0123456789abcdef"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{not json")
    for args in (["data", "list"], ["data", "show", "0123"], ["train", "--config", EXAMPLE, "--snapshot", "x@latest"]):
        _assert_one_error_line(args, _invoke(*args), f"snapshot manifest {d / 'manifest.json'} cannot be read")


# ------------------------------------------------------------------ MLOPS_RAY_HOME without the sample data
@pytest.mark.parametrize("command", [["data", "prepare"], ["train"], ["tune"]])
def test_empty_workspace_says_how_to_get_the_sample_data(command, workspace):
    workspace.root.mkdir(parents=True)
    t0 = time.perf_counter()
    r = _invoke(*command, "--config", "examples/quickstart.yaml")
    seconds = time.perf_counter() - t0
    _assert_one_error_line(
        command,
        r,
        f"{workspace.root}/raw/quickstart",
        "'mlops-ray quickstart --config examples/quickstart.yaml'",
        f"'mlops-ray data generate --rows 20000 --shards 4 --seed 0 --out {workspace.root}/raw/quickstart'",
    )
    assert seconds < 10, seconds
    assert sorted(p.name for p in workspace.root.iterdir()) == []  # no mlflow.db, no logs/, nothing


def test_the_hint_names_the_config_the_user_passed(tmp_path, workspace):
    raw = yaml.safe_load(Path(EXAMPLE).read_text())
    raw["data"]["generate"] = {"rows": 500, "shards": 2, "seed": 3, "drift": 0.5}
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    r = _invoke("data", "prepare", "--config", str(cfg))
    _assert_one_error_line(
        ["data", "prepare"],
        r,
        f"'mlops-ray quickstart --config {cfg}'",
        "--rows 500 --shards 2 --seed 3 --drift 0.5 --out",
    )


def test_a_source_without_generate_keeps_the_data_layer_message(files, workspace, tmp_path):
    raw = yaml.safe_load(Path(files["good"]).read_text())
    raw["data"]["source"] = str(tmp_path / "nowhere")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    r = _invoke("data", "prepare", "--config", str(cfg), "--engine", "local")
    _assert_one_error_line(["data", "prepare"], r, "does not exist")
    assert "mlops-ray quickstart" not in r.stderr
