"""Tasks and the metrics each computes (pure tables; imported by the config to validate names).

Each task's metrics are what :func:`mlops_ray.model.metrics.compute_metrics` returns for it;
``DEFAULT_METRIC`` is what the gate, tuning and reports rank by unless the config says otherwise.
"""

from __future__ import annotations

TASKS = ("binary", "multiclass", "regression")

# metric name -> True when larger is better
METRIC_DIRECTIONS = {
    "auc": True,
    "logloss": False,
    "accuracy": True,
    "f1": True,
    "f1_macro": True,
    "rmse": False,
    "mae": False,
    "r2": True,
}
TASK_METRICS = {
    "binary": ("auc", "logloss", "accuracy", "f1"),
    "multiclass": ("logloss", "accuracy", "f1_macro"),
    "regression": ("rmse", "mae", "r2"),
}
DEFAULT_METRIC = {"binary": "auc", "multiclass": "logloss", "regression": "rmse"}


def direction(metric: str) -> str:
    """``"maximize"`` or ``"minimize"`` for a metric name."""
    return "maximize" if METRIC_DIRECTIONS[metric] else "minimize"


def check_metric(task: str, metric: str, where: str) -> str | None:
    """Why ``metric`` is not usable for ``task`` (a message naming ``where``), or None."""
    if task not in TASK_METRICS:
        return f"unknown task {task!r}"
    if metric not in TASK_METRICS[task]:
        return f"{where}: {metric!r} is not computed for task {task!r}; use one of {list(TASK_METRICS[task])}"
    return None
