#!/usr/bin/env python
"""Prototype variants of the Ray path of benchmarks/data_prep.py, measured with the same harness.

Nothing under ``mlops_ray/`` is modified: variants use public hooks (``prepare_snapshot(runner=...)``),
Ray Data's ``DataContext`` and documented environment knobs.

  ray          baseline: exactly ``data_prep.ray_job`` (prepare_snapshot(engine="ray") + transform_dataset)
  ray-v1read   same code, ``DataContext.use_datasource_v2 = False`` (Ray Data's V1 Parquet reader)
  ray-knobs    same code, V2 reader with ``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS=2`` and
               ``RAY_DATA_PARQUET_BIN_PACKING_BYTES=16 MiB`` (more, smaller read tasks; 2 footer actors
               instead of 32 per read)
  ray-tasks    prepare via ``runner=`` one Ray task per source file (read with pyarrow + process_batch,
               results streamed back with ray.wait); transform = one Ray task per split file
               (read, Preprocessor.transform, write). Ray Core only, no Ray Data.
  local        ``prepare_snapshot(engine="local")`` + the same transform in-process (no Ray at all)

Usage::

    .venv/bin/python benchmarks/data_prep_ray_variants.py --rows 1000000 --variants ray ray-tasks \
        --workdir /tmp/dp --out benchmarks/results/data_prep_ray_variants.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data_prep as dp  # noqa: E402

MiB = 1024 * 1024


# ------------------------------------------------------------------ Ray-Core runner / transform
def tasks_runner(src, ctx, batch_size):
    """``prepare_snapshot`` runner: one Ray task per source file; yields BatchResults as tasks finish."""
    import ray

    from mlops_ray.data.prepare import process_batch

    @ray.remote(num_cpus=1)
    def run_file(path, filesystem, ctx, batch_size):
        import pyarrow as pa
        import pyarrow.parquet as pq

        with filesystem.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            return [process_batch(pa.Table.from_batches([rb]), ctx) for rb in pf.iter_batches(batch_size=batch_size)
                    if rb.num_rows]

    if src.format != "parquet":
        raise NotImplementedError("prototype handles Parquet sources only")
    pending = [run_file.remote(p, src.filesystem, ctx, batch_size) for p in src.files]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield from ray.get(done[0])


def transform_with_tasks(snap, pre, out_dir: Path) -> dict:
    """One Ray task per split file: read, Preprocessor.transform, write float32 features + label + id."""
    import ray

    spec = snap.manifest["spec"]
    label, idc = spec["label_column"], spec["id_column"]

    @ray.remote(num_cpus=1)
    def transform_file(path, out_path, pre, label, idc):
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = pq.read_table(path)
        x = pre.transform(t)
        cols = {n: x[:, j] for j, n in enumerate(pre.feature_names)}
        cols[label] = t.column(label)
        cols[idc] = t.column(idc)
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), out_path, compression="snappy")
        return t.num_rows

    pre_ref = ray.put(pre)
    refs, per_split = [], {}
    for split in snap.split_names:
        for i, f in enumerate(snap.split_files(split)):
            refs.append(transform_file.remote(f, str(out_dir / split / f"part-{i:05d}.parquet"), pre_ref, label, idc))
            per_split[split] = per_split.get(split, 0) + 1
    ray.get(refs)
    return per_split


def transform_local(snap, pre, out_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = snap.manifest["spec"]
    label, idc = spec["label_column"], spec["id_column"]
    for split in snap.split_names:
        for i, f in enumerate(snap.split_files(split)):
            t = pq.read_table(f)
            x = pre.transform(t)
            cols = {n: x[:, j] for j, n in enumerate(pre.feature_names)}
            cols[label] = t.column(label)
            cols[idc] = t.column(idc)
            (out_dir / split).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(cols), out_dir / split / f"part-{i:05d}.parquet", compression="snappy")


# ------------------------------------------------------------------ job functions
def _result(snap, pre) -> dict:
    m = snap.manifest
    return {
        "fingerprint": m["fingerprint"],
        "rows": int(m["rows"]),
        "rows_per_split": {k: int(v) for k, v in m["rows_per_split"].items()},
        "n_features": len(pre.feature_names),
        "split_files": {s: len(snap.split_files(s)) for s in snap.split_names},
        "fit": {
            "fill": {p.name: p.fill for p in pre.numeric},
            "center": {p.name: p.center for p in pre.numeric},
            "scale": {p.name: p.scale for p in pre.numeric},
            "categories": {p.name: list(p.categories) for p in pre.categorical},
        },
    }


def job_v1read(data_dir, job_dir, cfg, ph):
    import ray.data

    ray.data.DataContext.get_current().use_datasource_v2 = False
    return dp.ray_job(data_dir, job_dir, cfg, ph)


def job_knobs(data_dir, job_dir, cfg, ph):
    os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] = os.environ.get("BENCH_FOOTER_ACTORS", "2")
    os.environ["RAY_DATA_PARQUET_BIN_PACKING_BYTES"] = str(int(os.environ.get("BENCH_BIN_MIB", "16")) * MiB)
    return dp.ray_job(data_dir, job_dir, cfg, ph)


def _prepare(cfg, job_dir, ph, **kw):
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.workspace import Workspace

    with ph("prepare"):
        res = prepare_snapshot(cfg, workspace=Workspace(job_dir / "workspace"), **kw)
    if res.reused:
        raise RuntimeError("prepare_snapshot reused a snapshot")
    return res.snapshot


def job_tasks(data_dir, job_dir, cfg, ph):
    snap = _prepare(cfg, job_dir, ph, engine="ray", runner=tasks_runner)
    pre = snap.preprocessor()
    with ph("transform_write"):
        transform_with_tasks(snap, pre, job_dir / "transformed")
    return _result(snap, pre)


def job_local(data_dir, job_dir, cfg, ph):
    snap = _prepare(cfg, job_dir, ph, engine="local")
    pre = snap.preprocessor()
    with ph("transform_write"):
        transform_local(snap, pre, job_dir / "transformed")
    return _result(snap, pre)


VARIANTS = {
    "ray": (dp.ray_job, True),
    "ray-v1read": (job_v1read, True),
    "ray-knobs": (job_knobs, True),
    "ray-tasks": (job_tasks, True),
    "local": (job_local, False),
    "pandas": (dp.pandas_job, False),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--variants", nargs="+", default=["pandas", "ray", "ray-v1read", "ray-knobs", "ray-tasks", "local"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", help="required (data cache and job outputs)")
    ap.add_argument("--out", default="benchmarks/results/data_prep_ray_variants.json")
    ap.add_argument("--sample-interval", type=float, default=0.1)
    ap.add_argument("--sampler-nice", type=int, default=0)
    ap.add_argument("--exact-pss", action="store_true")
    ap.add_argument("--keep-outputs", action="store_true")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--job-dir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        fn, uses_ray = VARIANTS[args.worker]
        return dp.worker_main(args, job_fn=fn, uses_ray=uses_ray)

    if not args.workdir:
        ap.error("--workdir is required")
    workdir = Path(args.workdir).resolve()
    out = {"command": shlex.join([sys.executable, *sys.argv]), "machine": dp.machine_info(), "results": []}
    for rows in args.rows:
        data_dir, _ = dp.ensure_data(workdir, rows, args.shards)
        for rep in range(args.repeat):
            for v in args.variants:
                r = dp.run_worker(v, rows, data_dir, workdir, args, script=__file__)
                r.update(variant=v, rows=rows, repeat=rep)
                out["results"].append(r)
    print(f"\n{'rows':>9} | {'variant':>10} | rep | {'wall s':>7} | {'+init s':>7} | {'peak>idle MB':>12} | "
          f"{'peak MB':>8} | fingerprint | phases")
    for r in out["results"]:
        if not r.get("ok"):
            print(f"{r['rows']:>9,} | {r['variant']:>10} | {r['repeat']:>3} | FAILED {r.get('error')}")
            continue
        m = r.get("memory") or {}
        ph = " ".join(f"{k}={v:.2f}" for k, v in r["phases_s"].items())
        print(f"{r['rows']:>9,} | {r['variant']:>10} | {r['repeat']:>3} | {r['wall_s']:7.2f} | "
              f"{r.get('wall_with_init_s', r['wall_s']):7.2f} | {dp.fmt(m.get('peak_above_idle_mb'), '12.0f')} | "
              f"{dp.fmt(m.get('peak_mb'), '8.0f')} | {r['fingerprint'][:11]} | {ph}")
    p = Path(args.out)
    if not p.is_absolute():
        p = dp.REPO / p
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
