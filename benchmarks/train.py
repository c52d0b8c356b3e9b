"""Training benchmark: mlops-ray's execution modes vs plain `xgboost.train`, same data, same run.

    .venv/bin/python benchmarks/train.py --rows 1000000 4000000

For each size: generate data (not timed), prepare a snapshot (not timed), then time
the same job -- read the train/valid splits, preprocess, build DMatrix, 100 rounds of
depth-6 `hist` boosting -- as (a) plain single-process xgboost with 2 threads and
(b) `fit_xgboost` under each execution plan: Ray Train v2 local mode (the default on
one node), 1 worker x 2 CPUs, 2 workers x 1 CPU. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cfg(src: str, rounds: int):
    from mlops_ray.config import config_from_dict
    from mlops_ray.data.generate import FEATURE_SPEC

    return config_from_dict(
        {
            "data": {
                "name": "bench",
                "source": src,
                "id_column": FEATURE_SPEC["id_column"],
                "label_column": FEATURE_SPEC["label_column"],
                "timestamp_column": FEATURE_SPEC["timestamp_column"],
                "numeric_features": FEATURE_SPEC["numeric"],
                "categorical_features": FEATURE_SPEC["categorical"],
                "preprocessing": {"categorical": {"encoding": "ordinal"}},
            },
            "model": {
                "num_boost_round": rounds,
                "early_stopping_rounds": None,
                "seed": 0,
                "params": {"max_depth": 6, "eta": 0.1},
            },
        }
    )


def plain_xgboost(snapshot, rounds: int, nthread: int = 2) -> dict:
    """What a user would write without Ray: load, preprocess, DMatrix, xgboost.train."""
    import xgboost as xgb

    from mlops_ray.data.splits import load_split
    from mlops_ray.model.metrics import compute_metrics

    t0 = time.perf_counter()
    pre = snapshot.preprocessor()
    train = load_split(snapshot, "train", pre)
    valid = load_split(snapshot, "valid", pre)
    dtrain = xgb.DMatrix(train.x, label=train.y, nthread=nthread)
    dvalid = xgb.DMatrix(valid.x, label=valid.y, nthread=nthread)
    t1 = time.perf_counter()
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": 6,
        "eta": 0.1,
        "seed": 0,
        "nthread": nthread,
        "eval_metric": ["logloss", "auc"],
    }
    booster = xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "valid")], verbose_eval=False)
    t2 = time.perf_counter()
    auc = compute_metrics("binary", valid.y, booster.inplace_predict(valid.x))["auc"]
    return {"wall_s": t2 - t0, "train_only_s": t2 - t1, "auc": auc}


def mlops_mode(cfg: PipelineConfig, snapshot, plan, workdir: Path, rounds: int) -> dict:
    from mlops_ray.data.splits import load_split
    from mlops_ray.model.metrics import compute_metrics
    from mlops_ray.train.xgboost_trainer import fit_xgboost

    out = workdir / f"run-{plan.mode}-{plan.num_workers}-{time.time_ns()}"
    t0 = time.perf_counter()
    res = fit_xgboost(
        cfg.model, snapshot, plan, out, run_name=out.name, storage=workdir / "ray", checkpoint_every=rounds
    )
    wall = time.perf_counter() - t0
    valid = load_split(snapshot, "valid", snapshot.preprocessor())
    auc = compute_metrics("binary", valid.y, res.booster.inplace_predict(valid.x))["auc"]
    return {"wall_s": wall, "train_only_s": res.meta["train_seconds"], "auc": auc}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="repeats per cell (best wall is reported)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLOPS_RAY_PROGRESS", "0")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mlops-bench-train-"))
    os.environ["MLOPS_RAY_HOME"] = str(workdir / "home")

    from mlops_ray.data.generate import generate_dataset
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.ray_runtime import ensure_ray
    from mlops_ray.train.execution import choose_execution

    t = time.perf_counter()
    ensure_ray(num_cpus=2)
    ray_init_s = time.perf_counter() - t
    modes = [
        ("ray-train local mode (default, 1 node)", choose_execution([2.0])),
        ("ray-train 1 worker x 2 CPU", choose_execution([2.0], "distributed", 1, 2)),
        ("ray-train 2 workers x 1 CPU", choose_execution([2.0], "distributed", 2, 1)),
    ]
    results = []
    for rows in args.rows:
        src = workdir / f"src-{rows}"
        if not src.exists():
            generate_dataset(src, rows, shards=8, seed=0)
        cfg = _cfg(str(src), args.rounds)
        from mlops_ray.workspace import get_workspace

        snap = prepare_snapshot(cfg.data, get_workspace(), engine="local").snapshot
        plain = min((plain_xgboost(snap, args.rounds) for _ in range(args.repeat)), key=lambda r: r["wall_s"])
        results.append({"rows": rows, "path": "plain xgboost.train (2 threads)", **plain, "ratio": 1.0})
        for name, plan in modes:
            r = min(
                (mlops_mode(cfg, snap, plan, workdir, args.rounds) for _ in range(args.repeat)),
                key=lambda r: r["wall_s"],
            )
            results.append({"rows": rows, "path": name, **r, "ratio": r["wall_s"] / plain["wall_s"]})
            print(
                f"  {rows:>9} {name:<40} {r['wall_s']:7.2f}s auc={r['auc']:.4f} x{r['wall_s'] / plain['wall_s']:.2f}",
                flush=True,
            )

    print(f"\n{'rows':>9}  {'path':<40} {'wall s':>8} {'train s':>8} {'AUC':>7} {'x plain':>8}")
    for r in results:
        print(
            f"{r['rows']:>9}  {r['path']:<40} {r['wall_s']:>8.2f} {r['train_only_s']:>8.2f} {r['auc']:>7.4f} "
            f"{r['ratio']:>8.2f}"
        )
    checks = []
    for rows, limit in ((1_000_000, 1.15), (4_000_000, 1.05)):
        row = next((r for r in results if r["rows"] == rows and "default" in r["path"]), None)
        if row:
            checks.append((f"default mode at {rows} rows <= {limit}x plain", row["ratio"] <= limit, row["ratio"]))
    for r in results:
        if r["rows"] == 4_000_000 and "2 workers" in r["path"]:
            checks.append(("multi-worker path at 4M rows <= 1.4x plain", r["ratio"] <= 1.4, r["ratio"]))
    for name, ok, val in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {name} (measured {val:.2f}x)")
    import importlib.metadata as md

    out = {
        "command": " ".join([sys.executable, *sys.argv]),
        "ray_init_s": ray_init_s,
        "results": results,
        "checks": [{"check": n, "pass": ok, "value": v} for n, ok, v in checks],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **{p: md.version(p) for p in ("ray", "xgboost", "numpy")},
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
