"""Data-parallel XGBoost on Ray Train v2.

``train_loop_per_worker`` is the per-worker training function (it also runs in
the driver in local mode). Each worker reads its deterministic hash partition of
the snapshot's train and valid splits (see :mod:`mlops_ray.data.splits`),
resumes from the latest checkpoint after a failure, trains with early stopping,
checkpoints every ``checkpoint_every`` rounds through ``RayTrainReportCallback``
and, on rank 0, writes the final model and per-iteration history to the run's
output directory.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ray.errors import MlopsRayError, TrainingError
from mlops_ray.storage import Location
from mlops_ray.train.execution import ExecutionPlan

if TYPE_CHECKING:
    from mlops_ray.config import ModelConfig

HISTORY = "history.json"
MODEL_FILE = "model.ubj"


# Default eval metrics per task. As in XGBoost, the LAST one drives early stopping: a proper
# scoring rule (logloss / mlogloss / rmse), because AUC or an error rate plateaus at once on
# small validation sets and stopping on them kept 1-2 trees (README "Early stopping").
DEFAULT_EVAL_METRICS = {
    "binary": ["auc", "logloss"],
    "multiclass": ["merror", "mlogloss"],
    "regression": ["mae", "rmse"],
}
_MAXIMIZED = ("auc", "aucpr", "map", "ndcg", "pre")


def xgb_params(
    model_cfg: ModelConfig, task: str, num_class: int | None, nthread: int, overrides: dict | None = None
) -> dict:
    """XGBoost params: task objective + default eval metrics + seed, then config params, then tuned overrides.

    ``model.params.eval_metric`` (a string or a list) replaces the defaults; its last entry drives
    early stopping.
    """
    params: dict[str, Any] = {
        "tree_method": "hist",
        "seed": model_cfg.seed,
        "nthread": nthread,
        "eval_metric": list(DEFAULT_EVAL_METRICS[task]),
    }
    if task == "binary":
        params.update(objective="binary:logistic")
    elif task == "multiclass":
        params.update(objective="multi:softprob", num_class=num_class)
    else:
        params.update(objective="reg:squarederror")
    params.update(model_cfg.params)
    params.update(overrides or {})
    if isinstance(params["eval_metric"], str):
        params["eval_metric"] = [params["eval_metric"]]
    return params


def watch_metric(params: dict) -> str:
    """The XGBoost eval metric early stopping watches: the last of ``eval_metric``."""
    return str(params["eval_metric"][-1])


def is_maximized(xgb_metric: str) -> bool:
    return xgb_metric.split("@", 1)[0] in _MAXIMIZED


def _checkpoint_callback(frequency: int):
    """RayTrainReportCallback that reports only with its checkpoints.

    Each ``ray.train.report`` is a synchronisation point with the controller; the
    stock callback reports metrics after every round, which costs more than the
    round itself on small data. Per-round metrics are kept in ``history.json``.
    """
    from ray.train.xgboost import RayTrainReportCallback

    class CheckpointOnlyReportCallback(RayTrainReportCallback):
        def _report_metrics(self, report_dict):  # noqa: D401 - skip metric-only reports
            return None

    return CheckpointOnlyReportCallback(frequency=frequency, checkpoint_at_end=True)


def xgboost_problem(err: BaseException) -> str:
    """The first line of an XGBoostError's message, without XGBoost's ``[time] file:line:`` prefix."""
    import re

    text = str(err).strip().split("\nStack trace", 1)[0]
    lines = [re.sub(r"^\[[0-9:]+\] [^ ]+:[0-9]+: ", "", ln).strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__)[:500]


def training_failure(err: BaseException) -> MlopsRayError | None:
    """The typed error behind a failed fit (also inside Ray Train's wrappers), or None.

    Walks causes, Ray's ``cause`` and Ray Train's ``worker_failures`` / ``controller_failure``:
    an :class:`MlopsRayError` raised in a worker comes back as itself, an ``XGBoostError`` (a
    parameter XGBoost rejects, e.g. an unknown value of a passed-through ``model.params`` key)
    as a :class:`TrainingError`.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        inner = getattr(e, "cause", None)
        if isinstance(e, MlopsRayError):
            return inner if isinstance(inner, MlopsRayError) else e
        if type(e).__name__ == "XGBoostError":
            return TrainingError(f"XGBoost rejected the training parameters: {xgboost_problem(e)}; check model.params")
        nxt = [inner, e.__cause__, e.__context__, getattr(e, "controller_failure", None), getattr(e, "_base_exc", None)]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            nxt += list(failures.values())
        todo += [x for x in nxt if isinstance(x, BaseException)]
    return None


def boost(config: dict, dtrain, dvalid, rounds: int, history: dict, start_model=None, callbacks=()):
    """The one XGBoost call shared by Train workers, local mode and Tune trials.

    Early stopping (if configured) runs first so that later callbacks see the best model.

    Raises:
        TrainingError: XGBoost rejected the parameters (its message, without its stack trace).
    """
    import xgboost as xgb

    cbs = list(callbacks)
    if config.get("early_stopping_rounds"):
        cbs.insert(
            0,
            xgb.callback.EarlyStopping(
                rounds=config["early_stopping_rounds"],
                metric_name=config["watch_metric"],
                data_name="valid",
                maximize=config["maximize"],
                save_best=True,
            ),
        )
    # Evaluating the train set every round costs a full prediction pass plus an AUC sort
    # (it doubled training time at 1M rows); only done when asked for.
    evals = ([(dtrain, "train")] if config.get("eval_train") else []) + [(dvalid, "valid")]
    try:
        return xgb.train(
            config["params"],
            dtrain,
            num_boost_round=rounds,
            evals=evals,
            evals_result=history,
            xgb_model=start_model,
            callbacks=cbs,
            verbose_eval=False,
        )
    except xgb.core.XGBoostError as err:
        raise TrainingError(
            f"XGBoost rejected the training parameters: {xgboost_problem(err)}; check model.params"
        ) from None


def make_dmatrix(data, feature_names, nthread: int):
    import xgboost as xgb

    return xgb.DMatrix(data.x, label=data.y, feature_names=feature_names, nthread=nthread)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train v2 training function (one call per worker; in the driver in local mode)."""
    import ray.train
    from ray.train.xgboost import RayTrainReportCallback

    from mlops_ray.data.snapshot import Snapshot
    from mlops_ray.data.splits import load_split

    started = time.time()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    snap = Snapshot.at(config["snapshot_path"], config["manifest"])
    pre = snap.preprocessor()
    part = (rank, world) if world > 1 else None
    train = load_split(snap, "train", pre, partition=part)
    valid = load_split(snap, "valid", pre, partition=part)
    dtrain = make_dmatrix(train, pre.feature_names, config["params"]["nthread"])
    dvalid = make_dmatrix(valid, pre.feature_names, config["params"]["nthread"])

    start_model, done = None, 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # resume after a worker failure
        start_model = RayTrainReportCallback.get_model(ckpt)
        done = start_model.num_boosted_rounds()
    remaining = max(0, config["num_boost_round"] - done)
    history: dict = {}
    loaded = time.time()
    t0 = time.perf_counter()
    booster = boost(
        config, dtrain, dvalid, remaining, history, start_model, [_checkpoint_callback(config["checkpoint_every"])]
    )
    if rank != 0:
        if not config.get("local"):
            ray.train.report({"final": 1})  # a collective in Train v2: every worker reports
        return
    meta = {
        "history": history,
        "resumed_from_round": done,
        "train_seconds": time.perf_counter() - t0,
        "best_iteration": int(getattr(booster, "best_iteration", booster.num_boosted_rounds() - 1)),
        "rounds": booster.num_boosted_rounds(),
        "world_size": world,
        "train_rows_rank0": len(train),
        # wall-clock phases of rank 0, for the fixed cost of a distributed run (see fit_xgboost)
        "worker_started_unix": started,
        "load_seconds": loaded - started,
    }
    if config.get("local"):  # local mode: this is the driver, and report() keeps no files
        out = Path(config["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(out / MODEL_FILE))
        (out / HISTORY).write_text(json.dumps(meta))
        return
    # Rank 0 may run on any node: the model and its history travel in a checkpoint through the
    # run's storage (shared by every node), never through a path on this node's disk.
    import tempfile

    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        booster.save_model(str(Path(tmp) / MODEL_FILE))
        (Path(tmp) / HISTORY).write_text(json.dumps(meta))
        ray.train.report({"final": 1}, checkpoint=Checkpoint.from_directory(tmp))


def loop_config(
    model: ModelConfig,
    snapshot,
    nthread: int,
    output_dir,
    param_overrides: dict | None = None,
    checkpoint_every: int = 25,
    device: str = "cpu",
) -> dict:
    """Everything the training function needs (picklable)."""
    task = snapshot.manifest["spec"]["task"]
    num_class = None
    if task == "multiclass":
        num_class = int(max(int(k) for k in snapshot.manifest["label_distribution_train"]) + 1)
    overrides = dict(param_overrides or {})
    rounds = int(overrides.pop("num_boost_round", model.num_boost_round))
    params = xgb_params(model, task, num_class, nthread, overrides)
    if device != "cpu":
        params.setdefault("device", device)  # model.params.device, when given, wins
    watch = watch_metric(params)
    return {
        "snapshot_path": str(snapshot.path),
        "manifest": snapshot.manifest,
        "params": params,
        "num_boost_round": rounds,
        "early_stopping_rounds": model.early_stopping_rounds,
        "watch_metric": watch,
        "maximize": is_maximized(watch),
        "checkpoint_every": checkpoint_every,
        "output_dir": str(output_dir),
        "eval_train": model.log_train_metrics,
        "local": False,
    }


@dataclass
class TrainOutput:
    booster: Any
    history: dict
    meta: dict
    plan: ExecutionPlan
    seconds: float
    output_dir: Path


def fit_xgboost(
    model: ModelConfig,
    snapshot,
    plan: ExecutionPlan,
    output_dir: Path,
    *,
    run_name: str,
    storage: str | Path,
    param_overrides: dict | None = None,
    max_failures: int = 2,
    checkpoint_every: int = 25,
) -> TrainOutput:
    """Train on ``snapshot`` with Ray Train v2 ``XGBoostTrainer`` under ``plan``; returns the booster."""
    import xgboost as xgb
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    loop_cfg = loop_config(model, snapshot, plan.nthread, output_dir, param_overrides, checkpoint_every, plan.device)
    loop_cfg["local"] = plan.num_workers == 0
    # Train v2 waits up to its health-check interval (2 s) per report; checkpoints are few
    # but a lower interval still cuts fixed cost. Propagated to controller and workers.
    from mlops_ray import compat

    os.environ.setdefault(compat.TRAIN_HEALTH_CHECK_INTERVAL_ENV, "0.2")
    Location.of(storage).mkdir()  # a local directory; nothing to create on an object store
    trainer = XGBoostTrainer(
        train_loop_per_worker,
        train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(
            num_workers=plan.num_workers,
            use_gpu=plan.device == "cuda" and plan.num_workers > 0,
            resources_per_worker=(
                {"CPU": plan.cpus_per_worker, **({"GPU": 1} if plan.device == "cuda" else {})}
                if plan.num_workers
                else None
            ),
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    t0, started = time.perf_counter(), time.time()
    try:
        result = trainer.fit()
    except Exception as err:
        typed = training_failure(err)
        if typed is None:
            raise
        raise typed from None
    seconds = time.perf_counter() - t0
    if plan.num_workers:
        output_dir.mkdir(parents=True, exist_ok=True)
        with result.checkpoint.as_directory() as ck:
            for name in (MODEL_FILE, HISTORY):
                (output_dir / name).write_bytes((Path(ck) / name).read_bytes())
    booster = xgb.Booster()
    booster.load_model(str(output_dir / MODEL_FILE))
    meta = json.loads((output_dir / HISTORY).read_text())
    if "worker_started_unix" in meta:  # from trainer.fit() to rank 0 running the training function
        meta["startup_seconds"] = meta["worker_started_unix"] - started
        meta["finish_seconds"] = seconds - meta["startup_seconds"] - meta["load_seconds"] - meta["train_seconds"]
    return TrainOutput(booster, meta["history"], meta, plan, seconds, output_dir)
