"""A training run end to end: snapshot -> fit -> evaluate -> MLflow run -> registered candidate.

Shared by ``mlops-ray train``, the best trial of ``mlops-ray tune`` and ``reproduce``. Takes
the snapshot it is given (preparing data is the caller's step) and returns a typed
:class:`Candidate`; registering moves only the ``challenger`` marker, never the deploy alias.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_ray.data.prepare import library_versions
from mlops_ray.data.snapshot import Snapshot
from mlops_ray.data.splits import load_split
from mlops_ray.errors import ConfigError
from mlops_ray.model.kinds import get_kind
from mlops_ray.model.metrics import compute_metrics, permutation_importance, slice_metrics
from mlops_ray.model.prediction import prediction_reference
from mlops_ray.model.tabular import TabularModel
from mlops_ray.registry import tracking
from mlops_ray.train.execution import ExecutionPlan, choose_execution
from mlops_ray.train.kinds import Fitted

if TYPE_CHECKING:
    from mlops_ray.config import ModelConfig, TrainingSpec
    from mlops_ray.context import Context

CHALLENGER = "challenger"


@dataclass
class Candidate:
    """A trained, logged (and usually registered) model version."""

    run_id: str
    model_uri: str
    version: str | None
    metrics: dict[str, float]
    snapshot_id: str
    plan: ExecutionPlan | None = None
    extra: dict = field(default_factory=dict)


def evaluate(model: TabularModel, snapshot: Snapshot, *, importance_repeats: int = 2, seed: int = 0) -> dict[str, Any]:
    """Metrics on valid and test, per-slice metrics on test, permutation importance on valid."""
    spec = snapshot.spec
    out: dict[str, Any] = {"metrics": {}}
    frames = {}
    for split in ("valid", "test"):
        if not snapshot.rows(split):
            continue
        data = load_split(snapshot, split, model.preprocessor, keep_frame=True)
        frames[split] = data
        for k, v in compute_metrics(spec.task, data.y, model.scores(data.x)).items():
            out["metrics"][f"{split}_{k}"] = v
    if "test" in frames:
        d = frames["test"]
        out["slices"] = slice_metrics(spec.task, d.frame, d.y, model.scores(d.x), list(spec.categorical_features))
    if "valid" in frames:
        d = frames["valid"]
        out["permutation_importance"] = permutation_importance(
            model.score_frame, d.frame, d.y, spec.task, spec.features, repeats=importance_repeats, seed=seed
        )
        # The reference for prediction drift: the histogram of this model's scores on the validation split.
        out["prediction_reference"] = prediction_reference(spec.task, model.scores(d.x))
        out["input_example"] = d.frame[spec.features].head(5).reset_index(drop=True)
    return out


def log_candidate(
    config_yaml: str,
    snapshot: Snapshot,
    model: TabularModel,
    *,
    fitted: Fitted,
    plan: ExecutionPlan | None,
    evaluation: dict,
    tags: dict,
) -> str:
    """Log everything about a candidate into the *active* MLflow run; returns the model URI.

    ``config_yaml`` (the whole config, :attr:`~mlops_ray.config.TrainingSpec.config_yaml`) is logged
    as ``config.yaml``.
    """
    m, spec = snapshot.manifest, snapshot.spec
    tracking.log_params(
        {
            "model": fitted.params,
            "data.snapshot_id": snapshot.id,
            "data.salt": spec.split.salt,
            "execution": (
                {"mode": plan.mode, "num_workers": plan.num_workers, "nthread": plan.nthread, "device": plan.device}
                if plan
                else {}
            ),
        }
    )
    tracking.log_text(config_yaml, "config.yaml")
    tracking.log_dict(m, "data/manifest.json")
    ref = {**snapshot.reference_stats(), "task": spec.task}
    if evaluation.get("prediction_reference"):
        ref["prediction"] = evaluation["prediction_reference"]
    tracking.log_dict(ref, "data/reference_stats.json")
    tracking.log_snapshot_input(snapshot)
    code = tracking.code_version()
    tracking.set_tags(
        {
            "snapshot_id": snapshot.id,
            "data_fingerprint": snapshot.fingerprint,
            "dataset": snapshot.name,
            "task": spec.task,
            "flavor": model.kind.name,
            **code,
            **{f"version.{k}": v for k, v in library_versions().items()},
            **tags,
        }
    )
    if fitted.history:
        tracking.log_history(fitted.history)
    tracking.log_metrics(evaluation["metrics"])
    if "slices" in evaluation:
        tracking.log_dict(evaluation["slices"], "evaluation/slices.json")
    if "permutation_importance" in evaluation:
        pi = evaluation["permutation_importance"]
        tracking.log_dict(pi, "evaluation/permutation_importance.json")
        tracking.log_metrics({f"perm_importance.{k}": v["mean"] for k, v in pi.items()})
    example = evaluation["input_example"]
    meta = {
        "task": spec.task,
        "snapshot_id": snapshot.id,
        "fingerprint": snapshot.fingerprint,
        "id_column": spec.id_column,
        "label_column": spec.label_column,
        "numeric_features": list(spec.numeric_features),
        "categorical_features": list(spec.categorical_features),
        "permutation_importance": evaluation.get("permutation_importance", {}),
        "metrics": evaluation["metrics"],
        # where a process that has not registered this kind (a replica, a batch actor) finds it
        "kind_ref": model.kind.ref,
    }
    return tracking.log_pyfunc_model(
        kind=model.kind,
        model_path=str(fitted.model_path),
        preprocessor=model.preprocessor,
        reference_stats=ref,
        meta=meta,
        input_example=example,
        output_example=model.predict_frame(example),
    )


def register_candidate(
    ctx: Context, model_name: str, snapshot: Snapshot, run_id: str, model_uri: str, metrics: dict
) -> str:
    """New registered version (alias ``challenger`` marks the newest candidate); returns its number."""
    primary = {k: v for k, v in metrics.items() if k.startswith("test_")}
    mv = tracking.register_version(
        ctx.client,
        model_name,
        model_uri,
        run_id,
        {
            "snapshot_id": snapshot.id,
            "dataset": snapshot.name,
            "data_fingerprint": snapshot.fingerprint,
            **snapshot.spec.split.to_tags(),
            "task": snapshot.spec.task,
            **{k: f"{v:.6g}" for k, v in primary.items()},
        },
    )
    tracking.move_alias(
        ctx.client,
        model_name,
        CHALLENGER,
        mv.version,
        action="register",
        reason=f"new candidate from run {run_id}",
    )
    snapshot.record_usage(run_id=run_id, model=model_name, model_version=mv.version)
    return str(mv.version)


def plan_for(
    model: ModelConfig, execution: str | None = None, nodes: tuple[list[float], list[float]] | None = None
) -> ExecutionPlan:
    """The execution plan for ``model``'s settings (``execution`` overrides ``model.execution``) on
    ``nodes`` (CPUs and GPUs per node), by default the alive nodes of the connected cluster."""
    from mlops_ray.ray_runtime import alive_node_cpus, alive_node_gpus

    node_cpus, node_gpus = nodes if nodes is not None else (alive_node_cpus(), alive_node_gpus())
    try:
        return choose_execution(
            node_cpus,
            execution or model.execution,
            model.num_workers,
            model.cpus_per_worker,
            node_gpus=node_gpus,
            device=model.device,
        )
    except ValueError as err:  # e.g. model.device: cuda on a cluster without (enough) GPUs
        raise ConfigError(str(err)) from None


def train_model(
    ctx: Context,
    spec: TrainingSpec,
    snapshot: Snapshot,
    *,
    param_overrides: dict | None = None,
    run_name: str | None = None,
    register: bool = True,
    execution: str | None = None,
    plan: ExecutionPlan | None = None,
    tags: dict | None = None,
) -> Candidate:
    """Train ``spec.model`` on ``snapshot``, log it to MLflow and (by default) register it as ``spec.model_name``.

    Raises:
        SnapshotCorruptError: the snapshot's files differ from its manifest (checked before training).
    """
    from mlops_ray.ray_runtime import ensure_ray, fresh_local_node

    ctx.client  # noqa: B018 - fail fast on an unusable tracking store, before any training
    check = snapshot.verify()
    model_cfg = spec.model
    if plan is None and (local := fresh_local_node()) is not None:
        # No cluster yet and none to join: the one it would start is this machine. Local mode trains in
        # this process, so Ray's start-up and shutdown (~8 s) are skipped; any other plan starts it below.
        plan = plan_for(model_cfg, execution, ([local[0]], [local[1]]))
    if plan is None or plan.mode != "local":
        ensure_ray()
        plan = plan or plan_for(model_cfg, execution)
    run_name = run_name or f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out_dir = ctx.run_dir("runs", run_name)
    kind = get_kind(model_cfg.type)
    fitted = kind.fit(
        model_cfg,
        snapshot,
        plan,
        out_dir,
        run_name=run_name,
        storage=ctx.workspace.shared_uri("ray", "train"),
        overrides=param_overrides,
    )
    model = TabularModel.from_parts(snapshot.spec.task, snapshot.preprocessor(), kind, fitted.estimator)
    evaluation = evaluate(model, snapshot, seed=model_cfg.seed)
    cv = None
    if model_cfg.cv_folds:
        from mlops_ray.train.cv import cross_validate

        cv = cross_validate(model_cfg, snapshot, model_cfg.cv_folds, plan.nthread, param_overrides)
    extra: dict[str, Any] = {"train_seconds": fitted.seconds, "snapshot_check": check.describe()}
    with tracking.run(ctx, run_name) as r:
        model_uri = log_candidate(
            spec.config_yaml,
            snapshot,
            model,
            fitted=fitted,
            plan=plan,
            evaluation=evaluation,
            tags={
                "param_overrides": json.dumps(param_overrides or {}),
                "snapshot_check": check.describe(),
                **(tags or {}),
            },
        )
        tracking.log_metrics({"train_seconds": fitted.seconds})
        if cv:
            tracking.log_metrics(cv["summary"])
            tracking.log_dict(cv, "evaluation/cv_folds.json")
            extra["cv"] = cv["summary"]
        run_id = r.info.run_id
    version = (
        register_candidate(ctx, spec.model_name, snapshot, run_id, model_uri, evaluation["metrics"])
        if register
        else None
    )
    return Candidate(run_id, model_uri, version, evaluation["metrics"], snapshot.id, plan, extra)
