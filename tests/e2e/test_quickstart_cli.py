"""The README's main command, run as a user would: a real process, real local Ray. One quickstart run
checks what it prints on stdout, that stderr is quiet (library chatter goes to the workspace log file),
what its closed loop (drift -> retrain -> gate -> switch, zero failed requests) left in the workspace,
and the README's follow-up commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _cluster import free_port, serve_port_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mlops_ray.cli"]
CHATTER = ("Traceback", "WARNING", "INFO", "FutureWarning", "UserWarning", "(raylet)", "pid=", "TensorBoard")


def _cli(*args, env, timeout=300):
    return subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_quickstart_then_commands_with_example_config(tmp_path):
    import yaml

    env = dict(
        os.environ,
        MLOPS_RAY_HOME=str(tmp_path / "home"),
        RAY_AUTH_MODE="disabled",
        MLOPS_RAY_PROGRESS="0",
        **serve_port_env(),
    )
    env.pop("RAY_ADDRESS", None)
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    port = free_port()  # never the fixed default: another service may hold it
    raw["serve"]["port"] = port
    config = tmp_path / "quickstart.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))  # split fractions are ordered
    r = _cli("quickstart", "--config", str(config), env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    _assert_quiet(r, tmp_path / "home")
    assert "fingerprint:" in out
    assert "[2/6] pipeline run" in out and "tune run" in out  # the training step itself ran (tuning)
    assert "registered quickstart-churn v1; gate PROMOTE" in out
    assert "'champion' -> v1 (was none)" in out
    assert '"model": {"name": "quickstart-churn", "version": "1"' in out  # a real HTTP answer
    assert f"curl -s -X POST http://127.0.0.1:{port}/predict" in out
    # the drift demonstration: an OK window, then an ALERT window naming features, and a PNG
    assert "[4/6] drift" in out and "OK " in out and "ALERT" in out and "utilization" in out
    png = Path(out.split("drift report: ")[1].split()[0])
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the loop closes once: one drift run, the service switches, nothing fails
    assert "[5/6] the loop closes" in out and "run (drift)" in out
    loop = out.split("champion v1 -> v")[1]
    after = loop.split(";")[0]
    assert after in ("1", "2") and " 0 failed" in loop, out[-3000:]
    assert "service stopped" in out and f"mlops-ray serve --config {config}" in out  # hints name the config
    listing = json.loads(_cli("data", "list", "--json", env=env).stdout)
    assert {s["name"] for s in listing} == {"quickstart"} and len(listing) == 2  # before and after new data
    # the example config finds the data in the workspace, from the repo root
    again = _cli("data", "prepare", "--config", "examples/quickstart.yaml", env=env)
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout
    history = _cli("pipeline", "history", "--config", str(config), "--json", env=env)
    entries = json.loads(history.stdout)
    runs = [e for e in entries if e["kind"] == "run"]
    assert [e["trigger"] for e in runs] == ["manual", "drift"]
    _assert_the_loop_closed(entries, config, tmp_path / "home", after)
    # the README's follow-up commands, as written, on this fresh quickstart
    for args in (
        ("train", "--config", str(config)),
        ("promote", "--config", str(config)),
        ("promote", "--config", str(config), "--force"),
        ("models", "--config", str(config), "--history"),
        ("rollback", "--config", str(config)),
    ):
        r = _cli(*args, env=env)
        assert r.returncode == 0, (args, r.stdout + r.stderr)
        assert "Traceback" not in r.stderr
    assert f"champion: v3 -> v{after}" in r.stdout  # rollback restored the quickstart's champion


def ids(snap, split) -> set:
    from mlops_ray.data.splits import read_split_table

    t = read_split_table(snap.split_files(split), snap.spec.id_column, None)
    return set(t.column(snap.spec.id_column).to_pylist())


def _assert_the_loop_closed(entries: list[dict], config: Path, home: Path, champion_after: str) -> None:
    """What the quickstart's closed loop left in its workspace: the drift trigger fired once (never during
    in-distribution traffic), the retraining snapshot holds the new rows with every old row in its old
    split (nothing of the champion's training rows in the gate's test rows), the gate compared against v1,
    and a promotion carries its drift lineage."""
    from mlflow.tracking import MlflowClient

    from mlops_ray.config import load_config
    from mlops_ray.context import Context

    fired = [e for e in entries if e["kind"] == "decision" and e["action"] == "run"]
    assert [d["trigger"] for d in fired] == ["drift"], fired
    assert "consecutive" in fired[0]["reason"], fired[0]
    drift_run = [e for e in entries if e["kind"] == "run"][-1]
    steps = {s["name"]: s for s in drift_run["steps"]}
    assert drift_run["status"] == "succeeded" and steps["prepare"]["status"] == steps["train"]["status"] == "succeeded"
    ctx = Context.create(load_config(config), workspace=home)
    first = next(e for e in entries if e["kind"] == "run")
    first_prepare = next(s for s in first["steps"] if s["name"] == "prepare")
    old = ctx.snapshots.find(first_prepare["outputs"]["snapshot_id"])
    new = ctx.snapshots.find(steps["prepare"]["outputs"]["snapshot_id"])
    old_rows, new_rows = sum(old.manifest["rows_per_split"].values()), sum(new.manifest["rows_per_split"].values())
    assert new_rows == old_rows + 6000, (old_rows, new_rows)  # closed_loop's default new rows
    for split in ("train", "valid", "test"):
        assert ids(old, split) <= ids(new, split), split
    assert not ids(old, "train") & ids(new, "test")
    gate = steps["gate"]["outputs"]
    assert gate["champion_version"] == "1" and gate["scores"]["champion"] is not None and gate["reasons"]
    if gate["decision"] == "PROMOTE":
        version = drift_run["version"]
        assert champion_after == version
        tags = MlflowClient(ctx.tracking_uri).get_model_version("quickstart-churn", version).tags
        assert tags["lineage.trigger"] == "drift" and tags["lineage.trigger_report"].endswith("context.json")
    else:
        assert champion_after == "1" and gate["decision"] == "KEEP"


def _assert_quiet(r, home: Path) -> None:
    """Ray/Tune/Serve/MLflow logs, warnings and worker output went to <workspace>/logs/, named once at the end."""
    lines = [ln for ln in r.stderr.split("\n") if ln.strip()]
    assert len(lines) <= 3, r.stderr  # a few of ours at most; ~100 lines of library output before
    for word in CHATTER:
        assert word not in r.stderr, (word, r.stderr)
    assert "tensorboard" not in r.stdout.lower() and "View detailed results here" not in r.stdout
    notes = [ln for ln in lines if ln.startswith("library logs: ")]
    assert len(notes) == 1, r.stderr
    logfile = Path(notes[0].removeprefix("library logs: "))
    assert logfile.parent == home / "logs" and logfile.name.startswith("mlops-ray-quickstart-")
    assert logfile.stat().st_size > 0
