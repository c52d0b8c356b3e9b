"""Scale benchmark: data preparation, training, batch inference and serving against rows, workers
and replicas, on one node, on two (namespaced) nodes, or on an existing cluster.

    .venv/bin/python benchmarks/scale.py                    # one local node, num_cpus = the machine's cores
    .venv/bin/python benchmarks/scale.py --two-node         # two namespaced nodes, cores/2 CPUs each
    .venv/bin/python benchmarks/scale.py --address auto --workspace /shared/mount/ws    # your cluster
    .venv/bin/python benchmarks/scale.py --full             # prep 1M/5M/20M, training to 10M, 1/2/4 replicas
    .venv/bin/python benchmarks/scale.py --compare benchmarks/results/scale-one-node.json \\
        benchmarks/results/scale-two-node.json

Wrap every run in ``flock /tmp/mlops-ray-ray-tests.lock`` on a shared machine: two Ray runs at once ruin both.

What is timed (each item in a fresh workspace directory, so nothing is reused from an earlier item):

prep    ``prepare_snapshot(cfg.data, workspace, engine="ray")`` -- what ``mlops-ray data prepare`` runs:
        validate, hash split, fingerprint, fit the preprocessing, write the split files and the
        manifest -- over generated data in 16 Parquet shards. A warm-up prepare of 20k rows runs first
        (not timed: Ray Data's first execution starts the workers).
train   ``fit_xgboost`` (100 rounds, depth 6, ``hist``, 13 features, ordinal categoricals; reading the
        snapshot and building the DMatrix included) under the cluster's default execution plan
        (``choose_execution``: local mode on one node, one worker per node on several) and with 1
        and 2 Ray Train workers; AUC on the valid split.
batch   ``predict_files`` (``mlops-ray batch predict``) of the generated rows with the registered model:
        an input check pass in the driver, then a Ray Data actor pool (``--batch-actors`` actors of
        0.5 CPU) scoring and writing Parquet. ``score rows/s`` is the actor-pool part alone.
serve   ``start_service`` (``mlops-ray serve``, HAProxy ingress) with a fixed number of replicas
        (0.5 CPU each), then ``wrk`` (the load generator benchmarks/serve.py uses) against the head
        node: 1-record requests at 32 connections and 100-record requests at 8, ``--duration`` s each.

Setup (not timed): generating the data (cached in ``--data-dir``), and training + registering the
model that batch and serving use (SQLite MLflow in the workspace).

``--two-node`` starts the namespaced two-node cluster of tests/_multinode.py with the same TOTAL CPUs
as the one-node run (2 nodes x 1 CPU vs 1 node x 2 CPUs on a 2-core machine): on one box this
measures the cost of distribution (object transfers between raylets over a veth pair, a second
raylet and object store, worker start-up on two nodes, XGBoost's allreduce over TCP), not a
speed-up. The workspace is a directory outside the worker's private root, seen by both nodes as a
shared mount (NFS on a real cluster).

Outputs: ``benchmarks/results/scale-<mode>.json`` and ``.md`` (mode: one-node, two-node or cluster,
``-full`` with --full), ``benchmarks/results/scale.png`` (curves from every scale-*.json there), and,
when the one-node and two-node results of the same size mode both exist, the two-node/one-node
ratios at 4M rows against the 1.25x target (also ``--compare A B``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib.metadata as md
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
GB = 1024**3
M = 1_000_000
TARGET_RATIO = 1.25
TARGET_ROWS = 4 * M
SHARDS = 16
STATE_LAG_S = 2.0
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("WRK_BODY"), "r")
wrk.body = f:read("*a")
f:close()
"""
SIZES = {
    "quick": {
        "prep": [M, 4 * M],
        "train": [M, 4 * M],
        "workers": [1, 2],
        "batch": [M],
        "replicas": [1, 2],
        "duration": 5,
    },
    "full": {
        "prep": [M, 5 * M, 20 * M],
        "train": [M, 4 * M, 10 * M],
        "workers": [1, 2],
        "batch": [4 * M],
        "replicas": [1, 2, 4],
        "duration": 10,
    },
}


# ===================================================================================== helpers
def fmt_rows(n: int) -> str:
    if n >= M and n % M == 0:
        return f"{n // M}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


class MemWatch:
    """System memory (``used``) sampled every 0.25 s in a thread: peak per phase, and a linear model of
    each phase's peak against rows to skip a size that would not fit (instead of crashing the machine)."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.own_pids = lambda: {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.points: dict[str, list[tuple[int, float]]] = {}  # phase -> [(rows, GB above the phase's start)]
        self._thread = threading.Thread(target=self._run, name="scale-mem", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            used = psutil.virtual_memory().used
            with self._lock:
                self._peak = max(self._peak, used)

    @contextlib.contextmanager
    def phase(self, name: str, rows: int, out: dict):
        """Memory peak of the block, and the CPU seconds used meanwhile by processes that are not this
        benchmark's (its driver's process tree and the cluster's nodes: ``own_pids``): interference on a
        shared machine (processes that start and end inside the block are not seen)."""
        own = self.own_pids()
        cpu0, t0, ct0 = cpu_by_pid(), time.perf_counter(), psutil.cpu_times()
        vm = psutil.virtual_memory()
        with self._lock:
            self._peak = vm.used
        out["mem_available_before_gb"] = round(vm.available / GB, 2)
        try:
            yield
        finally:
            with self._lock:
                peak = max(self._peak, psutil.virtual_memory().used)
            wall = time.perf_counter() - t0
            out["mem_peak_used_gb"] = round(peak / GB, 2)
            out["mem_peak_above_start_gb"] = round((peak - vm.used) / GB, 2)
            self.points.setdefault(name, []).append((rows, (peak - vm.used) / GB))
            ct1 = psutil.cpu_times()
            spent = sum(ct1) - sum(ct0)
            # time the hypervisor gave this VM's CPUs to others (noisy neighbours), and how busy the machine was
            out["cpu_steal_fraction"] = round((ct1.steal - ct0.steal) / spent, 3) if spent > 0 else 0.0
            out["cpu_busy_fraction"] = (
                round(1 - (ct1.idle + ct1.iowait - ct0.idle - ct0.iowait) / spent, 3) if spent else 0.0
            )
            own |= self.own_pids()
            cpu1 = cpu_by_pid()
            others = {p: c - cpu0.get(p, 0.0) for p, c in cpu1.items() if p not in own}
            busy = sum(v for v in others.values() if v > 0)
            top = sorted(((v, p) for p, v in others.items() if v > 0.2), reverse=True)[:3]
            out["other_processes_cpu_s"] = round(busy, 2)
            out["other_processes_cpu_fraction"] = round(busy / (wall * (os.cpu_count() or 1)), 3) if wall else 0.0
            out["other_processes_top"] = [f"{_pname(p)} {v:.1f} s" for v, p in top]

    def does_not_fit(self, name: str, rows: int, margin_gb: float = 2.0) -> str | None:
        """A reason to skip ``rows`` for ``name`` (None: run it): the peak above start, extrapolated
        linearly from the two largest sizes measured so far, exceeds available memory minus a margin."""
        pts = sorted(self.points.get(name, []))
        if len(pts) < 2 or rows <= pts[-1][0]:
            return None
        (r1, g1), (r2, g2) = pts[-2], pts[-1]
        if r2 == r1:
            return None
        slope = max(0.0, (g2 - g1) / (r2 - r1))
        need = g2 + slope * (rows - r2)
        avail = psutil.virtual_memory().available / GB
        if need > avail - margin_gb:
            return (
                f"does not fit: {name} at {fmt_rows(rows)} rows needs ~{need:.1f} GB above its start (extrapolated "
                f"from {fmt_rows(r1)}: {g1:.1f} GB and {fmt_rows(r2)}: {g2:.1f} GB), {avail:.1f} GB available, "
                f"{margin_gb:.0f} GB kept free"
            )
        return None

    def stop(self) -> None:
        self._stop.set()


def cpu_by_pid() -> dict[int, float]:
    """User + system CPU seconds of every process now."""
    out = {}
    for p in psutil.process_iter(["cpu_times"]):
        ct = p.info["cpu_times"]
        if ct is not None:
            out[p.pid] = ct.user + ct.system
    return out


def _pname(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline()[:3])[:80] or psutil.Process(pid).name()
    except psutil.Error:
        return f"pid {pid} (ended)"


def ensure_data(data_dir: Path, rows: int) -> tuple[Path, float | None]:
    """Generated source of ``rows`` rows in SHARDS files, cached (reused when complete).

    Returns the directory and the generation seconds (None when reused)."""
    from mlops_ray.data.generate import generate_dataset

    d = data_dir / f"rows-{rows}-shards-{SHARDS}-seed-0"
    done = d / "_complete.json"
    if done.exists():
        return d, None
    if d.exists():
        shutil.rmtree(d)
    t = time.perf_counter()
    generate_dataset(d, rows, shards=SHARDS, seed=0)
    secs = time.perf_counter() - t
    # written last; list_source skips names starting with "_"
    done.write_text(json.dumps({"rows": rows, "shards": SHARDS, "seed": 0, "seconds": secs}))
    return d, secs


def make_config(src: Path, rounds: int, model_name: str):
    """The benchmark's pipeline config: the quickstart's data columns, ordinal categoricals (as
    benchmarks/train.py), 100 rounds of depth-6 boosting, no tuning."""
    from mlops_ray.config import config_from_dict
    from mlops_ray.data.generate import FEATURE_SPEC

    return config_from_dict(
        {
            "data": {
                "name": "scale",
                "source": str(src),
                "format": "parquet",
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
            "tune": {"enabled": False},
            "mlflow": {"experiment": "scale-bench"},
            "registry": {"model_name": model_name},
            "serve": {"host": "127.0.0.1", "num_cpus_per_replica": 0.5},
        }
    )


def quiet_ray_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False


# ===================================================================================== clusters
class OneNode:
    """A local one-node Ray, ``num_cpus`` = the machine's cores, on loopback (mlops_ray.ray_runtime.ensure_ray)."""

    name = "one-node"

    def __init__(self, cpus: int, workspace: Path):
        self.cpus = cpus
        self.workspace = workspace

    def start(self) -> dict:
        from mlops_ray import compat
        from mlops_ray.ray_runtime import ensure_ray

        # set before ray.init so the raylet (and every worker it starts) inherits it, as the nodes of the
        # two-node cluster do through their `ray start` environment
        os.environ.setdefault(compat.TRAIN_HEALTH_CHECK_INTERVAL_ENV, "0.2")
        t = time.perf_counter()
        ensure_ray(num_cpus=self.cpus)
        quiet_ray_data()
        return {"start_s": time.perf_counter() - t, "nodes": 1, "cpus_per_node": self.cpus}

    def netns(self):
        return contextlib.nullcontext()

    def cmd(self, argv: list[str]) -> list[str]:
        return argv

    def serve_host(self) -> str:
        return "127.0.0.1"

    def haproxy_dirs(self) -> list[Path]:
        from mlops_ray.ray_runtime import haproxy_dir

        return [haproxy_dir()]

    def before_serving(self) -> None:
        """``mlops-ray serve`` starts its own local cluster with the serving hooks: do the same."""
        import ray

        from mlops_ray.ray_runtime import ensure_ray

        ray.shutdown()
        ensure_ray(num_cpus=self.cpus, serving=True)
        quiet_ray_data()

    def node_label(self, node_id: str) -> str:
        return "node"

    def stop(self) -> None:
        import ray

        from mlops_ray.ray_runtime import kill_own_haproxy

        ray.shutdown()
        kill_own_haproxy()


class TwoNode:
    """tests/_multinode.py's two-node cluster (netns where possible), ``cpus_per_node`` each."""

    name = "two-node"

    def __init__(self, cpus_per_node: int, workdir: Path, workspace: Path):
        self.cpus_per_node = cpus_per_node
        self.workdir = workdir
        self.workspace = workspace
        self.cluster = None

    def start(self) -> dict:
        sys.path.insert(0, str(ROOT / "tests"))
        from _multinode import start_two_node_cluster

        from mlops_ray import compat

        env = {
            "MLOPS_RAY_HOME": str(self.workspace),
            "MLOPS_RAY_PROGRESS": "0",
            compat.TRAIN_HEALTH_CHECK_INTERVAL_ENV: "0.2",
            # what mlops_ray.ray_runtime sets for its own local clusters (HAProxy ingress, fast
            # autoscaling metrics, short draining), so both runs serve with the same stack
            compat.SERVE_ENABLE_HAPROXY_ENV: "1",
            **{v: "1" for v in compat.SERVE_AUTOSCALING_METRIC_ENV},
            **{v: "2" for v in compat.SERVE_DRAINING_ENV},
        }
        t = time.perf_counter()
        self.cluster = start_two_node_cluster(self.workdir / "cluster", cpus_per_node=self.cpus_per_node, env=env)
        c = self.cluster
        ws, private = self.workspace.resolve(), c.private_root.resolve()
        if ws == private or private in ws.parents or ws in private.parents:
            raise RuntimeError(
                f"workspace {ws} overlaps the worker's private root {private}: use a directory outside it"
            )
        c.ray_init(logging_level=logging.WARNING, log_to_driver=True)
        quiet_ray_data()
        return {
            "start_s": time.perf_counter() - t,
            "nodes": 2,
            "cpus_per_node": self.cpus_per_node,
            "cluster_mode": c.mode,
            "fallback_reason": c.fallback_reason,
            "head_ip": c.head_ip,
            "worker_ip": c.worker_ip,
            "private_root": str(c.private_root),
            "multinode_helper": {
                "path": "tests/_multinode.py",
                "sha256": hashlib.sha256((ROOT / "tests" / "_multinode.py").read_bytes()).hexdigest()[:16],
                "committed_as": git("log", "-1", "--format=%h", "--", "tests/_multinode.py") or "not committed",
            },
            "workspace": f"{self.workspace} (outside private_root: a shared mount both nodes see, as NFS would be)",
        }

    def netns(self):
        return self.cluster.in_head_netns()

    def cmd(self, argv: list[str]) -> list[str]:
        return self.cluster.head_cmd(argv)

    def serve_host(self) -> str:
        # Ray Serve binds every node's proxy and direct-ingress replica servers to serve.host: with
        # 127.0.0.1 the head's HAProxy marks the worker's replicas DOWN (measured: all requests to the
        # head's replica). Inside the namespaces 0.0.0.0 is lo plus the private veth address only.
        return "0.0.0.0" if self.cluster.mode == "netns" else "127.0.0.1"

    def haproxy_dirs(self) -> list[Path]:
        # every node's HAProxy keeps its files in a directory named after its node id; wrk calls the head's
        return [self.cluster.tmp_root / "hap-h" / self.cluster.head_node_id]

    def before_serving(self) -> None:
        # loopback mode: both nodes share one port space, so one proxy (HeadOnly) for the service's port
        if self.cluster.mode != "netns":
            os.environ["MLOPS_SCALE_PROXY_HEAD_ONLY"] = "1"

    def own_pids(self) -> set[int]:
        c = self.cluster
        return {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))} | set(
            c.head_pids() + c.worker_pids()
        )

    def node_label(self, node_id: str) -> str:
        c = self.cluster
        return "head" if node_id == c.head_node_id else "worker" if node_id == c.worker_node_id else node_id[:8]

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


class Existing:
    """An existing cluster (``--address``): a user's real cluster; the workspace must be shared by its nodes."""

    name = "cluster"

    def __init__(self, address: str, workspace: Path, serve_host: str | None = None):
        self.address = address
        self.workspace = workspace
        self.serve_host_arg = serve_host

    def start(self) -> dict:
        import ray

        from mlops_ray import compat
        from mlops_ray.ray_runtime import ensure_ray

        t = time.perf_counter()
        env_vars = {compat.TRAIN_HEALTH_CHECK_INTERVAL_ENV: "0.2", "MLOPS_RAY_HOME": str(self.workspace)}
        ensure_ray(address=self.address, runtime_env={"env_vars": env_vars})
        quiet_ray_data()
        nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
        return {
            "start_s": time.perf_counter() - t,
            "address": self.address,
            "nodes": len(nodes),
            "cpus_per_node": [n["Resources"]["CPU"] for n in nodes],
            "haproxy_ingress": os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "(the cluster's setting)"),
        }

    def netns(self):
        return contextlib.nullcontext()

    def cmd(self, argv: list[str]) -> list[str]:
        return argv

    def serve_host(self) -> str:
        return self.serve_host_arg or "127.0.0.1"

    def haproxy_dirs(self) -> list[Path]:
        return []

    def before_serving(self) -> None:
        pass

    def node_label(self, node_id: str) -> str:
        return node_id[:8]

    def stop(self) -> None:
        import ray

        ray.shutdown()


def node_cpus() -> list[float]:
    from mlops_ray.ray_runtime import alive_node_cpus

    return alive_node_cpus()


def placement(
    topo, kind: str, name_part: str, exclude: set[str] | None = None, alive_only: bool = False
) -> tuple[dict[str, int], set[str]]:
    """({node label: count}, ids) of Ray ``kind`` ("tasks" or "actors") whose name contains ``name_part``
    and whose id is not in ``exclude`` (Ray's state API; informative only: errors give an empty count)."""
    from ray.util.state import list_actors, list_tasks

    time.sleep(STATE_LAG_S)  # task and actor events reach the state API about once a second

    fn, id_key, name_key = (
        (list_actors, "actor_id", "class_name") if kind == "actors" else (list_tasks, "task_id", "name")
    )
    try:
        items = fn(limit=10_000, raise_on_missing_output=False)
    except Exception as err:  # noqa: BLE001
        return {f"unknown ({type(err).__name__})": 0}, set()
    counts: dict[str, int] = {}
    ids = set()
    for a in items:
        a = a if isinstance(a, dict) else vars(a)
        if name_part not in (a.get(name_key) or "") or (exclude and a[id_key] in exclude):
            continue
        if alive_only and a.get("state") != "ALIVE":
            continue
        ids.add(a[id_key])
        label = topo.node_label(a["node_id"]) if a.get("node_id") else "not placed"
        counts[label] = counts.get(label, 0) + 1
    return counts, ids


# ===================================================================================== phases
def run_prep(args, topo, mem: MemWatch, rows_list: list[int], work: Path, data: dict, res: dict) -> dict:
    """Timed prepare_snapshot per size; returns {rows: snapshot} for training."""
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.workspace import get_workspace

    snaps = {}
    # warm-up: Ray Data's first execution starts the workers (3-14 s on this stack); not timed
    src, _ = ensure_data(args.data_dir, 20_000)
    t = time.perf_counter()
    prepare_snapshot(make_config(src, args.rounds, "x").data, get_workspace(work / "prep-warmup"), engine="ray")
    res["prep_warmup_s"] = time.perf_counter() - t
    for rows in rows_list:
        role = "prep" if rows in args.prep_rows else "prep (for training)"
        row = {"rows": rows, "role": role}
        res["prep"].append(row)
        why = mem.does_not_fit("prep", rows)
        if why:
            row["skipped"] = why
            print(f"prep {fmt_rows(rows)}: {why}", flush=True)
            continue
        walls = []
        try:
            for i in range(args.repeat):
                ws_dir = work / f"prep-{rows}-{i}"
                shutil.rmtree(ws_dir, ignore_errors=True)
                cfg = make_config(data[rows], args.rounds, "x")
                gc.collect()
                _, seen = placement(topo, "tasks", "MapBatches")
                with mem.phase("prep", rows, row):
                    t = time.perf_counter()
                    out = prepare_snapshot(cfg.data, get_workspace(ws_dir), engine="ray")
                    walls.append(time.perf_counter() - t)
                row["map_tasks_per_node"], _ = placement(topo, "tasks", "MapBatches", seen)
                if out.reused:
                    raise RuntimeError("prepare reused a snapshot: the timing would not be a preparation")
                snaps[rows] = out.snapshot
                if i < args.repeat - 1:
                    shutil.rmtree(ws_dir, ignore_errors=True)
        except Exception as err:  # noqa: BLE001 - record and go on with the other sizes
            row["error"] = f"{type(err).__name__}: {err}"
            print(f"prep {fmt_rows(rows)} FAILED: {row['error']}", flush=True)
            traceback.print_exc()
            continue
        row.update(
            wall_s=min(walls),
            walls_s=walls,
            rows_per_s=rows / min(walls),
            files=SHARDS,
            rows_per_split=snaps[rows].manifest["rows_per_split"],
        )
        print(f"prep  {fmt_rows(rows):>4}: {row['wall_s']:7.2f} s  {row['rows_per_s']:>10,.0f} rows/s", flush=True)
    return snaps


def train_plans(cpus: list[float], workers: list[int]):
    """(label, plan, is_default): the cluster's default plan, then 1..n Ray Train workers sharing all CPUs."""
    from mlops_ray.train.execution import choose_execution

    plans, seen = [], set()
    default = choose_execution(cpus)
    total, biggest = sum(cpus), max(cpus)
    cands = [(default, True)]
    for w in workers:
        cpw = max(1.0, min(biggest, float(int(total // w))))
        cands.append((choose_execution(cpus, "distributed", w, cpw), False))
    for plan, is_default in cands:
        key = (plan.mode, plan.num_workers, plan.cpus_per_worker)
        if key in seen:
            continue
        seen.add(key)
        if plan.mode == "local":
            label = f"local mode, {plan.nthread} threads"
        else:
            label = f"{plan.num_workers} worker{'s' if plan.num_workers > 1 else ''} x {plan.cpus_per_worker:g} CPU"
        plans.append((label, plan, is_default or key == (default.mode, default.num_workers, default.cpus_per_worker)))
    return plans


def run_train(args, topo, mem: MemWatch, snaps: dict, work: Path, storage: str, res: dict) -> None:
    from mlops_ray.data.splits import load_split
    from mlops_ray.model.metrics import compute_metrics
    from mlops_ray.train.xgboost_trainer import fit_xgboost

    plans = train_plans(node_cpus(), args.workers)
    for rows in args.train_rows:
        snap = snaps.get(rows)
        if snap is None:
            res["train"].append({"rows": rows, "skipped": "no snapshot (its preparation was skipped or failed)"})
            continue
        cfg = make_config(Path("."), args.rounds, "x")
        valid = None
        for label, plan, is_default in plans:
            row = {
                "rows": rows,
                "plan": label + (" (default)" if is_default else ""),
                "default": is_default,
                "mode": plan.mode,
                "workers": plan.num_workers,
                "cpus_per_worker": plan.cpus_per_worker,
                "nthread": plan.nthread,
            }
            res["train"].append(row)
            why = mem.does_not_fit("train", rows)
            if why:
                row["skipped"] = why
                print(f"train {fmt_rows(rows)} {label}: {why}", flush=True)
                continue
            walls, boosts, phases, out = [], [], [], None
            try:
                for _ in range(args.repeat):
                    out_dir = work / "train" / f"{rows}-{plan.mode}-{plan.num_workers}-{time.time_ns()}"
                    gc.collect()
                    _, seen = placement(topo, "actors", "RayTrainWorker")
                    with mem.phase("train", rows, row):
                        t = time.perf_counter()
                        out = fit_xgboost(
                            cfg.model,
                            snap,
                            plan,
                            out_dir,
                            run_name=f"scale-{out_dir.name}",
                            storage=storage,
                            checkpoint_every=args.rounds,
                        )
                        walls.append(time.perf_counter() - t)
                    boosts.append(out.meta["train_seconds"])
                    # rank 0's phases (fit_xgboost's meta): trainer.fit() to the train function, reading
                    # + preprocessing + DMatrix, boosting, the rest of fit(); absent in older commits
                    phases.append({k: out.meta[f"{k}_seconds"] for k in PHASES if f"{k}_seconds" in out.meta})
                    if plan.num_workers:
                        row["workers_per_node"], _ = placement(topo, "actors", "RayTrainWorker", seen)
                if valid is None:
                    valid = load_split(snap, "valid", snap.preprocessor())
                auc = compute_metrics("binary", valid.y, out.booster.inplace_predict(valid.x))["auc"]
            except Exception as err:  # noqa: BLE001
                row["error"] = f"{type(err).__name__}: {err}"
                print(f"train {fmt_rows(rows)} {label} FAILED: {row['error']}", flush=True)
                traceback.print_exc()
                continue
            best = walls.index(min(walls))
            row.update(wall_s=walls[best], walls_s=walls, train_s=boosts[best], boosts_s=boosts, auc=auc)
            row.update(phases_s=phases, **{f"{k}_s": v for k, v in phases[best].items() if k != "train"})
            print(
                f"train {fmt_rows(rows):>4} {row['plan']:<32} {row['wall_s']:7.2f} s ({_phases(row)}) auc={auc:.4f}",
                flush=True,
            )
        del valid
        gc.collect()


def register_model(ctx, cfg, res: dict):
    """Prepare ``cfg``'s source in ``ctx``'s workspace, train (local mode) and register the model batch
    inference and serving use; not timed. Returns the snapshot."""
    from mlops_ray.config import TrainingSpec
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.registry.promotion import promote
    from mlops_ray.train.execution import choose_execution
    from mlops_ray.train.run import train_model

    t = time.perf_counter()
    # the gate scores on the snapshot's test rows: it must be in this context's workspace
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="ray").snapshot
    cand = train_model(ctx, TrainingSpec.from_config(cfg), snap, plan=choose_execution(node_cpus(), "local"))
    promote(ctx, cfg.registry, cfg.serve.model_alias, cand.version, force=True)
    res["model"] = {
        "name": cfg.registry.model_name,
        "version": str(cand.version),
        "trained_on_rows": snap.manifest["rows"],
        "setup_s": time.perf_counter() - t,
        "tracking_uri": ctx.tracking_uri,
    }
    return snap


def run_batch(args, topo, mem: MemWatch, ctx, cfg, data: dict, work: Path, res: dict) -> None:
    from mlops_ray.batch.predict import predict_files

    nodes = res["cluster"]["nodes"]
    for rows in args.batch_rows:
        row = {"rows": rows, "actors_max": args.batch_actors, "actor_cpus": 0.5}
        res["batch"].append(row)
        try:
            walls, scores = [], []
            for i in range(args.repeat):
                out_dir = work / "batch" / f"{rows}-{i}"
                gc.collect()
                _, seen = placement(topo, "actors", "MapWorker")
                with mem.phase("batch", rows, row):
                    t = time.perf_counter()
                    man = predict_files(ctx, cfg, str(data[rows]), str(out_dir), max_actors=args.batch_actors)
                    walls.append(time.perf_counter() - t)
                row["actors_per_node"], _ = placement(topo, "actors", "MapWorker", seen)
                scores.append(man["seconds"])
                if man["rows"] != rows:
                    raise RuntimeError(f"scored {man['rows']} rows, expected {rows}")
                shutil.rmtree(out_dir, ignore_errors=True)
        except Exception as err:  # noqa: BLE001
            row["error"] = f"{type(err).__name__}: {err}"
            print(f"batch {fmt_rows(rows)} FAILED: {row['error']}", flush=True)
            traceback.print_exc()
            continue
        w, s = min(walls), min(scores)
        # actors the pool requested but that never started before the job ended are "not placed"
        scoring = [k for k, v in (row.get("actors_per_node") or {}).items() if v and k != "not placed"]
        used = max(1, len(scoring)) if scoring else nodes
        row.update(
            wall_s=w,
            score_s=s,
            walls_s=walls,
            rows_per_s=rows / w,
            score_rows_per_s=rows / s,
            nodes=nodes,
            nodes_that_scored=used,
            score_rows_per_s_per_scoring_node=rows / s / used,
        )
        print(
            f"batch {fmt_rows(rows):>4}: {w:7.2f} s ({rows / w:,.0f} rows/s); scoring {s:.2f} s "
            f"({rows / s:,.0f} rows/s on {used} of {nodes} node(s); actors {row.get('actors_per_node')})",
            flush=True,
        )


def haproxy_requests(topo) -> dict[str, int]:
    """Requests each backend server of the head's HAProxy has answered so far ({"address:port": count}),
    from its admin socket ("show stat") and config; {} when there is none to read."""
    import socket

    socks = [p for d in topo.haproxy_dirs() for p in Path(d).rglob("admin.sock")] if topo.haproxy_dirs() else []
    if not socks:
        return {}
    sock = max(socks, key=lambda p: p.stat().st_mtime)
    addr = {}
    cfg = sock.parent / "haproxy.cfg"
    if cfg.exists():
        for line in cfg.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "server":
                addr[parts[1]] = parts[2]
    data = b""
    try:
        with topo.netns():
            c = socket.socket(socket.AF_UNIX)
        with c:
            c.settimeout(5)
            c.connect(str(sock))
            c.sendall(b"show stat\n")
            while chunk := c.recv(65536):
                data += chunk
    except OSError as err:
        return {f"unreadable ({err.strerror or err})": 0}
    out = {}
    for line in data.decode(errors="replace").splitlines():
        f = line.split(",")
        if len(f) > 8 and f[0].startswith("http-") and f[1] not in ("FRONTEND", "BACKEND"):
            out[addr.get(f[1], f[1])] = int(f[7] or 0)
    return out


def _wrk_args(wrk: str, url: str, body: Path, lua: Path, conc: int, duration: int) -> list[str]:
    return [wrk, "-t1", f"-c{conc}", f"-d{duration}s", "--latency", "--timeout", "10s", "-s", str(lua), url]


def run_wrk(topo, wrk: str, url: str, body: Path, lua: Path, conc: int, duration: int) -> dict:
    """Like benchmarks/serve.py's run_wrk, run on the head node (its network namespace in netns mode)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serve import _ms

    out = subprocess.run(
        topo.cmd(_wrk_args(wrk, url, body, lua, conc, duration)),
        env=dict(os.environ, WRK_BODY=str(body)),
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk gave no result: {out[-1500:]}")
    res = {"concurrency": conc, "rps": float(m.group(1))}
    for q in ("50", "99"):
        m = re.search(rf"\s{q}(?:\.000)?%\s+([\d.]+\w+)", out)
        res[f"p{q}_ms"] = _ms(m.group(1)) if m else None
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return res


def run_serve(args, topo, ctx, cfg, snap, work: Path, res: dict) -> None:
    from ray import serve

    from mlops_ray.data.splits import load_split
    from mlops_ray.ray_runtime import free_ports
    from mlops_ray.serve.runner import start_service, stop_service

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serve import ensure_wrk

    wrk = ensure_wrk()
    (work / "post.lua").write_text(LUA)
    spec = snap.manifest["spec"]
    frame = load_split(snap, "test", snap.preprocessor(), keep_frame=True).frame
    recs = json.loads(
        frame[spec["numeric_features"] + spec["categorical_features"]].head(100).to_json(orient="records")
    )
    del frame
    bodies = {}
    for n in (1, 100):
        bodies[n] = work / f"records{n}.json"
        bodies[n].write_text(json.dumps({"records": recs[:n]}))
    topo.before_serving()
    for n in args.replicas:
        row = {"replicas": n, "cpus_per_replica": cfg.serve.num_cpus_per_replica}
        res["serve"].append(row)
        started = False
        try:
            with topo.netns():
                port = free_ports(1)[0]
            host = topo.serve_host()
            cfg.serve = cfg.serve.model_copy(update={"min_replicas": n, "max_replicas": n, "port": port, "host": host})
            row["serve_host"] = host
            t = time.perf_counter()
            with topo.netns():
                if os.environ.get("MLOPS_SCALE_PROXY_HEAD_ONLY"):
                    serve.start(proxy_location="HeadOnly", http_options={"host": cfg.serve.host, "port": port})
                started = True
                url = start_service(ctx, cfg)
            row["start_s"] = time.perf_counter() - t
            row["replica_nodes"], _ = placement(topo, "actors", "ServeReplica", alive_only=True)
            pred = f"{url}/predict"
            run_wrk(topo, wrk, pred, bodies[1], work / "post.lua", 8, 2)  # warm-up
            h0 = haproxy_requests(topo)
            r1 = run_wrk(topo, wrk, pred, bodies[1], work / "post.lua", 32, args.duration)
            r100 = run_wrk(topo, wrk, pred, bodies[100], work / "post.lua", 8, args.duration)
            h1 = haproxy_requests(topo)
            row["requests_per_backend"] = {k: v - h0.get(k, 0) for k, v in h1.items()}
            row["one_record_c32"] = r1
            row["hundred_records_c8"] = {**r100, "rows_per_s": r100["rps"] * 100}
            print(
                f"serve {n} replica(s) {row['replica_nodes']} {row['requests_per_backend']}: "
                f"c=32 {r1['rps']:8.1f} rps p50 {r1['p50_ms']:.1f} ms "
                f"p99 {r1['p99_ms']:.1f} ms errors {r1['errors']}; 100-record c=8 {r100['rps'] * 100:,.0f} rows/s "
                f"errors {r100['errors']}",
                flush=True,
            )
        except Exception as err:  # noqa: BLE001
            row["error"] = f"{type(err).__name__}: {err}"
            print(f"serve {n} replicas FAILED: {row['error']}", flush=True)
            traceback.print_exc()
        finally:
            if started:
                with topo.netns():
                    try:
                        stop_service()
                    except Exception as err:  # noqa: BLE001
                        print(f"stop_service: {err!r}", flush=True)


# ===================================================================================== report
def markdown(res: dict) -> str:
    c, m = res["cluster"], res["machine"]
    lines = [
        f"## Scale benchmark: {res['mode']} ({res['size_mode']})",
        "",
        f"`{res['command']}`",
        "",
        f"Commit {res['commit']}{' (+ uncommitted changes in the tree: see JSON)' if res.get('dirty') else ''}, "
        f"{m['cpus']} cores, {m['mem_total_gb']} GiB, {m['cpu_model']}; Ray {m['ray']}, XGBoost {m['xgboost']}. "
        f"Cluster: {c['nodes']} node(s) x {c['cpus_per_node']} CPU"
        + (f", {c['cluster_mode']} mode" if c.get("cluster_mode") else "")
        + f"; workspace {res['workspace_kind']}.",
        "",
        "| phase | rows | configuration | wall s | rows/s | notes |",
        "|---|---|---|---|---|---|",
    ]

    def note(r):
        return r.get("skipped") or r.get("error") or ""

    for r in res["prep"]:
        if "wall_s" in r:
            lines.append(
                f"| prep | {fmt_rows(r['rows'])} | `prepare_snapshot` (Ray Data) | {r['wall_s']:.2f} | "
                f"{r['rows_per_s']:,.0f} | peak +{r.get('mem_peak_above_start_gb', 0):.1f} GB; map tasks "
                f"{_per_node(r.get('map_tasks_per_node'))}{_busy(r)} |"
            )
        else:
            lines.append(f"| prep | {fmt_rows(r['rows'])} | | | | {note(r)} |")
    for r in res["train"]:
        if "wall_s" in r:
            lines.append(
                f"| train | {fmt_rows(r['rows'])} | {r['plan']} | {r['wall_s']:.2f} | "
                f"{r['rows'] / r['wall_s']:,.0f} | {_phases(r)}, AUC {r['auc']:.4f}"
                + (f"; workers {_per_node(r['workers_per_node'])}" if r.get("workers_per_node") else "")
                + f"{_busy(r)} |"
            )
        else:
            lines.append(f"| train | {fmt_rows(r['rows'])} | {r.get('plan', '')} | | | {note(r)} |")
    for r in res["batch"]:
        if "wall_s" in r:
            lines.append(
                f"| batch | {fmt_rows(r['rows'])} | `predict_files`, {r['actors_max']} actors x 0.5 CPU | "
                f"{r['wall_s']:.2f} | {r['rows_per_s']:,.0f} | scoring {r['score_s']:.2f} s = "
                f"{r['score_rows_per_s']:,.0f} rows/s on {r.get('nodes_that_scored', '?')} of "
                f"{r.get('nodes', '?')} node(s); "
                f"actors {_per_node(r.get('actors_per_node'))}{_busy(r)} |"
            )
        else:
            lines.append(f"| batch | {fmt_rows(r['rows'])} | | | | {note(r)} |")
    lines += [
        "",
        "| replicas (0.5 CPU) | placement | requests per replica (HAProxy) | 1-record c=32 rps / p50 / p99 ms "
        "| 100-record c=8 rows/s | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["serve"]:
        if "one_record_c32" in r:
            a, b = r["one_record_c32"], r["hundred_records_c8"]
            place = _per_node(r.get("replica_nodes"))
            per = ", ".join(f"{v:,}" for v in (r.get("requests_per_backend") or {}).values()) or "?"
            lines.append(
                f"| {r['replicas']} | {place} | {per} | {a['rps']:,.0f} / {a['p50_ms']:.1f} / {a['p99_ms']:.1f} | "
                f"{b['rows_per_s']:,.0f} | {a['errors'] + b['errors']} |"
            )
        else:
            lines.append(f"| {r['replicas']} | | | | | {note(r)} |")
    if res.get("compare"):
        lines += ["", compare_markdown(res["compare"])]
    return "\n".join(lines) + "\n"


PHASES = ("startup", "load", "train", "finish")


def _phases(r: dict) -> str:
    """Rank 0's phases of the best repeat: 'startup 10.1 s, load 2.3 s, boosting 28.1 s, finish 1.0 s'."""
    vals = {k: r.get(f"{k}_s") for k in PHASES}
    return ", ".join(f"{'boosting' if k == 'train' else k} {v:.1f} s" for k, v in vals.items() if v is not None)


def _busy(r: dict) -> str:
    f, st = r.get("other_processes_cpu_fraction") or 0, r.get("cpu_steal_fraction") or 0
    return (f"; other processes used {f:.0%} of the CPUs" if f >= 0.05 else "") + (
        f"; CPU steal {st:.0%}" if st >= 0.05 else ""
    )


def _per_node(counts: dict | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted((counts or {}).items())) or "?"


def _walls(runs: list[dict], phase: str, rows: int, pred) -> list[float]:
    """Every timed wall of the matching items over ``runs`` (each repeat of each run)."""
    out = []
    for run in runs:
        for r in run.get(phase, []):
            if r.get("rows") == rows and "wall_s" in r and pred(r):
                out += r.get("walls_s") or [r["wall_s"]]
    return out


def compare(ones: list[dict], twos: list[dict], rows: int = TARGET_ROWS) -> dict:
    """Two-node / one-node wall-time ratios at ``rows`` against TARGET_RATIO, over one or more runs per
    side: the ratio of the best walls (each side's fastest repeat) and of the medians."""
    items = []

    def add(name, phase, pred, target=True):
        a, b = _walls(ones, phase, rows, pred), _walls(twos, phase, rows, pred)
        if not (a and b):
            items.append({"item": name, "missing": True})
            return
        it = {
            "item": name,
            "one_node_walls_s": a,
            "two_node_walls_s": b,
            "one_node_s": min(a),
            "two_node_s": min(b),
            "ratio": min(b) / min(a),
            "median_ratio": statistics.median(b) / statistics.median(a),
        }
        if target:
            it["pass"] = it["ratio"] <= TARGET_RATIO
        items.append(it)

    add("data preparation", "prep", lambda r: True)
    add("training, each cluster's default plan", "train", lambda r: r.get("default"))
    for w in (2, 1):
        add(
            f"training, {w} Ray Train worker{'s' if w > 1 else ''}",
            "train",
            lambda r, w=w: r.get("mode") == "distributed" and r["workers"] == w,
        )
    b1 = next((r for run in ones for r in run.get("batch", []) if "wall_s" in r), None)
    if b1:
        items.append({"item": f"batch inference {fmt_rows(b1['rows'])} (informative)", "missing": True})
        a, b = _walls(ones, "batch", b1["rows"], lambda r: True), _walls(twos, "batch", b1["rows"], lambda r: True)
        if a and b:
            items[-1] = {
                "item": f"batch inference {fmt_rows(b1['rows'])} (informative)",
                "one_node_s": min(a),
                "two_node_s": min(b),
                "ratio": min(b) / min(a),
                "median_ratio": statistics.median(b) / statistics.median(a),
            }
    return {
        "rows": rows,
        "target": TARGET_RATIO,
        "one_node": [{"commit": r.get("commit"), "file": r.get("file")} for r in ones],
        "two_node": [
            {"commit": r.get("commit"), "file": r.get("file"), "cluster_mode": r["cluster"].get("cluster_mode")}
            for r in twos
        ],
        "items": items,
    }


def compare_markdown(cmp: dict) -> str:
    n1, n2 = len(cmp["one_node"]), len(cmp["two_node"])
    runs = f" ({n1} one-node and {n2} two-node runs)" if n1 + n2 > 2 else ""
    lines = [
        f"Two nodes vs one at {fmt_rows(cmp['rows'])} rows{runs}, same total CPUs; target: best two-node wall "
        f"<= {cmp['target']}x the best one-node wall:",
        "",
        "| item | one node s (best) | two nodes s (best) | ratio | ratio of medians | target |",
        "|---|---|---|---|---|---|",
    ]
    for it in cmp["items"]:
        if it.get("missing"):
            lines.append(f"| {it['item']} | | | | | not measured in both |")
            continue
        verdict = "" if "pass" not in it else ("PASS" if it["pass"] else "FAIL")
        lines.append(
            f"| {it['item']} | {it['one_node_s']:.2f} | {it['two_node_s']:.2f} | {it['ratio']:.2f}x | "
            f"{it['median_ratio']:.2f}x | {verdict} |"
        )
    return "\n".join(lines)


def plot(out_png: Path) -> str | None:
    """Curves from every scale-*.json in the results directory; returns why not, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        return f"matplotlib not importable ({err}): no PNG"
    runs = []
    for p in sorted(RESULTS.glob("scale-*.json")):
        try:
            d = json.loads(p.read_text())
        except ValueError:
            continue
        if isinstance(d, dict) and "prep" in d:
            runs.append((p.stem.removeprefix("scale-"), d))
    if not runs:
        return "no results to plot"
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    for name, d in runs:
        pts = sorted((r["rows"], r["rows_per_s"]) for r in d["prep"] if "rows_per_s" in r)
        if pts:
            axes[0].plot([p[0] / M for p in pts], [p[1] / 1000 for p in pts], marker="o", label=name)
        by_plan: dict[str, list] = {}
        for r in d["train"]:
            if "wall_s" in r:
                by_plan.setdefault(r["plan"], []).append((r["rows"], r["wall_s"]))
        for plan, p in by_plan.items():
            p.sort()
            axes[1].plot([x[0] / M for x in p], [x[1] for x in p], marker="o", label=f"{name}: {plan}")
        sp = [(r["replicas"], r["one_record_c32"]["rps"]) for r in d["serve"] if "one_record_c32" in r]
        if sp:
            axes[2].plot([x[0] for x in sp], [x[1] for x in sp], marker="o", label=f"{name}: 1-record, c=32")
        sp = [(r["replicas"], r["hundred_records_c8"]["rows_per_s"]) for r in d["serve"] if "hundred_records_c8" in r]
        if sp:
            axes[3].plot([x[0] for x in sp], [x[1] / 1000 for x in sp], marker="o", label=f"{name}: 100-record, c=8")
    titles = (
        ("data preparation", "rows (millions)", "thousand rows/s"),
        ("training wall time (100 rounds)", "rows (millions)", "seconds"),
        ("serving, 1-record requests", "replicas (0.5 CPU each)", "requests/s"),
        ("serving, 100-record requests", "replicas (0.5 CPU each)", "thousand rows/s"),
    )
    for ax, (t, x, y) in zip(axes, titles):
        ax.set_title(t)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return None


def auto_compare(res: dict) -> dict | None:
    suffix = "-full" if res["size_mode"] == "full" else ""
    one, two = RESULTS / f"scale-one-node{suffix}.json", RESULTS / f"scale-two-node{suffix}.json"
    if res["mode"] not in ("one-node", "two-node") or not (one.exists() and two.exists()):
        return None
    a, b = (json.loads(p.read_text()) for p in (one, two))
    a["file"], b["file"] = str(one.relative_to(ROOT)), str(two.relative_to(ROOT))
    return compare([a], [b])


def main_compare(sides: list[str], out: str | None = None) -> int:
    """``sides``: two comma-separated lists of result files (one-node runs, two-node runs)."""
    runs = []
    for side in sides:
        runs.append([])
        for p in side.split(","):
            d = json.loads(Path(p).read_text())
            d["file"] = p
            runs[-1].append(d)
    cmp = compare(*runs)
    text = compare_markdown(cmp)
    print(text)
    if out:
        Path(out).write_text(json.dumps(cmp, indent=1))
        Path(out).with_suffix(".md").write_text(text + "\n")
        print(f"wrote {out}, {Path(out).with_suffix('.md')}")
    return 0 if all(it.get("pass", True) for it in cmp["items"] if not it.get("missing")) else 1


# ===================================================================================== main
def wait_for_idle(max_wait_s: float = 120.0, busy_below: float = 0.25) -> dict:
    """Wait (up to ``max_wait_s``) until the machine's CPUs are mostly idle for 3 s (a shared machine)."""
    t = time.perf_counter()
    while True:
        busy = psutil.cpu_percent(interval=3.0) / 100
        waited = time.perf_counter() - t
        if busy < busy_below or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "cpu_busy_fraction_when_started": round(busy, 3)}
        print(f"waiting for idle CPUs (busy {busy:.0%})", flush=True)


def machine_info() -> dict:
    cpu_model = ""
    with contextlib.suppress(OSError):
        cpu_model = next(
            (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), ""
        )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_gb": round(psutil.virtual_memory().total / GB, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{p: md.version(p) for p in ("ray", "xgboost", "mlflow", "pyarrow", "numpy")},
    }


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--address", help="an existing Ray cluster (or 'auto'); needs --workspace shared by its nodes")
    where.add_argument("--two-node", action="store_true", help="start tests/_multinode.py's two-node cluster")
    where.add_argument(
        "--compare",
        nargs=2,
        metavar=("ONE.json[,ONE2.json]", "TWO.json[,TWO2.json]"),
        help="print the two-node/one-node ratios at 4M rows (several runs per side: comma-separated) and exit; "
        "with --out, also write them (JSON and .md)",
    )
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="(default) prep/train 1M and 4M, batch 1M, 1-2 replicas")
    size.add_argument("--full", action="store_true", help="prep 1M/5M/20M, train 1M/4M/10M, batch 4M, 1/2/4 replicas")
    ap.add_argument("--workspace", help="workspace path or URI (default: a directory in --workdir)")
    ap.add_argument("--workdir", help="scratch directory (default: a new temp dir, deleted at the end)")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mlops-scale-data",
                    help="generated data, cached between runs (default %(default)s)")  # fmt: skip
    ap.add_argument("--out", help="JSON result (default benchmarks/results/scale-<mode>.json)")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="repeats per timed item (the best wall is reported)")
    ap.add_argument("--batch-actors", type=int, default=None, help="batch actor pool size (default: total CPUs)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["prep", "train", "batch", "serve"])
    for k in ("prep", "train", "batch"):
        ap.add_argument(f"--{k}-rows", type=int, nargs="+", help=f"override the {k} sizes (development)")
    ap.add_argument("--workers", type=int, nargs="+")
    ap.add_argument("--replicas", type=int, nargs="+")
    ap.add_argument("--duration", type=int, help="seconds per wrk run")
    ap.add_argument(
        "--serve-host",
        help="with --address: serve.host for the service (default 127.0.0.1: then HAProxy on one node cannot "
        "reach replicas on the others; a multi-node service needs an address every node's HAProxy reaches)",
    )
    args = ap.parse_args(argv)
    args.size_mode = "full" if args.full else "quick"
    d = SIZES[args.size_mode]
    for k in ("prep", "train", "batch"):
        if getattr(args, f"{k}_rows") is None:
            setattr(args, f"{k}_rows", list(d[k]))
    args.workers = args.workers or list(d["workers"])
    args.replicas = args.replicas or list(d["replicas"])
    args.duration = args.duration or d["duration"]
    if args.address and not args.workspace:
        ap.error("--address needs --workspace: a path or URI every node of the cluster sees")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compare:
        return main_compare(args.compare, args.out)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLOPS_RAY_PROGRESS", "0")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mlops-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    workspace = args.workspace or str(work / "shared-workspace")
    os.environ["MLOPS_RAY_HOME"] = workspace
    cores = os.cpu_count() or 2
    if args.address:
        topo = Existing(args.address, workspace, args.serve_host)
    elif args.two_node:
        topo = TwoNode(max(1, cores // 2), work, Path(workspace))
    else:
        topo = OneNode(cores, Path(workspace))
    mode = topo.name + ("-full" if args.full else "")
    out_path = Path(args.out or RESULTS / f"scale-{mode}.json")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "mlops_ray", "benchmarks/scale.py")
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    res: dict = {
        "command": " ".join([exe, *sys.argv]),
        "mode": topo.name,
        "size_mode": args.size_mode,
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": dirty.splitlines(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "loadavg_start": os.getloadavg(),
        "workspace": workspace,
        "workspace_kind": "shared mount (a directory both nodes see)"
        if args.two_node
        else ("given by --workspace" if args.workspace else "local directory"),
        "settings": {
            "rounds": args.rounds,
            "repeat": args.repeat,
            "shards": SHARDS,
            "workers": args.workers,
            "replicas": args.replicas,
            "wrk_duration_s": args.duration,
        },
        "data_generation_s": {},
        "prep": [],
        "train": [],
        "batch": [],
        "serve": [],
        "errors": [],
    }
    res["notes"] = {
        "one-node": [
            "serving runs on a fresh local cluster started the way `mlops-ray serve` starts one "
            "(ensure_ray(serving=True): HAProxy ingress, worker setup hook); the other phases on "
            "ensure_ray(num_cpus=cores)",
        ],
        "two-node": [
            "nodes started by tests/_multinode.py (`ray start`, one network namespace per node, the worker "
            "also in its own mount and PID namespaces) with HAProxy ingress, fast autoscaling metrics and "
            "short draining set as mlops-ray sets them for its local clusters; no worker setup hook",
            "the driver runs on the head (its network namespace); wrk runs in the head's namespace against "
            "the head's proxy, as the one-node run's wrk runs on its node",
        ],
        "cluster": ["an existing cluster: its own settings"],
    }[topo.name] + [
        "MLflow: SQLite in the workspace"
        + (
            " (on the shared mount; the two nodes share one kernel, a real cluster uses an MLflow server)"
            if args.two_node
            else ""
        ),  # fmt: skip
        "batch and serving use one registered model trained (untimed, local mode) on the smallest size",
    ]
    mem = MemWatch()

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=1, default=str))

    t_all = time.perf_counter()
    res["idle_wait"] = wait_for_idle()
    try:
        res["cluster"] = topo.start()
        if hasattr(topo, "own_pids"):
            mem.own_pids = topo.own_pids
        res["cluster"]["node_cpus"] = node_cpus()
        args.batch_actors = args.batch_actors or max(1, int(sum(res["cluster"]["node_cpus"])))
        print(f"cluster: {res['cluster']}", flush=True)
        sizes = sorted(set(args.prep_rows) | set(args.train_rows) | set(args.batch_rows))
        data = {}
        for rows in sizes:
            data[rows], secs = ensure_data(args.data_dir, rows)
            if secs is not None:
                res["data_generation_s"][str(rows)] = secs
        prep_sizes = sorted(set(args.prep_rows) | set(args.train_rows))
        snaps = {}
        if "prep" not in args.skip:
            snaps = run_prep(args, topo, mem, prep_sizes, work, data, res)
            save()
        from mlops_ray.context import Context
        from mlops_ray.workspace import get_workspace

        ws = get_workspace(workspace)
        storage = ws.shared_uri("ray", "scale")
        if "train" not in args.skip:
            run_train(args, topo, mem, snaps, work, storage, res)
            save()
        if {"batch", "serve"} - set(args.skip):
            cfg = make_config(data[min(data)], args.rounds, "scale-bench")
            ctx = Context.create(cfg, workspace=ws)
            snap = register_model(ctx, cfg, res)
            if "batch" not in args.skip:
                run_batch(args, topo, mem, ctx, cfg, data, work, res)
                save()
            if "serve" not in args.skip:
                run_serve(args, topo, ctx, cfg, snap, work, res)
                save()
    except Exception as err:  # noqa: BLE001 - keep what was measured
        res["errors"].append(f"{type(err).__name__}: {err}")
        traceback.print_exc()
    finally:
        res["total_s"] = time.perf_counter() - t_all
        res["loadavg_end"] = os.getloadavg()
        mem.stop()
        try:
            topo.stop()
        except Exception as err:  # noqa: BLE001
            res["errors"].append(f"stopping the cluster: {err!r}")
    res["compare"] = auto_compare_after(res, out_path, save)
    text = markdown(res)
    out_path.with_suffix(".md").write_text(text)
    print("\n" + text)
    why = plot(RESULTS / "scale.png")
    print(f"wrote {out_path}, {out_path.with_suffix('.md')}" + (f"; {why}" if why else f", {RESULTS / 'scale.png'}"))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if res["errors"] else 0


def auto_compare_after(res: dict, out_path: Path, save) -> dict | None:
    save()
    if out_path.parent != RESULTS:
        return None
    cmp = auto_compare(res)
    if cmp:
        res["compare"] = cmp
        save()
    return cmp


if __name__ == "__main__":
    sys.exit(main())
