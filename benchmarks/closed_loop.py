"""Closed-loop figures on the quickstart data: drift-to-deploy lead time and pipeline caching.

    .venv/bin/python benchmarks/closed_loop.py [--runs 3] [--out benchmarks/results/closed_loop.json]

Each run uses a fresh workspace with the bundled quickstart config (20,000 sample rows, tuning
on): one ``pipeline run`` (timed), an identical second ``pipeline run`` (timed: every step but
``record`` cached), then the service and :func:`mlops_ray.demo.loop.closed_loop`: in-distribution
traffic, 6,000 new rows with ``--drift 1.0`` landing in the source, drifted traffic, the watcher
firing on drift, retraining, the gate and the switch. Lead time = first drifted request -> first
response from the promoted version. Every request's status is checked. Local Ray on this
machine, 127.0.0.1 only, bounded (``closed_loop``'s timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(i: int) -> dict:
    import yaml

    from mlops_ray.config import config_from_dict
    from mlops_ray.context import Context
    from mlops_ray.demo.loop import closed_loop
    from mlops_ray.pipeline.run import run_pipeline
    from mlops_ray.pipeline.stages import ensure_sample_data
    from mlops_ray.ray_runtime import free_ports
    from mlops_ray.serve.runner import start_service, stop_service

    home = Path(tempfile.mkdtemp(prefix=f"mlops-loop-{i}-"))
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw["serve"]["port"] = free_ports(1)[0]
    cfg = config_from_dict(raw, base_dir=ROOT / "examples")
    ctx = Context.create(cfg, workspace=home)
    ensure_sample_data(ctx, cfg)
    first = run_pipeline(ctx, cfg, reason="benchmark: first run")
    second = run_pipeline(ctx, cfg, reason="benchmark: identical rerun")
    assert first.status == second.status == "succeeded", (first.error, second.error)
    start_service(ctx, cfg)
    try:
        loop = closed_loop(ctx, cfg, seed=200 + i, echo=lambda m: None)
    finally:
        stop_service()
    run = loop.runs[0] if loop.runs else {}
    return {
        "first_run_s": first.seconds,
        "cached_rerun_s": second.seconds,
        "rerun_ratio": second.seconds / first.seconds,
        "cached_steps": sum(s.status == "cached" for s in second.steps),
        "lead_time_s": loop.lead_time_s,
        "requests": loop.traffic.sent,
        "failed": loop.traffic.failed,
        "versions": loop.traffic.versions,
        "drift_rows_until_run": loop.drift_rows_until_trigger,
        "run_trigger": run.get("trigger"),
        "decision": run.get("decision"),
        "retrain_run_s": run.get("seconds"),
        "run_decisions": [d["trigger"] for d in loop.decisions if d["action"] == "run"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "closed_loop.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("MLOPS_RAY_PROGRESS", "0")
    from mlops_ray.ray_runtime import ensure_ray

    ensure_ray(serving=True)
    t0 = time.perf_counter()
    results = []
    for i in range(args.runs):
        r = one_run(i)
        results.append(r)
        lead = f"{r['lead_time_s']:.1f}s" if r["lead_time_s"] is not None else "n/a"
        print(
            f"run {i + 1}: first pipeline run {r['first_run_s']:.1f}s, identical rerun {r['cached_rerun_s']:.2f}s "
            f"({r['rerun_ratio']:.1%}, {r['cached_steps']} steps cached); loop: {r['run_trigger']} run "
            f"{r['decision']} in {r['retrain_run_s'] or 0:.1f}s, lead time {lead}, {r['requests']} requests, "
            f"{r['failed']} failed, drifted rows until the run {r['drift_rows_until_run']}",
            flush=True,
        )
    leads = [r["lead_time_s"] for r in results if r["lead_time_s"] is not None]
    ratios = [r["rerun_ratio"] for r in results]
    summary = {
        "lead_time_median_s": statistics.median(leads) if leads else None,
        "lead_time_range_s": [min(leads), max(leads)] if leads else None,
        "promoted_runs": len(leads),
        "failed_requests": sum(r["failed"] for r in results),
        "rerun_ratio_median": statistics.median(ratios),
        "first_run_median_s": statistics.median(r["first_run_s"] for r in results),
        "wall_s": time.perf_counter() - t0,
    }
    checks = [
        ("median drift-to-deploy lead time < 300 s", bool(leads) and summary["lead_time_median_s"] < 300),
        ("zero failed requests", summary["failed_requests"] == 0),
        ("identical rerun < 10% of the first run", summary["rerun_ratio_median"] < 0.10),
    ]
    print(json.dumps(summary, indent=1))
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    out = {
        "command": " ".join([sys.executable, *sys.argv]),
        "results": results,
        "summary": summary,
        "checks": [{"check": n, "pass": ok} for n, ok in checks],
        "commit": commit.strip(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
