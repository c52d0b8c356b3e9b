"""Model kinds, registered in one place: how each kind is saved, loaded and scored.

A kind turns a preprocessed float32 matrix into scores in the task's convention
(see :mod:`mlops_ray.model.prediction`). Training-side behaviour (how a kind is
fitted, tuned, cross-validated) is registered by the train layer in
:mod:`mlops_ray.train.kinds`; this module is what every *user* of a model needs.

Example::

    kind = get_kind("xgboost")
    est = kind.load("model.ubj")
    scores = kind.scores(est, x, "binary")
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class ModelKind:
    """What the rest of the system needs to know about one kind of model."""

    name: str  # also the MLflow "flavor" tag and config model.type
    model_file: str  # file name of the saved estimator inside a run / pyfunc
    load: Callable[[str], Any]
    save: Callable[[Any, str], None]
    raw_scores: Callable[[Any, np.ndarray, str], np.ndarray]
    packages: tuple[str, ...]  # pip packages the pyfunc needs for this kind

    def scores(self, estimator: Any, x: np.ndarray, task: str) -> np.ndarray:
        """Scores for a preprocessed float32 matrix: P(1) (binary), (n, k) probabilities, or values."""
        return self.raw_scores(estimator, x, task)

    def requirements(self) -> list[str]:
        return [f"{p}=={md.version(p)}" for p in self.packages]


# ------------------------------------------------------------------ xgboost
def _xgb_load(path: str):
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(path)
    booster.set_param({"nthread": 1})
    return booster


def _xgb_save(booster, path: str) -> None:
    booster.save_model(path)


def _xgb_scores(booster, x: np.ndarray, task: str) -> np.ndarray:
    return np.asarray(booster.inplace_predict(x))


# ------------------------------------------------------------------ scikit-learn
def _sk_load(path: str):
    import joblib

    return joblib.load(path)


def _sk_save(estimator, path: str) -> None:
    import joblib

    joblib.dump(estimator, path)


def _sk_scores(estimator, x: np.ndarray, task: str) -> np.ndarray:
    if task == "regression":
        return np.asarray(estimator.predict(x), dtype=np.float64)
    prob = np.asarray(estimator.predict_proba(x))
    return prob[:, 1] if task == "binary" else prob


KINDS: dict[str, ModelKind] = {
    "xgboost": ModelKind("xgboost", "model.ubj", _xgb_load, _xgb_save, _xgb_scores, ("xgboost",)),
    "sklearn": ModelKind("sklearn", "model.joblib", _sk_load, _sk_save, _sk_scores, ("scikit-learn", "joblib")),
}


def get_kind(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; known: {sorted(KINDS)}") from None
