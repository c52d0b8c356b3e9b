"""A training run end to end: snapshot -> fit -> evaluate -> MLflow run -> registered challenger.

Shared by ``mlops-ray train``, the best trial of ``mlops-ray tune`` and ``reproduce``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from mlops_ray.data.prepare import library_versions
from mlops_ray.data.snapshot import Snapshot, SnapshotStore
from mlops_ray.registry import tracking
from mlops_ray.registry.pyfunc_model import TabularModel
from mlops_ray.train.evaluate import TASK_METRICS, compute_metrics, permutation_importance, slice_metrics
from mlops_ray.train.execution import ExecutionPlan, choose_execution
from mlops_ray.train.features import load_split
from mlops_ray.workspace import get_workspace

CHALLENGER = "challenger"


@dataclass
class CandidateResult:
    run_id: str
    model_uri: str
    version: str | None
    metrics: dict[str, float]
    snapshot_id: str
    plan: ExecutionPlan | None = None
    extra: dict = field(default_factory=dict)


def resolve_snapshot(cfg, ref: str | None = None, engine: str = "ray") -> Snapshot:
    """The snapshot named by ``ref``, else the config's data prepared (reused when unchanged)."""
    if ref:
        return SnapshotStore().find(ref)
    from mlops_ray.data.prepare import prepare_snapshot

    return prepare_snapshot(cfg, engine=engine).snapshot


def evaluate(scorer: TabularModel, snapshot: Snapshot, *, importance_repeats: int = 2, seed: int = 0) -> dict[str, Any]:
    """Metrics on valid and test, per-slice metrics on test, permutation importance on valid."""
    spec = snapshot.manifest["spec"]
    out: dict[str, Any] = {"metrics": {}}
    frames = {}
    for split in ("valid", "test"):
        if split not in snapshot.manifest["rows_per_split"] or not snapshot.manifest["rows_per_split"][split]:
            continue
        data = load_split(snapshot, split, scorer.preprocessor, keep_frame=True)
        frames[split] = data
        for k, v in compute_metrics(spec["task"], data.y, scorer.scores(data.x)).items():
            out["metrics"][f"{split}_{k}"] = v
    if "test" in frames:
        d = frames["test"]
        out["slices"] = slice_metrics(spec["task"], d.frame, d.y, scorer.scores(d.x), spec["categorical_features"])
    if "valid" in frames:
        d = frames["valid"]
        feats = spec["numeric_features"] + spec["categorical_features"]
        out["permutation_importance"] = permutation_importance(scorer.score_frame, d.frame, d.y, spec["task"], feats,
                                                               repeats=importance_repeats, seed=seed)
        out["input_example"] = d.frame[feats].head(5).reset_index(drop=True)
    return out


def log_candidate(cfg, snapshot: Snapshot, scorer: TabularModel, *, flavor: str, model_path: str, params: dict,
                  history: dict | None, plan: ExecutionPlan | None, evaluation: dict, tags: dict) -> str:
    """Log everything about a candidate into the *active* MLflow run; returns the model URI."""
    from mlops_ray.config import config_to_yaml

    m = snapshot.manifest
    tracking.log_params({"model": params, "data.snapshot_id": m["snapshot_id"], "data.salt": m["spec"]["salt"],
                         "execution": {"mode": plan.mode, "num_workers": plan.num_workers,
                                       "nthread": plan.nthread} if plan else {}})
    tracking.log_text(config_to_yaml(cfg), "config.yaml")
    tracking.log_dict(m, "data/manifest.json")
    ref = snapshot.reference_stats()
    tracking.log_dict(ref, "data/reference_stats.json")
    tracking.log_snapshot_input(snapshot)
    code = tracking.code_version()
    tracking.set_tags({"snapshot_id": m["snapshot_id"], "data_fingerprint": m["fingerprint"],
                       "dataset": m["name"], "task": m["spec"]["task"], "flavor": flavor, **code,
                       **{f"version.{k}": v for k, v in library_versions().items()}, **tags})
    if history:
        tracking.log_history(history)
    tracking.log_metrics(evaluation["metrics"])
    if "slices" in evaluation:
        tracking.log_dict(evaluation["slices"], "evaluation/slices.json")
    if "permutation_importance" in evaluation:
        pi = evaluation["permutation_importance"]
        tracking.log_dict(pi, "evaluation/permutation_importance.json")
        tracking.log_metrics({f"perm_importance.{k}": v["mean"] for k, v in pi.items()})
    example = evaluation["input_example"]
    meta = {"task": m["spec"]["task"], "snapshot_id": m["snapshot_id"], "fingerprint": m["fingerprint"],
            "id_column": m["spec"]["id_column"], "label_column": m["spec"]["label_column"],
            "numeric_features": m["spec"]["numeric_features"],
            "categorical_features": m["spec"]["categorical_features"],
            "permutation_importance": evaluation.get("permutation_importance", {}),
            "metrics": evaluation["metrics"]}
    return tracking.log_pyfunc_model(flavor=flavor, model_path=model_path, preprocessor=scorer.preprocessor,
                                     reference_stats=ref, meta=meta, input_example=example,
                                     output_example=scorer.predict_frame(example))


def register_challenger(cfg, client, snapshot: Snapshot, run_id: str, model_uri: str, metrics: dict) -> str:
    """New registered version with alias ``challenger``; returns the version number."""
    m = snapshot.manifest
    primary = {k: v for k, v in metrics.items() if k.startswith("test_")}
    mv = tracking.register_version(client, cfg.registry.model_name, model_uri, run_id, {
        "snapshot_id": m["snapshot_id"], "data_fingerprint": m["fingerprint"], "salt": m["spec"]["salt"],
        "fractions": json.dumps(m["spec"]["fractions"]), "id_column": m["spec"]["id_column"],
        "task": m["spec"]["task"], **{k: f"{v:.6g}" for k, v in primary.items()}})
    tracking.move_alias(client, cfg.registry.model_name, CHALLENGER, mv.version, action="register",
                        reason=f"new candidate from run {run_id}")
    snapshot.record_usage(run_id=run_id, model=cfg.registry.model_name, model_version=mv.version)
    return str(mv.version)


def plan_for(cfg, execution: str | None = None) -> ExecutionPlan:
    from mlops_ray.ray_runtime import alive_node_cpus

    return choose_execution(alive_node_cpus(), execution or cfg.model.execution, cfg.model.num_workers,
                            cfg.model.cpus_per_worker)


def train_model(cfg, *, snapshot_ref: str | None = None, param_overrides: dict | None = None,
                run_name: str | None = None, register: bool = True, execution: str | None = None,
                plan: ExecutionPlan | None = None, tags: dict | None = None) -> CandidateResult:
    """Train the configured model on a snapshot, log it to MLflow and register it as challenger."""
    from mlops_ray.ray_runtime import ensure_ray

    client = tracking.configure(cfg.mlflow)
    ensure_ray()
    snapshot = resolve_snapshot(cfg, snapshot_ref)
    plan = plan or plan_for(cfg, execution)
    run_name = run_name or f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out_dir = get_workspace().ensure("runs", run_name)
    pre = snapshot.preprocessor()
    task = snapshot.manifest["spec"]["task"]
    if cfg.model.type == "xgboost":
        from mlops_ray.train.xgboost_trainer import fit_xgboost

        res = fit_xgboost(cfg, snapshot, plan, out_dir, run_name=run_name, param_overrides=param_overrides)
        scorer = TabularModel.from_parts(task, pre, booster=res.booster)
        flavor, model_path, history = "xgboost", str(out_dir / "model.ubj"), res.history
        from mlops_ray.train.xgboost_trainer import loop_config

        params = {"xgboost": loop_config(cfg, snapshot, plan.nthread, out_dir, param_overrides)["params"],
                  "num_boost_round": cfg.model.num_boost_round, "rounds_trained": res.meta["rounds"],
                  "best_iteration": res.meta["best_iteration"]}
        extra = {"train_seconds": res.seconds}
    else:
        import joblib

        from mlops_ray.train.sklearn_trainer import fit_sklearn

        meta = fit_sklearn(cfg, snapshot, out_dir, num_cpus=plan.cpus_per_worker, param_overrides=param_overrides)
        scorer = TabularModel.from_parts(task, pre, estimator=joblib.load(out_dir / "model.joblib"))
        flavor, model_path, history = "sklearn", str(out_dir / "model.joblib"), None
        params = {"estimator": cfg.model.estimator, **cfg.model.params, **(param_overrides or {})}
        extra = {"train_seconds": meta["train_seconds"]}
    evaluation = evaluate(scorer, snapshot, seed=cfg.model.seed)
    cv = None
    if cfg.model.cv_folds:
        from mlops_ray.train.cv import cross_validate

        cv = cross_validate(cfg, snapshot, cfg.model.cv_folds, plan.nthread, param_overrides)
    with tracking.run(run_name) as r:
        model_uri = log_candidate(cfg, snapshot, scorer, flavor=flavor, model_path=model_path, params=params,
                                  history=history, plan=plan, evaluation=evaluation,
                                  tags={"param_overrides": json.dumps(param_overrides or {}), **(tags or {})})
        tracking.log_metrics({"train_seconds": extra["train_seconds"]})
        if cv:
            tracking.log_metrics(cv["summary"])
            tracking.log_dict(cv, "evaluation/cv_folds.json")
            extra["cv"] = cv["summary"]
        run_id = r.info.run_id
    version = register_challenger(cfg, client, snapshot, run_id, model_uri, evaluation["metrics"]) if register else None
    return CandidateResult(run_id, model_uri, version, evaluation["metrics"], snapshot.id, plan, extra)


__all__ = ["TASK_METRICS", "CandidateResult", "evaluate", "train_model", "resolve_snapshot",
           "register_challenger", "log_candidate", "plan_for"]
