"""Metrics, per-slice metrics and permutation importance (NumPy/scikit-learn, no Ray, no MLflow).

Predictions are passed as a ``score`` array: P(class 1) for binary, an (n, k)
probability matrix for multiclass, the predicted value for regression.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlops_ray.model.tasks import DEFAULT_METRIC, METRIC_DIRECTIONS, TASK_METRICS  # noqa: F401 (re-exported)


def compute_metrics(task: str, y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """All metrics of ``task`` for labels ``y`` (n,) and scores (see module doc)."""
    y = np.asarray(y)
    out: dict[str, float] = {}
    if task == "binary":
        p = np.clip(np.asarray(score, dtype=np.float64), 1e-15, 1 - 1e-15)
        pred = (p >= 0.5).astype(int)
        out["auc"] = float(skm.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
        out["logloss"] = float(skm.log_loss(y, p, labels=[0, 1]))
        out["accuracy"] = float(skm.accuracy_score(y, pred))
        out["f1"] = float(skm.f1_score(y, pred, zero_division=0))
    elif task == "multiclass":
        prob = np.asarray(score, dtype=np.float64)
        # float32 probabilities (XGBoost's) sum to 1 only within ~1e-7: renormalise in float64, or
        # scikit-learn warns "y_prob values do not sum to one" on every evaluation
        prob = prob / np.clip(prob.sum(axis=1, keepdims=True), 1e-300, None)
        pred = prob.argmax(axis=1)
        out["logloss"] = float(skm.log_loss(y, np.clip(prob, 1e-15, 1), labels=np.arange(prob.shape[1])))
        out["accuracy"] = float(skm.accuracy_score(y, pred))
        out["f1_macro"] = float(skm.f1_score(y, pred, average="macro", zero_division=0))
    elif task == "regression":
        s = np.asarray(score, dtype=np.float64)
        out["rmse"] = float(np.sqrt(skm.mean_squared_error(y, s)))
        out["mae"] = float(skm.mean_absolute_error(y, s))
        out["r2"] = float(skm.r2_score(y, s)) if len(y) > 1 else float("nan")
    else:
        raise ValueError(f"unknown task {task!r}")
    return out


def primary_metric(task: str) -> str:
    return DEFAULT_METRIC[task]


def slice_metrics(
    task: str,
    frame: pd.DataFrame,
    y: np.ndarray,
    score: np.ndarray,
    columns: list[str],
    min_rows: int = 30,
    max_slices: int = 20,
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per value of each categorical column (largest ``max_slices`` values with >= ``min_rows``).

    Returns:
        ``{column: {value: {"rows": n, metric: value, ...}}}``; nulls are the value ``"__missing__"``.
    """
    out: dict = {}
    score = np.asarray(score)
    for col in columns:
        values = frame[col].astype("object").where(frame[col].notna(), "__missing__").to_numpy()
        uniq, counts = np.unique(values.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:max_slices]
        per = {}
        for i in order:
            if counts[i] < min_rows:
                continue
            mask = values.astype(str) == uniq[i]
            m = compute_metrics(task, y[mask], score[mask])
            per[str(uniq[i])] = {"rows": int(counts[i]), **m}
        out[col] = per
    return out


def permutation_importance(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    y: np.ndarray,
    task: str,
    features: list[str],
    metric: str | None = None,
    repeats: int = 2,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Drop in ``metric`` when one *raw* feature column is shuffled (preprocessing included).

    Args:
        predict: raw DataFrame -> score array, the full model (preprocessing + estimator).
        repeats: shuffles per feature; the mean and std of the drop are reported.

    Returns:
        ``{feature: {"mean": drop, "std": spread}}`` where a positive drop means the feature helps.
    """
    metric = metric or primary_metric(task)
    sign = 1.0 if METRIC_DIRECTIONS[metric] else -1.0
    base = compute_metrics(task, y, predict(frame))[metric]
    rng = np.random.default_rng(seed)
    out = {}
    for f in features:
        drops = []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[f] = frame[f].to_numpy()[rng.permutation(len(frame))]
            drops.append(sign * (base - compute_metrics(task, y, predict(shuffled))[metric]))
        out[f] = {"mean": float(np.mean(drops)), "std": float(np.std(drops))}
    return out
