"""Errors that used to escape as tracebacks (exit 1) are one ``error:`` line with exit 2 (no Ray).

Covers: a config that is not UTF-8, a model parameter of the wrong type, an unsupported
``mlflow.tracking_uri`` scheme, a read-only workspace, a full disk, a corrupt snapshot at
``train``, and XGBoost rejecting a passed-through parameter.

The read-only workspace and the full disk are tested here in-process (the OSError a write
would raise, injected with monkeypatch, because these tests run as root, where ``chmod`` does
not stop writes); for real, in a private mount namespace, in the integration tier
(``tests/integration/test_cli_hardening_mounts.py``).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from _cli_process import write_config
from click.testing import CliRunner

from mlops_ray.cli import main
from mlops_ray.config import config_from_dict, tracking_uri_problem
from mlops_ray.errors import ConfigError, TrainingError
from mlops_ray.kinds.xgboost import xgboost_param_problems


def _invoke(*args):
    """CliRunner that keeps exceptions (a traceback would show as exit 1 with r.exception set)."""
    return CliRunner().invoke(main, list(args))


def _assert_clean_error(r, *needles):
    assert r.exit_code == 2, f"exit {r.exit_code}: {r.output}\n{r.exception!r}"
    assert r.output.startswith("error: ") and "Traceback" not in r.output
    for n in needles:
        assert n in r.output, r.output


# ------------------------------------------------------------------ config file / config values
def test_config_that_is_not_utf8_is_a_clean_error(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("data:\n  name: café\n".encode("latin-1"))
    r = _invoke("data", "prepare", "--config", str(p), "--engine", "local")
    _assert_clean_error(r, "is not UTF-8", str(p), "offset 17")


def test_model_param_of_the_wrong_type_is_rejected_when_the_config_loads(tmp_path, small_config):
    p = write_config(tmp_path, small_config, model={"params": {"max_depth": "deep"}})
    # train names a snapshot that does not exist: the config must fail first, before any work
    r = _invoke("train", "--config", str(p), "--snapshot", "deadbeefdead")
    _assert_clean_error(r, "model.params", "max_depth", "must be an integer", "'deep'")


@pytest.mark.parametrize(
    "params, problem",
    [
        ({"max_depth": 3.0}, "max_depth: must be an integer"),
        ({"max_depth": True}, "max_depth: must be an integer"),
        ({"max_depth": -1}, "max_depth: must be 0 <= max_depth"),
        ({"eta": "fast"}, "eta: must be a number"),
        ({"learning_rate": -0.1}, "learning_rate: must be 0 <= learning_rate"),
        ({"subsample": 0}, "subsample: must be 0 < subsample <= 1"),
        ({"colsample_bytree": 1.5}, "colsample_bytree: must be 0 < colsample_bytree <= 1"),
        ({"lambda": None}, "lambda: must be a number"),
        ({"reg_alpha": [1]}, "reg_alpha: must be a number"),
        ({"min_child_weight": "1"}, "min_child_weight: must be a number"),
        ({"max_bin": 1}, "max_bin: must be 2 <= max_bin"),
        ({"num_parallel_tree": 0}, "num_parallel_tree: must be 1 <= num_parallel_tree"),
        ({"scale_pos_weight": "x"}, "scale_pos_weight: must be a number"),
        ({"seed": 1.5}, "seed: must be an integer"),
        ({"tree_method": "gpu_magic"}, "tree_method: must be one of"),
        ({"eval_metric": 3}, "eval_metric: must be a metric name"),
    ],
)
def test_known_xgboost_params_are_type_checked(params, problem):
    assert any(p.startswith(problem) for p in xgboost_param_problems(params)), xgboost_param_problems(params)
    with pytest.raises(ConfigError, match="model.params"):
        config_from_dict(
            {"data": {"name": "d", "source": "s", "id_column": "i", "label_column": "l"}, "model": {"params": params}}
        )


def test_valid_and_unknown_xgboost_params_pass_through():
    params = {"max_depth": 4, "eta": 0.1, "subsample": 1, "lambda": 0, "eval_metric": ["auc", "logloss"], "foo": "x"}
    assert xgboost_param_problems(params) == []
    cfg = config_from_dict(
        {"data": {"name": "d", "source": "s", "id_column": "i", "label_column": "l"}, "model": {"params": params}}
    )
    assert cfg.model.params == params
    # sklearn params are the estimator's business, not XGBoost's
    sk = {"type": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_depth": "deep"}}
    config_from_dict({"data": {"name": "d", "source": "s", "id_column": "i", "label_column": "l"}, "model": sk})


def test_unsupported_tracking_uri_scheme_is_a_clean_error(tmp_path, small_config):
    p = write_config(tmp_path, small_config, mlflow={"tracking_uri": "ftp://mlflow.example/db"})
    r = _invoke("models", "--config", str(p))
    _assert_clean_error(r, "mlflow.tracking_uri", "unsupported scheme 'ftp'", "sqlite:///")


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///{workspace}/mlflow.db",
        "http://127.0.0.1:5000",
        "https://mlflow.example",
        "postgresql://u:p@h/db",
        "postgresql+psycopg2://u@h/db",
        "mysql://u@h/db",
        "mysql+pymysql://u@h/db",
        "databricks",
        "databricks://profile",
    ],
)
def test_supported_tracking_uris(uri):
    assert tracking_uri_problem(uri) is None


@pytest.mark.parametrize("uri", ["s3://bucket/x", "ftp://h", "sqlite://relative.db", "gs://b", "redis://h"])
def test_unsupported_tracking_uris(uri):
    assert tracking_uri_problem(uri)


def test_file_store_follows_the_mlflow_allow_file_store_rule(monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert "file stores" in tracking_uri_problem("file:///tmp/mlruns")
    assert "file stores" in tracking_uri_problem("./mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert tracking_uri_problem("file:///tmp/mlruns") is None and tracking_uri_problem("./mlruns") is None


# ------------------------------------------------------------------ read-only workspace, full disk
def _refuse_writes_under(monkeypatch, root: Path, err_no: int):
    """Make every directory creation and file write under ``root`` fail as the kernel would."""
    import builtins

    real_mkdir, real_open = os.mkdir, builtins.open
    msg = os.strerror(err_no)

    def under(path) -> bool:
        try:
            return Path(os.fspath(path)).resolve().is_relative_to(root)
        except (TypeError, ValueError):
            return False

    def mkdir(path, *a, **k):
        if under(path):
            raise OSError(err_no, msg, os.fspath(path))
        return real_mkdir(path, *a, **k)

    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and not isinstance(file, int) and under(file):
            raise OSError(err_no, msg, os.fspath(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)


@pytest.mark.parametrize(
    "err_no, needle",
    [
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENOSPC, "no space left on the disk holding"),
    ],
    ids=["read-only", "not-writable", "disk-full"],
)
def test_unwritable_or_full_workspace_is_a_clean_error_simulated(
    tmp_path, small_config, workspace, monkeypatch, err_no, needle
):
    p = write_config(tmp_path, small_config)
    workspace.root.mkdir(parents=True, exist_ok=True)
    _refuse_writes_under(monkeypatch, workspace.root, err_no)
    r = _invoke("data", "prepare", "--config", str(p), "--engine", "local")
    _assert_clean_error(r, needle, str(workspace.root), "MLOPS_RAY_HOME")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (the simulated and unshare tests cover it)")
def test_unwritable_workspace_by_permissions(tmp_path, small_config, workspace):
    p = write_config(tmp_path, small_config)
    workspace.root.mkdir(parents=True, exist_ok=True)
    workspace.root.chmod(0o555)
    try:
        r = _invoke("data", "prepare", "--config", str(p), "--engine", "local")
    finally:
        workspace.root.chmod(0o755)
    _assert_clean_error(r, "permission denied", str(workspace.root))


def test_a_traceback_is_still_a_traceback_for_other_os_errors(tmp_path, small_config, monkeypatch):
    """Only storage problems are turned into messages; a bug still shows its traceback."""
    p = write_config(tmp_path, small_config)
    import mlops_ray.data.prepare as prep

    def boom(*a, **k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(prep, "list_source", boom)
    r = _invoke("data", "prepare", "--config", str(p), "--engine", "local")
    assert r.exit_code == 1 and isinstance(r.exception, OSError)


# ------------------------------------------------------------------ corrupt snapshot at train
def test_train_on_a_truncated_snapshot_is_a_clean_error_before_ray_starts(
    tmp_path, small_config, workspace, mlflow_db_template
):
    """Before: a raw pyarrow traceback from inside Ray Train (this unit test refuses ray.init)."""
    from mlops_ray.data.prepare import prepare_snapshot

    p = write_config(tmp_path, small_config)
    workspace.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_db_template, workspace.mlflow_db)
    snap = prepare_snapshot(small_config().data, workspace, engine="local").snapshot
    rel = sorted(r for r in snap.manifest["files"] if r.startswith("splits/train/"))[0]
    f = snap.path / rel
    f.write_bytes(f.read_bytes()[:-64])
    r = _invoke("train", "--config", str(p), "--snapshot", snap.id)
    _assert_clean_error(r, f"snapshot unit/{snap.id} is corrupt", rel, "data prepare")


# ------------------------------------------------------------------ XGBoost's own rejections
def test_xgboost_error_during_boosting_is_a_training_error():
    import numpy as np
    import xgboost as xgb

    from mlops_ray.train.xgboost_trainer import boost

    rng = np.random.default_rng(0)
    d = xgb.DMatrix(rng.random((40, 3)), label=rng.integers(0, 2, 40))
    with pytest.raises(TrainingError, match="XGBoost rejected the training parameters: .*objective") as exc:
        boost({"params": {"objective": "binary:nonsense"}}, d, d, 2, {})
    assert "Stack trace" not in str(exc.value) and "\n" not in str(exc.value)


def test_training_failure_unwraps_ray_train_worker_errors():
    import xgboost as xgb

    from mlops_ray.errors import SnapshotCorruptError
    from mlops_ray.train.xgboost_trainer import training_failure

    class WorkerGroupError(Exception):  # shape of ray.train.WorkerGroupError
        def __init__(self, failures):
            super().__init__("Training failed due to worker errors")
            self.worker_failures = failures

    xgb_err = xgb.core.XGBoostError(
        "[10:00:00] /src/learner.cc:12: Unknown objective function: `nope`\nStack trace:\n  [bt] (0)"
    )
    got = training_failure(WorkerGroupError({0: RuntimeError("wrapper"), 1: xgb_err}))
    assert (
        isinstance(got, TrainingError) and "Unknown objective function: `nope`" in str(got) and "[bt]" not in str(got)
    )
    corrupt = SnapshotCorruptError("snapshot x is corrupt")
    assert training_failure(WorkerGroupError({0: corrupt})) is corrupt
    assert training_failure(RuntimeError("unrelated")) is None
