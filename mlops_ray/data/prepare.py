"""`data prepare`: validate, split, fingerprint, fit preprocessing and publish a snapshot.

One streaming pass over the source. Every batch goes through :func:`process_batch`
(pure Arrow/NumPy, no Ray), which validates and casts it, assigns splits by the
hash rule, writes its rows to the staging directory (one file per split, named
by the batch's content so a retried task overwrites instead of duplicating) and
returns small mergeable partials: fingerprint, validation report, id hashes (for
the global duplicate check) and train statistics. The engine (Ray Data
``map_batches`` or a local loop) only decides where batches run. The driver
merges the partials, fits the preprocessor on train statistics, writes the
manifest (with the size and SHA-256 of every file) and publishes the staging
directory atomically. If validation fails, the staging directory is deleted: no
partial snapshot is ever visible. An existing identical snapshot is reused only
after it verifies; staging directories left by a killed prepare are removed.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_ray.data import fingerprint as fpm
from mlops_ray.data.hashing import HASH_SEED, NUM_BUCKETS, assign_splits, hash_ids, split_boundaries
from mlops_ray.data.preprocess import Preprocessor
from mlops_ray.data.snapshot import (
    MANIFEST,
    PREPROCESSOR,
    REFERENCE,
    SPLITS,
    Snapshot,
    SnapshotStore,
    record_files,
    snapshot_id,
    write_json,
)
from mlops_ray.data.sources import SourceFiles, iter_batches, list_source, read_schema
from mlops_ray.data.stats import TrainStats, batch_stats, reference_statistics
from mlops_ray.data.validate import (
    DataSpec,
    ValidationReport,
    inferred_text_categoricals,
    numeric_text_warnings,
    resolve_spec,
    validate_batch,
)
from mlops_ray.data.xxh64 import xxh64_arrow
from mlops_ray.errors import DataValidationError
from mlops_ray.storage import Location
from mlops_ray.workspace import Workspace

if TYPE_CHECKING:
    from mlops_ray.config import DataConfig

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT = 1
_SAMPLE_PREFIX = b"mlops-ray-sample:"


@dataclass(frozen=True)
class BatchContext:
    """Everything a worker needs to process a batch (picklable)."""

    spec: DataSpec
    salt: str
    fractions: tuple[tuple[str, float], ...]
    staging: str | None  # None: compute partials only, write nothing
    sample_k: int


@dataclass
class BatchResult:
    rows: int
    split_rows: dict[str, int]
    fingerprint: fpm.FingerprintPartial
    report: ValidationReport
    id_hashes: list[np.ndarray]  # int64 split hash of every valid id, one array per batch (joined once)
    train: TrainStats | None

    def merge(self, o: "BatchResult") -> "BatchResult":
        return BatchResult(
            self.rows + o.rows,
            {k: self.split_rows.get(k, 0) + o.split_rows.get(k, 0) for k in {*self.split_rows, *o.split_rows}},
            self.fingerprint.merge(o.fingerprint),
            self.report.merge(o.report),
            self.id_hashes + o.id_hashes,
            o.train if self.train is None else (self.train if o.train is None else self.train.merge(o.train)),
        )


def process_batch(table: pa.Table, ctx: BatchContext) -> BatchResult:
    """Validate, split, write and summarise one batch. Pure apart from writing its own files."""
    fractions = dict(ctx.fractions)
    fp = fpm.fingerprint_partial(table)
    clean, report = validate_batch(table, ctx.spec)
    names = list(fractions)
    if not report.ok:
        return BatchResult(table.num_rows, {}, fp, report, [], None)
    ids = clean.column(ctx.spec.id_column)
    h = hash_ids(ids, ctx.salt)
    codes = assign_splits(ids, ctx.salt, fractions)
    split_rows = {}
    train = None
    for code, name in enumerate(names):
        mask = codes == code
        n = int(mask.sum())
        split_rows[name] = n
        if not n:
            continue
        sub = clean.filter(pa.array(mask))
        if ctx.staging is not None:
            # A local directory or an object-store prefix: this runs in Ray tasks on any node.
            out = (Location.of(ctx.staging) / SPLITS / name).mkdir()
            # Content-named: a retried task rewrites the same file instead of adding rows.
            part = out / f"part-{fp.hexdigest()[:20]}.parquet"
            try:
                pq.write_table(sub, part.path, filesystem=part.fs, compression="snappy")
            except OSError as err:  # pyarrow's errors (e.g. ENOSPC) do not name the file
                if err.errno is None or err.filename:
                    raise
                raise OSError(err.errno, os.strerror(err.errno), str(part)) from err
        if name == "train":
            keys = xxh64_arrow(sub.column(ctx.spec.id_column).combine_chunks(), prefix=_SAMPLE_PREFIX, seed=HASH_SEED)
            train = batch_stats(sub, keys, ctx.spec.numeric, ctx.spec.categorical, ctx.spec.label_column, ctx.sample_k)
    return BatchResult(table.num_rows, split_rows, fp, report, [h], train)


@dataclass
class PrepareResult:
    snapshot: Snapshot
    reused: bool
    seconds: float
    notes: list[str] = field(default_factory=list)


def _spec_dict(d: DataConfig, spec: DataSpec) -> dict[str, Any]:
    return {
        "format": SNAPSHOT_FORMAT,
        "hash": {"algorithm": "xxh64", "seed": HASH_SEED, "buckets": NUM_BUCKETS, "key": "salt + ':' + str(id)"},
        "salt": d.split.salt,
        "fractions": [[k, v] for k, v in d.split.fractions.items()],
        "id_column": spec.id_column,
        "label_column": spec.label_column,
        "timestamp_column": spec.timestamp_column,
        "task": spec.task,
        "numeric_features": list(spec.numeric),
        "categorical_features": list(spec.categorical),
        "preprocessing": d.preprocessing.model_dump(mode="json"),
        "reference_bins": d.reference_bins,
        "quantile_sample_rows": d.quantile_sample_rows,
    }


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("mlops-ray", "ray", "pyarrow", "numpy", "pandas", "mlflow", "xgboost", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _duplicate_problem(result: BatchResult, src: SourceFiles, spec: DataSpec, salt: str) -> list[str]:
    """Global duplicate-id check on 64-bit hashes; examples are confirmed by a rescan of the ids."""
    h = np.sort(np.concatenate(result.id_hashes)) if result.id_hashes else np.empty(0, np.int64)
    dup_hashes = np.unique(h[1:][h[1:] == h[:-1]])
    if not dup_hashes.size:
        return []
    examples: dict[str, int] = {}
    for t in iter_batches(src, spec.id_column, columns=[spec.id_column]):
        ids = t.column(spec.id_column).combine_chunks()
        if ids.null_count:
            continue
        hit = np.isin(hash_ids(ids, salt), dup_hashes)
        for v in ids.filter(pa.array(hit)).to_pylist():
            examples[str(v)] = examples.get(str(v), 0) + 1
    real = {k: c for k, c in examples.items() if c > 1}
    if not real:  # 64-bit hash collision between distinct ids: harmless
        return []
    shown = "; ".join(f"{spec.id_column}={k!r} x{c}" for k, c in list(real.items())[:5])
    return [f"id {spec.id_column!r}: {len(real)} duplicated id value(s); e.g. {shown}"]


FINGERPRINT_CACHE = "cache/source_fingerprints.json"  # state-store key: {source stat key: fingerprint}


def fingerprint_cache_get(ws: Workspace, key: str) -> str | None:
    cache = ws.state_store().read_json(FINGERPRINT_CACHE, {})
    return cache.get(key) if isinstance(cache, dict) else None


def fingerprint_cache_put(ws: Workspace, key: str, digest: str) -> None:
    """Record ``digest`` for ``key`` (compare-and-set: concurrent prepares of other sources keep theirs)."""
    store = ws.state_store()
    for _ in range(20):
        raw = store.read_bytes(FINGERPRINT_CACHE)
        try:
            cache = json.loads(raw) if raw else {}
        except ValueError:
            cache = {}
        cache = {**(cache if isinstance(cache, dict) else {}), key: digest}
        if store.compare_and_set(FINGERPRINT_CACHE, raw, json.dumps(cache, indent=1).encode()):
            return


Runner = Callable[[SourceFiles, BatchContext, int], Iterable[BatchResult]]


def run_local(src: SourceFiles, ctx: BatchContext, batch_size: int, progress: bool = False) -> Iterable[BatchResult]:
    """Single-process engine: pyarrow streaming batches through :func:`process_batch`."""
    it = iter_batches(src, ctx.spec.id_column, batch_size=batch_size)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="prepare (local)", unit="batch")
    for t in it:
        yield process_batch(t, ctx)


def run_ray(src: SourceFiles, ctx: BatchContext, batch_size: int) -> Iterable[BatchResult]:
    """Ray Data engine: :func:`process_batch` over work units in one streaming pass."""
    from mlops_ray.data import ray_io

    yield from ray_io.map_units(ray_io.work_units(src), process_batch, ctx, batch_size, ctx.spec.id_column)


def _reuse(snap: Snapshot, t0: float, notes: list[str], why: str) -> PrepareResult:
    """An identical snapshot exists: reuse it only if its files still match the manifest."""
    check = snap.verify()  # SnapshotCorruptError names the bad file and how to recover
    notes = notes + [why] + ([check.note] if check.note else [])
    return PrepareResult(snap, True, time.perf_counter() - t0, notes)


def _inference_warnings(src: SourceFiles, schema: pa.Schema, spec: DataSpec, d) -> list[str]:
    """Warn about inferred categorical columns that are mostly numbers (a stray string in a numeric column)."""
    text = inferred_text_categoricals(schema, spec, d)
    if not text:
        return []
    try:
        return numeric_text_warnings(iter_batches(src, spec.id_column, batch_size=10_000, columns=text), text)
    except (pa.ArrowInvalid, OSError):  # unreadable rows: the validating pass reports them
        return []


def prepare_snapshot(
    data: DataConfig,
    workspace: Workspace,
    *,
    source: str | None = None,
    engine: str = "ray",
    progress: bool = False,
    runner: Runner | None = None,
) -> PrepareResult:
    """Validate, split, fingerprint and publish a snapshot of ``data`` (the config's ``data`` section);
    reuse an identical one.

    Args:
        data: the ``data`` section (columns, split, preprocessing, batch size, ...).
        workspace: where snapshots live (``{workspace}`` in the source path expands to it).
        source: the resolved source path/URI (:meth:`~mlops_ray.config.PipelineConfig.source`, which
            also resolves a relative ``data.source`` against the config file's directory); default:
            ``data.source`` with ``{workspace}`` expanded and no config directory.
        engine: ``"ray"`` (Ray Data map_batches, the default) or ``"local"`` (one process).

    Raises:
        DataValidationError: the source breaks the contract (nothing is left behind).
        SnapshotCorruptError: an identical snapshot exists but its files were changed.
    """
    t0 = time.perf_counter()
    ws = workspace
    store = SnapshotStore(ws)
    notes = store.remove_stale_staging()
    d = data
    src = list_source(source if source is not None else d.resolved_source(ws.location), d.format)
    schema = read_schema(src, d.id_column)
    spec = resolve_spec(schema, d)
    notes += _inference_warnings(src, schema, spec, d)
    spec_d = _spec_dict(d, spec)
    split_boundaries(d.split.fractions)

    # Unchanged files (same paths, sizes, mtimes) -> known fingerprint -> reuse without reading.
    cached_fp = fingerprint_cache_get(ws, src.stat_key())
    if cached_fp:
        existing = store.get(d.name, snapshot_id(cached_fp, spec_d))
        if existing is not None:
            return _reuse(existing, t0, notes, "source unchanged since last prepare")

    staging = store.new_staging(d.name)
    try:
        ctx = BatchContext(spec, d.split.salt, tuple(d.split.fractions.items()), str(staging), d.quantile_sample_rows)
        if runner is None:
            if engine == "ray":
                runner = run_ray
            elif engine == "local":
                runner = lambda s, c, b: run_local(s, c, b, progress)  # noqa: E731
            else:
                raise ValueError(f"unknown engine {engine!r}; use 'ray' or 'local'")
        total: BatchResult | None = None
        for r in runner(src, ctx, d.batch_size):
            total = r if total is None else total.merge(r)
        if total is None or total.rows == 0:
            raise DataValidationError([f"source {src.uri!r} has no rows"])
        problems = total.report.lines() + _duplicate_problem(total, src, spec, d.split.salt)
        if problems:
            raise DataValidationError(problems)
        if total.train is None or total.train.rows == 0:
            raise DataValidationError(["the train split is empty; add rows or change data.split.fractions"])

        digest = total.fingerprint.hexdigest()
        sid = snapshot_id(digest, spec_d)
        fingerprint_cache_put(ws, src.stat_key(), digest)
        existing = store.get(d.name, sid)
        if existing is not None:
            staging.rmtree()
            return _reuse(existing, t0, notes, "identical content already prepared")

        pre = Preprocessor.fit(total.train, spec.categorical, d.preprocessing.numeric, d.preprocessing.categorical)
        (staging / PREPROCESSOR).write_text(pre.to_json())
        ref = reference_statistics(total.train, spec.categorical, d.reference_bins)
        write_json(staging / REFERENCE, ref)
        for name in d.split.fractions:  # every split gets a directory, even when empty (where directories exist)
            (staging / SPLITS / name).mkdir()
        manifest = {
            "snapshot_id": sid,
            "name": d.name,
            "source": {"uri": src.uri, "format": src.format, "files": len(src.files), "bytes": src.total_bytes},
            "fingerprint": digest,
            "fingerprint_algorithm": fpm.ALGORITHM,
            "rows": total.rows,
            "rows_per_split": {k: total.split_rows.get(k, 0) for k in d.split.fractions},
            "label_distribution_train": total.train.labels,
            "spec": spec_d,
            "schema": [{"name": f.name, "type": str(f.type)} for f in schema],
            "feature_names": pre.feature_names,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "engine": engine,
            "library_versions": library_versions(),
            "files": record_files(staging),
        }
        write_json(staging / MANIFEST, manifest)
        snap, created = store.commit(staging, d.name, sid)
        if not created:  # a concurrent identical prepare published first
            return _reuse(snap, t0, notes, "identical content prepared concurrently")
        return PrepareResult(snap, False, time.perf_counter() - t0, notes)
    except BaseException:
        staging.rmtree()
        raise
