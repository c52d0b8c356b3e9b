"""Ray Data glue for the data stage: the only module in ``mlops_ray.data`` that imports Ray.

Each function builds a lazy Ray Data pipeline whose per-batch work is a pure function
from the sibling modules, so the Ray path and the local path compute the same thing.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pyarrow as pa

from mlops_ray.data.sources import SourceFiles, csv_convert_options


def read_source(src: SourceFiles, id_column: str | None = None):
    """Lazy Ray Dataset over the source files (Parquet or CSV)."""
    import ray.data

    files = list(src.files)
    if src.format == "csv":
        return ray.data.read_csv(files, filesystem=src.filesystem, convert_options=csv_convert_options(id_column))
    return ray.data.read_parquet(files, filesystem=src.filesystem)


def _pickled(fn):
    """Wrap ``fn(table, ctx) -> obj`` as a map_batches UDF returning one pickled row per batch."""

    def udf(batch: pa.Table, ctx) -> pa.Table:
        return pa.table({"result": pa.array([pickle.dumps(fn(batch, ctx), protocol=5)], type=pa.large_binary())})

    return udf


def map_partials(ds, fn, ctx, batch_size: int) -> Iterator:
    """Run ``fn(batch, ctx)`` over every batch in a streaming pass; yield its results as they finish."""
    out = ds.map_batches(_pickled(fn), batch_format="pyarrow", batch_size=batch_size, fn_kwargs={"ctx": ctx},
                         zero_copy_batch=True)
    for block in out.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
        for blob in block.column("result").to_pylist():
            yield pickle.loads(blob)


def run_prepare(src: SourceFiles, ctx, batch_size: int) -> Iterator:
    """Ray Data engine for :func:`mlops_ray.data.prepare.prepare_snapshot`."""
    from mlops_ray.data.prepare import process_batch
    from mlops_ray.ray_runtime import ensure_ray

    ensure_ray()
    yield from map_partials(read_source(src, ctx.spec.id_column), process_batch, ctx, batch_size)


def run_fingerprint(src: SourceFiles, batch_size: int = 131_072) -> Iterator:
    """Fingerprint partials per batch via Ray Data."""
    from mlops_ray.data.fingerprint import fingerprint_partial
    from mlops_ray.ray_runtime import ensure_ray

    ensure_ray()
    yield from map_partials(read_source(src), lambda t, ctx: fingerprint_partial(t), None, batch_size)


def run_split(src: SourceFiles, ctx, batch_size: int) -> Iterator:
    """Split-and-write partials per batch via Ray Data (``data split``)."""
    from mlops_ray.data.split_files import split_batch
    from mlops_ray.ray_runtime import ensure_ray

    ensure_ray()
    yield from map_partials(read_source(src, ctx.id_column), split_batch, ctx, batch_size)


def transform_dataset(snapshot, split: str, preprocessor, batch_size: int = 131_072):
    """Lazy Ray Dataset of ``features`` (float32 matrix rows), ``label`` and ``id`` for one split."""
    import numpy as np
    import ray.data

    spec = snapshot.manifest["spec"]
    label, idc = spec["label_column"], spec["id_column"]
    names = preprocessor.feature_names

    def _transform(batch: pa.Table) -> pa.Table:
        x = preprocessor.transform(batch)
        cols = {n: x[:, j] for j, n in enumerate(names)}
        cols[label] = batch.column(label)
        cols[idc] = batch.column(idc)
        return pa.table(cols)

    ds = ray.data.read_parquet(snapshot.split_files(split))
    return ds.map_batches(_transform, batch_format="pyarrow", batch_size=batch_size, zero_copy_batch=True)
