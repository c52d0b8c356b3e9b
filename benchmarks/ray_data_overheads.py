#!/usr/bin/env python
"""Fixed per-execution costs of Ray Data on this machine (after ray.init + warm-up).

Times, in one fresh Ray session (``ensure_ray(num_cpus=2)``), tiny pipelines so that only
overheads remain: the first Ray Data execution (which starts Ray Data's internal actors), later
executions, and ``read_parquet`` of one small file with the V2 reader (ListFiles + FooterReader
actor pool per read) vs the V1 reader. Also counts the processes Ray Data leaves behind.

    .venv/bin/python benchmarks/ray_data_overheads.py --file /tmp/dp/data/rows1000000-shards16/part-00000.parquet
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--out", default="benchmarks/results/ray_data_overheads.json")
    args = ap.parse_args()
    import psutil
    import ray
    import ray.data

    from mlops_ray.ray_runtime import ensure_ray

    def nprocs():
        return len(psutil.Process().children(recursive=True))

    t = time.perf_counter()
    ensure_ray(num_cpus=2)
    res = {"ray_init_s": time.perf_counter() - t}

    @ray.remote(num_cpus=1)
    def _ping():
        return os.getpid()

    ray.get([_ping.remote() for _ in range(2)])
    time.sleep(2)
    res["processes_after_warmup"] = nprocs()
    ctx = ray.data.DataContext.get_current()

    def timed(name, fn):
        t = time.perf_counter()
        fn()
        res[name] = round(time.perf_counter() - t, 3)
        res[name + "__processes_after"] = nprocs()
        print(name, res[name], "s; processes", res[name + "__processes_after"], flush=True)

    rng = lambda: ray.data.range(1000).map_batches(lambda b: b).materialize()  # noqa: E731
    timed("range_map_1st", rng)
    timed("range_map_2nd", rng)
    timed("range_map_3rd", rng)
    rd = lambda: ray.data.read_parquet([args.file]).map_batches(lambda b: b, batch_format="pyarrow").materialize()  # noqa: E731
    ctx.use_datasource_v2 = True
    timed("read1file_v2_1st", rd)
    timed("read1file_v2_2nd", rd)
    timed("read1file_v2_3rd", rd)
    os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] = "1"
    timed("read1file_v2_1actor", rd)
    timed("read1file_v2_1actor_2nd", rd)
    del os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"]
    ctx.use_datasource_v2 = False
    timed("read1file_v1_1st", rd)
    timed("read1file_v1_2nd", rd)
    timed("read1file_v1_3rd", rd)
    ray.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
