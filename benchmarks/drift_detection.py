#!/usr/bin/env python
"""Drift monitor, offline: false alarms on in-distribution traffic and detection delay under drift.

    .venv/bin/python benchmarks/drift_detection.py [--windows 50] [--seeds 3] [--out FILE]

Everything on the judging path is the live monitor's own code, run without Ray:

* reference: the quickstart config (``mlops_ray/resources/quickstart.yaml``: 20,000 generated rows,
  seed 0, 80/10/10 hash split, 10 reference bins) goes through ``generate_dataset`` and
  ``prepare_snapshot(engine="local")`` in a temporary workspace; the reference is
  ``snapshot.reference_stats()`` plus ``task``, as ``train/run.py`` ships it with every model
  (the model-prediction histogram is left out: it needs a trained model, and a window's status is
  the worst *feature* status, so it never changes the status measured here);
* traffic: fresh rows from the same generator (``generate_dataset``, other seeds, ``drift=D``), cut
  into pushes of ``push_every_rows`` rows, each counted with ``DriftReference.count`` (what
  ``DriftRecorder.flush`` does on a replica) and merged with ``WindowStore.add`` (what the monitor
  actor does); a window closes at the first push that brings it to ``window_rows`` rows and is
  judged by ``evaluate`` (PSI, chance threshold, verdict) with ``limits_of(DriftConfig())``.
  Time never closes a window here (traffic is assumed to fill ``window_rows`` within ``window_s``).

Measured:

1. false alarms: ``--windows`` closed windows of in-distribution rows (seed ``--fa-seed``): windows
   with status alert / warn, the PSI distribution over all feature-window pairs and of each window's
   largest PSI, the chance thresholds, and how often the fixed band alone (PSI >= psi_warn) would
   have fired without the chance threshold;
2. detection delay: for each ``--drifts`` level and seeds 1..``--seeds``, rows of traffic until the
   first window closes in "alert" (and in "warn" or worse), with the features that alerted; a level
   that is not detected within ``--max-windows`` windows is reported as such. The generator's drift
   is a deterministic transform of the same draws, so one seed at two drift levels is the same
   customers, shifted by different amounts.

Detection delay is quantised by the window: the earliest possible verdict is at the first window
close, ``ceil(window_rows / push_every_rows) * push_every_rows`` rows (1024 with the defaults).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = "benchmarks/results/drift_detection.json"
DEFAULT_DRIFTS = (0.3, 0.6, 1.0)
VERSION = "1"  # the model version the windows are kept under (any string)


# ================================================================================= reference
def build_reference(workdir: Path, source_rows: int | None = None) -> dict[str, Any]:
    """The reference a model trained on the quickstart data ships: generate, prepare, read back.

    Returns ``{"stats": reference_stats (+ task), "snapshot_id", "source_rows", "seed", "seconds"}``.
    """
    from mlops_ray.config import load_config
    from mlops_ray.data.generate import generate_dataset
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.workspace import get_workspace

    t0 = time.perf_counter()
    cfg = load_config(Path(str(resources.files("mlops_ray") / "resources" / "quickstart.yaml")))
    gen = cfg.data.generate
    rows = source_rows or gen.rows
    ws = get_workspace(workdir / "workspace")
    src = Path(cfg.source(ws.root))
    generate_dataset(src, rows, shards=min(gen.shards, rows), seed=gen.seed, drift=gen.drift)
    snap = prepare_snapshot(cfg.data, ws, source=str(src), engine="local").snapshot
    stats = {**snap.reference_stats(), "task": cfg.data.task}
    return {
        "stats": stats,
        "snapshot_id": snap.id,
        "source_rows": rows,
        "seed": gen.seed,
        "drift": gen.drift,
        "reference_bins": cfg.data.reference_bins,
        "seconds": time.perf_counter() - t0,
    }


def traffic(workdir: Path, rows: int, *, seed: int, drift: float):
    """``rows`` fresh rows of the generator (seed, drift), as a pyarrow Table."""
    import pyarrow.parquet as pq

    from mlops_ray.data.generate import generate_dataset

    out = workdir / "traffic" / f"seed{seed}-drift{drift:g}-rows{rows}"
    if not out.exists():
        generate_dataset(out, rows, shards=1, seed=seed, drift=drift)
    return pq.read_table(out)


# ================================================================================= streaming
def stream_windows(stats: dict, table, drift_cfg, *, max_windows: int, stop_at_alert: bool = False) -> list[dict]:
    """Push ``table`` in ``push_every_rows`` slices through the live counting + window code.

    Returns one record per closed window: ``{"window", "rows_seen", "status", "features": [...]}``
    with per feature ``psi``, ``chance_threshold``, ``status``, ``fixed_status``.
    """
    from mlops_ray.drift.reference import DriftReference, limits_of
    from mlops_ray.drift.windows import WindowStore

    reference = DriftReference.from_stats(stats, stats.get("task"))  # what a replica counts with
    store = WindowStore(
        "drift-bench",
        window_rows=drift_cfg.window_rows,
        window_s=drift_cfg.window_s,
        keep_windows=drift_cfg.keep_windows,
        limits=limits_of(drift_cfg),
    )
    store.register(VERSION, stats, now=0.0)
    push = drift_cfg.push_every_rows
    out: list[dict] = []
    for i, lo in enumerate(range(0, table.num_rows - push + 1, push)):
        batch = table.slice(lo, push)
        counts = reference.count(batch)  # no scores: no prediction histogram (not part of the status)
        for ev in store.add(VERSION, counts, batch.num_rows, now=float(i) * 1e-3):
            out.append(
                {
                    "window": ev["window"]["index"],
                    "rows": ev["rows"],
                    "rows_seen": store.rows_seen(VERSION),
                    "status": ev["status"],
                    "features": [
                        {
                            "feature": f["feature"],
                            "psi": f["psi"],
                            "chance_threshold": f["chance_threshold"],
                            "status": f["status"],
                            "fixed_status": f["fixed_status"],
                            "above_chance": f["above_chance"],
                        }
                        for f in ev["features"]
                    ],
                }
            )
            if len(out) >= max_windows or (stop_at_alert and ev["status"] == "alert"):
                return out
    return out


def rows_for(drift_cfg, windows: int) -> int:
    """Rows that close ``windows`` windows when every push has ``push_every_rows`` rows."""
    push = drift_cfg.push_every_rows
    per_window = math.ceil(drift_cfg.window_rows / push) * push
    return windows * per_window


def _pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# ================================================================================= 1. false alarms
def false_alarms(stats: dict, workdir: Path, drift_cfg, *, windows: int = 50, seed: int = 1) -> dict[str, Any]:
    """Stream in-distribution rows until ``windows`` windows closed; summarise their verdicts."""
    table = traffic(workdir, rows_for(drift_cfg, windows), seed=seed, drift=0.0)
    wins = stream_windows(stats, table, drift_cfg, max_windows=windows)
    pairs = [f for w in wins for f in w["features"]]
    psis = [f["psi"] for f in pairs]
    win_max = [max(f["psi"] for f in w["features"]) for w in wins]
    per_feature: dict[str, dict] = {}
    for name in sorted({f["feature"] for f in pairs}):
        fs = [f for f in pairs if f["feature"] == name]
        v = [f["psi"] for f in fs]
        th = [f["chance_threshold"] for f in fs]
        per_feature[name] = {
            "psi_median": _pct(v, 50),
            "psi_max": max(v),
            "chance_threshold_min": min(th),
            "chance_threshold_max": max(th),
            "fixed_band_warn_or_alert": sum(f["fixed_status"] != "ok" for f in fs),
            "above_chance": sum(f["above_chance"] for f in fs),
            "warn": sum(f["status"] == "warn" for f in fs),
            "alert": sum(f["status"] == "alert" for f in fs),
        }
    return {
        "seed": seed,
        "windows": len(wins),
        "rows": sum(w["rows"] for w in wins),
        "window_rows": sorted({w["rows"] for w in wins}),
        "alerts": sum(w["status"] == "alert" for w in wins),
        "warns": sum(w["status"] == "warn" for w in wins),
        "statuses": [w["status"] for w in wins],
        "feature_windows": len(pairs),
        "psi_all": {"max": max(psis), "p99": _pct(psis, 99), "p95": _pct(psis, 95), "median": _pct(psis, 50)},
        "psi_window_max": {
            "max": max(win_max),
            "p99": _pct(win_max, 99),
            "p95": _pct(win_max, 95),
            "median": _pct(win_max, 50),
        },
        "fixed_band_hits": {
            "warn_or_alert": sum(f["fixed_status"] != "ok" for f in pairs),
            "alert": sum(f["fixed_status"] == "alert" for f in pairs),
        },
        "above_chance": {
            "observed": sum(f["above_chance"] for f in pairs),
            # the chance threshold's definition: P(PSI > threshold | no drift) = alpha / n_features
            "expected": len(pairs) * drift_cfg.alpha / max(len(per_feature), 1),
        },
        "per_feature": per_feature,
    }


# ================================================================================= 2. detection delay
def first_detection(wins: list[dict], statuses: tuple[str, ...]) -> dict | None:
    for w in wins:
        if w["status"] in statuses:
            hit = [f for f in w["features"] if f["status"] in statuses]
            return {
                "window": w["window"],
                "rows": w["rows_seen"],
                "features": {f["feature"]: round(f["psi"], 4) for f in hit},
                "feature_status": {f["feature"]: f["status"] for f in hit},
            }
    return None


def _median_range(values: list[int | None]) -> dict[str, Any]:
    """Median and range of detection rows; an undetected run counts as +inf (never hidden)."""
    finite = [v for v in values if v is not None]
    key = [v if v is not None else math.inf for v in values]
    med = statistics.median(key) if key else math.inf
    return {
        "detected": len(finite),
        "runs": len(values),
        "median": None if math.isinf(med) else med,
        "min": min(finite) if finite else None,
        "max": max(key) if key and not math.isinf(max(key)) else None,  # None: some run never detected
    }


def detection_delay(
    stats: dict,
    workdir: Path,
    drift_cfg,
    *,
    drifts=DEFAULT_DRIFTS,
    seeds=(1, 2, 3),
    max_windows: int = 20,
) -> dict[str, Any]:
    """Rows of drifted traffic until the first alert (and warn) window, per drift level and seed."""
    levels = []
    for d in drifts:
        runs = []
        for s in seeds:
            table = traffic(workdir, rows_for(drift_cfg, max_windows), seed=s, drift=d)
            wins = stream_windows(stats, table, drift_cfg, max_windows=max_windows, stop_at_alert=True)
            alert = first_detection(wins, ("alert",))
            warn = first_detection(wins, ("warn", "alert"))
            runs.append(
                {
                    "seed": s,
                    "windows_streamed": len(wins),
                    "rows_streamed": wins[-1]["rows_seen"] if wins else 0,
                    "first_alert": alert,
                    "first_warn": warn,
                    "first_window_top_psi": (
                        {f["feature"]: round(f["psi"], 4) for f in wins[0]["features"][:3]} if wins else {}
                    ),
                }
            )
        levels.append(
            {
                "drift": d,
                "runs": runs,
                "alert_rows": _median_range([r["first_alert"] and r["first_alert"]["rows"] for r in runs]),
                "warn_rows": _median_range([r["first_warn"] and r["first_warn"]["rows"] for r in runs]),
                "never_alerted_within_rows": (
                    rows_for(drift_cfg, max_windows) if any(r["first_alert"] is None for r in runs) else None
                ),
            }
        )
    return {
        "max_windows": max_windows,
        "max_rows": rows_for(drift_cfg, max_windows),
        "seeds": list(seeds),
        "levels": levels,
    }


# ================================================================================= reporting
def _machine() -> dict[str, Any]:
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    import pyarrow
    import scipy

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "commit": commit,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "scipy": scipy.__version__,
    }


def _fmt_rows(r: dict) -> str:
    if r["median"] is None:
        med = "never"
    else:
        med = f"{r['median']:g}"
    lo = "-" if r["min"] is None else f"{r['min']}"
    hi = "never" if r["max"] is None else f"{r['max']}"
    return f"{med:>7} [{lo}..{hi}] {r['detected']}/{r['runs']}"


def print_report(settings: dict, ref: dict, fa: dict, dd: dict) -> None:
    p = print
    p(
        f"reference: quickstart data, {ref['source_rows']} rows seed {ref['seed']} -> snapshot "
        f"{ref['snapshot_id']}, train rows {ref['train_rows']} ({ref['seconds']:.2f}s)"
    )
    dc = settings["drift_config"]
    p(
        f"monitor: window_rows {dc['window_rows']}, push_every_rows {dc['push_every_rows']}, min_rows "
        f"{dc['min_rows']}, psi_warn {dc['psi_warn']}, psi_alert {dc['psi_alert']}, alpha {dc['alpha']} "
        f"(Bonferroni over {settings['features']} features)"
    )
    p(f"\n1. false alarms: {fa['windows']} windows of in-distribution rows (seed {fa['seed']}, {fa['rows']} rows)")
    p(f"   alerts {fa['alerts']}   warns {fa['warns']}   (window sizes {fa['window_rows']})")
    a, m = fa["psi_all"], fa["psi_window_max"]
    p(f"   {'PSI':<28} {'max':>8} {'p99':>8} {'p95':>8} {'median':>8}")
    for label, q in (("all feature-window pairs", a), ("per-window max over features", m)):
        p(f"   {label:<28} {q['max']:>8.4f} {q['p99']:>8.4f} {q['p95']:>8.4f} {q['median']:>8.4f}")
    fb = fa["fixed_band_hits"]
    p(
        f"   feature-windows with PSI >= psi_warn (fixed band alone): {fb['warn_or_alert']}/{fa['feature_windows']}"
        f" (>= psi_alert: {fb['alert']}); of them above the chance threshold too (status warn/alert): "
        f"{sum(v['warn'] + v['alert'] for v in fa['per_feature'].values())}"
    )
    ac = fa["above_chance"]
    p(
        f"   feature-windows above the chance threshold: {ac['observed']} (its definition expects "
        f"{ac['expected']:.2f}: alpha / {settings['features']} per feature-window)"
    )
    p(
        f"   {'feature':<18} {'chance thr':>10} {'PSI median':>10} {'PSI max':>8} {'>=warn':>7} {'>chance':>7} "
        f"{'warn':>5} {'alert':>5}"
    )
    for name, v in sorted(fa["per_feature"].items(), key=lambda kv: -kv[1]["psi_max"]):
        thr = v["chance_threshold_min"]
        thr_s = (
            f"{thr:.4f}" if v["chance_threshold_max"] - thr < 1e-12 else f"{thr:.3f}-{v['chance_threshold_max']:.3f}"
        )
        p(
            f"   {name:<18} {thr_s:>10} {v['psi_median']:>10.4f} {v['psi_max']:>8.4f} "
            f"{v['fixed_band_warn_or_alert']:>7} {v['above_chance']:>7} {v['warn']:>5} {v['alert']:>5}"
        )

    p(
        f"\n2. detection delay: rows of drifted traffic until the first window closes in alert / warn "
        f"(seeds {dd['seeds']}, at most {dd['max_windows']} windows = {dd['max_rows']} rows; "
        f"median [min..max] detected/runs)"
    )
    p(f"   {'drift':>5}  {'rows to alert':<28} {'rows to warn':<28} alerted features (PSI) at first alert, per seed")
    for lv in dd["levels"]:
        feats = []
        for r in lv["runs"]:
            fa_ = r["first_alert"]
            if fa_ is None:
                feats.append(f"s{r['seed']}: none")
            else:
                top = sorted(fa_["features"].items(), key=lambda kv: -kv[1])
                feats.append(f"s{r['seed']}: " + ", ".join(f"{k} {v:.3f}" for k, v in top))
        alert_s, warn_s = _fmt_rows(lv["alert_rows"]), _fmt_rows(lv["warn_rows"])
        p(f"   {lv['drift']:>5g}  {alert_s:<28} {warn_s:<28} {'; '.join(feats)}")
        if lv["never_alerted_within_rows"] is not None:
            missed = [r["seed"] for r in lv["runs"] if r["first_alert"] is None]
            tops = {r["seed"]: r["first_window_top_psi"] for r in lv["runs"] if r["first_alert"] is None}
            p(
                f"          NOT DETECTED (alert) within {lv['never_alerted_within_rows']} rows for seeds {missed}; "
                f"first-window top PSI: {tops}"
            )


def run(
    *,
    windows: int = 50,
    seeds: int = 3,
    drifts=DEFAULT_DRIFTS,
    max_windows: int = 20,
    fa_seed: int = 1,
    source_rows: int | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """The whole benchmark; returns the result document (without printing)."""
    from mlops_ray.config import DriftConfig

    t0 = time.perf_counter()
    drift_cfg = DriftConfig()
    own = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="mlops-bench-drift-") if own else None
    wd = Path(tmp.name) if tmp else Path(workdir)
    try:
        ref = build_reference(wd, source_rows)
        fa = false_alarms(ref["stats"], wd, drift_cfg, windows=windows, seed=fa_seed)
        dd = detection_delay(
            ref["stats"], wd, drift_cfg, drifts=tuple(drifts), seeds=tuple(range(1, seeds + 1)), max_windows=max_windows
        )
    finally:
        if tmp:
            tmp.cleanup()
    settings = {
        "windows": windows,
        "seeds": seeds,
        "drifts": list(drifts),
        "max_windows": max_windows,
        "false_alarm_seed": fa_seed,
        "features": len(ref["stats"]["numeric"]) + len(ref["stats"]["categorical"]),
        "drift_config": drift_cfg.model_dump(
            include={"window_rows", "window_s", "min_rows", "push_every_rows", "psi_warn", "psi_alert", "alpha"}
        ),
        "earliest_verdict_rows": rows_for(drift_cfg, 1),
    }
    st = ref["stats"]
    reference = {k: v for k, v in ref.items() if k != "stats"}
    reference["train_rows"] = st["rows"]
    reference["bins"] = {
        **{n: len(e["proportions"]) for n, e in st["numeric"].items()},
        **{n: len(e["proportions"]) for n, e in st["categorical"].items()},
    }
    return {
        "settings": settings,
        "reference": reference,
        "false_alarms": fa,
        "detection_delay": dd,
        "compute_s": time.perf_counter() - t0,
    }


def main(argv=None) -> int:
    t0 = time.perf_counter()
    from mlops_ray.drift.windows import json_safe

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=50, help="in-distribution windows for the false-alarm count")
    ap.add_argument("--seeds", type=int, default=3, help="drifted streams per level (seeds 1..N)")
    ap.add_argument("--drifts", type=float, nargs="+", default=list(DEFAULT_DRIFTS))
    ap.add_argument("--max-windows", type=int, default=20, help="give up on a drifted stream after this many windows")
    ap.add_argument("--fa-seed", type=int, default=1, help="generator seed of the in-distribution stream (train: 0)")
    ap.add_argument(
        "--source-rows", type=int, default=None, help="rows generated for the reference (quickstart: 20000)"
    )
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.fa_seed == 0:
        ap.error("--fa-seed 0 is the training data's seed; pick another")

    doc = run(
        windows=args.windows,
        seeds=args.seeds,
        drifts=args.drifts,
        max_windows=args.max_windows,
        fa_seed=args.fa_seed,
        source_rows=args.source_rows,
    )
    print_report(doc["settings"], doc["reference"], doc["false_alarms"], doc["detection_delay"])
    wall = time.perf_counter() - t0
    doc = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": _machine(), **doc, "wall_s": wall}
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(doc), indent=1, default=str, allow_nan=False) + "\n")
    print(f"\nwall {wall:.2f}s (cpus {os.cpu_count()}, commit {doc['machine']['commit']}); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
