"""What a pipeline run reports, as controller callbacks: the console, MLflow parent/child runs,
lineage tags on the version it registered, and the history.

The steps know none of this; :func:`mlops_ray.pipeline.run.run_pipeline` hooks these to the
:class:`~mlops_ray.pipeline.controller.PipelineController`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops_ray.pipeline import history as hist
from mlops_ray.pipeline.controller import (
    PipelineCallback,
    PipelineResult,
    RunInfo,
    RunStatus,
    StepResult,
    StepStateChanged,
    StepStatus,
)
from mlops_ray.registry import promotion

if TYPE_CHECKING:
    from mlops_ray.context import Context
    from mlops_ray.state import StateStore

Details = dict[str, Callable[[dict[str, Any]], str]]


def step_line(s: StepResult, details: Details) -> str:
    """What a finished step did, in one line (its error when it failed; nothing when it did not run)."""
    if s.error:
        return s.error
    if not s.status.done:
        return ""
    try:
        return details.get(s.name, lambda o: "")(s.outputs)
    except Exception:  # a summary must never fail a run
        return ""


def summary_table(res: PipelineResult, details: Details) -> str:
    lines = [f"{'step':<10} {'status':<9} {'seconds':>8}  detail"]
    for s in res.steps:
        lines.append(f"{s.name:<10} {s.status:<9} {s.seconds:>8.2f}  {step_line(s, details)}")
    return "\n".join(lines)


class Outcome(PipelineCallback):
    """Fills the result's ``version`` (from the register step) and ``decision`` (from the gate):
    first in the list, so the callbacks after it see them."""

    def on_run_end(self, run: RunInfo, result: PipelineResult) -> None:
        reg, gate = result.step("register"), result.step("gate")
        if reg is not None and reg.status.done:
            result.version = reg.outputs.get("version")
        if gate is not None and gate.status.done:
            result.decision = gate.outputs.get("decision")


class ConsolePrinter(PipelineCallback):
    """One line per finished step (the CLI's, the quickstart's)."""

    def __init__(self, echo: Callable[[str], None], details: Details):
        self.echo, self.details = echo, details

    def on_step_state(self, event: StepStateChanged) -> None:
        s = event.step
        if s.status in (StepStatus.CACHED, StepStatus.SUCCEEDED, StepStatus.RESUMED, StepStatus.FAILED):
            self.echo(f"  {s.name:<9} {s.status:<9} {s.seconds:6.1f}s  {step_line(s, self.details)}")


class MlflowRuns(PipelineCallback):
    """One MLflow parent run per pipeline run and one child run per finished step; the summary and
    the reports that triggered the run are artifacts of the parent."""

    def __init__(self, ctx: Context, details: Details):
        self.ctx, self.details = ctx, details

    def on_run_start(self, run: RunInfo) -> None:
        client = self.ctx.client
        parent = client.create_run(
            self.ctx.experiment_id,
            run_name=f"pipeline-{run.trigger}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"pipeline.run_id": run.run_id, "pipeline.trigger": run.trigger, "pipeline.reason": run.reason[:4000]},
        )
        run.tracking_run_id = parent.info.run_id
        if run.context:
            client.log_dict(parent.info.run_id, run.context, "trigger/context.json")

    def on_step_state(self, event: StepStateChanged) -> None:
        s = event.step
        if not s.status.is_terminal or s.status == StepStatus.NOT_RUN or event.run.tracking_run_id is None:
            return
        client = self.ctx.client
        r = client.create_run(
            self.ctx.experiment_id,
            run_name=f"{s.name} ({s.status})",
            tags={
                "mlflow.parentRunId": event.run.tracking_run_id,
                "pipeline.step": s.name,
                "pipeline.status": s.status,
            },
        )
        client.log_param(r.info.run_id, "cache_key", s.key or "-")
        client.log_metric(r.info.run_id, "seconds", s.seconds)
        client.log_dict(r.info.run_id, {"outputs": s.outputs, "error": s.error}, "step.json")
        client.set_terminated(r.info.run_id, "FAILED" if s.status == StepStatus.FAILED else "FINISHED")

    def on_run_end(self, run: RunInfo, result: PipelineResult) -> None:
        rid, client = run.tracking_run_id, self.ctx.client
        if rid is None:
            return
        client.log_dict(rid, result.to_dict(), "pipeline/summary.json")
        client.log_text(rid, summary_table(result, self.details), "pipeline/summary.txt")
        client.log_metric(rid, "seconds", result.seconds)
        client.log_metric(rid, "steps_cached", sum(s.status == StepStatus.CACHED for s in result.steps))
        client.set_tag(rid, "pipeline.status", result.status)
        if result.version:
            client.set_tag(rid, "pipeline.version", result.version)
        if result.decision:
            client.set_tag(rid, "pipeline.decision", result.decision)
        client.set_terminated(rid, "FINISHED" if result.status == RunStatus.SUCCEEDED else "FAILED")


class Lineage(PipelineCallback):
    """``lineage.*`` tags on the version the run registered: trigger and reason, pipeline and MLflow
    run ids, snapshot and data fingerprint, code commit and digest, config digest, gate decision and
    model-drift status. A cached rerun keeps the lineage of the run that produced the version."""

    def __init__(self, ctx: Context, model: str, code: dict[str, str], config_digest: str):
        self.ctx, self.model, self.code, self.config_digest = ctx, model, code, config_digest

    def tags(self, run: RunInfo, result: PipelineResult) -> dict[str, str]:
        prep, gate, ev = (result.step(n) for n in ("prepare", "gate", "evaluate"))
        tags = {
            "lineage.trigger": run.trigger,
            "lineage.reason": run.reason,
            "lineage.pipeline_run": run.run_id,
            "lineage.mlflow_run": run.tracking_run_id,
            "lineage.snapshot_id": prep.outputs.get("snapshot_id"),
            "lineage.data_fingerprint": prep.outputs.get("fingerprint"),
            "lineage.code_commit": self.code.get("git_commit", "unknown"),
            "lineage.code_digest": self.code["code_digest"],
            "lineage.config_digest": self.config_digest,
        }
        if gate is not None and gate.status.done:
            tags["lineage.gate"] = f"{gate.outputs['decision']}: " + "; ".join(gate.outputs.get("reasons", []))
        if ev is not None and ev.status.done:
            tags["lineage.model_drift"] = str(ev.outputs.get("model_drift_status"))
        if run.context and run.tracking_run_id:
            tags["lineage.trigger_report"] = f"runs:/{run.tracking_run_id}/trigger/context.json"
        return tags

    def on_run_end(self, run: RunInfo, result: PipelineResult) -> None:
        if not result.version:
            return
        existing = promotion.get_version(self.ctx.client, self.model, result.version).tags
        if existing.get("lineage.pipeline_run") and existing["lineage.pipeline_run"] != run.run_id:
            return
        for k, v in self.tags(run, result).items():
            self.ctx.client.set_model_version_tag(self.model, result.version, k, str(v)[:4000])


class History(PipelineCallback):
    """The run's record in the pipeline history (state store)."""

    def __init__(self, store: StateStore, prefix: str):
        self.store, self.prefix = store, prefix

    def on_run_end(self, run: RunInfo, result: PipelineResult) -> None:
        hist.append(self.store, self.prefix, result.to_dict())


__all__ = ["ConsolePrinter", "History", "Lineage", "MlflowRuns", "Outcome", "step_line", "summary_table"]
