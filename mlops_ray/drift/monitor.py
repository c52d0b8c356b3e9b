"""The drift monitor: a named Ray actor per served model (the Ray glue of :mod:`mlops_ray.drift`).

Why a named, detached actor rather than a deployment composed into the Serve application:

* one monitor per *model*, whatever serves it (several applications, a ``serve deploy`` config,
  a redeploy with new options) and whoever reads it (``GET /drift`` on any replica, the CLI, the
  pipeline's drift trigger) by name with ``ray.get_actor`` -- no handle to thread through;
* its restarts are Ray's (``max_restarts=-1``), and pushes sent while it restarts are retried
  (``max_task_retries=-1``) against the restored instance;
* Serve's router is not on the path: a push is one actor call, every ``push_every_rows`` rows
  or ``push_interval_s`` seconds per replica (:mod:`mlops_ray.serve.drift_recorder`), fire-and-forget.

The actor is a shell around pure parts: :class:`~mlops_ray.drift.core.MonitorCore` (windows,
verdicts, the report), :class:`~mlops_ray.drift.checkpoint.CheckpointStore` (the state store's
``drift/<model>.json``, written every ``checkpoint_interval_s`` and restored by a restarted
monitor), :class:`~mlops_ray.drift.feedback.FeedbackStore` (scored rows ``POST /feedback`` labels
join, metrics on them) and :class:`~mlops_ray.drift.exporter.MetricsExporter` (the Prometheus
endpoint; the replicas export no drift series: per-replica series would multiply cardinality).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from mlops_ray.config import DriftConfig
from mlops_ray.drift.checkpoint import CheckpointStore
from mlops_ray.drift.core import MonitorCore
from mlops_ray.drift.exporter import MetricsExporter
from mlops_ray.drift.feedback import FeedbackStore
from mlops_ray.state import StateStore

log = logging.getLogger("mlops_ray.drift")

NAMESPACE = "mlops-ray-drift"


def actor_name(model_name: str) -> str:
    return f"drift-monitor:{model_name}"


class DriftMonitor:
    """Merges per-replica counts into windows per model version; one per served model."""

    def __init__(self, model_name: str, drift: dict, state: StateStore | None, tracking_uri: str | None = None):
        """``state``: where the checkpoint lives (None: no checkpoints)."""
        self.model_name = model_name
        self.cfg = DriftConfig.model_validate(drift)
        self.tracking_uri = tracking_uri
        self.checkpoints = CheckpointStore(state, model_name, self.cfg.checkpoint_interval_s)
        self.core = MonitorCore(model_name, self.cfg, checkpoint=self.checkpoints.load(), now=time.time())
        self.labels = FeedbackStore(self.cfg.feedback_rows, self.cfg.feedback_min_rows)
        self.exporter = MetricsExporter(model_name, self.cfg.metrics_host, self.cfg.metrics_port)
        self._models: dict[str, Any] = {}
        self._loop_task = None

    def _checkpoint(self) -> None:
        self.checkpoints.save(self.core.to_checkpoint(), time.monotonic())
        self.core.dirty = False

    # ---------------------------------------------------------------- background
    def _ensure_loop(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        period = min(0.5, self.cfg.checkpoint_interval_s)
        while True:
            await asyncio.sleep(period)
            try:
                self.exporter.windows_closed(self.core.tick(time.time()))
                if self.core.dirty and self.checkpoints.due(time.monotonic()):
                    self._checkpoint()
                self.exporter.update(self.core.windows)
            except Exception:  # keep the loop alive; the next tick retries
                log.exception("drift monitor tick failed")

    # ---------------------------------------------------------------- calls from replicas
    async def register(self, version: str, reference_stats: dict) -> bool:
        self._ensure_loop()
        new = self.core.register(str(version), reference_stats, time.time())
        if new:
            self._checkpoint()  # a restarted monitor must know every version it was told of
        return new

    async def push(self, version: str, counts: dict, rows: int, scored: dict | None = None, skipped: int = 0) -> None:
        self._ensure_loop()
        self.exporter.windows_closed(self.core.push(str(version), counts, int(rows), time.time(), int(skipped)))
        if rows and scored is not None:
            self.labels.keep_scored(str(version), scored)

    # ---------------------------------------------------------------- reading
    async def report(self, version: str | None = None) -> dict[str, Any]:
        """Every monitored version's current window and closed windows (or only ``version``)."""
        self._ensure_loop()
        feedback = {v: await self.labels.summary(v, self._model) for v in self.core.versions(version)}
        where = {"checkpoint": self.checkpoints.location, "metrics": self.exporter.address}
        return self.core.report(version, monitor=where, feedback=feedback)

    async def feedback(self, items: list[dict]) -> dict[str, Any]:
        """Labels for earlier predictions: ``[{"request_id", "record" (default 0), "label"}]``."""
        self._ensure_loop()
        return self.labels.join(items)

    async def ping(self) -> dict[str, Any]:
        self._ensure_loop()
        return {"metrics": self.exporter.address, "versions": self.core.rows_seen()}

    async def flush_checkpoint(self) -> str | None:
        self._checkpoint()
        return self.checkpoints.location

    def _model(self, version: str):
        """The registered model of ``version`` (loaded once; feedback metrics score with it)."""
        if version not in self._models:
            from mlops_ray.registry import tracking

            uri = f"models:/{self.model_name}/{version}"
            self._models[version] = tracking.load_pyfunc(self.tracking_uri, uri).unwrap_python_model()
        return self._models[version]


RemoteMonitor = ray.remote(DriftMonitor)


def get_monitor(model_name: str, *, create: dict | None = None):
    """The model's monitor actor; with ``create`` (``{"drift", "state", "tracking_uri"}``),
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
    ).remote(model_name, create["drift"], create.get("state"), create.get("tracking_uri"))


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


def call_failed(ref) -> bool:
    """Whether the actor call ``ref`` has finished with an error (False while it runs); never waits."""
    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        return False
    try:
        ray.get(ready[0])
    except Exception:
        return True
    return False


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


__all__ = [
    "NAMESPACE",
    "DriftMonitor",
    "actor_name",
    "call_failed",
    "ensure_monitor",
    "get_monitor",
    "stop_all_monitors",
    "stop_monitor",
]
