"""Batch inference: score Parquet/CSV with Ray Data ``map_batches`` over an actor pool.

Each actor loads the registered model once (the same pyfunc, preprocessing included,
that the HTTP service runs), streams its work units, and writes one Parquet file per
input batch (named by the batch's content, so a retried task overwrites) with the id
column, the prediction(s), the model name/version and the training-data fingerprint of
the model. The driver merges the per-batch fingerprints of the *input* into
``_manifest.json``, so every output names exactly which data and which model made it.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class _ScoreUnits:
    """Actor-pool UDF: work units in, per-batch (rows, fingerprint partial) out."""

    def __init__(self, tracking_uri: str, name: str, version: str, out_dir: str, id_column: str, batch_size: int):
        from mlops_ray.registry import tracking

        self.model = tracking.load_pyfunc(tracking_uri, f"models:/{name}/{version}").unwrap_python_model()
        self.name, self.version = name, version
        self.features = list(self.model.meta["numeric_features"]) + list(self.model.meta["categorical_features"])
        self.out_dir, self.id_column, self.batch_size = Path(out_dir), id_column, batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        from mlops_ray.data.fingerprint import fingerprint_partial
        from mlops_ray.data.ray_io import iter_unit

        rows, fps = [], []
        for blob in batch.column("unit").to_pylist():
            for t in iter_unit(pickle.loads(blob), self.id_column, self.batch_size):
                fp = fingerprint_partial(t)
                missing = [f for f in self.features if f not in t.column_names]
                if missing:
                    from mlops_ray.errors import SchemaError

                    raise SchemaError(f"input lacks model features {missing}")
                pred = self.model.predict_scores(self.model.preprocessor.transform(t))
                cols = {self.id_column: t.column(self.id_column), **pred.to_arrow()}
                n = t.num_rows
                cols["model_name"] = pa.array([self.name] * n)
                cols["model_version"] = pa.array([self.version] * n)
                cols["model_data_fingerprint"] = pa.array([self.model.meta.get("fingerprint", "")] * n)
                pq.write_table(pa.table(cols), self.out_dir / f"part-{fp.hexdigest()[:20]}.parquet")
                rows.append(n)
                fps.append(pickle.dumps(fp))
        return pa.table({"rows": pa.array(rows, pa.int64()), "fp": pa.array(fps, pa.large_binary())})


def predict_files(
    ctx,
    cfg,
    input_path: str,
    output_dir: str,
    model_uri: str | None = None,
    batch_size: int = 65_536,
    max_actors: int = 2,
) -> dict:
    """Score ``input_path`` into ``output_dir`` with the deploy-alias model (or ``model_uri``);
    returns the manifest written there."""
    import ray.data

    from mlops_ray.data.fingerprint import FingerprintPartial
    from mlops_ray.data.ray_io import work_units
    from mlops_ray.data.sources import list_source
    from mlops_ray.errors import ConfigError, MlopsRayError
    from mlops_ray.ray_runtime import ensure_ray
    from mlops_ray.registry import tracking

    client = ctx.client
    name, alias, version = cfg.registry.model_name, cfg.serve.model_alias, None
    if model_uri:
        ref = model_uri.removeprefix("models:/")
        if "@" in ref:
            name, alias = ref.split("@", 1)
        elif "/" in ref:
            name, version = ref.split("/", 1)
        else:
            raise ConfigError(f"--model-uri {model_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    if version is None:
        mv = tracking.alias_version(client, name, alias)
        if mv is None:
            raise ConfigError(f"model {name!r} has no alias {alias!r}")
        version = str(mv.version)
    else:
        from mlops_ray.registry.promotion import get_version

        try:
            get_version(client, name, version)
        except MlopsRayError as err:
            raise ConfigError(str(err)) from None
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--output {output_dir} is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    src = list_source(input_path, "auto")
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
        fn_constructor_args=(ctx.tracking_uri, name, version, str(out.resolve()), cfg.data.id_column, batch_size),
    )
    total, rows = FingerprintPartial(()), 0
    for block in res.iter_batches(batch_format="pyarrow", batch_size=None):
        for n, fp in zip(block.column("rows").to_pylist(), block.column("fp").to_pylist()):
            rows += n
            total = total.merge(pickle.loads(fp))
    mv = client.get_model_version(name, version)
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
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
