"""Batch inference: score Parquet/CSV with Ray Data ``map_batches`` over an actor pool.

Each actor loads the registered model once (the same pyfunc, preprocessing included,
that the HTTP service runs), streams its work units, and writes one Parquet file per
input batch (named by the batch's content, so a retried task overwrites) with the id
column, the prediction(s), the model name/version and the training-data fingerprint of
the model. The driver merges the per-batch fingerprints of the *input* into
``_manifest.json``, so every output names exactly which data and which model made it.

Before any Ray work, :func:`check_input` checks the input against the model's features
(missing columns, impossible types, values that do not cast to numbers, with example rows:
the casting and checks of ``data prepare``) and fails with one :class:`SchemaError`. Output
is written to a staging directory next to ``--output`` and renamed at the end, so a failed
run leaves no partial (or empty) output directory.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from mlops_ray.data.sources import SourceFiles
from mlops_ray.errors import SchemaError

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context

CHECK_BATCH_ROWS = 131_072


def _input_spec(meta: dict, id_column: str):
    """The :class:`~mlops_ray.data.validate.DataSpec` that casts a batch's model features like ``data prepare``."""
    from mlops_ray.data.validate import DataSpec

    return DataSpec(
        id_column=id_column,
        label_column=str(meta.get("label_column") or ""),
        task=str(meta.get("task") or "binary"),
        numeric=tuple(meta["numeric_features"]),
        categorical=tuple(meta["categorical_features"]),
    )


def _check_dataset(src: SourceFiles, id_column: str, numeric: list[str]):
    """A pyarrow Dataset over the input that reads CSV numeric features as text (so a stray string in any
    file is a value to report with its row, not a conversion error of the whole file)."""
    if src.format != "csv":
        from mlops_ray.data.sources import arrow_dataset

        return arrow_dataset(src, id_column)
    import pyarrow.csv as pacsv
    import pyarrow.dataset as pads

    types = {c: pa.string() for c in [id_column, *numeric]}
    fmt = pads.CsvFileFormat(convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    return pads.dataset(list(src.files), format=fmt, filesystem=src.filesystem)


def check_input(src: SourceFiles, meta: dict, id_column: str, batch_size: int = CHECK_BATCH_ROWS) -> int:
    """Check a batch-inference input against a model's features; returns the rows read.

    ``meta`` is the model's meta (``numeric_features``, ``categorical_features``, ``task``). The
    schema is checked first (the id column and every feature present, types castable), then every
    row's id and numeric features are read and cast as ``data prepare`` casts them (numbers, or text
    that parses as one; no infinities; no null ids).

    Raises:
        SchemaError: one message listing every problem, with up to 5 example rows per problem.
    """
    from mlops_ray.data.validate import ValidationReport, column_type_problems, validate_batch

    numeric, categorical = list(meta["numeric_features"]), list(meta["categorical_features"])
    where = f"input {src.uri!r}"
    try:
        dataset = _check_dataset(src, id_column, numeric)
        schema = dataset.schema
    except (pa.ArrowInvalid, OSError) as err:
        raise SchemaError(f"cannot read the schema of {where}: {err}") from None
    names = set(schema.names)
    problems = []
    if id_column not in names:
        problems.append(f"the id column {id_column!r} (data.id_column) is missing")
    missing = [c for c in numeric + categorical if c not in names]
    if missing:
        problems.append(f"missing model feature(s) {missing}")
    if problems:
        raise SchemaError(
            f"{where} does not fit the model: " + "; ".join(problems) + f". The input has columns {sorted(names)}"
        )
    problems += column_type_problems(schema, numeric, categorical, id_column)
    if problems:
        raise SchemaError(_problems(where, problems))

    spec = _input_spec(meta, id_column)
    report, rows = ValidationReport(), 0
    try:
        for rb in dataset.to_batches(columns=[id_column, *numeric], batch_size=batch_size):
            if rb.num_rows:
                report.merge(validate_batch(pa.Table.from_batches([rb]), spec)[1])
                rows += rb.num_rows
    except (pa.ArrowInvalid, OSError) as err:
        raise SchemaError(f"cannot read {where}: {err}") from None
    if not report.ok:
        raise SchemaError(_problems(where, report.lines()))
    return rows


def _problems(where: str, problems: list[str]) -> str:
    """One line for one problem; a headline and one indented line per problem otherwise."""
    if len(problems) == 1:
        return f"{where} does not fit the model: {problems[0]}"
    return f"{where} does not fit the model:\n  - " + "\n  - ".join(problems)


class _ScoreUnits:
    """Actor-pool UDF: work units in, per-batch (rows, fingerprint partial, error) out.

    An error of ours is returned as data (``error``: the pickled exception), not raised: Ray Data
    would wrap it in a ``UserCodeException`` and drop its type on the way to the driver.
    """

    def __init__(self, tracking_uri: str, name: str, version: str, out_dir: str, id_column: str, batch_size: int):
        from mlops_ray.registry import tracking

        self.model = tracking.load_pyfunc(tracking_uri, f"models:/{name}/{version}").unwrap_python_model()
        self.name, self.version = name, version
        self.spec = _input_spec(self.model.meta, id_column)
        self.out_dir, self.id_column, self.batch_size = Path(out_dir), id_column, batch_size

    def _score(self, t: pa.Table) -> pa.Table:
        from mlops_ray.data.validate import validate_batch

        missing = [f for f in (self.id_column, *self.spec.features) if f not in t.column_names]
        if missing:
            raise SchemaError(f"input lacks model features {missing}")
        cast, report = validate_batch(t.select([self.id_column, *self.spec.numeric]), self.spec)
        if not report.ok:
            raise SchemaError(_problems("input", report.lines()))
        for c in self.spec.numeric:  # numbers as data prepare casts them; the id column keeps its type
            t = t.set_column(t.schema.get_field_index(c), c, cast.column(c))
        return t

    def __call__(self, batch: pa.Table) -> pa.Table:
        from mlops_ray.data.fingerprint import fingerprint_partial
        from mlops_ray.data.ray_io import iter_unit
        from mlops_ray.errors import MlopsRayError

        rows, fps = [], []
        try:
            for blob in batch.column("unit").to_pylist():
                for t in iter_unit(pickle.loads(blob), self.id_column, self.batch_size):
                    fp = fingerprint_partial(t)
                    t = self._score(t)
                    pred = self.model.predict_scores(self.model.preprocessor.transform(t))
                    cols = {self.id_column: t.column(self.id_column), **pred.to_arrow()}
                    n = t.num_rows
                    cols["model_name"] = pa.array([self.name] * n)
                    cols["model_version"] = pa.array([self.version] * n)
                    cols["model_data_fingerprint"] = pa.array([self.model.meta.get("fingerprint", "")] * n)
                    pq.write_table(pa.table(cols), self.out_dir / f"part-{fp.hexdigest()[:20]}.parquet")
                    rows.append(n)
                    fps.append(pickle.dumps(fp))
        except MlopsRayError as err:  # sent as a SchemaError: some of ours do not survive pickling as themselves
            return _result([0], [b""], [pickle.dumps(err if type(err) is SchemaError else SchemaError(str(err)))])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            return _result([0], [b""], [pickle.dumps(SchemaError(f"cannot read or cast the input: {err}"))])
        return _result(rows, fps, [None] * len(rows))


def _result(rows: list[int], fps: list[bytes], errors: list[bytes | None]) -> pa.Table:
    return pa.table(
        {
            "rows": pa.array(rows, pa.int64()),
            "fp": pa.array(fps, pa.large_binary()),
            "error": pa.array(errors, pa.large_binary()),
        }
    )


def _staging_dir(out: Path) -> tuple[Path, list[Path]]:
    """A new directory next to ``out`` (``<out>.staging-<id>``) and the parents created for it."""
    created = []
    p = out.parent
    while not p.exists():
        created.append(p)
        p = p.parent
    staging = out.parent / f"{out.name}.staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    return staging, created


def _discard(staging: Path, created: list[Path]) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    for p in created:  # deepest first
        try:
            p.rmdir()
        except OSError:
            break


def _publish(staging: Path, out: Path) -> None:
    """Rename the finished staging directory to ``out`` (absent, or an empty directory)."""
    from mlops_ray.errors import ConfigError

    try:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        os.rename(staging, out)
    except OSError as err:
        raise ConfigError(f"--output {out}: cannot move the finished output into place ({err.strerror})") from None


def predict_files(
    ctx: Context,
    cfg: PipelineConfig,
    input_path: str,
    output_dir: str,
    model_uri: str | None = None,
    batch_size: int = 65_536,
    max_actors: int = 2,
) -> dict:
    """Score ``input_path`` into ``output_dir`` with the deploy-alias model (or ``model_uri``);
    returns the manifest written there.

    Raises:
        SchemaError: the input lacks a model feature or holds values that are not castable (before any Ray work).
        ConfigError: bad ``model_uri``, unknown version/alias, non-empty ``output_dir``.
    """
    from mlops_ray.data.sources import list_source
    from mlops_ray.errors import ConfigError
    from mlops_ray.registry import tracking
    from mlops_ray.registry.promotion import resolve_model_uri

    name, version, alias = resolve_model_uri(ctx.client, cfg.registry.model_name, cfg.serve.model_alias, model_uri)
    out = Path(output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--output {output_dir} is not empty; choose a new directory")
    src = list_source(input_path, "auto")
    meta = tracking.load_pyfunc(ctx.tracking_uri, f"models:/{name}/{version}").unwrap_python_model().meta
    check_input(src, meta, cfg.data.id_column)

    staging, created = _staging_dir(out)
    try:
        manifest = _score(ctx, cfg, src, staging, name, version, alias, batch_size, max_actors)
        _publish(staging, out)
    except BaseException:
        _discard(staging, created)
        raise
    return manifest


def _score(
    ctx: Context,
    cfg: PipelineConfig,
    src,
    staging: Path,
    name: str,
    version: str,
    alias: str,
    batch_size: int,
    max_actors: int,
):
    import ray.data

    from mlops_ray.data.fingerprint import FingerprintPartial
    from mlops_ray.data.ray_io import work_units
    from mlops_ray.ray_runtime import ensure_ray

    ensure_ray()
    t0 = time.perf_counter()
    units = work_units(src)
    items = [{"unit": pickle.dumps(u)} for u in units]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    res = ds.map_batches(
        _ScoreUnits,
        batch_format="pyarrow",
        batch_size=1,
        concurrency=(1, max_actors),
        num_cpus=0.5,
        fn_constructor_args=(ctx.tracking_uri, name, version, str(staging.resolve()), cfg.data.id_column, batch_size),
    )
    total, rows = FingerprintPartial(()), 0
    for block in res.iter_batches(batch_format="pyarrow", batch_size=None):
        for n, fp, error in zip(*(block.column(c).to_pylist() for c in ("rows", "fp", "error"))):
            if error is not None:
                raise pickle.loads(error)
            rows += n
            total = total.merge(pickle.loads(fp))
    mv = ctx.client.get_model_version(name, version)
    manifest = {
        "input": src.uri,
        "input_fingerprint": total.hexdigest(),
        "rows": rows,
        "model": {
            "name": name,
            "version": str(version),
            "alias": alias,
            "run_id": mv.run_id,
            "snapshot_id": mv.tags.get("snapshot_id"),
            "data_fingerprint": mv.tags.get("data_fingerprint"),
        },
        "seconds": time.perf_counter() - t0,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (staging / "_manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
