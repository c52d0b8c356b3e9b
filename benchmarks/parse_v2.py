"""Request parsing + validation: `/predict` JSON records against Open Inference Protocol V2 columnar
tensors, the same rows, in one process (no Ray, no HTTP): what the service spends before preprocessing.

    .venv/bin/python benchmarks/parse_v2.py [--rows 1 100 1000]

Both bodies are parsed with orjson (as the service does) and validated against the sample data's
feature schema; the table printed gives bytes on the wire and microseconds per request.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import timeit

import orjson
import pandas as pd

from mlops_ray.data.generate import FEATURE_SPEC, generate_dataset
from mlops_ray.serve.schema import FeatureSchema, records_to_table
from mlops_ray.serve.v2 import parse_infer_request


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 100, 1000])
    args = ap.parse_args(argv)
    src = tempfile.mkdtemp()
    generate_dataset(src, max(args.rows), shards=1, seed=1)
    df = pd.read_parquet(src)
    num, cat = list(FEATURE_SPEC["numeric"]), list(FEATURE_SPEC["categorical"])
    schema = FeatureSchema(tuple(num), tuple(cat), (FEATURE_SPEC["id_column"],))
    print(f"machine: {platform.machine()}, {platform.python_version()}")
    print("| rows | records body (B) | V2 body (B) | records parse+validate (us) | V2 (us) | records / V2 |")
    print("|---|---|---|---|---|---|")
    for n in args.rows:
        recs = json.loads(df.head(n)[num + cat].to_json(orient="records"))
        body_r = orjson.dumps({"records": recs})
        inputs = [{"name": f, "shape": [n], "datatype": "FP64", "data": [r[f] for r in recs]} for f in num]
        inputs += [{"name": f, "shape": [n], "datatype": "BYTES", "data": [r[f] for r in recs]} for f in cat]
        body_v = orjson.dumps({"inputs": inputs})
        k = max(20, 20_000 // max(n, 1) // 5)
        t_r = min(timeit.repeat(lambda: records_to_table(orjson.loads(body_r)["records"], schema), number=k, repeat=5))
        t_v = min(timeit.repeat(lambda: parse_infer_request(orjson.loads(body_v), schema), number=k, repeat=5))
        t_r, t_v = t_r / k * 1e6, t_v / k * 1e6
        print(f"| {n} | {len(body_r):,} | {len(body_v):,} | {t_r:.1f} | {t_v:.1f} | {t_r / t_v:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
