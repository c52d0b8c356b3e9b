"""Offline drift: stream a batch of new data (Parquet/CSV, any size) through a reference (pure).

The same counting (:meth:`DriftReference.count`) and the same evaluation
(:func:`~mlops_ray.drift.reference.evaluate`) as the live monitor, so offline PSI on some rows
equals the monitor's PSI on the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from mlops_ray.data.sources import iter_batches, list_source, read_schema
from mlops_ray.drift.reference import DriftReference, evaluate, merge_counts
from mlops_ray.errors import SchemaError


def count_source(
    reference: DriftReference,
    path: str,
    *,
    score: Callable[[pa.Table], np.ndarray] | None = None,
    batch_size: int = 131_072,
) -> tuple[dict[str, np.ndarray], int]:
    """Merged bin counts of every row behind ``path`` (a file, directory or glob), streaming.

    Args:
        score: raw rows -> model scores, for the prediction histogram (optional).

    Raises:
        SchemaError: the data lacks a feature of the reference.
        DataValidationError: no such path / no data files / unreadable.
    """
    src = list_source(path)
    names = read_schema(src).names
    missing = [f for f in reference.names if f not in names]
    if missing:
        raise SchemaError(f"{path}: missing feature column(s) {', '.join(map(repr, missing))} of the reference")
    counts = reference.zero_counts()
    rows = 0
    for table in iter_batches(src, batch_size=batch_size, columns=reference.names):
        scores = score(table) if score is not None else None
        merge_counts(counts, reference.count(table, scores))
        rows += table.num_rows
    return counts, rows


def compare(reference: DriftReference, path: str, limits: dict[str, Any], *, score=None, **context) -> dict[str, Any]:
    """The drift evaluation of the data behind ``path`` against ``reference``."""
    counts, _ = count_source(reference, path, score=score)
    return evaluate(reference, counts, **limits, source=path, **context)


__all__ = ["compare", "count_source"]
