#!/usr/bin/env python
"""Diagnostics for the Ray path of benchmarks/data_prep.py: where does the time go?

One Ray session (``ensure_ray(num_cpus=2)`` + warm-up), then, on the generated source:

  read        ``ray.data.read_parquet(files).materialize()``: blocks / tasks / seconds
  read16      same with ``override_num_blocks=len(files)``
  prepare     the exact ``ray_io.map_partials(read_source(src), process_batch, ...)`` pipeline the
              Ray engine runs, with ``ds.stats()``; plus the driver-side merge, duplicate check and fit
  local       ``prepare.run_local`` (same process_batch, one process, no Ray)
  tasks       ``process_batch`` over each source file as plain Ray tasks (one task per file)
  transform   ``ray_io.transform_dataset(...).write_parquet`` per split, with stats

Usage::

    .venv/bin/python benchmarks/ray_data_probe.py --data-dir /tmp/dp/data/rows1000000-shards16 \
        --out benchmarks/results/ray_data_probe_1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_prep import build_config  # noqa: E402


def stats_summary(stats: str) -> dict:
    """Operators with their task / block counts and execution times from ``ds.stats()`` text."""
    ops = []
    for m in re.finditer(r"Operator \d+ ([^:]+): (\d+) tasks executed, (\d+) blocks produced in ([\d.]+)s", stats):
        ops.append({"op": m.group(1).strip(), "tasks": int(m.group(2)), "blocks": int(m.group(3)),
                    "seconds": float(m.group(4))})
    return {"operators": ops}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--experiments", nargs="+",
                    default=["read", "read16", "prepare", "local", "tasks", "transform"])
    args = ap.parse_args()

    import numpy as np
    import pyarrow.parquet as pq
    import ray
    import ray.data

    from mlops_ray.data import ray_io
    from mlops_ray.data.prepare import BatchContext, _duplicate_problem, process_batch, run_local
    from mlops_ray.data.preprocess import Preprocessor
    from mlops_ray.data.sources import list_source, read_schema
    from mlops_ray.data.stats import reference_statistics
    from mlops_ray.data.validate import resolve_spec
    from mlops_ray.ray_runtime import ensure_ray

    cfg = build_config(Path(args.data_dir))
    d = cfg.data
    src = list_source(cfg.source(), d.format)
    spec = resolve_spec(read_schema(src, d.id_column), d)
    out: dict = {"data_dir": args.data_dir, "files": len(src.files), "bytes": src.total_bytes,
                 "batch_size": d.batch_size, "experiments": {}}
    tmp = Path(tempfile.mkdtemp(prefix="ray_probe_", dir="/tmp"))

    t = time.perf_counter()
    ensure_ray(num_cpus=2)
    out["ray_init_s"] = time.perf_counter() - t

    @ray.remote(num_cpus=1)
    def _ping():
        return os.getpid()

    ray.get([_ping.remote() for _ in range(2)])
    time.sleep(1)

    def ctx_for(name):
        staging = tmp / name
        staging.mkdir(parents=True, exist_ok=True)
        return BatchContext(spec, d.split.salt, tuple(d.split.fractions.items()), str(staging), d.quantile_sample_rows)

    def merge_all(results):
        t = time.perf_counter()
        total = None
        for r in results:
            total = r if total is None else total.merge(r)
        merge_s = time.perf_counter() - t
        t = time.perf_counter()
        dup = _duplicate_problem(total, src, spec, d.split.salt)
        dup_s = time.perf_counter() - t
        t = time.perf_counter()
        pre = Preprocessor.fit(total.train, spec.categorical, d.preprocessing.numeric, d.preprocessing.categorical)
        reference_statistics(total.train, spec.categorical, d.reference_bins)
        fit_s = time.perf_counter() - t
        return total, {"merge_s": merge_s, "duplicate_check_s": dup_s, "fit_and_reference_s": fit_s,
                       "problems": dup, "rows": total.rows, "fingerprint": total.fingerprint.hexdigest(),
                       "split_rows": total.split_rows, "n_results": len(results)}, pre

    ex = out["experiments"]
    pre = None
    for name in args.experiments:
        print(f"--- {name}", flush=True)
        t = time.perf_counter()
        if name in ("read", "read16"):
            kw = {"override_num_blocks": len(src.files)} if name == "read16" else {}
            ds = ray.data.read_parquet(list(src.files), **kw).materialize()
            res = {"seconds": time.perf_counter() - t, "num_blocks": ds.num_blocks(), "rows": ds.count()}
            st = ds.stats()
            res.update(stats_summary(st))
            res["stats_text"] = st
            del ds
        elif name == "prepare":
            ds = ray_io.read_source(src, spec.id_column)
            mapped = ds.map_batches(ray_io._pickled(process_batch), batch_format="pyarrow", batch_size=d.batch_size,
                                    fn_kwargs={"ctx": ctx_for(name)}, zero_copy_batch=True)
            import pickle

            results, first_at, arrivals = [], None, []
            for block in mapped.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
                for blob in block.column("result").to_pylist():
                    results.append(pickle.loads(blob))
                    arrivals.append(round(time.perf_counter() - t, 2))
            pipeline_s = time.perf_counter() - t
            st = mapped.stats()
            total, info, pre = merge_all(results)
            res = {"pipeline_s": pipeline_s, "result_arrivals_s": arrivals,
                   "rows_per_batch": [r.rows for r in results], **info, **stats_summary(st), "stats_text": st}
        elif name == "local":
            results = list(run_local(src, ctx_for(name), d.batch_size))
            pipeline_s = time.perf_counter() - t
            total, info, pre = merge_all(results)
            res = {"pipeline_s": pipeline_s, **info}
        elif name == "tasks":
            ctx = ctx_for(name)

            @ray.remote(num_cpus=1)
            def per_file(path, ctx, batch_size):
                f = pq.ParquetFile(path)
                outs = []
                for rb in f.iter_batches(batch_size=batch_size):
                    import pyarrow as pa

                    outs.append(process_batch(pa.Table.from_batches([rb]), ctx))
                return outs

            refs = [per_file.remote(f, ctx, d.batch_size) for f in src.files]
            results = [r for rs in ray.get(refs) for r in rs]
            pipeline_s = time.perf_counter() - t
            total, info, pre = merge_all(results)
            res = {"pipeline_s": pipeline_s, **info}
        elif name == "transform":
            # transform the splits written by the 'prepare' experiment (needs it to run first)
            staging = tmp / "prepare"
            if pre is None or not staging.exists():
                print("transform needs 'prepare' first", flush=True)
                continue

            class _Snap:  # the two things transform_dataset reads from a Snapshot
                manifest = {"spec": {"label_column": spec.label_column, "id_column": spec.id_column}}

                @staticmethod
                def split_files(split):
                    return sorted(str(p) for p in (staging / "splits" / split).glob("*.parquet"))

            res = {"per_split": {}}
            for split in d.split.fractions:
                t1 = time.perf_counter()
                tds = ray_io.transform_dataset(_Snap, split, pre)
                tds.write_parquet(str(tmp / "transformed" / split))
                st = tds.stats()
                res["per_split"][split] = {"seconds": time.perf_counter() - t1, "files_in": len(_Snap.split_files(split)),
                                           **stats_summary(st), "stats_text": st}
            res["seconds"] = time.perf_counter() - t
        else:
            raise SystemExit(f"unknown experiment {name}")
        res.setdefault("seconds", time.perf_counter() - t)
        ex[name] = res
        brief = {k: v for k, v in res.items() if k not in ("stats_text", "per_split", "result_arrivals_s")}
        print(json.dumps(brief, default=str)[:1500], flush=True)
        if name == "transform":
            for s, v in res["per_split"].items():
                print(s, json.dumps({k: x for k, x in v.items() if k != "stats_text"})[:600], flush=True)

    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
