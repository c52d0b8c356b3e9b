#!/usr/bin/env python
"""Benchmark: the data-preparation job with mlops-ray's Ray Data path vs plain pandas.

The job (same generated data, same hash rule, same fingerprint algorithm):

  validate -> hash split (train/valid/test) -> fingerprint -> fit preprocessing on train
  (median impute + standard scaling + top-K one-hot with __other__/__missing__) ->
  transform every split to float32 features -> write raw split Parquet + transformed Parquet.

Two implementations, each in its own fresh subprocess (so their memory never mixes):

  ray     ``prepare_snapshot(cfg.data, Workspace(fresh dir), engine="ray")`` (validation,
          split, fingerprint, fit; writes the raw splits) then, per split,
          ``write_transformed(snapshot, preprocessor, dir)`` (all splits, one Ray Data pass).
          Ray is started with ``ensure_ray(num_cpus=2)``; its start-up time is reported
          separately, the job wall excludes ``ray.init`` but includes Ray Data's first execution.
  pandas  a single-process pandas implementation written below, the way a user would write it.

Memory: a background thread samples every 0.1 s the sum of PSS (``memory_full_info().pss``,
RSS if unavailable) over the worker process and all its descendants (raylet, GCS, Ray workers
are descendants of the driver when the benchmark starts Ray locally). Reported: the absolute
peak and the peak above the idle baseline measured right before the job starts (Ray: after
``ray.init`` and a warm-up; pandas: after imports). Reading PSS makes the kernel walk a process's
page tables under its mmap lock, which stalls processes that are allocating (reading all ~25 Ray
processes every 0.1 s made the Ray path 1.6-3x slower), so each process's PSS is re-read at most
every 0.5 s and extrapolated in between by its RSS change (``--exact-pss`` turns that off); the
sampler's own cost is reported (``sampler_busy_fraction_of_job``).

Shared machine: before each run the parent waits for idle CPUs and no other Ray cluster; each
job reports the CPU used by processes outside its own tree (``interference``) and the run is
flagged when that exceeds 5% of the CPUs.

An earlier version of mlops-ray read sources with Ray Data's Parquet datasource; on this stack
it packed 16 shards into 1-3 read tasks, started footer-reader actors and a listing task per
execution, and ran this job in 22.9 s / 3.5 GB above idle at 5M rows (pandas: 18.7 s / 2.5 GB).
The current path (work units + map_batches, see mlops_ray/data/ray_io.py) is what this measures.

Usage::

    .venv/bin/python benchmarks/data_prep.py --rows 1000000 5000000
    .venv/bin/python benchmarks/data_prep.py --rows 200000 --workdir /tmp/dp --keep-workdir

Data generation (``mlops_ray.data.generate.generate_dataset``) is setup: cached in the workdir
and not timed. The temporary workdir is deleted at the end unless ``--workdir``/``--keep-workdir``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
DEFAULT_OUT = "benchmarks/results/data_prep.json"
MB = 1024 * 1024


# =============================================================================== memory sampling
class MemorySampler:
    """Background sampler of PSS summed over this process and all its descendants."""

    def __init__(
        self,
        interval: float = 0.1,
        nice: int = 0,
        exact_pss: bool = False,
        min_interval_s: float = 0.5,
        refresh_s: float = 2.0,
        rss_delta_mb: float = 2.0,
    ):
        self.interval = interval
        self.nice = nice
        self.exact = exact_pss
        self.min_interval_s = 0.0 if exact_pss else min_interval_s
        self.refresh_s = 0.0 if exact_pss else refresh_s
        self.rss_delta = rss_delta_mb * MB
        self._cache: dict = {}
        self._cpu_last: dict[int, float] = {}  # pid -> last seen user+system CPU seconds
        self.pss_reads = 0
        self.proc = psutil.Process()
        self.kind = "pss"
        self.timeline: list[tuple] = []  # (seconds since start, bytes, processes, {name: [count, bytes]})
        self.t0 = time.perf_counter()
        self.sample_seconds: list[float] = []
        self.thread_cpu_s = 0.0
        self.baseline_detail = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)

    def _pss(self, p: psutil.Process) -> int:
        """PSS of one process.

        Reading PSS (/proc/PID/smaps_rollup) makes the kernel walk the process's page tables under
        its mmap lock, which stalls a process that is busy allocating; reading ~25 Ray processes
        every 0.1 s slowed the Ray path ~3x in a first version of this benchmark. So PSS is re-read
        per process at most every ``min_interval_s`` (and at least every ``refresh_s``); in between
        it is extrapolated as ``last PSS + (RSS now - RSS at that read)`` (RSS from the cheap
        /proc/PID/statm), i.e. new memory is assumed private. ``--exact-pss`` re-reads every sample.
        """
        rss = p.memory_info().rss
        if self.kind != "pss":
            return rss
        now = time.perf_counter()
        c = self._cache.get(p.pid)
        if c is not None:
            age = now - c[2]
            moved = abs(rss - c[0]) > self.rss_delta
            if age < self.refresh_s and (not moved or age < self.min_interval_s):
                return max(0, c[1] + (rss - c[0]))
        try:
            pss = p.memory_full_info().pss
        except (psutil.AccessDenied, AttributeError):
            self.kind = "rss (pss unavailable)"
            return rss
        self._cache[p.pid] = (rss, pss, now)
        self.pss_reads += 1
        return pss

    def measure(self, detail: bool = False):
        """(bytes, number of processes[, {process name: [count, bytes]}]) right now."""
        try:
            procs = [self.proc] + self.proc.children(recursive=True)
        except psutil.Error:
            procs = [self.proc]
        total = 0
        by_name: dict[str, list] = {}
        for p in procs:
            try:
                with p.oneshot():  # one read of /proc/PID/stat for cpu_times and name
                    ct = p.cpu_times()
                    self._cpu_last[p.pid] = ct.user + ct.system
                    v = self._pss(p)
                    total += v
                    if detail:
                        name = "benchmark driver" if p.pid == self.proc.pid else p.name()
                        e = by_name.setdefault(name, [0, 0])
                        e[0] += 1
                        e[1] += v
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        return (total, len(procs), by_name) if detail else (total, len(procs))

    def tree_cpu_s(self) -> float:
        """CPU seconds used so far by this process and every descendant seen (dead ones: last sample)."""
        with self._lock:
            self.measure()
            return sum(self._cpu_last.values())

    def _run(self) -> None:
        if self.nice:
            try:  # Linux nice values are per thread: keep the sampler out of the measured work's way
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (OSError, AttributeError):
                pass
        while not self._stop.is_set():
            s = time.perf_counter()
            v, n, by_name = self.measure(detail=True)
            e = time.perf_counter()
            with self._lock:
                self.timeline.append((e - self.t0, v, n, by_name))
                self.sample_seconds.append(e - s)
            self._stop.wait(max(0.0, self.interval - (e - s)))
        self.thread_cpu_s = time.thread_time()

    def start(self) -> "MemorySampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def idle_baseline(self, seconds: float = 1.0) -> int:
        """Median of direct measurements over ``seconds`` (the process is idle meanwhile)."""
        vals = []
        end = time.perf_counter() + seconds
        while True:
            self.baseline_detail = self.measure(detail=True)
            vals.append(self.baseline_detail[0])
            if time.perf_counter() >= end:
                break
            time.sleep(0.1)
        return int(statistics.median(vals))

    def peak(self, t_from: float, t_to: float | None = None, none_if_empty: bool = False):
        """(peak bytes, at seconds, processes) over samples in [t_from, t_to]."""
        with self._lock:
            pts = [p for p in self.timeline if p[0] >= t_from and (t_to is None or p[0] <= t_to)]
        if not pts and none_if_empty:
            return None
        if not pts:
            v, n, by_name = self.measure(detail=True)
            return v, self.now(), n, by_name
        best = max(pts, key=lambda p: p[1])
        return best[1], best[0], best[2], best[3]

    def summary(self, t_from: float, t_to: float, baseline: int) -> dict:
        peak, at, nprocs, by_name = self.peak(t_from, t_to)
        _, n0, by_name0 = self.baseline_detail or (0, 0, {})
        with self._lock:
            pts = [p for p in self.timeline if t_from - 1 <= p[0] <= t_to + 1]
            cost = [c for p, c in zip(self.timeline, self.sample_seconds) if t_from <= p[0] <= t_to]
        # timeline at ~0.5 s resolution (max per bucket), relative to job start, in MB
        buckets: dict[int, tuple[float, int]] = {}
        for t, v, _, _ in pts:
            k = int((t - t_from) * 2)
            if k not in buckets or v > buckets[k][1]:
                buckets[k] = (t - t_from, v)
        return {
            "memory_metric": self.kind,
            "baseline_mb": baseline / MB,
            "peak_mb": peak / MB,
            "peak_above_idle_mb": (peak - baseline) / MB,
            "peak_at_s": at - t_from,
            "processes_at_peak": nprocs,
            "processes_before_job": n0,
            "mb_by_process_name_before_job": {k: [c, round(b / MB, 1)] for k, (c, b) in sorted(by_name0.items())},
            "mb_by_process_name_at_peak": {k: [c, round(b / MB, 1)] for k, (c, b) in sorted(by_name.items())},
            "samples": len(pts),
            "sample_cost_ms_mean": 1000 * statistics.fmean(cost) if cost else None,
            "sampler_busy_fraction_of_job": sum(cost) / (t_to - t_from) if t_to > t_from else None,
            "sampler_nice": self.nice,
            "pss_reads": {
                "exact_every_sample": self.exact,
                "min_interval_s": self.min_interval_s,
                "refresh_s": self.refresh_s,
                "rss_delta_mb": self.rss_delta / MB,
                "reads_total": self.pss_reads,
            },
            "timeline_mb": [[round(t, 2), round(v / MB, 1)] for t, v in sorted(buckets.values())],
        }


# =============================================================================== shared helpers
class Phases:
    """Durations and sampler-clock spans of the job's phases (for per-phase memory peaks)."""

    def __init__(self, clock):
        self.clock = clock
        self.durations: dict[str, float] = {}
        self.spans: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        s, c = time.perf_counter(), self.clock()
        try:
            yield
        finally:
            self.durations[name] = time.perf_counter() - s
            self.spans[name] = (c, self.clock())


def build_config(data_dir: Path):
    """PipelineConfig from the quickstart YAML's data section, source pointed at ``data_dir``."""
    import yaml

    from mlops_ray.config import config_from_dict

    raw = yaml.safe_load(QUICKSTART.read_text())
    data = dict(raw["data"])
    data["source"] = str(data_dir)
    data.pop("generate", None)
    return config_from_dict({"data": data}, base_dir=REPO, origin=f"{QUICKSTART} (data section)")


def parquet_rows(directory: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(directory.rglob("*.parquet")))


def dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


# =============================================================================== pandas worker
def pandas_job(data_dir: Path, job_dir: Path, cfg: PipelineConfig, ph: Phases) -> dict:
    """Plain single-process pandas implementation of the whole job."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from mlops_ray.data.fingerprint import fingerprint_table
    from mlops_ray.data.hashing import assign_splits

    d = cfg.data
    idc, label = d.id_column, d.label_column
    num_cols, cat_cols = list(d.numeric_features), list(d.categorical_features)
    fractions = dict(d.split.fractions)
    max_cats, min_freq = d.preprocessing.categorical.max_categories, d.preprocessing.categorical.min_frequency
    OTHER, MISSING = "__other__", "__missing__"

    with ph("read"):
        files = sorted(str(p) for p in data_dir.glob("*.parquet"))
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    with ph("validate"):
        problems = []
        if df[idc].isna().any():
            problems.append(f"null ids: {int(df[idc].isna().sum())}")
        dup = df[idc].duplicated()
        if dup.any():
            problems.append(f"duplicate ids: {int(dup.sum())}")
        if not df[label].isin([0, 1]).all():
            problems.append("labels outside {0, 1}")
        if np.isinf(df[num_cols].to_numpy(dtype=np.float64)).any():
            problems.append("infinite numeric values")
        if problems:
            raise ValueError("validation failed: " + "; ".join(problems))

    with ph("fingerprint"):
        digest = fingerprint_table(pa.Table.from_pandas(df, preserve_index=False))

    with ph("split"):
        codes = assign_splits(pa.array(df[idc]), d.split.salt, fractions)
        splits = {name: df[codes == k].reset_index(drop=True) for k, name in enumerate(fractions)}
        del df

    with ph("write_splits"):
        raw_dir, tr_dir = job_dir / "splits", job_dir / "transformed"
        for name, part in splits.items():
            (raw_dir / name).mkdir(parents=True, exist_ok=True)
            part.to_parquet(raw_dir / name / "part-0.parquet", index=False)

    with ph("fit"):  # on train only
        train = splits["train"]
        medians = train[num_cols].median()
        means = train[num_cols].mean()
        stds = train[num_cols].std().replace(0.0, 1.0).fillna(1.0)
        kept = {}
        for c in cat_cols:
            vc = train[c].value_counts()
            vc = vc[vc >= min_freq]
            order = sorted(vc.items(), key=lambda kv: (-kv[1], kv[0]))[:max_cats]
            kept[c] = [k for k, _ in order]

    def transform(part: pd.DataFrame) -> pd.DataFrame:
        x = ((part[num_cols].fillna(medians) - means) / stds).astype(np.float32)
        blocks = [x]
        for c, cats in kept.items():
            s = part[c]
            v = s.where(s.isin(cats) | s.isna(), OTHER).fillna(MISSING)
            dummies = pd.get_dummies(
                pd.Categorical(v, categories=[*cats, OTHER, MISSING]), prefix=c, prefix_sep="=", dtype=np.float32
            )
            dummies.index = part.index
            blocks.append(dummies)
        out = pd.concat(blocks, axis=1)
        out[label] = part[label]
        out[idc] = part[idc]
        return out

    n_features = None
    with ph("transform_write"):
        for name, part in splits.items():
            (tr_dir / name).mkdir(parents=True, exist_ok=True)
            out = transform(part)
            n_features = out.shape[1] - 2
            out.to_parquet(tr_dir / name / "part-0.parquet", index=False)
            del out

    return {
        "fingerprint": digest,
        "rows": int(sum(len(p) for p in splits.values())),
        "rows_per_split": {k: int(len(p)) for k, p in splits.items()},
        "n_features": n_features,
        "fit": {
            "fill": {c: float(medians[c]) for c in num_cols},
            "center": {c: float(means[c]) for c in num_cols},
            "scale": {c: float(stds[c]) for c in num_cols},
            "categories": kept,
        },
    }


# =============================================================================== ray worker
def ray_job(data_dir: Path, job_dir: Path, cfg: PipelineConfig, ph: Phases) -> dict:
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.data.ray_io import write_transformed
    from mlops_ray.workspace import Workspace

    with ph("prepare"):  # validate + split + write splits + fingerprint + fit (+ manifest, publish)
        ws = Workspace(job_dir / "workspace")
        res = prepare_snapshot(cfg.data, ws, source=cfg.source(ws.root), engine="ray")
    if res.reused:
        raise RuntimeError("prepare_snapshot reused a snapshot; the benchmark needs a fresh workspace")
    snap = res.snapshot
    pre = snap.preprocessor()
    with ph("transform_write"):  # all splits in one Ray Data pass
        written = write_transformed(snap, pre, str(job_dir / "transformed"))
    if written != {k: int(v) for k, v in snap.manifest["rows_per_split"].items()}:
        raise RuntimeError(f"transform wrote {written}, manifest says {snap.manifest['rows_per_split']}")
    m = snap.manifest
    return {
        "fingerprint": m["fingerprint"],
        "rows": int(m["rows"]),
        "rows_per_split": {k: int(v) for k, v in m["rows_per_split"].items()},
        "n_features": len(pre.feature_names),
        "fit": {
            "fill": {p.name: p.fill for p in pre.numeric},
            "center": {p.name: p.center for p in pre.numeric},
            "scale": {p.name: p.scale for p in pre.numeric},
            "categories": {p.name: list(p.categories) for p in pre.categorical},
        },
    }


def worker_main(args, job_fn=None, uses_ray: bool | None = None) -> int:
    """Run one path in this (fresh) process and write its result JSON to ``args.result``.

    ``job_fn(data_dir, job_dir, cfg, phases) -> dict`` defaults to :func:`ray_job` / :func:`pandas_job`
    by ``args.worker``; ``uses_ray``: start Ray (``ensure_ray(num_cpus=2)`` + warm-up) before the job.
    """
    if job_fn is None:
        job_fn = ray_job if args.worker == "ray" else pandas_job
    if uses_ray is None:
        uses_ray = args.worker == "ray"
    sampling = args.sample_interval > 0  # 0: timing-only control run, no sampler at all
    sampler = MemorySampler(args.sample_interval, args.sampler_nice, args.exact_pss)
    if sampling:
        sampler.start()
    t_proc = time.perf_counter()
    data_dir, job_dir = Path(args.data_dir), Path(args.job_dir)
    result: dict = {"path": args.worker, "pid": os.getpid()}
    ph = Phases(sampler.now)
    # imports are setup for both paths
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import mlops_ray.data.fingerprint  # noqa: F401
    import mlops_ray.data.hashing  # noqa: F401
    import mlops_ray.data.prepare  # noqa: F401

    cfg = build_config(data_dir)
    ray = None
    try:
        if uses_ray:
            import ray
            import ray.data  # noqa: F401

            from mlops_ray.ray_runtime import ensure_ray

            t = time.perf_counter()
            started = ensure_ray(num_cpus=2)
            result["ray_init_s"] = time.perf_counter() - t
            if not started:
                raise RuntimeError("Ray was already initialised in the worker; expected a fresh local cluster")
            result["ray_resources"] = ray.cluster_resources()

            # warm-up: one trivial task per CPU, then let memory settle
            @ray.remote(num_cpus=1)
            def _ping():
                return os.getpid()

            t = time.perf_counter()
            result["warmup_worker_pids"] = sorted(set(ray.get([_ping.remote() for _ in range(2)])))
            time.sleep(2.0)
            result["warmup_s"] = time.perf_counter() - t
        result["setup_s"] = time.perf_counter() - t_proc
        baseline = sampler.idle_baseline(1.0) if sampling else 0
        sys0, tree0 = _busy_cpu_s(), sampler.tree_cpu_s()
        t_job0 = sampler.now()
        t = time.perf_counter()
        job = job_fn(data_dir, job_dir, cfg, ph)
        wall = time.perf_counter() - t
        t_job1 = sampler.now()
        sys1, tree1 = _busy_cpu_s(), sampler.tree_cpu_s()
        ncpu = psutil.cpu_count() or 1
        foreign = max(0.0, (sys1 - sys0) - (tree1 - tree0))
        # CPU used during the job by processes outside this worker's tree (other sessions, tests, ...);
        # a descendant that lived < one sample interval is missed, so small values are noise
        result["interference"] = {
            "job_cpu_s": tree1 - tree0,
            "system_busy_cpu_s": sys1 - sys0,
            "foreign_cpu_s": foreign,
            "foreign_cpu_fraction": foreign / (wall * ncpu),
            "job_cpu_utilisation": (tree1 - tree0) / (wall * ncpu),
        }
        time.sleep(2 * max(args.sample_interval, 0))
        result.update(job)
        result["wall_s"] = wall
        result["phases_s"] = ph.durations
        if uses_ray:
            result["wall_with_init_s"] = wall + result["ray_init_s"]
        if sampling:
            result["memory"] = sampler.summary(t_job0, t_job1, baseline)
            # per phase (samples up to one interval after the phase end; None: phase shorter than a sample)
            per_phase = {}
            for k, (a, b) in ph.spans.items():
                pk = sampler.peak(a, b + args.sample_interval, none_if_empty=True)
                per_phase[k] = None if pk is None else (pk[0] - baseline) / MB
            result["memory"]["phase_peak_above_idle_mb"] = per_phase
        else:
            result["memory"] = None
        # output checks (not timed)
        tr = job_dir / "transformed"
        result["transformed_rows_per_split"] = {p.name: parquet_rows(p) for p in sorted(tr.iterdir()) if p.is_dir()}
        result["output_bytes"] = dir_bytes(job_dir)
        result["ok"] = True
    except Exception as err:  # report, do not hide
        import traceback

        traceback.print_exc()
        result["ok"] = False
        result["error"] = f"{type(err).__name__}: {err}"
    finally:
        if ray is not None and ray.is_initialized():
            t = time.perf_counter()
            ray.shutdown()
            result["ray_shutdown_s"] = time.perf_counter() - t
        if sampling:
            sampler.stop()
        result["sampler_thread_cpu_s"] = sampler.thread_cpu_s
        Path(args.result).write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["ok"] else 1


# =============================================================================== parent
def machine_info() -> dict:
    import importlib.metadata as md

    info = {
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "total_memory_mb": psutil.virtual_memory().total / MB,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for pkg in ("ray", "pandas", "pyarrow", "numpy", "psutil", "mlops-ray"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    return info


def ensure_data(workdir: Path, rows: int, shards: int) -> tuple[Path, float | None]:
    """Generated source for (rows, shards), cached in the workdir (setup, not timed)."""
    from mlops_ray.data.generate import generate_dataset

    d = workdir / "data" / f"rows{rows}-shards{shards}"
    marker = d / ".complete.json"
    if marker.is_file():
        return d, None
    if d.exists():
        shutil.rmtree(d)
    t = time.perf_counter()
    generate_dataset(d, rows, shards=shards, seed=0)
    secs = time.perf_counter() - t
    marker.write_text(json.dumps({"rows": rows, "shards": shards, "seed": 0, "seconds": secs}))
    return d, secs


def ray_leftovers() -> list[str]:
    """Ray daemons of this user still alive (a stray cluster would distort the next measurement)."""
    me = psutil.Process().username()
    out = []
    for p in psutil.process_iter(["name", "username", "pid"]):
        try:
            if p.info["username"] == me and p.info["name"] in ("raylet", "gcs_server"):
                out.append(f"{p.info['name']}({p.info['pid']})")
        except psutil.Error:
            continue
    return out


def _busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_for_quiet(max_wait_s: float, busy_threshold: float = 0.10) -> dict:
    """Wait until no other Ray cluster of this user runs and the CPUs are idle (shared machine).

    Returns what was seen; never kills anything.
    """
    t0 = time.perf_counter()
    while True:
        left = ray_leftovers()
        busy = psutil.cpu_percent(interval=1.0) / 100.0
        if not left and busy <= busy_threshold:
            return {"waited_s": time.perf_counter() - t0, "cpu_busy_before": busy, "quiet": True}
        if time.perf_counter() - t0 > max_wait_s:
            print(
                f"WARNING: machine not quiet after {max_wait_s:.0f} s (cpu busy {busy:.0%}, other Ray: {left}); "
                "measuring anyway",
                flush=True,
            )
            return {
                "waited_s": time.perf_counter() - t0,
                "cpu_busy_before": busy,
                "quiet": False,
                "other_ray_processes": left,
            }
        time.sleep(2.0)


def run_worker(path: str, rows: int, data_dir: Path, workdir: Path, args, script: str | None = None) -> dict:
    """Run ``script --worker path`` (default: this file) in a fresh subprocess and return its result."""
    job_dir = workdir / "jobs" / f"{path}-{rows}"
    if job_dir.exists():
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    result_file = workdir / "jobs" / f"{path}-{rows}.result.json"
    result_file.unlink(missing_ok=True)  # never read a stale result
    log_file = workdir / "logs" / f"{path}-{rows}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(Path(script or __file__).resolve()),
        "--worker",
        path,
        "--data-dir",
        str(data_dir),
        "--job-dir",
        str(job_dir),
        "--result",
        str(result_file),
        "--sample-interval",
        str(args.sample_interval),
        "--sampler-nice",
        str(args.sampler_nice),
    ] + (["--exact-pss"] if args.exact_pss else [])
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # always a fresh local cluster, descendant of the worker
    env.setdefault("PYTHONPATH", str(REPO))
    # never overlap two Ray clusters (ours or anyone's) on 2 cores; wait for an idle machine
    quiet = wait_for_quiet(args.quiet_wait_s)
    print(f"  [{rows:,} rows] {path}: running (log {log_file}) ...", flush=True)
    t = time.perf_counter()
    busy0, own0 = _busy_cpu_s(), _children_cpu_s()
    with open(log_file, "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    elapsed = time.perf_counter() - t
    busy, own = _busy_cpu_s() - busy0, _children_cpu_s() - own0
    ncpu = psutil.cpu_count() or 1
    # CPU used by processes outside this benchmark while it ran (other sessions, tests, ...)
    # coarse (whole subprocess; Ray workers reaped outside our tree are not in benchmark_cpu_s)
    parent_view = {"elapsed_s": elapsed, "system_busy_cpu_s": busy, "reaped_children_cpu_s": own, "ncpu": ncpu, **quiet}
    res = json.loads(result_file.read_text()) if result_file.is_file() else {"ok": False, "error": "no result file"}
    res["returncode"] = rc
    res["process_elapsed_s"] = elapsed
    res["machine_state"] = parent_view
    itf = res.get("interference") or {}
    if itf.get("foreign_cpu_fraction", 0.0) > 0.05:
        print(
            f"  WARNING: processes outside the benchmark used {itf['foreign_cpu_fraction']:.0%} of the CPUs during "
            f"this job ({itf['foreign_cpu_s']:.1f} CPU s): timings are disturbed",
            flush=True,
        )
    if not res.get("ok"):
        tail = log_file.read_text().splitlines()[-40:]
        print(f"  [{rows:,} rows] {path}: FAILED rc={rc}: {res.get('error')}\n    " + "\n    ".join(tail), flush=True)
    else:
        mem = res.get("memory") or {}
        print(
            f"  [{rows:,} rows] {path}: wall {res['wall_s']:.2f} s, peak above idle "
            f"{fmt(mem.get('peak_above_idle_mb'), '.0f')} MB",
            flush=True,
        )
    if args.keep_logs:
        res["log_file"] = str(log_file)
    else:
        res["log_tail"] = log_file.read_text().splitlines()[-15:]
    if not args.keep_outputs:
        shutil.rmtree(job_dir, ignore_errors=True)
    return res


def compare(p: dict, r: dict) -> tuple[bool, list[str], dict]:
    """Agreement of the two paths: rows per split and fingerprint must match exactly."""
    mism = []
    if not (p.get("ok") and r.get("ok")):
        return False, ["a path failed; nothing to compare"], {}
    if p["rows_per_split"] != r["rows_per_split"]:
        mism.append(f"rows per split differ: pandas {p['rows_per_split']} vs ray {r['rows_per_split']}")
    if p["fingerprint"] != r["fingerprint"]:
        mism.append(f"fingerprint differs: pandas {p['fingerprint']} vs ray {r['fingerprint']}")
    for who, res in (("pandas", p), ("ray", r)):
        if res["transformed_rows_per_split"] != {k: v for k, v in res["rows_per_split"].items() if v}:
            mism.append(f"{who}: transformed rows {res['transformed_rows_per_split']} != split rows")
    # informational: fitted preprocessing (Ray's median comes from a 200k bottom-k sample, so fills may differ)
    pf, rf = p["fit"], r["fit"]
    info = {
        "same_categories": pf["categories"] == rf["categories"],
        "same_n_features": p["n_features"] == r["n_features"],
        "max_rel_diff_center": max(
            abs(pf["center"][c] - rf["center"][c]) / max(abs(pf["center"][c]), 1e-12) for c in pf["center"]
        ),
        "max_rel_diff_scale": max(
            abs(pf["scale"][c] - rf["scale"][c]) / max(abs(pf["scale"][c]), 1e-12) for c in pf["scale"]
        ),
        "max_abs_diff_fill_in_std": max(abs(pf["fill"][c] - rf["fill"][c]) / pf["scale"][c] for c in pf["fill"]),
    }
    return not mism, mism, info


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--workdir", default=None, help="kept (data cache reused); default: temp dir under /tmp, deleted")
    ap.add_argument("--keep-workdir", action="store_true", help="do not delete the (temporary) workdir")
    ap.add_argument("--keep-outputs", action="store_true", help="keep each run's written Parquet in the workdir")
    ap.add_argument("--keep-logs", action="store_true", help="reference worker logs instead of embedding tails")
    ap.add_argument("--paths", nargs="+", choices=["pandas", "ray"], default=["pandas", "ray"])
    ap.add_argument("--sample-interval", type=float, default=0.1)
    ap.add_argument(
        "--quiet-wait-s",
        type=float,
        default=900,
        help="before each run wait up to this long for idle CPUs and no other Ray cluster",
    )
    ap.add_argument(
        "--exact-pss",
        action="store_true",
        help="re-read every process's PSS at every sample (slows the measured job, see MemorySampler)",
    )
    ap.add_argument(
        "--sampler-nice",
        type=int,
        default=0,
        help="nice value of the sampler thread (Linux: per thread); 0 = same priority as the job",
    )
    # internal: worker mode
    ap.add_argument("--worker", choices=["pandas", "ray"], help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--job-dir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args)

    command = shlex.join([sys.executable, *sys.argv])
    tmp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="mlops_ray_bench_", dir="/tmp") if tmp else args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(f"workdir {workdir}\nmachine {json.dumps(machine)}", flush=True)
    results = []
    try:
        for rows in args.rows:
            data_dir, gen_s = ensure_data(workdir, rows, args.shards)
            print(
                f"[{rows:,} rows] data {data_dir} ({dir_bytes(data_dir) / MB:.0f} MB"
                f"{f', generated in {gen_s:.1f} s' if gen_s else ', cached'})",
                flush=True,
            )
            entry = {
                "rows": rows,
                "shards": args.shards,
                "data_dir": str(data_dir),
                "data_bytes": dir_bytes(data_dir),
                "generate_s": gen_s,
            }
            for path in args.paths:
                entry[path] = run_worker(path, rows, data_dir, workdir, args)
            if "pandas" in entry and "ray" in entry:
                agree, mism, info = compare(entry["pandas"], entry["ray"])
                entry.update(agree=agree, mismatches=mism, preprocessor_comparison=info)
                if not agree:
                    bar = "!" * 78
                    print(
                        f"{bar}\n!!! MISMATCH at {rows:,} rows between pandas and ray:\n!!!   "
                        + "\n!!!   ".join(mism)
                        + f"\n{bar}",
                        flush=True,
                    )
                else:
                    print(
                        f"  [{rows:,} rows] agree: same rows per split {entry['ray']['rows_per_split']} and "
                        f"fingerprint {entry['ray']['fingerprint'][:16]}...",
                        flush=True,
                    )
                p, r = entry["pandas"], entry["ray"]
                if p.get("ok") and r.get("ok"):
                    entry["ratios"] = {
                        "wall_ray_vs_pandas": r["wall_s"] / p["wall_s"],
                        "wall_with_init_ray_vs_pandas": r["wall_with_init_s"] / p["wall_s"],
                        "peak_above_idle_ray_vs_pandas": r["memory"]["peak_above_idle_mb"]
                        / p["memory"]["peak_above_idle_mb"],
                        "peak_ray_vs_pandas": r["memory"]["peak_mb"] / p["memory"]["peak_mb"],
                    }
            results.append(entry)
    finally:
        if tmp and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    # ----------------------------------------------------------------- table
    head = [
        "rows",
        "path",
        "wall s",
        "wall+init s",
        "rows/s",
        "peak MB",
        "peak above idle MB",
        "wall vs pandas",
        "peak-above-idle vs pandas",
    ]
    lines = []
    for e in results:
        p = e.get("pandas", {})
        for path in args.paths:
            r = e[path]
            if not r.get("ok"):
                lines.append([f"{e['rows']:,}", path, "FAILED", "", "", "", "", "", ""])
                continue
            m = r["memory"]
            ok_p = p.get("ok")
            lines.append(
                [
                    f"{e['rows']:,}",
                    path,
                    fmt(r["wall_s"], ".2f"),
                    fmt(r.get("wall_with_init_s", r["wall_s"]), ".2f"),
                    fmt(e["rows"] / r["wall_s"], ",.0f"),
                    fmt(m["peak_mb"], ",.0f"),
                    fmt(m["peak_above_idle_mb"], ",.0f"),
                    fmt(r["wall_s"] / p["wall_s"], ".2f") + "x" if ok_p else "-",
                    fmt(m["peak_above_idle_mb"] / p["memory"]["peak_above_idle_mb"], ".2f") + "x" if ok_p else "-",
                ]
            )
    widths = [max(len(h), *(len(x[i]) for x in lines)) if lines else len(h) for i, h in enumerate(head)]
    table = [" | ".join(h.rjust(w) for h, w in zip(head, widths)), "-+-".join("-" * w for w in widths)]
    table += [" | ".join(c.rjust(w) for c, w in zip(x, widths)) for x in lines]
    print("\n" + "\n".join(table))

    # ----------------------------------------------------------------- targets
    targets = []

    def target(name, rows, check):
        e = next((x for x in results if x["rows"] == rows), None)
        if e is None or "ratios" not in e:
            targets.append({"target": name, "status": "SKIP", "detail": f"no successful {rows:,}-row pair"})
            return
        ok, detail = check(e)
        targets.append({"target": name, "status": "PASS" if ok else "FAIL", "detail": detail})

    target(
        "5M rows: Ray wall <= pandas wall",
        5_000_000,
        lambda e: (
            e["ray"]["wall_s"] <= e["pandas"]["wall_s"],
            f"ray {e['ray']['wall_s']:.2f} s vs pandas {e['pandas']['wall_s']:.2f} s "
            f"({e['ratios']['wall_ray_vs_pandas']:.2f}x)",
        ),
    )
    target(
        "5M rows: Ray peak-above-idle <= 0.5 x pandas",
        5_000_000,
        lambda e: (
            e["ratios"]["peak_above_idle_ray_vs_pandas"] <= 0.5,
            f"ray {e['ray']['memory']['peak_above_idle_mb']:.0f} MB vs pandas "
            f"{e['pandas']['memory']['peak_above_idle_mb']:.0f} MB "
            f"({e['ratios']['peak_above_idle_ray_vs_pandas']:.2f}x)",
        ),
    )
    target(
        "1M rows: Ray wall <= 3 x pandas wall",
        1_000_000,
        lambda e: (
            e["ratios"]["wall_ray_vs_pandas"] <= 3.0,
            f"ray {e['ray']['wall_s']:.2f} s vs pandas {e['pandas']['wall_s']:.2f} s "
            f"({e['ratios']['wall_ray_vs_pandas']:.2f}x)",
        ),
    )
    print()
    for t in targets:
        print(f"{t['status']}: {t['target']} -- {t['detail']}")
    for e in results:
        if e.get("agree") is False:
            print(f"MISMATCH at {e['rows']:,} rows: " + "; ".join(e["mismatches"]))
        for path in args.paths:
            itf = e[path].get("interference") or {}
            if itf.get("foreign_cpu_fraction", 0.0) > 0.05:
                print(
                    f"NOTE: {e['rows']:,} rows / {path}: other processes used {itf['foreign_cpu_fraction']:.0%} "
                    "of the CPUs during the job; its timing is disturbed"
                )

    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "data_prep",
        "command": command,
        "cwd": os.getcwd(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "settings": {
            "rows": args.rows,
            "shards": args.shards,
            "paths": args.paths,
            "sample_interval_s": args.sample_interval,
            "config": str(QUICKSTART),
            "workdir": str(workdir),
            "workdir_deleted": tmp and not args.keep_workdir,
        },
        "methodology": {
            "wall_s": "job only; Ray: excludes ray.init and warm-up, includes Ray Data's first execution",
            "wall_with_init_s": "Ray: wall_s + ray.init time",
            "memory": "sum of PSS (psutil memory_full_info) over the worker process and all descendants, "
            "sampled every sample_interval_s by a background thread; baseline = median of direct "
            "measurements over 1 s right before the job (Ray: after ray.init + 2 warm-up tasks + 2 s). "
            "Unless --exact-pss, a process's PSS is re-read at most every 0.5 s (at least every 2 s) and "
            "extrapolated in between as last PSS + RSS change (page-table walks of smaps_rollup stall "
            "allocating processes: exact reads every 0.1 s made the Ray path ~1.6-3x slower)",
            "interference": "per job: CPU seconds of the worker's process tree vs system busy CPU seconds; "
            "foreign_cpu_fraction > 0.05 means other processes disturbed the timing. Before each "
            "run the parent waits for idle CPUs and no other Ray cluster (--quiet-wait-s)",
            "isolation": "each path runs in its own fresh subprocess, one after the other (never two Ray "
            "clusters at once)",
        },
        "results": results,
        "targets": targets,
    }
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp_out, out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
