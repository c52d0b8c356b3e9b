"""Reference statistics and rows the drift unit tests share (a numeric feature x ~ N(50, 10) in
deciles, a categorical feature c over a/b/c)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

LIMITS = {"psi_warn": 0.1, "psi_alert": 0.25, "alpha": 0.01, "min_rows": 500}


def make_stats(seed=0, n=20_000):
    rng = np.random.default_rng(seed)
    x = rng.normal(50, 10, n)
    edges = [-np.inf, *np.quantile(x, np.arange(1, 10) / 10), np.inf]
    counts = np.histogram(x, bins=edges)[0] / n
    return {
        "rows": n,
        "numeric": {"x": {"edges": [float(e) for e in edges], "proportions": [*counts.tolist(), 0.0]}},
        "categorical": {"c": {"categories": ["a", "b", "c"], "proportions": [0.5, 0.3, 0.2, 0.0, 0.0]}},
    }


def sample(rng, n, shift=0.0, cat_p=(0.5, 0.3, 0.2)):
    return pa.table({"x": rng.normal(50 + shift, 10, n), "c": rng.choice(["a", "b", "c"], n, p=list(cat_p))})
