"""Acting on the gate: evaluate a version, move the deploy alias, roll back, list models.

Gathers inputs and applies :mod:`~mlops_ray.registry.gate` decisions. The deploy alias is
``serve.model_alias`` (default ``champion``): the one alias that the gate and rollback
move and that serving and batch inference read. Every function takes the exact model
version it acts on; none of them resolves "the latest challenger" by itself (two runs
that finish close together must not promote each other's model).

Concurrent promotions and rollbacks of one model are serialized by the model's registry
lock (:func:`~mlops_ray.registry.tracking.registry_lock`): :func:`promote` holds it from
reading the deploy-alias version, through the gate, to moving the alias and appending
the history event, so every gate compares against the champion of the moment it moves
the alias, and no history event is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_ray.data.snapshot import SplitSpec
from mlops_ray.errors import ModelVersionNotFoundError, RegistryError, SnapshotNotFoundError, TrackingError
from mlops_ray.registry import tracking
from mlops_ray.registry.gate import PROMOTE, GateDecision, GateRule, decide_promotion, leakage_problem

if TYPE_CHECKING:
    from mlops_ray.config import RegistryConfig
    from mlops_ray.context import Context

CHALLENGER = "challenger"


@dataclass
class PromotionResult:
    decision: GateDecision
    challenger_version: str
    champion_version: str | None
    scores: dict[str, float | None] = field(default_factory=dict)
    event: dict | None = None
    alias: str = "champion"


def get_version(client, name: str, version: str):
    """The registered version, or ModelVersionNotFoundError; backend failures raise TrackingError."""
    try:
        return client.get_model_version(name, str(version))
    except Exception as err:
        if tracking.is_not_found(err):
            raise ModelVersionNotFoundError(f"model {name!r} has no version {version}") from None
        raise TrackingError(f"cannot read model {name!r} version {version}: {type(err).__name__}: {err}") from None


def resolve_model_uri(client, model_name: str, alias: str, model_uri: str | None) -> tuple[str, str, str | None]:
    """``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` / None (``model_name`` at ``alias``, the
    deploy alias) -> (name, version, alias).

    Raises:
        ConfigError: a malformed URI, an unknown alias or version.
    """
    from mlops_ray.errors import ConfigError, MlopsRayError

    name, version = model_name, None
    if model_uri:
        ref = model_uri.removeprefix("models:/")
        if "@" in ref:
            name, alias = ref.split("@", 1)
        elif "/" in ref:
            name, version = ref.split("/", 1)
            alias = None
        else:
            raise ConfigError(f"{model_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    if version is None:
        mv = tracking.alias_version(client, name, alias)
        if mv is None:
            raise ConfigError(f"model {name!r} has no alias {alias!r}")
        return name, str(mv.version), alias
    try:
        get_version(client, name, version)
    except MlopsRayError as err:
        raise ConfigError(str(err)) from None
    return name, str(version), alias


def _split_spec(mv) -> SplitSpec:
    try:
        return SplitSpec.from_tags(mv.tags)
    except KeyError as err:
        raise RegistryError(
            f"model version {mv.version} lacks split tag {err}; it was not registered by mlops-ray"
        ) from None


def score_version(ctx: Context, name: str, version: str, frame, y, task: str, metric: str) -> float:
    """Load ``models:/name/version`` and compute ``metric`` on raw rows (preprocessing included)."""
    import numpy as np

    from mlops_ray.model.metrics import compute_metrics

    model = tracking.load_pyfunc(ctx.tracking_uri, f"models:/{name}/{version}").unwrap_python_model()
    return compute_metrics(task, np.asarray(y), model.score_frame(frame))[metric]


def gate(ctx: Context, registry: RegistryConfig, alias: str, version: str, *, force: bool = False) -> PromotionResult:
    """Score ``version`` of ``registry.model_name`` and the version at the deploy alias ``alias`` on
    ``version``'s test rows; decide by ``registry.gate``.

    Records the decision on the version (tags ``gate.*``) but moves no alias: see :func:`deploy`.
    """
    from mlops_ray.data.splits import load_split

    client = ctx.client
    name = registry.model_name
    mv = get_version(client, name, version)
    champ = tracking.alias_version(client, name, alias)
    if champ is not None and str(champ.version) == str(mv.version):
        return PromotionResult(
            GateDecision("KEEP", [f"version {mv.version} is already {alias}"]),
            str(mv.version),
            str(champ.version),
            alias=alias,
        )
    sid = mv.tags.get("snapshot_id", "?")
    try:
        snap = ctx.snapshots.find_for(sid, mv.tags.get("dataset"))
    except SnapshotNotFoundError as err:
        raise RegistryError(
            f"version {mv.version} was trained on snapshot {sid}, which cannot be found in this workspace "
            f"({ctx.workspace.root}): {err}; the gate scores on that snapshot's test rows"
        ) from None
    spec = snap.spec
    g = registry.gate
    rule = GateRule(g.metric_for(spec.task), g.direction_for(spec.task), g.min_improvement_abs, g.min_improvement_rel)
    test = load_split(snap, "test", snap.preprocessor(), keep_frame=True)
    if len(test) == 0:
        raise RegistryError(f"snapshot {snap.id} has an empty test split; cannot compare models")
    frame = test.frame[spec.features]
    scores: dict[str, float | None] = {
        "challenger": score_version(ctx, name, mv.version, frame, test.y, spec.task, rule.metric),
        "champion": None,
    }
    if champ is not None:
        leak = leakage_problem(_split_spec(champ), _split_spec(mv))
        if leak and not force:
            raise RegistryError(
                f"refusing to compare v{champ.version} ({alias}) with v{mv.version}: {leak}. "
                "Re-split with the champion's salt, or pass --force to promote without comparison"
            )
        if not leak:
            scores["champion"] = score_version(ctx, name, champ.version, frame, test.y, spec.task, rule.metric)
    decision = decide_promotion(scores["challenger"], scores["champion"], rule)
    if force and not decision.promote:
        decision = GateDecision(PROMOTE, decision.reasons + ["forced by operator"], decision.improvement)
    client.set_model_version_tag(name, mv.version, "gate.decision", decision.action)
    client.set_model_version_tag(name, mv.version, "gate.reasons", "; ".join(decision.reasons)[:4000])
    client.set_model_version_tag(
        name, mv.version, "gate.forced", str(bool(force and "forced by operator" in decision.reasons)).lower()
    )
    return PromotionResult(decision, str(mv.version), str(champ.version) if champ else None, scores, alias=alias)


def deploy(ctx: Context, model_name: str, alias: str, version: str, reason: str, *, action: str = "promote") -> dict:
    """Point the deploy alias ``alias`` of ``model_name`` at ``version`` (running services follow it);
    returns the history event."""
    get_version(ctx.client, model_name, version)
    return tracking.move_alias(ctx.client, model_name, alias, version, action=action, reason=reason)


def promote(
    ctx: Context, registry: RegistryConfig, alias: str, version: str, *, force: bool = False
) -> PromotionResult:
    """Gate exactly ``version`` and, if the gate (or ``force``) says PROMOTE, move the deploy alias ``alias`` to it."""
    if version is None:
        raise RegistryError("promote needs the exact version to gate (the CLI resolves 'challenger' for you)")
    name = registry.model_name
    get_version(ctx.client, name, version)  # a missing version fails before waiting for the lock
    with tracking.registry_lock(ctx.client, name, purpose=f"promote v{version}"):
        res = gate(ctx, registry, alias, version, force=force)
        if res.decision.promote:
            res.event = deploy(
                ctx,
                name,
                alias,
                res.challenger_version,
                "; ".join(res.decision.reasons),
                action="force-promote" if force and "forced by operator" in res.decision.reasons else "promote",
            )
    return res


def serialized(ctx: Context, model_name: str, purpose: str):
    """The registry lock of ``model_name`` (re-entrant in one thread): hold it around a gate and the
    alias move that acts on it, so the gate compares against the deployed version of that moment."""
    return tracking.registry_lock(ctx.client, model_name, purpose=purpose)


def challenger_version(ctx: Context, model_name: str) -> str:
    """The version of ``model_name`` behind the ``challenger`` alias now (for the CLI's default)."""
    name = model_name
    mv = tracking.alias_version(ctx.client, name, CHALLENGER)
    if mv is None:
        raise ModelVersionNotFoundError(
            f"model {name!r} has no '{CHALLENGER}' version; train one first (mlops-ray train) or pass --version"
        )
    return str(mv.version)


def deploy_stack(events: list[dict], alias: str) -> list[str]:
    """Replay ``alias``'s events: promotions push, rollbacks pop. Pure; returns versions, current last."""
    stack: list[str] = []
    for e in events:
        if e["alias"] != alias:
            continue
        if e["action"] == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != e["to_version"]:
                stack.append(e["to_version"])
        else:
            stack.append(e["to_version"])
    return stack


def rollback(ctx: Context, model_name: str, alias: str, reason: str = "manual rollback") -> dict:
    """Point the deploy alias ``alias`` of ``model_name`` back at its previous version (one step per call)."""
    name = model_name
    with tracking.registry_lock(ctx.client, name, purpose=f"roll back {alias!r}"):
        stack = deploy_stack(tracking.alias_history(ctx.client, name), alias)
        if len(stack) < 2:
            raise RegistryError(
                f"model {name!r} has no previous {alias!r} version to roll back to (history: {stack or 'empty'})"
            )
        return tracking.move_alias(ctx.client, name, alias, stack[-2], action="rollback", reason=reason)


def list_models(ctx: Context, model_name: str) -> list[dict[str, Any]]:
    """Versions of ``model_name`` with aliases, key metrics and data fingerprints (newest first)."""
    client, name = ctx.client, model_name
    out = []
    aliases = tracking.aliases_by_version(client, name)
    for mv in reversed(tracking.list_versions(client, name)):
        gate_state = mv.tags.get("gate.decision")
        if gate_state and mv.tags.get("gate.forced") == "true":
            gate_state += " (forced)"
        out.append(
            {
                "version": str(mv.version),
                "aliases": aliases.get(str(mv.version), []),
                "run_id": mv.run_id,
                "snapshot_id": mv.tags.get("snapshot_id"),
                "data_fingerprint": mv.tags.get("data_fingerprint", "")[:12],
                "metrics": {k: v for k, v in mv.tags.items() if k.startswith("test_")},
                "gate": gate_state,
                "created": mv.creation_timestamp,
            }
        )
    return out
