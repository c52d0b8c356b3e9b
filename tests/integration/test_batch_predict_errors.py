"""``mlops-ray predict`` with bad input: one ``error:`` line, exit 2, no traceback, no output directory
(real model, real local Ray). Also: our errors raised inside Ray tasks and Ray Data UDFs reach the CLI
as one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from mlops_ray.cli import _user_error, main
from mlops_ray.config import TrainingSpec, config_from_dict
from mlops_ray.context import Context
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.errors import SchemaError
from mlops_ray.train.run import train_model
from mlops_ray.workspace import get_workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model(ray_session, small_config, workspace, tmp_path):
    """A registered model trained on small generated data; its config file and raw rows to score."""
    base = small_config(rows=2000)
    raw = {
        "data": base.data.model_dump(mode="json"),
        "registry": {"model_name": "bp-model"},
        "model": {"num_boost_round": 20, "early_stopping_rounds": 5, "params": {"max_depth": 3}},
    }
    cfg = config_from_dict(raw)
    ctx = Context.create(cfg, workspace=get_workspace())
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    res = train_model(ctx, TrainingSpec.from_config(cfg), snap)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    rows = pd.concat(pd.read_parquet(f) for f in snap.split_files("test")).drop(columns=["label"]).head(200)
    return {"cfg": str(path), "uri": f"models:/bp-model/{res.version}", "rows": rows}


def _predict_subprocess(m, input_path, out, workspace):
    env = dict(os.environ, MLOPS_RAY_HOME=str(workspace.root), RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "mlops_ray.cli", "predict", "--config", m["cfg"], "--input", str(input_path)]
    cmd += ["--output", str(out), "--model-uri", m["uri"]]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _assert_one_line_error(r, *needles):
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("library logs: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "UserCodeException" not in r.stderr
    for n in needles:
        assert n in lines[0], r.stderr


def _no_output(out: Path):
    assert not out.exists()
    assert not list(out.parent.glob(f"{out.name}.staging-*"))


def test_predict_input_missing_a_feature(model, workspace, tmp_path):
    inp = tmp_path / "no-income"
    inp.mkdir()
    model["rows"].drop(columns=["income"]).to_parquet(inp / "part-0.parquet")
    out = tmp_path / "out" / "preds"
    r = _predict_subprocess(model, inp, out, workspace)
    _assert_one_line_error(r, "missing model feature(s) ['income']")
    _no_output(out)
    assert not (tmp_path / "out").exists()  # nor the parent it would have created


def test_predict_input_with_abc_in_a_numeric_column(model, workspace, tmp_path):
    rows = model["rows"].reset_index(drop=True)  # the split files' indexes repeat: one label = one row
    rows["age"] = rows["age"].astype("string")
    rows.loc[rows.index[5], "age"] = "abc"
    bad_id = rows.loc[rows.index[5], "customer_id"]
    inp = tmp_path / "abc.csv"
    rows.to_csv(inp, index=False)
    out = tmp_path / "preds"
    r = _predict_subprocess(model, inp, out, workspace)
    _assert_one_line_error(
        r, "column 'age': values not castable to float64: 1 row(s)", f"customer_id='{bad_id}' age='abc'"
    )
    _no_output(out)


def test_predict_good_input_publishes_the_output_and_no_staging(model, workspace, tmp_path):
    inp = tmp_path / "good"
    inp.mkdir()
    model["rows"].to_parquet(inp / "part-0.parquet")
    out = tmp_path / "preds"
    r = CliRunner().invoke(
        main,
        ["predict", "--config", model["cfg"], "--input", str(inp), "--output", str(out), "--model-uri", model["uri"]],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    assert (out / "_manifest.json").is_file() and len(pd.read_parquet(out)) == 200
    assert not list(tmp_path.glob("preds.staging-*"))


def test_schema_error_inside_the_ray_job_is_one_line_and_leaves_nothing(model, workspace, tmp_path, monkeypatch):
    """Without the pre-check, the actors' own check fails; the error crosses Ray as data."""
    import mlops_ray.batch.predict as bp

    monkeypatch.setattr(bp, "check_input", lambda *a, **k: 0)
    rows = model["rows"].reset_index(drop=True)  # the split files' indexes repeat: one label = one row
    rows["age"] = rows["age"].astype("string")
    rows.loc[rows.index[0], "age"] = "abc"
    inp = tmp_path / "abc"
    inp.mkdir()
    rows.to_parquet(inp / "part-0.parquet")
    out = tmp_path / "preds"
    r = CliRunner().invoke(
        main,
        ["predict", "--config", model["cfg"], "--input", str(inp), "--output", str(out), "--model-uri", model["uri"]],
        catch_exceptions=False,
    )
    assert r.exit_code == 2, r.output
    # This test runs the CLI inside the test process, whose shared Ray cluster was not started by
    # the CLI, so worker output ("(MapWorker ...) ...") reaches stderr here; a CLI-started cluster
    # sends it to the log file (tests/e2e/test_quickstart_cli.py). Our own output is one line.
    ours = [
        ln
        for ln in r.stderr.splitlines()
        if not ln.startswith("library logs: ") and "(MapWorker" not in ln and not ln.startswith(" ")
    ]
    assert len(ours) == 1 and ours[0].startswith("error: input does not fit the model: column 'age'"), r.stderr
    assert "Traceback" not in r.stderr and "1 row(s)" in ours[0]
    _no_output(out)


def test_our_errors_are_unwrapped_from_ray_task_and_ray_data_errors(ray_session):
    import ray
    import ray.data

    @ray.remote
    def task():
        raise SchemaError("input lacks model features ['age']")

    with pytest.raises(Exception) as info:  # whatever Ray wraps it in
        ray.get(task.remote())
    assert _user_error(info.value) == "input lacks model features ['age']"

    def udf(batch):
        raise SchemaError("column 'age': values not castable to float64: 1 row(s); e.g. id='7' age='abc'")

    with pytest.raises(Exception) as info:
        ray.data.range(4).map_batches(udf).materialize()
    assert _user_error(info.value) == "column 'age': values not castable to float64: 1 row(s); e.g. id='7' age='abc'"
