"""Training, tuning, tracking and the registry on a real local Ray and a fresh SQLite MLflow per test."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops_ray.config import TrainingSpec, config_from_dict
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.data.splits import load_split
from mlops_ray.errors import ConfigError, MlopsRayError, SnapshotNotFoundError
from mlops_ray.registry import promotion, tracking
from mlops_ray.train.run import train_model
from mlops_ray.workspace import get_workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
WEAK = {"num_boost_round": 2, "params": {"max_depth": 1, "eta": 0.05}}


@pytest.fixture
def make_cfg(small_config):
    """Full pipeline config over small generated data; sections overridable."""

    def make(rows=4000, data=None, **sections):
        base = small_config(rows=rows, **(data or {}))
        raw = {
            "data": base.data.model_dump(mode="json"),
            "registry": {"model_name": "it-model"},
            "model": {"num_boost_round": 60, "early_stopping_rounds": 10, "params": {"max_depth": 4}},
        }
        for k, v in sections.items():
            raw[k] = {**raw.get(k, {}), **v}
        return config_from_dict(raw)

    return make


def _snap(cfg):
    return prepare_snapshot(cfg.data, get_workspace(), engine="local").snapshot


def _ctx(cfg):
    from mlops_ray.context import Context

    return Context.create(cfg, workspace=get_workspace())


def _train(cfg, snap=None, **kw):
    return train_model(_ctx(cfg), TrainingSpec.from_config(cfg), snap or _snap(cfg), **kw)


def _promote(cfg, version, **kw):
    return promotion.promote(_ctx(cfg), cfg.registry, cfg.serve.model_alias, version, **kw)


def _git_state() -> tuple[str, str]:
    """(HEAD sha, "true"/"false" for uncommitted changes to tracked files) of this checkout, by git."""
    git = ["git", "--no-optional-locks", "-C", str(ROOT)]  # read-only: never takes the index lock
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30)
    diff = subprocess.run([*git, "diff", "--quiet", "HEAD", "--"], capture_output=True, timeout=30)
    assert diff.returncode in (0, 1), diff.stderr
    return head.stdout.strip(), "true" if diff.returncode else "false"


def test_training_run_logs_everything(ray_session, make_cfg, workspace):
    cfg = make_cfg()
    snap = _snap(cfg)
    git_before = _git_state()  # the checkout may get a commit or an edit while the test runs
    res = _train(cfg, snap)
    git_after = _git_state()
    assert res.plan.mode == "local" and res.version == "1"
    client = _ctx(cfg).client
    run = client.get_run(res.run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["snapshot_id"] == snap.id and tags["data_fingerprint"] == snap.manifest["fingerprint"]
    # the tests run from a git checkout: never the "unknown" fallback
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"]), tags["git_commit"]
    assert tags["git_commit"] in {git_before[0], git_after[0]}
    assert tags["git_dirty"] in {git_before[1], git_after[1]}
    assert "version.ray" in tags and "version.xgboost" in tags
    assert params["data.salt"] == "v1" and "model.xgboost.max_depth" in params
    for split in ("valid", "test"):
        for m in ("auc", "logloss", "accuracy", "f1"):
            assert f"{split}_{m}" in metrics
    assert 0.6 < metrics["test_auc"] <= 1.0
    history = client.get_metric_history(res.run_id, "iter_valid_auc")
    assert len(history) >= 10 and [h.step for h in history] == list(range(len(history)))
    assert any(k.startswith("perm_importance.") for k in metrics)
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == snap.id
    arts = {a.path for a in client.list_artifacts(res.run_id)} | {
        a.path for d in ("data", "evaluation") for a in client.list_artifacts(res.run_id, d)
    }
    for a in (
        "config.yaml",
        "data/manifest.json",
        "data/reference_stats.json",
        "evaluation/slices.json",
        "evaluation/permutation_importance.json",
    ):
        assert a in arts, arts
    with tracking.scope(_ctx(cfg).tracking_uri):
        slices = mlflow.artifacts.load_dict(f"runs:/{res.run_id}/evaluation/slices.json")
    assert set(slices) == set(cfg.data.categorical_features)
    assert snap.usage()[0]["run_id"] == res.run_id


def test_pyfunc_scores_raw_rows_in_another_process(ray_session, make_cfg, workspace, tmp_path):
    cfg = make_cfg()
    snap = _snap(cfg)
    res = _train(cfg, snap)
    _promote(cfg, res.version)
    test = load_split(snap, "test", snap.preprocessor(), keep_frame=True)
    raw = test.frame.drop(columns=["label"]).head(50)
    raw.loc[raw.index[0], "region"] = "never-seen-region"
    raw.loc[raw.index[1], "income"] = np.nan
    raw.to_parquet(tmp_path / "raw.parquet")
    code = (
        "import mlflow, pandas as pd, sys; mlflow.set_tracking_uri(sys.argv[1]); "
        "m = mlflow.pyfunc.load_model('models:/it-model@champion'); "
        "print(m.predict(pd.read_parquet(sys.argv[2]))['probability'].round(8).tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, workspace.mlflow_tracking_uri, str(tmp_path / "raw.parquet")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    probs = json.loads(out.stdout.strip().splitlines()[-1])
    booster_model = tracking.load_pyfunc(_ctx(cfg).tracking_uri, res.model_uri)
    expected = booster_model.predict(raw)["probability"].round(8).tolist()
    assert probs == expected and len(probs) == 50


def test_gate_promotes_better_refuses_worse_and_rollback(ray_session, make_cfg, workspace):
    weak = make_cfg(model=WEAK)
    strong = make_cfg()
    snap = _snap(strong)
    v1 = _train(weak, snap)
    assert _promote(weak, v1.version).decision.promote  # no champion yet
    v2 = _train(strong, snap)
    r2 = _promote(strong, v2.version)
    assert r2.decision.promote and r2.scores["challenger"] > r2.scores["champion"]
    v3 = _train(weak, snap)
    r3 = _promote(weak, v3.version)
    assert not r3.decision.promote and "<" in r3.decision.reasons[0]
    client = _ctx(strong).client
    assert str(client.get_model_version_by_alias("it-model", "champion").version) == v2.version
    assert str(client.get_model_version_by_alias("it-model", "challenger").version) == v3.version
    event = promotion.rollback(_ctx(strong), strong.registry.model_name, strong.serve.model_alias)
    assert (event["from_version"], event["to_version"]) == (v2.version, v1.version)
    assert str(client.get_model_version_by_alias("it-model", "champion").version) == v1.version
    with pytest.raises(MlopsRayError, match="no previous 'champion' version"):
        promotion.rollback(_ctx(strong), strong.registry.model_name, strong.serve.model_alias)
    listing = promotion.list_models(_ctx(strong), strong.registry.model_name)
    assert [r["version"] for r in listing] == ["3", "2", "1"]
    assert "champion" in listing[2]["aliases"] and listing[0]["snapshot_id"] == snap.id
    history = tracking.alias_history(client, "it-model")
    assert [e["action"] for e in history if e["alias"] == "champion"] == ["promote", "promote", "rollback"]


def test_gate_refuses_leaky_comparison(ray_session, make_cfg, workspace):
    a = make_cfg()
    _promote(a, _train(a).version)
    b = make_cfg(data={"split": {"salt": "other"}})
    vb = _train(b).version
    with pytest.raises(MlopsRayError, match="salts differ"):
        _promote(b, vb)


def test_reproduce_matches_exactly(ray_session, make_cfg, workspace):
    from mlops_ray.train.reproduce import reproduce_run

    cfg = make_cfg()
    res = _train(cfg)
    comp = reproduce_run(_ctx(cfg), res.run_id)
    assert comp.exact and len(comp.rows) == 8


def test_reproduce_refuses_missing_snapshot(ray_session, make_cfg, workspace):
    import shutil

    from mlops_ray.train.reproduce import ReproduceError, reproduce_run

    cfg = make_cfg()
    snap = _snap(cfg)
    res = _train(cfg, snap)
    shutil.rmtree(snap.path)
    with pytest.raises(ReproduceError, match="is gone"):
        reproduce_run(_ctx(cfg), res.run_id)


def test_tune_runs_trials_as_child_runs(ray_session, make_cfg, workspace):
    from mlops_ray.config import TrainingSpec
    from mlops_ray.train.tune import tune_model

    cfg = make_cfg(
        tune={
            "enabled": True,
            "num_samples": 4,
            "max_concurrent_trials": 2,
            "search_space": {"max_depth": {"randint": [2, 6]}, "eta": {"loguniform": [0.05, 0.3]}},
        }
    )
    res = tune_model(_ctx(cfg), TrainingSpec.from_config(cfg), _snap(cfg))
    assert res.extra["trials"] == 4 and res.version == "1"
    client = _ctx(cfg).client
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{res.run_id}'")
    assert len(children) == 4
    assert sum(c.data.tags["best"] == "True" for c in children) == 1
    assert all(c.data.params for c in children)


def test_sklearn_estimator_trains_and_registers(ray_session, make_cfg, workspace):
    cfg = make_cfg(
        model={
            "type": "sklearn",
            "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
            "params": {"max_iter": 50},
        }
    )
    res = _train(cfg)
    assert res.metrics["test_auc"] > 0.6 and res.version == "1"
    m = tracking.load_pyfunc(_ctx(cfg).tracking_uri, res.model_uri)
    assert set(
        m.predict(pd.DataFrame([{f: None for f in cfg.data.numeric_features + cfg.data.categorical_features}])).columns
    ) == {"prediction", "probability"}


def test_bad_inputs_are_clear(ray_session, make_cfg, workspace):
    cfg = make_cfg(model={"type": "sklearn", "estimator": "sklearn.ensemble.Nope"})
    with pytest.raises(ConfigError, match="has no class 'Nope'"):
        _train(cfg)
    with pytest.raises(SnapshotNotFoundError):
        _ctx(cfg).snapshots.find("deadbeefdead")
    with pytest.raises(MlopsRayError, match="unreachable"):
        bad = make_cfg(mlflow={"tracking_uri": "http://127.0.0.1:9"})
        _train(bad, _snap(cfg))


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_other_tasks_train_and_score(ray_session, workspace, tmp_path, task):
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame(
        {
            "id": [f"x{i}" for i in range(n)],
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "c": rng.choice(["p", "q", "r"], n),
        }
    )
    signal = 2 * df["a"] + df["b"] * (df["c"] == "p")
    df["y"] = signal + rng.normal(scale=0.3, size=n) if task == "regression" else np.digitize(signal, [-1, 1])
    (tmp_path / "src").mkdir()
    df.to_parquet(tmp_path / "src" / "d.parquet")
    cfg = config_from_dict(
        {
            "data": {
                "name": task,
                "source": str(tmp_path / "src"),
                "id_column": "id",
                "label_column": "y",
                "task": task,
            },
            "model": {"num_boost_round": 50, "cv_folds": 3},
            "registry": {
                "model_name": f"it-{task}",
                "gate": {
                    "metric": "rmse" if task == "regression" else "accuracy",
                    "direction": "minimize" if task == "regression" else "maximize",
                },
            },
        }
    )
    res = _train(cfg)
    if task == "regression":
        assert res.metrics["test_r2"] > 0.8 and res.metrics["test_rmse"] < 1.0
        assert res.extra["cv"]["cv_r2_mean"] > 0.8
    else:
        assert res.metrics["test_accuracy"] > 0.8 and "test_f1_macro" in res.metrics
        assert set(tracking.load_pyfunc(_ctx(cfg).tracking_uri, res.model_uri).predict(df.head(3)).columns) == {
            "prediction",
            "probability_0",
            "probability_1",
            "probability_2",
        }
    # cv_<metric>_mean/_std as logged: the mean and population std of the per-fold metrics that
    # the run logged in cv_folds.json, recomputed here; and the folds do differ
    client = _ctx(cfg).client
    folds = json.loads(
        Path(client.download_artifacts(res.run_id, "evaluation/cv_folds.json", str(tmp_path))).read_text()
    )["folds"]
    logged = client.get_run(res.run_id).data.metrics
    assert len(folds) == 3
    for m in folds[0]:
        per_fold = np.array([f[m] for f in folds], dtype=np.float64)
        assert logged[f"cv_{m}_mean"] == pytest.approx(per_fold.mean(), rel=1e-9, abs=1e-12), m
        assert logged[f"cv_{m}_std"] == pytest.approx(per_fold.std(), rel=1e-9, abs=1e-12), m
    assert any(logged[f"cv_{m}_std"] > 0 for m in folds[0])
    assert _promote(cfg, res.version).decision.promote
