"""Metrics against independent computations; permutation importance finds the signal."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from mlops_ray.errors import ConfigError
from mlops_ray.model.metrics import compute_metrics, permutation_importance, slice_metrics
from mlops_ray.train.sklearn_trainer import build_estimator, import_estimator


def _pairwise_auc(y, p):
    pos, neg = p[y == 1], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_binary_metrics_match_definitions(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1).round(2)
    m = compute_metrics("binary", y, p)
    assert m["auc"] == pytest.approx(_pairwise_auc(y, p))
    pc = np.clip(p, 1e-15, 1 - 1e-15)
    assert m["logloss"] == pytest.approx(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    pred = p >= 0.5
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    tp = (pred & (y == 1)).sum()
    assert m["f1"] == pytest.approx(2 * tp / (pred.sum() + y.sum()))


def test_regression_and_multiclass_metrics(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=200)
    s = y + rng.normal(scale=0.1, size=200)
    m = compute_metrics("regression", y, s)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((y - s) ** 2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(y - s)))
    yc = rng.integers(0, 3, 100)
    prob = np.eye(3)[yc] * 0.7 + 0.1
    mc = compute_metrics("multiclass", yc, prob)
    assert mc["accuracy"] == 1.0


def test_permutation_importance_finds_signal(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    df = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n)})
    y = (df["signal"] > 0).astype(int).to_numpy()
    predict = lambda f: 1 / (1 + np.exp(-5 * f["signal"].to_numpy()))  # noqa: E731
    pi = permutation_importance(predict, df, y, "binary", ["signal", "noise"], repeats=2, seed=seed)
    assert pi["signal"]["mean"] > 0.3 and abs(pi["noise"]["mean"]) < 1e-12


def test_slice_metrics_by_category():
    df = pd.DataFrame({"c": ["a"] * 100 + ["b"] * 100 + [None] * 50})
    y = np.r_[np.tile([0, 1], 125)]
    s = np.where(y == 1, 0.9, 0.1)
    s[100:200] = 0.5
    out = slice_metrics("binary", df, y, s, ["c"])
    assert out["c"]["a"]["auc"] == 1.0 and out["c"]["b"]["auc"] == 0.5 and out["c"]["__missing__"]["rows"] == 50


@pytest.mark.parametrize(
    "path,msg",
    [
        ("sklearn.ensemble.NoSuchModel", "has no class 'NoSuchModel'"),
        ("nosuchpkg.Model", "cannot import module 'nosuchpkg'"),
        ("justaname", "expected a class path"),
        ("collections.OrderedDict", "is not an estimator"),
    ],
)
def test_unknown_estimators_are_clear(path, msg):
    with pytest.raises(ConfigError, match=msg):
        import_estimator(path)


def test_bad_estimator_params_are_named():
    with pytest.raises(ConfigError, match="max_dpth"):
        build_estimator("sklearn.ensemble.HistGradientBoostingClassifier", {"max_dpth": 3}, 0)
    est = build_estimator("sklearn.ensemble.HistGradientBoostingClassifier", {"max_depth": 3}, 7)
    assert est.random_state == 7
