"""Mergeable histogram counts against frozen reference bins (pure NumPy).

Bin conventions, shared by training-time reference statistics and serving-time
drift counting so both sides bin identically:

* numeric: ``edges = [-inf, e1, ..., ek, +inf]``; a finite value x falls in bin
  ``searchsorted(inner_edges, x, side="right")`` i.e. bins are ``[e_i, e_{i+1})``;
  missing (null/NaN) values go to one extra last bin. Counts have shape (len(edges),)
  = (#bins + 1).
* categorical: ``categories = [c1, ..., cm]``; counts have shape (m + 2,): one per
  category, then "other/unseen", then missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OTHER = "__other__"
MISSING = "__missing__"


def numeric_bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts per bin for ``edges`` (with -inf/+inf outer edges) plus a final missing bin.

    Args:
        values: float array, shape (n,); NaN means missing.
        edges: bin edges, length k+2 for k inner edges, first -inf and last +inf.

    Returns:
        int64 counts, shape (len(edges),): len(edges)-1 value bins, then missing.
    """
    v = np.asarray(values, dtype=np.float64)
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    n_bins = len(edges) - 1
    missing = np.isnan(v)
    idx = np.searchsorted(inner, v[~missing], side="right")
    counts = np.bincount(idx, minlength=n_bins).astype(np.int64)
    return np.append(counts, np.int64(missing.sum()))


def categorical_bin_counts(values, categories: Sequence[str]) -> np.ndarray:
    """Counts per reference category, then other/unseen, then missing; shape (m + 2,).

    ``values`` may be a pyarrow array, a NumPy/pandas array or a list (None = missing).
    """
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, from_pandas=True)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    m = len(categories)
    missing = int(arr.null_count)
    idx = pc.index_in(arr, value_set=pa.array(list(categories), type=pa.string()))
    idx_np = idx.to_numpy(zero_copy_only=False)
    # index_in yields null for both unseen values and nulls.
    known = ~np.isnan(idx_np.astype(np.float64)) if idx.null_count else np.ones(len(idx_np), bool)
    counts = np.bincount(idx_np[known].astype(np.int64), minlength=m).astype(np.int64)
    other = len(arr) - missing - int(known.sum())
    return np.concatenate([counts, np.array([other, missing], dtype=np.int64)])


def proportions(counts: np.ndarray) -> np.ndarray:
    """Counts normalised to sum 1 (all zeros stay zeros)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else c
