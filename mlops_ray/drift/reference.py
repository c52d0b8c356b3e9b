"""The drift reference of one model version and the evaluation of counts against it (pure).

A :class:`DriftReference` is built from the ``reference_stats.json`` frozen with the snapshot and
shipped in every model (decile edges per numeric feature, categories per categorical feature,
train proportions; and, for models trained since drift monitoring, the histogram of the model's
predictions on the validation split under ``"prediction"``). :meth:`DriftReference.count` turns
a batch of raw rows into mergeable bin counts (vectorised, one pass per column);
:func:`evaluate` turns merged counts into the per-feature PSI / chance threshold / status
report (:mod:`mlops_ray.drift.psi`) that every surface shows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_ray.data.bins import MISSING, OTHER, categorical_bin_counts, numeric_bin_counts, proportions
from mlops_ray.drift import psi as P
from mlops_ray.model.prediction import prediction_values

PREDICTION = "__prediction__"
NUMERIC, CATEGORICAL = "numeric", "categorical"


def _fmt(x: float) -> str:
    return "-inf" if x == -np.inf else "+inf" if x == np.inf else f"{x:.4g}"


def as_float(values) -> np.ndarray:
    """Numeric feature values as float64 with NaN for missing; text that is not a number counts as
    missing (a CSV column with a stray string)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            import pandas as pd

            return pd.to_numeric(values.to_pandas(), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class FeatureReference:
    name: str
    kind: str  # numeric | categorical
    proportions: np.ndarray  # per bin, then (numeric) missing / (categorical) other, missing
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @functools.cached_property
    def bins(self) -> list[str]:
        if self.kind == NUMERIC:
            e = self.edges
            labels = [f"[{_fmt(a)}, {_fmt(b)})" for a, b in zip(e[:-1], e[1:])]
            if labels:
                labels[0] = "(" + labels[0][1:]
            return [*labels, MISSING]
        return [*self.categories, OTHER, MISSING]

    def count(self, values) -> np.ndarray:
        if self.kind == NUMERIC:
            return numeric_bin_counts(as_float(values), self.edges)
        return categorical_bin_counts(values, self.categories)

    @classmethod
    def from_entry(cls, name: str, kind: str, entry: dict) -> "FeatureReference":
        props = np.asarray(entry["proportions"], dtype=np.float64)
        if kind == NUMERIC:
            return cls(name, kind, props, edges=tuple(float(e) for e in entry["edges"]))
        return cls(name, kind, props, categories=tuple(str(c) for c in entry["categories"]))


@dataclass(frozen=True)
class DriftReference:
    """Reference bins of one model version."""

    features: tuple[FeatureReference, ...]
    rows: int
    task: str | None = None
    prediction: FeatureReference | None = None

    @classmethod
    def from_stats(cls, stats: dict[str, Any], task: str | None = None) -> "DriftReference":
        feats = [FeatureReference.from_entry(n, NUMERIC, e) for n, e in stats.get("numeric", {}).items()]
        feats += [FeatureReference.from_entry(n, CATEGORICAL, e) for n, e in stats.get("categorical", {}).items()]
        pred = stats.get("prediction")
        pref = FeatureReference.from_entry(PREDICTION, pred["kind"], pred) if pred else None
        return cls(tuple(feats), int(stats.get("rows", 0)), task or stats.get("task"), pref)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def zero_counts(self) -> dict[str, np.ndarray]:
        out = {f.name: np.zeros(len(f.proportions), np.int64) for f in self.features}
        if self.prediction is not None:
            out[PREDICTION] = np.zeros(len(self.prediction.proportions), np.int64)
        return out

    def count(self, table: pa.Table | dict, scores: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Bin counts of a batch of raw rows (a table or ``{column: values}``), plus the
        prediction histogram when ``scores`` are given and the reference has one."""
        out = {f.name: f.count(table[f.name]) for f in self.features}
        if scores is not None and self.prediction is not None and self.task is not None:
            out[PREDICTION] = self.prediction.count(prediction_values(self.task, scores))
        return out


def merge_counts(into: dict[str, np.ndarray], add: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``into += add`` per feature (features missing from ``into`` are copied)."""
    for k, v in add.items():
        v = np.asarray(v, dtype=np.int64)
        into[k] = into[k] + v if k in into else v.copy()
    return into


def _feature_report(ref: FeatureReference, counts, threshold_args: dict, limits: dict) -> dict[str, Any]:
    c = np.asarray(counts, dtype=np.int64)
    rows = int(c.sum())
    if rows:
        value = P.psi(ref.proportions, c)
        threshold = P.chance_threshold(n_bins=P.effective_bins(ref.proportions), n_cur=rows, **threshold_args)
    else:
        value, threshold = float("nan"), float("inf")
    return {
        "feature": ref.name,
        "kind": ref.kind,
        "psi": value,
        "chance_threshold": threshold,
        "fixed_status": P.fixed_status(value, limits["psi_warn"], limits["psi_alert"]) if rows else P.OK,
        "above_chance": bool(rows and value > threshold),
        "status": P.verdict(value, threshold, rows, **limits) if rows else P.INSUFFICIENT,
        "rows": rows,
        "bins": list(ref.bins),
        "reference": [float(x) for x in proportions(ref.proportions)],
        "current": [float(x) for x in proportions(c)],
    }


def evaluate(
    reference: DriftReference,
    counts: dict[str, np.ndarray],
    *,
    psi_warn: float,
    psi_alert: float,
    alpha: float,
    min_rows: int,
    **context: Any,
) -> dict[str, Any]:
    """The drift evaluation of merged ``counts`` (the report every surface renders).

    Features are sorted by PSI, largest first; ``status`` is the worst feature status;
    ``prediction`` (if the reference has a prediction histogram) is judged alone. ``context``
    (model, model_version, window, source, ...) is copied into the result.
    """
    limits = {"psi_warn": psi_warn, "psi_alert": psi_alert, "min_rows": min_rows}
    n_tests = len(reference.features)
    targs = {"n_ref": reference.rows, "alpha": alpha, "n_tests": n_tests}
    feats = []
    for f in reference.features:
        c = counts.get(f.name)
        feats.append(_feature_report(f, c if c is not None else np.zeros(len(f.proportions), np.int64), targs, limits))
    feats.sort(key=lambda r: (-(r["psi"] if r["psi"] == r["psi"] else -1.0), r["feature"]))
    rows = max((r["rows"] for r in feats), default=0)
    pred = None
    if reference.prediction is not None and PREDICTION in counts:
        pred = _feature_report(reference.prediction, counts[PREDICTION], {**targs, "n_tests": 1}, limits)
    return {
        "model": None,
        "model_version": None,
        "source": None,
        "window": None,
        **context,
        "rows": rows,
        "reference_rows": reference.rows,
        "status": P.worst(r["status"] for r in feats) if rows >= min_rows else P.INSUFFICIENT,
        "psi_warn": psi_warn,
        "psi_alert": psi_alert,
        "alpha": alpha,
        "min_rows": min_rows,
        "epsilon": P.EPSILON,
        "features": feats,
        "prediction": pred,
    }


def limits_of(drift_cfg) -> dict[str, Any]:
    """The evaluate() keyword arguments of a :class:`~mlops_ray.config.DriftConfig`."""
    return {
        "psi_warn": drift_cfg.psi_warn,
        "psi_alert": drift_cfg.psi_alert,
        "alpha": drift_cfg.alpha,
        "min_rows": drift_cfg.min_rows,
    }


__all__ = [
    "PREDICTION",
    "DriftReference",
    "FeatureReference",
    "evaluate",
    "limits_of",
    "merge_counts",
]
