"""The continuous-training pipeline, declared: prepare -> train -> evaluate -> register -> gate -> deploy.

Every step calls one stage of :mod:`mlops_ray.pipeline.stages` (the same functions the CLI's
``data prepare`` / ``train`` / ``promote`` and the library use) and declares what keys its cache
and how a cached output is checked; :class:`~mlops_ray.pipeline.controller.PipelineController`
runs them. Gate and deploy hold the registry lock together (``hold="registry"``), so the gate
compares against the version deployed at that moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops_ray.pipeline import stages
from mlops_ray.pipeline.controller import Step, StepInputs
from mlops_ray.registry import promotion

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context
    from mlops_ray.data.snapshot import Snapshot


def _fmt_metrics(m: dict) -> str:
    keys = [k for k in m if k.startswith("test_")][:2]
    return " ".join(f"{k}={m[k]:.4f}" for k in keys)


def _evaluate_detail(o: dict) -> str:
    if not o.get("champion_version"):
        return "model drift: no champion yet"
    text = f"model drift vs v{o['champion_version']}: {o.get('model_drift_status')}"
    if o.get("spearman") is not None:
        text += f" (Spearman {o['spearman']:.2f}; moved most: {', '.join(o.get('moved', []))})"
    return text


# one-line summaries of each step's outputs (printers, the MLflow summary)
DETAILS: dict[str, Callable[[dict[str, Any]], str]] = {
    "prepare": lambda o: f"snapshot {o.get('snapshot_id', '')[:12]} ({o.get('rows', {}).get('train', '?')} train rows)",
    "train": lambda o: f"{o.get('kind', 'train')} run {o.get('run_id', '')[:12]} {_fmt_metrics(o.get('metrics', {}))}",
    "evaluate": _evaluate_detail,
    "register": lambda o: f"version {o.get('version')}",
    "gate": lambda o: f"{o.get('decision')}: {'; '.join(o.get('reasons', []))[:80]}",
    "deploy": lambda o: f"{o.get('alias')} -> v{o.get('version')}" if o.get("moved") else "alias not moved",
}


class TrainingPipeline:
    """The steps of one model's pipeline over ``ctx`` and ``cfg``.

    Values every run provides (:attr:`StepInputs.values`): ``source_key`` (the source's stat key),
    ``code_digest`` and the config ``digests`` of :func:`mlops_ray.pipeline.run.config_digests`.
    """

    def __init__(self, ctx: Context, cfg: PipelineConfig, *, engine: str = "ray"):
        self.ctx, self.cfg, self.engine = ctx, cfg, engine
        self.name = cfg.registry.model_name

    def steps(self) -> list[Step]:
        return [
            Step(
                "prepare",
                self.prepare,
                key=lambda i: {
                    "source": i.values["source_key"],
                    "data": i.values["digests"]["data"],
                    "code": i.values["code_digest"],
                },
                valid=lambda i, o: self._snapshot(o) is not None,
                detail=DETAILS["prepare"],
            ),
            Step(
                "train",
                self.train,
                key=lambda i: {
                    "fingerprint": i["prepare"]["fingerprint"],
                    "snapshot": i["prepare"]["snapshot_id"],
                    "train": i.values["digests"]["train"],
                    "code": i.values["code_digest"],
                },
                valid=lambda i, o: self.ctx.client.get_run(o["run_id"]).info.status == "FINISHED",
                detail=DETAILS["train"],
            ),
            Step("evaluate", self.evaluate, key=lambda i: {"run": i["train"]["run_id"]}, detail=DETAILS["evaluate"]),
            Step(
                "register",
                self.register,
                key=lambda i: {"run": i["train"]["run_id"], "model": self.name},
                valid=lambda i, o: promotion.get_version(self.ctx.client, self.name, o["version"]) is not None,
                detail=DETAILS["register"],
            ),
            Step(
                "gate",
                self.gate,
                key=lambda i: {
                    "version": i["register"]["version"],
                    "model": self.name,
                    "gate": i.values["digests"]["gate"],
                },
                hold="registry",
                detail=DETAILS["gate"],
            ),
            Step(
                "deploy",
                self.deploy,
                key=lambda i: {
                    "version": i["register"]["version"],
                    "model": self.name,
                    "decision": i["gate"]["decision"],
                },
                hold="registry",
                detail=DETAILS["deploy"],
            ),
        ]

    def registry_lock(self, inputs: StepInputs):
        """The ``registry`` resource: one registry lock around gate and deploy."""
        version = inputs["register"]["version"]
        return promotion.serialized(
            self.ctx, self.name, purpose=f"pipeline {inputs.run.run_id}: gate and deploy v{version}"
        )

    # ---------------------------------------------------------------- the steps
    def _snapshot(self, prep: dict) -> Snapshot | None:
        return self.ctx.snapshots.find(f"{prep['dataset']}/{prep['snapshot_id']}")

    def prepare(self, inputs: StepInputs) -> dict[str, Any]:
        r = stages.prepare(self.ctx, self.cfg, engine=self.engine)
        s = r.snapshot
        return {
            "snapshot_id": s.id,
            "dataset": s.name,
            "fingerprint": s.fingerprint,
            "rows": {sp: s.rows(sp) for sp in ("train", "valid", "test")},
            "reused": r.reused,
        }

    def train(self, inputs: StepInputs) -> dict[str, Any]:
        run = inputs.run
        tags = {"pipeline.run_id": run.run_id}
        if run.tracking_run_id:
            tags["mlflow.parentRunId"] = run.tracking_run_id
        cand = stages.train(self.ctx, self.cfg, self._snapshot(inputs["prepare"]), register=False, tags=tags)
        return {
            "run_id": cand.run_id,
            "model_uri": cand.model_uri,
            "metrics": cand.metrics,
            "snapshot_id": cand.snapshot_id,
            "kind": "tune" if self.cfg.tune.enabled else "train",
        }

    def evaluate(self, inputs: StepInputs) -> dict[str, Any]:
        t = inputs["train"]
        report = stages.evaluate(self.ctx, self.cfg, self._snapshot(inputs["prepare"]), t["run_id"], t["model_uri"])
        if report["champion_version"] is None:
            return {"champion_version": None, "model_drift_status": report["status"]}
        c = report["candidate_vs_training"]
        return {
            "champion_version": report["champion_version"],
            "model_drift_status": report["status"],
            "spearman": c["spearman"],
            "top_k_same": c["top_k_same"],
            "moved": [m["feature"] for m in report["moved"][:3]],
        }

    def register(self, inputs: StepInputs) -> dict[str, Any]:
        t = inputs["train"]
        snapshot = self._snapshot(inputs["prepare"])
        return {"version": stages.register(self.ctx, self.cfg, snapshot, t["run_id"], t["model_uri"], t["metrics"])}

    def gate(self, inputs: StepInputs) -> dict[str, Any]:
        r = stages.gate(self.ctx, self.cfg, inputs["register"]["version"])
        return {
            "decision": str(r.decision.action),
            "reasons": list(r.decision.reasons),
            "scores": r.scores,
            "champion_version": r.champion_version,
        }

    def deploy(self, inputs: StepInputs) -> dict[str, Any]:
        alias, version, gated = self.cfg.serve.model_alias, inputs["register"]["version"], inputs["gate"]
        if gated["decision"] != promotion.PROMOTE:
            return {"moved": False, "alias": alias, "version": version}
        run = inputs.run
        stages.deploy(
            self.ctx, self.cfg, version, f"pipeline {run.run_id} ({run.trigger}): " + "; ".join(gated["reasons"])
        )
        return {"moved": True, "alias": alias, "version": version}


__all__ = ["DETAILS", "TrainingPipeline"]
