"""Model drift of a reference model against a model trained on new data (``mlops-ray drift model``,
and the pipeline's evaluate step for every retrained candidate).

Both models' permutation importances are measured on the *new* snapshot's validation rows and
compared with the importances the reference model logged at training
(:func:`mlops_ray.drift.importance.compare_importance`); the report is logged to the candidate's
MLflow run (``evaluation/model_drift.json`` and ``model_drift.*`` metrics).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ray.data.snapshot import Snapshot
from mlops_ray.data.splits import load_split
from mlops_ray.drift.importance import compare_importance
from mlops_ray.model.metrics import permutation_importance
from mlops_ray.registry import tracking

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context


def importance_on(model, snapshot: Snapshot, *, seed: int = 0, repeats: int = 2) -> dict[str, float]:
    """Permutation importance (mean drop) of ``model`` on ``snapshot``'s validation rows."""
    spec = snapshot.spec
    split = "valid" if snapshot.rows("valid") else "test"
    d = load_split(snapshot, split, model.preprocessor, keep_frame=True)
    pi = permutation_importance(model.score_frame, d.frame, d.y, spec.task, spec.features, repeats=repeats, seed=seed)
    return {k: float(v["mean"]) for k, v in pi.items()}


def compare_models(
    ctx: Context, reference, candidate, snapshot: Snapshot, *, seed: int, candidate_run_id: str | None = None
):
    """The model-drift report of ``candidate`` (trained on ``snapshot``) against ``reference``
    (TabularModels), permutation importance seeded with ``seed`` (``model.seed``); logged to
    ``candidate_run_id`` when given."""
    training = {k: float(v["mean"]) for k, v in reference.meta.get("permutation_importance", {}).items()}
    report = compare_importance(
        training,
        importance_on(reference, snapshot, seed=seed),
        importance_on(candidate, snapshot, seed=seed),
    )
    report["snapshot_id"] = snapshot.id
    if candidate_run_id:
        ctx.client.log_dict(candidate_run_id, report, "evaluation/model_drift.json")
        rho = report["candidate_vs_training"]["spearman"]
        metrics = {"model_drift.top_k_same": float(report["candidate_vs_training"]["top_k_same"])}
        if rho is not None:
            metrics["model_drift.spearman"] = rho
        for key, value in metrics.items():
            ctx.client.log_metric(candidate_run_id, key, value)
        ctx.client.set_tag(candidate_run_id, "model_drift.status", report["status"])
    return report


def model_drift_command(
    ctx: Context, cfg: PipelineConfig, current: str, *, model_uri: str | None = None
) -> dict[str, Any]:
    """``mlops-ray drift model``: prepare ``current`` as a snapshot, train a model on it (logged,
    not registered) and compare it with the reference model (default: the deploy alias).

    A CLI command: it takes the whole config to re-point ``data.source`` at ``current`` and logs that
    config with the run, like ``mlops-ray train``.
    """
    from mlops_ray.config import TrainingSpec
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.drift.commands import model_reference
    from mlops_ray.train.run import train_model

    _, reference, context = model_reference(ctx, cfg, model_uri)
    path = str(Path(current).expanduser().resolve())
    cfg_new = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": path, "generate": None})})
    snap = prepare_snapshot(
        cfg_new.data, ctx.workspace, source=cfg_new.source(ctx.workspace.location), engine="local"
    ).snapshot
    run_name = f"model-drift-{time.strftime('%Y%m%d-%H%M%S')}"
    cand = train_model(
        ctx, TrainingSpec.from_config(cfg_new), snap, register=False, run_name=run_name, tags={"purpose": "model-drift"}
    )
    candidate = tracking.load_pyfunc(ctx.tracking_uri, cand.model_uri).unwrap_python_model()
    report = compare_models(ctx, reference, candidate, snap, seed=cfg.model.seed, candidate_run_id=cand.run_id)
    return {**report, **context, "current": path, "candidate_run_id": cand.run_id}


__all__ = ["compare_models", "importance_on", "model_drift_command"]
