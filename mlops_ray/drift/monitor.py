"""The drift monitor (a named Ray actor) and the replica-side recorder that feeds it (Ray glue).

Why a named, detached actor rather than a deployment composed into the Serve application:

* one monitor per *model*, whatever serves it (several applications, a ``serve deploy`` config,
  a redeploy with new options) and whoever reads it (``GET /drift`` on any replica, the CLI, the
  pipeline's drift trigger) by name with ``ray.get_actor`` -- no handle to thread through;
* its restarts are Ray's (``max_restarts=-1``), and pushes sent while it restarts are retried
  (``max_task_retries=-1``) against the restored instance;
* Serve's router is not on the path: a push is one actor call, every ``push_every_rows`` rows
  or ``push_interval_s`` seconds per replica, fire-and-forget.

The monitor merges counts into windows (:class:`~mlops_ray.drift.windows.WindowStore`),
checkpoints them to ``<workspace>/drift/<model>.json`` every ``checkpoint_interval_s`` (a
restarted monitor restores them), keeps a bounded reservoir of recent scored rows to join
``POST /feedback`` labels with, and exports Prometheus gauges on its own endpoint (the
replicas export none: per-replica drift series would multiply cardinality).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from mlops_ray.config import DriftConfig
from mlops_ray.drift.psi import SEVERITY
from mlops_ray.drift.reference import DriftReference, limits_of
from mlops_ray.drift.render import json_safe
from mlops_ray.drift.windows import WindowStore

log = logging.getLogger("mlops_ray.drift")

NAMESPACE = "mlops-ray-drift"
MAX_VERSIONS = 5  # versions monitored at once (the oldest is dropped)


def actor_name(model_name: str) -> str:
    return f"drift-monitor:{model_name}"


def checkpoint_path(workspace: str | Path | None, model_name: str) -> str | None:
    if workspace is None:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    return str(Path(workspace) / "drift" / f"{safe}.json")


# ---------------------------------------------------------------------------------------- the actor
class DriftMonitor:
    """Merges per-replica counts into windows per model version; one per served model."""

    def __init__(self, model_name: str, drift: dict, checkpoint: str | None, tracking_uri: str | None = None):
        self.model_name = model_name
        self.cfg = DriftConfig.model_validate(drift)
        self.checkpoint = checkpoint
        self.tracking_uri = tracking_uri
        self.params = {
            "window_rows": self.cfg.window_rows,
            "window_s": self.cfg.window_s,
            "keep_windows": self.cfg.keep_windows,
            "limits": limits_of(self.cfg),
        }
        self.store = self._restore()
        self.restored = bool(self.store.versions)
        self.started_at = time.time()
        self.pushes = 0
        self._dirty = False
        self._last_checkpoint = 0.0
        self.reservoir: OrderedDict[str, dict] = OrderedDict()  # request id -> scored rows
        self.reservoir_rows = 0
        self.labelled: dict[str, dict[str, deque]] = {}  # version -> {"y", "scores", "rows"}
        self._labels_received: dict[str, int] = {}  # version -> labels joined so far
        self._feedback_cache: dict[str, tuple[int, dict]] = {}  # version -> (labels received, metrics)
        self._models: dict[str, Any] = {}
        self._loop_task = None
        self._last_status: dict[str, str] = {}
        self.sampled_out: dict[str, int] = {}  # rows replicas did not count (drift.sample_rows_per_s)
        self._start_metrics()

    # ---------------------------------------------------------------- persistence
    def _restore(self) -> WindowStore:
        if self.checkpoint and os.path.exists(self.checkpoint):
            try:
                with open(self.checkpoint) as f:
                    return WindowStore.from_dict(json.load(f), **self.params)
            except Exception as err:  # a corrupt checkpoint must not keep the monitor down
                log.warning("drift checkpoint %s unreadable (%s); starting empty", self.checkpoint, err)
        return WindowStore(self.model_name, **self.params)

    def _write_checkpoint(self) -> None:
        if not self.checkpoint:
            return
        path = Path(self.checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.store.to_dict()))  # edges keep +-inf (Python reads it back)
        os.replace(tmp, path)
        self._dirty = False
        self._last_checkpoint = time.monotonic()

    # ---------------------------------------------------------------- background
    def _ensure_loop(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        period = min(0.5, self.cfg.checkpoint_interval_s)
        while True:
            await asyncio.sleep(period)
            try:
                self._closed(self.store.tick(time.time()))
                if self._dirty and time.monotonic() - self._last_checkpoint >= self.cfg.checkpoint_interval_s:
                    self._write_checkpoint()
                self._update_gauges()
            except Exception:  # keep the loop alive; the next tick retries
                log.exception("drift monitor tick failed")

    def _closed(self, evaluations: list[dict]) -> None:
        for ev in evaluations:
            self._dirty = True
            v = ev["model_version"]
            self.m_windows.labels(model_version=v).inc()
            if ev["status"] == "alert":
                self.m_alerts.labels(model_version=v).inc()
            previous = self._last_status.get(v)
            self._last_status[v] = ev["status"]
            if ev["status"] == "alert" and previous != "alert":  # log changes, not every window of a drift
                names = [f["feature"] for f in ev["features"] if f["status"] == "alert"]
                log.warning("drift alert on %s v%s: %s", self.model_name, v, ", ".join(names))
            elif previous == "alert" and ev["status"] != "alert":
                log.warning("drift alert on %s v%s ended (window status %s)", self.model_name, v, ev["status"])

    # ---------------------------------------------------------------- metrics
    def _start_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        labels = ("model", "model_version")
        self.m_psi = Gauge(
            "mlops_drift_psi", "PSI per feature (last closed window)", (*labels, "feature"), registry=self.registry
        )
        self.m_chance = Gauge(
            "mlops_drift_chance_threshold",
            "PSI chance alone exceeds at the window's size",
            (*labels, "feature"),
            registry=self.registry,
        )
        self.m_status = Gauge(
            "mlops_drift_status",
            "Overall drift status: -1 insufficient, 0 ok, 1 warn, 2 alert",
            labels,
            registry=self.registry,
        )
        self.m_pred = Gauge(
            "mlops_drift_prediction_psi", "PSI of the prediction histogram", labels, registry=self.registry
        )
        self.m_rows = Gauge("mlops_drift_window_rows", "Rows in the window in progress", labels, registry=self.registry)
        self.m_windows = Counter("mlops_drift_windows", "Windows closed", ("model_version",), registry=self.registry)
        self.m_alerts = Counter(
            "mlops_drift_alert_windows", "Windows closed in alert", ("model_version",), registry=self.registry
        )
        self.metrics_address = None
        try:
            server, _ = start_http_server(self.cfg.metrics_port, addr=self.cfg.metrics_host, registry=self.registry)
            host, port = server.server_address[:2]
            self.metrics_address = f"http://{host}:{port}/metrics"
        except OSError as err:  # a taken port: drift still works, only the scrape endpoint is missing
            log.error("drift metrics endpoint %s:%s not started: %s", self.cfg.metrics_host, self.cfg.metrics_port, err)

    def _update_gauges(self) -> None:
        for version in list(self.store.versions):
            ev = self.store.latest(version)
            base = {"model": self.model_name, "model_version": version}
            for f in ev["features"]:
                if f["rows"]:
                    self.m_psi.labels(**base, feature=f["feature"]).set(f["psi"])
                    self.m_chance.labels(**base, feature=f["feature"]).set(f["chance_threshold"])
            self.m_status.labels(**base).set(SEVERITY[ev["status"]])
            if ev.get("prediction") and ev["prediction"]["rows"]:
                self.m_pred.labels(**base).set(ev["prediction"]["psi"])
            self.m_rows.labels(**base).set(self.store.versions[version].current.rows)

    # ---------------------------------------------------------------- calls from replicas
    async def register(self, version: str, reference_stats: dict) -> bool:
        self._ensure_loop()
        new = self.store.register(str(version), reference_stats, time.time())
        if new:
            while len(self.store.versions) > MAX_VERSIONS:
                oldest = min(self.store.versions, key=lambda v: self.store.versions[v].registered_at)
                del self.store.versions[oldest]
            self._write_checkpoint()  # a restarted monitor must know every version it was told of
        return new

    async def push(self, version: str, counts: dict, rows: int, scored: dict | None = None, skipped: int = 0) -> None:
        self._ensure_loop()
        self.pushes += 1
        if skipped:
            self.sampled_out[str(version)] = self.sampled_out.get(str(version), 0) + int(skipped)
        if not rows:
            return
        self._closed(self.store.add(str(version), counts, int(rows), time.time()))
        self._dirty = True
        if scored is not None and self.cfg.feedback_rows:
            self._keep_scored(str(version), scored)

    # ---------------------------------------------------------------- reading
    async def report(self, version: str | None = None) -> dict[str, Any]:
        """Every monitored version's current window and closed windows (or only ``version``)."""
        self._ensure_loop()
        versions = [str(version)] if version is not None else list(self.store.versions)
        out = {
            "model": self.model_name,
            "monitor": {
                "started_at": self.started_at,
                "restored_from_checkpoint": self.restored,
                "pushes": self.pushes,
                "dropped_rows": self.store.dropped_rows,
                "checkpoint": self.checkpoint,
                "metrics": self.metrics_address,
            },
            "settings": {
                **limits_of(self.cfg),
                "window_rows": self.cfg.window_rows,
                "window_s": self.cfg.window_s,
                "keep_windows": self.cfg.keep_windows,
            },
            "versions": {v: self.store.report(v) for v in versions if v in self.store.versions},
        }
        for v, rep in out["versions"].items():
            rep["feedback"] = await self._feedback_summary(v)
            rep["sampled_out_rows"] = self.sampled_out.get(v, 0)
        return json_safe(out)

    async def ping(self) -> dict[str, Any]:
        self._ensure_loop()
        return {"metrics": self.metrics_address, "versions": {v: self.store.rows_seen(v) for v in self.store.versions}}

    async def flush_checkpoint(self) -> str | None:
        self._write_checkpoint()
        return self.checkpoint

    # ---------------------------------------------------------------- feedback (ground truth)
    def _keep_scored(self, version: str, scored: dict) -> None:
        table: pa.Table = scored["table"]
        scores = np.asarray(scored["scores"])
        start = 0
        for rid, n in zip(scored["request_ids"], scored["lengths"]):
            self.reservoir[rid] = {
                "version": version,
                "table": table.slice(start, n),
                "scores": scores[start : start + n],
            }
            self.reservoir.move_to_end(rid)
            self.reservoir_rows += n
            start += n
        while self.reservoir_rows > self.cfg.feedback_rows and self.reservoir:
            _, old = self.reservoir.popitem(last=False)
            self.reservoir_rows -= old["table"].num_rows

    async def feedback(self, items: list[dict]) -> dict[str, Any]:
        """Labels for earlier predictions: ``[{"request_id", "record" (default 0), "label"}]``."""
        self._ensure_loop()
        joined, unknown = 0, []
        for i, item in enumerate(items):
            entry = self.reservoir.get(item["request_id"])
            rec = int(item.get("record", 0))
            if entry is None or not 0 <= rec < entry["table"].num_rows:
                unknown.append(i)
                continue
            keep = self.cfg.feedback_rows  # the most recent labelled rows
            lab = self.labelled.setdefault(entry["version"], {k: deque(maxlen=keep) for k in ("y", "scores", "rows")})
            lab["y"].append(item["label"])
            lab["scores"].append(entry["scores"][rec])
            lab["rows"].append(entry["table"].slice(rec, 1))
            self._labels_received[entry["version"]] = self._labels_received.get(entry["version"], 0) + 1
            joined += 1
        return {"accepted": joined, "unknown": unknown}

    async def _feedback_summary(self, version: str) -> dict[str, Any]:
        lab = self.labelled.get(version)
        n = len(lab["y"]) if lab else 0
        out: dict[str, Any] = {
            "labelled_rows": n,
            "min_rows": self.cfg.feedback_min_rows,
            "kept_rows": self.reservoir_rows,
        }
        if n < self.cfg.feedback_min_rows:
            return out
        # The metrics (permutation importance included) change only when labels arrive; GET /drift
        # and the pipeline's watcher (every few seconds) read the cached ones.
        received = self._labels_received.get(version, 0)
        cached = self._feedback_cache.get(version)
        if cached is None or cached[0] != received:
            try:
                snapshot = {k: list(v) for k, v in lab.items()}  # labels may arrive while the thread reads
                cached = (received, await asyncio.to_thread(self._feedback_metrics, version, snapshot))
            except Exception as err:
                cached = (received, {"error": f"{type(err).__name__}: {err}"})
            self._feedback_cache[version] = cached
        out.update(cached[1])
        return out

    def _feedback_metrics(self, version: str, lab: dict) -> dict[str, Any]:
        from mlops_ray.model.metrics import compute_metrics, permutation_importance
        from mlops_ray.model.tasks import DEFAULT_METRIC

        model = self._model(version)
        task = model.task
        y = np.asarray(lab["y"])
        if task != "regression":
            y = y.astype(np.int64)
        scores = np.asarray(lab["scores"])
        metric = DEFAULT_METRIC[task]
        rolling = compute_metrics(task, y, scores)
        frame = pa.concat_tables(lab["rows"]).to_pandas()
        features = model.preprocessor.input_columns
        importance = permutation_importance(model.score_frame, frame, y, task, features, repeats=2, seed=0)
        return {
            "metric": metric,
            "rolling": rolling.get(metric),
            "test": model.meta.get("metrics", {}).get(f"test_{metric}"),
            "rolling_metrics": rolling,
            "permutation_importance": {k: v["mean"] for k, v in importance.items()},
            "training_importance": {k: v["mean"] for k, v in model.meta.get("permutation_importance", {}).items()},
        }

    def _model(self, version: str):
        if version not in self._models:
            from mlops_ray.registry import tracking

            uri = f"models:/{self.model_name}/{version}"
            self._models[version] = tracking.load_pyfunc(self.tracking_uri, uri).unwrap_python_model()
        return self._models[version]


RemoteMonitor = ray.remote(DriftMonitor)


def get_monitor(model_name: str, *, create: dict | None = None):
    """The model's monitor actor; with ``create`` (``{"drift", "checkpoint", "tracking_uri"}``),
    started if it does not exist. None if there is none (and none was asked for)."""
    name = actor_name(model_name)
    if create is None:
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None
    return RemoteMonitor.options(
        name=name,
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=0,
        max_concurrency=32,
    ).remote(model_name, create["drift"], create.get("checkpoint"), create.get("tracking_uri"))


def ensure_monitor(model_name: str, create: dict, timeout_s: float = 30.0):
    """The model's monitor, started if needed, and answering: a handle from a ``get_if_exists``
    creation that raced another replica's could fail its first calls (a push lost 100 rows in a
    test), so the handle is checked with a ping and looked up again by name until one answers."""
    deadline = time.monotonic() + timeout_s
    handle = get_monitor(model_name, create=create)
    while True:
        try:
            ray.get(handle.ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
            return handle
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            handle = get_monitor(model_name) or get_monitor(model_name, create=create)


def stop_monitor(model_name: str) -> bool:
    """Kill the model's monitor (its checkpoint stays); False if there was none."""
    handle = get_monitor(model_name)
    if handle is None:
        return False
    ray.kill(handle, no_restart=True)
    return True


def stop_all_monitors() -> int:
    """Kill every drift monitor on the cluster (their checkpoints stay); returns how many."""
    from ray.util import list_named_actors

    n = 0
    for entry in list_named_actors(all_namespaces=True):
        if entry.get("namespace") == NAMESPACE:
            try:
                handle = ray.get_actor(entry["name"], namespace=NAMESPACE)
            except ValueError:
                continue
            try:
                ray.get(handle.flush_checkpoint.remote(), timeout=2)  # keep the last interval's counts
            except Exception:
                pass
            ray.kill(handle, no_restart=True)
            n += 1
    return n


# ---------------------------------------------------------------------------------------- replica side
class _Buffer:
    """Scored rows of one version since the last push. Requests are compacted into one contiguous
    table every :data:`COMPACT_EVERY` requests, so a push never concatenates a thousand one-row
    tables at once (a stall of several ms that showed in the p99 at 32 connections)."""

    __slots__ = ("reference", "tables", "scores", "chunks", "chunk_scores", "request_ids", "lengths", "rows", "skipped")
    COMPACT_EVERY = 64

    def __init__(self, reference: DriftReference):
        self.reference = reference
        self.tables: list[pa.Table] = []  # requests not compacted yet
        self.scores: list[np.ndarray] = []
        self.chunks: list[pa.Table] = []  # compacted, contiguous
        self.chunk_scores: list[np.ndarray] = []
        self.request_ids: list[str] = []
        self.lengths: list[int] = []
        self.rows = 0
        self.skipped = 0  # rows not counted (sampling)

    def add(self, table: pa.Table, scores: np.ndarray, request_id: str) -> None:
        self.tables.append(table)
        self.scores.append(np.asarray(scores))
        self.request_ids.append(request_id)
        self.lengths.append(table.num_rows)
        self.rows += table.num_rows
        if len(self.tables) >= self.COMPACT_EVERY:
            self._compact()

    def _compact(self) -> None:
        if self.tables:
            self.chunks.append(pa.concat_tables(self.tables).combine_chunks())
            self.chunk_scores.append(np.concatenate(self.scores))
            self.tables, self.scores = [], []

    def combined(self) -> tuple[pa.Table, np.ndarray]:
        """All rows as one contiguous table (counting is ~2x faster on one, and pickling a table of
        many small chunks cost 40 ms for 256 one-row requests against 0.1 ms combined)."""
        self._compact()
        table = pa.concat_tables(self.chunks).combine_chunks() if len(self.chunks) > 1 else self.chunks[0]
        scores = np.concatenate(self.chunk_scores) if len(self.chunk_scores) > 1 else self.chunk_scores[0]
        return table, scores


class DriftRecorder:
    """Per replica: buffers the validated raw rows it scores per model version and pushes their bin
    counts to the monitor every ``push_every_rows`` rows or ``push_interval_s`` seconds.

    :meth:`observe` is a list append on the request path; counting is vectorised over the whole
    buffer at push time and the push is fire-and-forget. A monitor that is down never fails a
    request: pushes to a restarting monitor are retried by Ray; a monitor found dead is recreated
    (it restores its checkpoint) at the next push.
    """

    def __init__(self, model_name: str, drift: DriftConfig, checkpoint: str | None, tracking_uri: str):
        self.model_name = model_name
        self.cfg = drift
        self.create = {"drift": drift.model_dump(), "checkpoint": checkpoint, "tracking_uri": tracking_uri}
        self.buffers: dict[str, _Buffer] = {}
        self.references: dict[str, DriftReference | None] = {}
        self.stats: dict[str, dict | None] = {}
        self.registered: set[str] = set()
        self._handle = None
        self._last_ref = None
        self._lock = threading.Lock()
        self._rate, self._rate_t, self._rng = 0.0, time.monotonic(), random.Random()
        self.pushes = 0
        self.errors = 0

    def _monitor(self):
        if self._last_ref is not None:  # the previous push failed for good: the actor is gone
            ready, _ = ray.wait([self._last_ref], timeout=0)
            if ready:
                try:
                    ray.get(ready[0])
                except Exception:
                    self._handle, self.registered = None, set()
                    self.errors += 1
        if self._handle is None:
            self._handle = get_monitor(self.model_name, create=self.create)
        return self._handle

    def monitor(self):
        """The monitor's handle (created if needed)."""
        return self._monitor()

    def start(self) -> None:
        """Start (or find) the monitor and wait until it answers (the replica's constructor calls this)."""
        handle = ensure_monitor(self.model_name, self.create)
        with self._lock:
            self._handle = handle

    def forget(self) -> None:
        """A call to the monitor failed: look it up (or recreate it) next time."""
        with self._lock:
            self._handle, self.registered = None, set()

    def observe(self, model, table: pa.Table, scores: np.ndarray, request_id: str) -> None:
        """Record one scored request (``model`` is the LoadedModel that scored it)."""
        version = model.version
        buf = self.buffers.get(version)
        if buf is None:
            if version not in self.references:
                stats = getattr(model.model, "reference_stats", None)
                if stats:
                    stats = {**stats, "task": model.task, "snapshot_id": model.model.meta.get("snapshot_id")}
                self.references[version] = DriftReference.from_stats(stats, model.task) if stats else None
                self.stats[version] = stats
            if self.references[version] is None:
                return  # a model without reference statistics: nothing to compare with
            buf = self.buffers[version] = _Buffer(self.references[version])
        if not self._keep(table.num_rows):
            buf.skipped += table.num_rows
            return
        buf.add(table, scores, request_id)
        if buf.rows >= self.cfg.push_every_rows:
            self.flush(version, background=True)

    def _keep(self, rows: int) -> bool:
        """Sampling above ``drift.sample_rows_per_s`` rows a second (per replica): a request is kept
        with probability budget / rate, so the counted rows stay a uniform sample of the traffic."""
        budget = self.cfg.sample_rows_per_s
        now = time.monotonic()
        # rows seen in about the last second (exponentially decayed count, time constant 1 s)
        self._rate = self._rate * math.exp(-(now - self._rate_t)) + rows
        self._rate_t = now
        return not budget or self._rate <= budget or self._rng.random() < budget / self._rate

    def flush(self, version: str | None = None, *, background: bool = False) -> int:
        """Push the buffered counts (of ``version``, or all); returns the rows taken.

        ``background``: count and send from the event loop right after the current request (``call_soon``)
        rather than now. Not in a worker thread: a CPU-bound thread beside the event loop cost the
        replica a third of its 100-record throughput (GIL convoy), more than the work itself (~1 ms).
        """
        taken = []
        for v in [version] if version is not None else list(self.buffers):
            buf = self.buffers.pop(v, None)
            if buf is not None and (buf.rows or buf.skipped):
                taken.append((v, buf))
        for v, buf in taken:
            if background:
                try:
                    asyncio.get_running_loop().call_soon(self._send, v, buf)
                    continue
                except RuntimeError:  # no running loop (tests, scripts): send now
                    pass
            self._send(v, buf)
        return sum(buf.rows for _, buf in taken)

    def _send(self, v: str, buf: _Buffer) -> None:
        """Count one buffer (vectorised over all its rows) and push it, fire-and-forget."""
        try:
            if not buf.rows:  # only sampled-out rows: report how many
                with self._lock:
                    self._last_ref = self._monitor().push.remote(v, {}, 0, None, buf.skipped)
                return
            table, scores = buf.combined()
            counts = buf.reference.count(table, scores)
            scored = None
            if self.cfg.feedback_rows:
                scored = {"table": table, "scores": scores, "request_ids": buf.request_ids, "lengths": buf.lengths}
            with self._lock:  # register before the first push of a version, in order
                handle = self._monitor()
                if v not in self.registered:
                    handle.register.remote(v, self.stats[v])
                    self.registered.add(v)
                self._last_ref = handle.push.remote(v, counts, buf.rows, scored, buf.skipped)
                self.pushes += 1
        except Exception as err:  # never fail a request because of monitoring
            self.errors += 1
            self._handle = None
            log.warning("drift push failed (%d rows dropped): %s: %s", buf.rows, type(err).__name__, err)

    async def run(self) -> None:
        """Flush every ``push_interval_s`` (so low traffic still reaches the monitor)."""
        while True:
            await asyncio.sleep(self.cfg.push_interval_s)
            try:
                self.flush(background=True)
            except Exception:
                log.exception("drift flush failed")


__all__ = [
    "NAMESPACE",
    "DriftMonitor",
    "DriftRecorder",
    "actor_name",
    "checkpoint_path",
    "get_monitor",
    "ensure_monitor",
    "stop_all_monitors",
    "stop_monitor",
]
