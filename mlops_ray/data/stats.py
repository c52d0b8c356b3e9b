"""Mergeable train-split statistics and the reference statistics frozen for drift (pure NumPy).

Per batch, :func:`batch_stats` summarises the train rows: exact counts, sums,
sums of squares, min/max and null counts per numeric feature; exact category
counts per categorical feature; and a *deterministic* bottom-k sample of the
numeric values keyed by a hash of the row id. Partials merge associatively, so
Ray Data tasks compute them in parallel and the driver combines them.

Quantiles (median imputation, decile bin edges) come from the bottom-k sample:
exact while the train split has at most ``k`` rows (default 200,000), otherwise
an estimate whose rank error is about ``1/sqrt(k)`` (~0.2%). The sample depends
only on the data, not on block layout or order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pyarrow as pa

from mlops_ray.data.bins import MISSING, numeric_bin_counts, proportions

MAX_REFERENCE_CATEGORIES = 100


_FIXED = 1127  # 1074 + 53: every float64 mantissa*2**(e-53) is an integer multiple of 2**-1127


def exact_sum(values: np.ndarray) -> int:
    """Exact sum of finite float64 values as an integer in units of 2**-1127.

    Float addition is not associative, so sums merged from batches in the order Ray tasks
    happen to finish would differ in the last bits between runs and engines. Integer sums
    merge exactly in any order and grouping.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return 0
    m, e = np.frexp(v)
    mant = (m * 2.0**53).astype(np.int64)  # exact: v == mant * 2**(e - 53)
    order = np.argsort(e, kind="stable")
    e, mant = e[order], mant[order]
    starts = np.flatnonzero(np.r_[True, e[1:] != e[:-1]])
    hi, lo = mant >> 26, mant & ((1 << 26) - 1)  # partial sums fit int64 for < 2**36 values
    hi_s, lo_s = np.add.reduceat(hi, starts), np.add.reduceat(lo, starts)
    total = 0
    for ex, h, lw in zip(e[starts].tolist(), hi_s.tolist(), lo_s.tolist()):
        total += ((h << 26) + lw) << (ex - 53 + _FIXED)
    return total


@dataclass
class NumericMoments:
    """Exact, order-independent moments of one numeric feature (sums in units of 2**-1127)."""

    count: int = 0  # non-null
    nulls: int = 0
    total: int = 0
    total_sq: int = 0  # exact sum of the (elementwise-rounded) squares
    min: float = float("inf")
    max: float = float("-inf")

    def merge(self, o: "NumericMoments") -> "NumericMoments":
        return NumericMoments(
            self.count + o.count,
            self.nulls + o.nulls,
            self.total + o.total,
            self.total_sq + o.total_sq,
            min(self.min, o.min),
            max(self.max, o.max),
        )

    @property
    def mean(self) -> float:
        return float(Fraction(self.total, self.count << _FIXED)) if self.count else float("nan")

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1), computed exactly then rounded once."""
        if self.count < 2:
            return 0.0
        n = self.count
        num = Fraction(n * self.total_sq, 1 << _FIXED) - Fraction(self.total * self.total, 1 << (2 * _FIXED))
        var = num / (n * (n - 1))
        return float(np.sqrt(float(var))) if var > 0 else 0.0


@dataclass
class TrainStats:
    """Mergeable summary of the train split."""

    numeric_names: tuple[str, ...]
    rows: int = 0
    numeric: dict[str, NumericMoments] = field(default_factory=dict)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)  # null counted under MISSING
    labels: dict[str, int] = field(default_factory=dict)
    sample_keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    sample_values: np.ndarray | None = None  # (k, n_numeric) float64, NaN = missing
    sample_k: int = 200_000

    def merge(self, o: "TrainStats") -> "TrainStats":
        out = TrainStats(self.numeric_names, self.rows + o.rows, sample_k=self.sample_k)
        for name in self.numeric_names:
            a, b = self.numeric.get(name, NumericMoments()), o.numeric.get(name, NumericMoments())
            out.numeric[name] = a.merge(b)
        for name in set(self.categories) | set(o.categories):
            merged = dict(self.categories.get(name, {}))
            for k, v in o.categories.get(name, {}).items():
                merged[k] = merged.get(k, 0) + v
            out.categories[name] = merged
        for k in set(self.labels) | set(o.labels):
            out.labels[k] = self.labels.get(k, 0) + o.labels.get(k, 0)
        keys = np.concatenate([self.sample_keys, o.sample_keys])
        vals = [v for v in (self.sample_values, o.sample_values) if v is not None]
        out.sample_keys, out.sample_values = keys, (np.concatenate(vals) if vals else None)
        out._trim_sample()
        return out

    def _trim_sample(self) -> None:
        if len(self.sample_keys) > self.sample_k:
            keep = np.argpartition(self.sample_keys, self.sample_k - 1)[: self.sample_k]
            self.sample_keys = self.sample_keys[keep]
            self.sample_values = self.sample_values[keep] if self.sample_values is not None else None

    def sample_column(self, name: str) -> np.ndarray:
        """Non-missing sampled values of one numeric feature, sorted by key (deterministic)."""
        if self.sample_values is None:
            return np.empty(0)
        order = np.argsort(self.sample_keys, kind="stable")
        col = self.sample_values[order, self.numeric_names.index(name)]
        return col[~np.isnan(col)]


def batch_stats(
    table: pa.Table,
    sample_keys: np.ndarray,
    numeric: tuple[str, ...],
    categorical: tuple[str, ...],
    label: str | None,
    sample_k: int,
) -> TrainStats:
    """Statistics of one batch of (already validated, cast) train rows.

    Args:
        table: train rows with numeric features as float64 and categoricals as string.
        sample_keys: uint64 per row, a hash of the row id (decides the bottom-k sample).
    """
    st = TrainStats(numeric, rows=table.num_rows, sample_k=sample_k)
    mat = np.empty((table.num_rows, len(numeric)), dtype=np.float64)
    for j, name in enumerate(numeric):
        v = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        mat[:, j] = v
        ok = v[~np.isnan(v)]
        st.numeric[name] = NumericMoments(
            int(ok.size),
            int(v.size - ok.size),
            exact_sum(ok),
            exact_sum(ok * ok),
            float(ok.min()) if ok.size else float("inf"),
            float(ok.max()) if ok.size else float("-inf"),
        )
    for name in categorical:
        vc = table.column(name).value_counts()
        counts = {}
        for item in vc.to_pylist():
            key = MISSING if item["values"] is None else item["values"]
            counts[key] = counts.get(key, 0) + int(item["counts"])
        st.categories[name] = counts
    if label is not None and label in table.column_names:
        for item in table.column(label).value_counts().to_pylist():
            st.labels[str(item["values"])] = int(item["counts"])
    st.sample_keys, st.sample_values = np.asarray(sample_keys, dtype=np.uint64), mat
    st._trim_sample()
    return st


# ---------------------------------------------------------------- reference statistics
def quantile_edges(values: np.ndarray, n_bins: int) -> list[float]:
    """Bin edges ``[-inf, q(1/n), ..., q((n-1)/n), +inf]`` with duplicate inner edges removed."""
    if values.size == 0:
        return [float("-inf"), float("inf")]
    qs = np.quantile(values, np.arange(1, n_bins) / n_bins, method="linear")
    inner = np.unique(qs)
    return [float("-inf"), *map(float, inner), float("inf")]


def reference_statistics(stats: TrainStats, categorical: tuple[str, ...], n_bins: int = 10) -> dict:
    """Reference bins and train proportions per feature, frozen into the snapshot.

    Returns:
        ``{"numeric": {name: {"edges": [...], "proportions": [...bins..., missing]}},
        "categorical": {name: {"categories": [...], "proportions": [...cats..., other, missing]}},
        "rows": n, "sample_rows": k}``. Numeric bin proportions come from the deterministic
        sample scaled to the exact missing rate; categorical proportions are exact.
    """
    out: dict = {"rows": stats.rows, "sample_rows": int(len(stats.sample_keys)), "numeric": {}, "categorical": {}}
    for name in stats.numeric_names:
        vals = stats.sample_column(name)
        edges = quantile_edges(vals, n_bins)
        counts = numeric_bin_counts(vals, edges)[:-1].astype(np.float64)
        m = stats.numeric[name]
        miss_rate = m.nulls / stats.rows if stats.rows else 0.0
        props = proportions(counts) * (1.0 - miss_rate)
        out["numeric"][name] = {"edges": edges, "proportions": [*map(float, props), float(miss_rate)]}
    for name in categorical:
        counts = dict(stats.categories.get(name, {}))
        missing = counts.pop(MISSING, 0)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_REFERENCE_CATEGORIES]
        cats = [k for k, _ in top]
        other = sum(counts.values()) - sum(v for _, v in top)
        vec = np.array([v for _, v in top] + [other, missing], dtype=np.float64)
        out["categorical"][name] = {"categories": cats, "proportions": [*map(float, proportions(vec))]}
    return out


__all__ = [
    "NumericMoments",
    "TrainStats",
    "batch_stats",
    "quantile_edges",
    "reference_statistics",
]
