"""The pipeline's stages as typed functions with explicit inputs.

Each stage takes a :class:`~mlops_ray.context.Context`, the config and the outputs of the
stages before it, and returns a typed result; none of them reads the environment, picks
"the latest" of anything by itself, or prints. Progress goes through an ``on_event``
callback (the CLI prints; a pipeline records)::

    ctx = Context.create(cfg)
    snap = prepare(ctx, cfg).snapshot
    cand = train(ctx, cfg, snap)
    decision = gate(ctx, cfg, cand.version)
    if decision.decision.promote:
        event = deploy(ctx, cfg, cand.version, "; ".join(decision.decision.reasons))
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from mlops_ray.data.prepare import PrepareResult, prepare_snapshot
from mlops_ray.data.snapshot import Snapshot
from mlops_ray.data.sources import list_source
from mlops_ray.errors import DataValidationError, SourceNotFoundError
from mlops_ray.registry import promotion
from mlops_ray.registry.promotion import PromotionResult
from mlops_ray.train.run import Candidate

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context

OnEvent = Callable[[str, dict], None]


def _quiet(event: str, info: dict) -> None:
    return None


def ensure_sample_data(ctx: Context, cfg: PipelineConfig, on_event: OnEvent = _quiet) -> str:
    """Generate the configured sample source when it does not exist yet; returns its path."""
    from mlops_ray.data.generate import generate_dataset

    uri = cfg.source(ctx.workspace.location)
    try:  # any file, directory (recursive) or glob the data layer would read counts as existing data
        list_source(uri, cfg.data.format)
        on_event("sample_data", {"path": uri, "generated": False})
        return uri
    except DataValidationError as err:
        problem = "; ".join(err.problems)
    src = Path(uri)
    g = cfg.data.generate
    if g is None:
        raise SourceNotFoundError(
            f"data.source: {problem}, and the config has no data.generate section to create sample data; "
            "point data.source at your data"
        )
    if "://" not in uri and src.exists() and (src.is_file() or any(src.iterdir())):
        raise SourceNotFoundError(f"data.source: {problem}; not generating sample data into a non-empty {src}")
    on_event("sample_data", {"path": uri, "generated": True, "rows": g.rows, "shards": g.shards})
    generate_dataset(uri, g.rows, shards=g.shards, seed=g.seed, drift=g.drift)  # a path or an object-store URI
    return uri


def require_source(ctx: Context, cfg: PipelineConfig, config_label: str | None = None) -> None:
    """Fail at once, saying how to get it, when the config's sample data (``data.generate``) is not there yet.

    A workspace (``MLOPS_RAY_HOME``) without the quickstart's data otherwise failed later with a bare
    "does not exist". Sources without a ``data.generate`` section are left to the data layer's errors.
    """
    g = cfg.data.generate
    uri = cfg.source(ctx.workspace.location)
    src = Path(uri)
    if g is None or "://" in uri or (src.exists() and (src.is_file() or any(src.iterdir()))):
        return  # not sample data, or data is there: the data layer reads (and judges) it
    try:
        list_source(uri, cfg.data.format)
        return
    except DataValidationError as err:
        problem = "; ".join(err.problems)
    drift = f" --drift {g.drift}" if g.drift else ""
    raise SourceNotFoundError(
        f"data.source: {problem} (workspace {ctx.workspace.root}, from MLOPS_RAY_HOME or ./.mlops). "
        f"It is this config's sample data: 'mlops-ray quickstart --config {config_label or 'FILE'}' generates it "
        f"(and runs the whole pipeline), or generate only the data with "
        f"'mlops-ray data generate --rows {g.rows} --shards {g.shards} --seed {g.seed}{drift} --out {uri}'"
    )


def prepare(
    ctx: Context,
    cfg: PipelineConfig,
    *,
    engine: str = "ray",
    progress: bool = False,
    on_event: OnEvent = _quiet,
    config_label: str | None = None,
) -> PrepareResult:
    """Validate, split, fingerprint and snapshot ``cfg.data`` in ``ctx``'s workspace (reused when unchanged).

    ``config_label`` (the config path the user gave) names the config in the hint for missing sample data.
    """
    require_source(ctx, cfg, config_label)
    source = cfg.source(ctx.workspace.location)
    on_event("prepare", {"source": source})
    res = prepare_snapshot(cfg.data, ctx.workspace, source=source, engine=engine, progress=progress)
    on_event("prepared", {"result": res})
    return res


def train(
    ctx: Context,
    cfg: PipelineConfig,
    snapshot: Snapshot,
    *,
    register: bool = True,
    tags: dict[str, str] | None = None,
    on_event: OnEvent = _quiet,
) -> Candidate:
    """Train (or tune, when ``tune.enabled``) on ``snapshot``; the candidate is registered unless
    ``register`` is False (then :func:`register` does it later). ``tags`` go on the training run."""
    from mlops_ray.config import TrainingSpec

    spec = TrainingSpec.from_config(cfg)
    if cfg.tune.enabled:
        from mlops_ray.train.tune import tune_model

        on_event(
            "tune",
            {
                "trials": cfg.tune.num_samples,
                "search_alg": cfg.tune.search_alg,
                "scheduler": cfg.tune.scheduler,
                "metric": cfg.tune.metric_for(snapshot.spec.task),
            },
        )
        cand = tune_model(ctx, spec, snapshot, register=register)
        for k, v in (tags or {}).items():
            ctx.client.set_tag(cand.run_id, k, v)
    else:
        from mlops_ray.train.run import train_model

        on_event("train", {"model": cfg.model.type})
        cand = train_model(ctx, spec, snapshot, register=register, tags=tags)
    on_event("trained", {"candidate": cand})
    return cand


def register(ctx: Context, cfg: PipelineConfig, snapshot: Snapshot, run_id: str, model_uri: str, metrics: dict) -> str:
    """Register exactly the model of training run ``run_id`` as a new version (``challenger``)."""
    from mlops_ray.train.run import register_candidate

    return str(register_candidate(ctx, cfg.registry.model_name, snapshot, run_id, model_uri, metrics))


def evaluate(ctx: Context, cfg: PipelineConfig, snapshot: Snapshot, run_id: str, model_uri: str) -> dict:
    """Model drift of a trained candidate against the deployed version, on ``snapshot``'s rows
    (:func:`~mlops_ray.pipeline.model_drift.compare_models`; logged to the candidate's run)."""
    from mlops_ray.pipeline.model_drift import compare_models
    from mlops_ray.registry import tracking

    name = cfg.registry.model_name
    champ = tracking.alias_version(ctx.client, name, cfg.serve.model_alias)
    if champ is None:
        return {"champion_version": None, "status": "no champion yet"}
    champion = tracking.load_pyfunc(ctx.tracking_uri, f"models:/{name}/{champ.version}").unwrap_python_model()
    candidate = tracking.load_pyfunc(ctx.tracking_uri, model_uri).unwrap_python_model()
    report = compare_models(ctx, champion, candidate, snapshot, seed=cfg.model.seed, candidate_run_id=run_id)
    return {"champion_version": str(champ.version), **report}


def gate(
    ctx: Context, cfg: PipelineConfig, version: str, *, force: bool = False, on_event: OnEvent = _quiet
) -> PromotionResult:
    """Compare exactly ``version`` with the deploy-alias version on the same test rows."""
    on_event("gate", {"version": version, "alias": cfg.serve.model_alias})
    res = promotion.gate(ctx, cfg.registry, cfg.serve.model_alias, version, force=force)
    on_event("gated", {"result": res})
    return res


def deploy(ctx: Context, cfg: PipelineConfig, version: str, reason: str, *, on_event: OnEvent = _quiet) -> dict:
    """Move the deploy alias (``serve.model_alias``) to ``version``; running services follow it."""
    event = promotion.deploy(ctx, cfg.registry.model_name, cfg.serve.model_alias, version, reason)
    on_event("deployed", {"event": event})
    return event


def train_gate_deploy(
    ctx: Context, cfg: PipelineConfig, snapshot: Snapshot, *, on_event: OnEvent = _quiet
) -> tuple[Candidate, PromotionResult]:
    """Train a candidate, gate exactly that version, deploy it if the gate says PROMOTE."""
    cand = train(ctx, cfg, snapshot, on_event=on_event)
    # one registry lock around gate and deploy: a concurrent promotion cannot slip in between
    with promotion.serialized(ctx, cfg.registry.model_name, purpose=f"gate and deploy v{cand.version}"):
        decision = gate(ctx, cfg, cand.version, on_event=on_event)
        if decision.decision.promote:
            decision.event = deploy(ctx, cfg, cand.version, "; ".join(decision.decision.reasons), on_event=on_event)
    return cand, decision
