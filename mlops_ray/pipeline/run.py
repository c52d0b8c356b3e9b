"""One continuous-training pipeline run: the declared steps (:mod:`mlops_ray.pipeline.steps`) run by
the controller (:mod:`mlops_ray.pipeline.controller`), reported by callbacks
(:mod:`mlops_ray.pipeline.callbacks`).

* **Caching.** Each step's inputs (source stat key or data fingerprint, the digest of the config
  sections it reads, the code digest, upstream outputs) hash to a key; a step whose key has a
  completed record under ``pipeline/<model>/cache/`` in the state store (and whose outputs still
  exist: the snapshot, the run, the version) is ``cached``. ``force`` reruns all. A failed step
  records nothing but a failure mark, so the next run resumes at it (``resumed``) with the earlier
  steps cached.
* **One run per model at a time**: the state store's lock ``pipeline/<model>/run.lock``
  (``PipelineBusyError`` otherwise).
* **MLflow**: one parent run per pipeline run, one child run per step (the training run is a child
  too); the summary and the reports that triggered the run are artifacts of the parent.
* **Lineage** on every version it registers (``lineage.*`` tags) and **history**
  (:mod:`mlops_ray.pipeline.history`): callbacks.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from mlops_ray.errors import LockBusyError, MlopsRayError, PipelineBusyError
from mlops_ray.pipeline import callbacks as cb
from mlops_ray.pipeline import history as hist
from mlops_ray.pipeline import stages
from mlops_ray.pipeline.controller import (
    PipelineCallback,
    PipelineController,
    PipelineResult,
    RunInfo,
    StepCache,
    StepResult,
    digest,
)
from mlops_ray.pipeline.steps import DETAILS, TrainingPipeline
from mlops_ray.pipeline.triggers import trigger_names
from mlops_ray.registry import tracking

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context

STEPS = ("prepare", "train", "evaluate", "register", "gate", "deploy")


def triggers() -> tuple[str, ...]:
    """What may start a run: ``manual`` and every registered trigger kind."""
    return ("manual", *trigger_names())


def config_digests(cfg: PipelineConfig) -> dict[str, str]:
    """Digests of the config sections each step reads (serving and monitoring settings excluded)."""
    d = cfg.model_dump(mode="json")
    return {
        "data": digest(d["data"]),
        "train": digest({"model": d["model"], "tune": d["tune"]}),
        "gate": digest(d["registry"]),
        "all": digest({k: d[k] for k in ("data", "model", "tune", "registry", "mlflow")}),
    }


def pipeline_prefix(cfg: PipelineConfig) -> str:
    """The state-store prefix of ``cfg``'s model: ``pipeline/<model>`` (cache, lock, history, watcher state)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in cfg.registry.model_name)
    return f"pipeline/{safe}"


def step_printer(echo: Callable[[str], None]) -> PipelineCallback:
    """A callback that prints one line per finished step (the CLI's and the quickstart's)."""
    return cb.ConsolePrinter(echo, DETAILS)


def run_pipeline(
    ctx: Context,
    cfg: PipelineConfig,
    *,
    trigger: str = "manual",
    reason: str = "manual run",
    force: bool = False,
    engine: str = "ray",
    context: dict[str, Any] | None = None,
    callbacks: list[PipelineCallback] | tuple[PipelineCallback, ...] = (),
) -> PipelineResult:
    """Run the pipeline once; returns its result (status ``failed`` with the failing step on error).

    Args:
        trigger: ``manual`` or a registered trigger kind (recorded in lineage and history).
        context: reports that led to the run (e.g. the drift evaluation), logged with the run.
        callbacks: more controller callbacks (e.g. :func:`step_printer`).

    Raises:
        PipelineBusyError: another run for this model is in progress.
    """
    if trigger not in triggers():
        raise MlopsRayError(f"unknown trigger {trigger!r}; expected one of {', '.join(triggers())}")
    stages.require_source(ctx, cfg)
    from mlops_ray.data.sources import list_source

    prefix, code, digests = pipeline_prefix(cfg), tracking.code_version(), config_digests(cfg)
    values = {
        "source_key": list_source(cfg.source(ctx.workspace.location), cfg.data.format).stat_key(),
        "code_digest": code["code_digest"],
        "digests": digests,
    }
    pipeline = TrainingPipeline(ctx, cfg, engine=engine)
    controller = PipelineController(
        pipeline.steps(),
        cache=StepCache(ctx.state, f"{prefix}/cache"),
        callbacks=[
            cb.Outcome(),
            cb.MlflowRuns(ctx, DETAILS),
            cb.Lineage(ctx, cfg.registry.model_name, code, digests["all"]),
            cb.History(ctx.state, prefix),
            *callbacks,
        ],
        resources={"registry": pipeline.registry_lock},
        force=force,
    )
    run = RunInfo(uuid.uuid4().hex[:12], cfg.registry.model_name, trigger, reason, dict(context or {}))
    holder = (
        f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
        f"(pipeline run {run.run_id})"
    )
    try:
        with ctx.state.lock(f"{prefix}/run.lock", holder=holder):
            return controller.run(run, values)
    except LockBusyError as err:
        name = cfg.registry.model_name
        busy = f"a pipeline run for model {name!r} is in progress ({err.holder or 'another process'})"
        # The refused run is recorded, so the history of a model shows every request, from any node.
        hist.append(
            ctx.state,
            prefix,
            {"kind": "decision", "trigger": trigger, "action": "coalesce", "reason": busy, "at": time.time()},
        )
        raise PipelineBusyError(busy) from None


__all__ = [
    "STEPS",
    "PipelineResult",
    "StepResult",
    "config_digests",
    "digest",
    "pipeline_prefix",
    "run_pipeline",
    "step_printer",
    "triggers",
]
