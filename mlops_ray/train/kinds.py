"""How each model kind is trained: one registry for full fits, CV folds and Tune trials.

The model side of a kind (save/load/score) is :mod:`mlops_ray.model.kinds`; this module
adds what only training needs. ``TRAIN_KINDS[cfg.model.type]`` is the single place that
branches on the kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mlops_ray.model.kinds import ModelKind, get_kind


@dataclass
class Fitted:
    """A trained estimator and what to log about it."""

    estimator: Any
    model_path: Path  # the saved estimator (logged into the pyfunc)
    params: dict[str, Any]  # hyperparameters to log
    history: dict | None = None  # per-round metrics {split: {metric: [...]}}
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainKind:
    model: ModelKind
    fit: Callable[..., Fitted]  # (cfg, snapshot, plan, out_dir, *, run_name, storage, overrides) -> Fitted
    fit_fold: Callable[..., np.ndarray]  # (cfg, task, pre, train, test, nthread, overrides) -> test scores


def num_classes(snapshot) -> int | None:
    if snapshot.spec.task != "multiclass":
        return None
    return int(max(int(k) for k in snapshot.manifest["label_distribution_train"]) + 1)


# ------------------------------------------------------------------ xgboost
def _fit_xgboost(
    cfg, snapshot, plan, out_dir: Path, *, run_name: str, storage: Path, overrides: dict | None = None
) -> Fitted:
    from mlops_ray.train.xgboost_trainer import MODEL_FILE, fit_xgboost, loop_config

    res = fit_xgboost(cfg, snapshot, plan, out_dir, run_name=run_name, storage=storage, param_overrides=overrides)
    loop = loop_config(cfg, snapshot, plan.nthread, out_dir, overrides)
    params = {
        "xgboost": loop["params"],
        "num_boost_round": loop["num_boost_round"],
        "rounds_trained": res.meta["rounds"],
        "best_iteration": res.meta["best_iteration"],
        "early_stopping_metric": loop["watch_metric"],
    }
    return Fitted(res.booster, out_dir / MODEL_FILE, params, res.history, res.seconds, res.meta)


def _fold_xgboost(cfg, snapshot, pre, train, test, nthread: int, overrides: dict | None = None) -> np.ndarray:
    from mlops_ray.train.xgboost_trainer import boost, loop_config, make_dmatrix

    loop = loop_config(cfg, snapshot, nthread, "", overrides)
    booster = boost(
        loop,
        make_dmatrix(train, pre.feature_names, nthread),
        make_dmatrix(test, pre.feature_names, nthread),
        loop["num_boost_round"],
        {},
    )
    return get_kind("xgboost").scores(booster, test.x, snapshot.spec.task)


# ------------------------------------------------------------------ scikit-learn
def _fit_sklearn(
    cfg, snapshot, plan, out_dir: Path, *, run_name: str, storage: Path, overrides: dict | None = None
) -> Fitted:
    from mlops_ray.train.sklearn_trainer import MODEL_FILE, fit_sklearn

    meta = fit_sklearn(cfg, snapshot, out_dir, num_cpus=plan.cpus_per_worker, param_overrides=overrides)
    path = out_dir / MODEL_FILE
    params = {"estimator": cfg.model.estimator, **cfg.model.params, **(overrides or {})}
    return Fitted(get_kind("sklearn").load(str(path)), path, params, None, meta["train_seconds"], meta)


def _fold_sklearn(cfg, snapshot, pre, train, test, nthread: int, overrides: dict | None = None) -> np.ndarray:
    from mlops_ray.train.sklearn_trainer import build_estimator

    est = build_estimator(cfg.model.estimator, dict(cfg.model.params, **(overrides or {})), cfg.model.seed)
    est.fit(train.x, train.y)
    return get_kind("sklearn").scores(est, test.x, snapshot.spec.task)


TRAIN_KINDS: dict[str, TrainKind] = {
    "xgboost": TrainKind(get_kind("xgboost"), _fit_xgboost, _fold_xgboost),
    "sklearn": TrainKind(get_kind("sklearn"), _fit_sklearn, _fold_sklearn),
}


def train_kind(name: str) -> TrainKind:
    try:
        return TRAIN_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model.type {name!r}; known: {sorted(TRAIN_KINDS)}") from None
