"""`data split`: write ``OUT/<split>/*.parquet`` with all original columns, by the hash rule.

Streaming: each batch is split and written by :func:`split_batch` (pure apart from
its own output files, content-named so retries do not duplicate rows); no global
shuffle or materialisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_ray.data.fingerprint import fingerprint_partial
from mlops_ray.data.hashing import assign_splits, split_boundaries
from mlops_ray.data.sources import iter_batches, list_source
from mlops_ray.errors import DataValidationError


@dataclass(frozen=True)
class SplitContext:
    id_column: str
    salt: str
    fractions: tuple[tuple[str, float], ...]
    out: str


def split_batch(table: pa.Table, ctx: SplitContext) -> dict[str, int]:
    """Split one batch and write one Parquet file per non-empty split; returns rows per split."""
    if ctx.id_column not in table.column_names:
        raise DataValidationError([f"id column {ctx.id_column!r} not found; columns: {table.column_names}"])
    try:
        codes = assign_splits(table.column(ctx.id_column), ctx.salt, dict(ctx.fractions))
    except ValueError as err:
        raise DataValidationError([f"id column {ctx.id_column!r}: {err}"]) from None
    tag = fingerprint_partial(table).hexdigest()[:20]
    counts = {}
    for code, (name, _) in enumerate(ctx.fractions):
        mask = codes == code
        counts[name] = int(mask.sum())
        if counts[name]:
            d = Path(ctx.out) / name
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.filter(pa.array(mask)), d / f"part-{tag}.parquet")
    return counts


def split_source(
    uri: str,
    id_column: str,
    fractions: dict[str, float],
    salt: str,
    out: str,
    fmt: str = "auto",
    engine: str = "ray",
    batch_size: int = 131_072,
) -> dict[str, int]:
    """Split a source into ``out/<split>/``; returns total rows per split."""
    split_boundaries(fractions)
    out_path = Path(out)
    if out_path.exists() and any(out_path.iterdir()):
        raise DataValidationError([f"output directory {out!r} is not empty; choose a new --out"])
    src = list_source(uri, fmt)
    ctx = SplitContext(id_column, salt, tuple(fractions.items()), str(out_path.resolve()))
    if engine == "ray":
        from mlops_ray.data import ray_io

        parts = ray_io.map_units(ray_io.work_units(src), split_batch, ctx, batch_size, ctx.id_column)
    else:
        parts = (split_batch(t, ctx) for t in iter_batches(src, id_column, batch_size))
    totals = {name: 0 for name in fractions}
    for p in parts:
        for k, v in p.items():
            totals[k] += v
    for name in fractions:
        (out_path / name).mkdir(parents=True, exist_ok=True)
    return totals


def fingerprint_source(
    uri: str, fmt: str = "auto", engine: str = "local", batch_size: int = 131_072
) -> tuple[str, int]:
    """Content digest and row count of a source, streaming over every row."""
    from mlops_ray.data.fingerprint import FingerprintPartial

    src = list_source(uri, fmt)
    if engine == "ray":
        from mlops_ray.data import ray_io

        parts = ray_io.run_fingerprint(src, batch_size)
    else:
        parts = (fingerprint_partial(t) for t in iter_batches(src, None, batch_size))
    total = FingerprintPartial(())
    for p in parts:
        total = total.merge(p)
    return total.hexdigest(), total.rows


__all__ = ["SplitContext", "split_batch", "split_source", "fingerprint_source", "np"]
