"""Acting on the gate: promote, rollback, list models. Gathers inputs, applies :mod:`gate` decisions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlops_ray.errors import ConfigError, MlopsRayError
from mlops_ray.registry import tracking
from mlops_ray.registry.gate import GateDecision, GateRule, SplitSpec, decide_promotion, leakage_problem

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegistryError(MlopsRayError):
    """A registry operation cannot be carried out (no such version, no history, leak...)."""


@dataclass
class PromotionResult:
    decision: GateDecision
    challenger_version: str
    champion_version: str | None
    scores: dict[str, float | None] = field(default_factory=dict)
    event: dict | None = None


def _split_spec(mv) -> SplitSpec:
    t = mv.tags
    try:
        return SplitSpec(t["salt"], tuple((k, float(v)) for k, v in json.loads(t["fractions"])), t["id_column"])
    except KeyError as err:
        raise RegistryError(f"model version {mv.version} lacks split tag {err}; it was not registered by mlops-ray")


def score_version(name: str, version: str, frame, y, task: str, metric: str) -> float:
    """Load ``models:/name/version`` as a pyfunc and compute ``metric`` on raw rows."""
    import mlflow
    import numpy as np

    from mlops_ray.train.evaluate import compute_metrics

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    out = model.predict(frame)
    if task == "binary":
        score = out["probability"].to_numpy()
    elif task == "multiclass":
        score = out[[c for c in out.columns if c.startswith("probability_")]].to_numpy()
    else:
        score = out["prediction"].to_numpy()
    metrics = compute_metrics(task, np.asarray(y), score)
    if metric not in metrics:
        raise ConfigError(f"registry.gate.metric {metric!r} is not computed for task {task!r}; use one of {sorted(metrics)}")
    return metrics[metric]


def promote(cfg, version: str | None = None, *, force: bool = False) -> PromotionResult:
    """Score challenger (or ``version``) and champion on the challenger snapshot's test split; promote if the gate says so."""
    from mlops_ray.data.snapshot import SnapshotStore
    from mlops_ray.train.features import load_split

    client = tracking.configure(cfg.mlflow)
    name = cfg.registry.model_name
    if version is None:
        mv = tracking.alias_version(client, name, CHALLENGER)
        if mv is None:
            raise RegistryError(f"model {name!r} has no '{CHALLENGER}' version; train one first (mlops-ray train)")
    else:
        try:
            mv = client.get_model_version(name, str(version))
        except Exception:
            raise RegistryError(f"model {name!r} has no version {version}") from None
    champ = tracking.alias_version(client, name, CHAMPION)
    if champ is not None and str(champ.version) == str(mv.version):
        return PromotionResult(GateDecision("KEEP", [f"version {mv.version} is already champion"]), str(mv.version),
                               str(champ.version))
    gate = cfg.registry.gate
    rule = GateRule(gate.metric, gate.direction, gate.min_improvement_abs, gate.min_improvement_rel)
    snap = SnapshotStore().find(mv.tags.get("snapshot_id", "?"))
    task = snap.manifest["spec"]["task"]
    test = load_split(snap, "test", snap.preprocessor(), keep_frame=True)
    spec = snap.manifest["spec"]
    test.frame = test.frame[spec["numeric_features"] + spec["categorical_features"]]
    if len(test) == 0:
        raise RegistryError(f"snapshot {snap.id} has an empty test split; cannot compare models")
    scores: dict[str, float | None] = {"challenger": score_version(name, mv.version, test.frame, test.y, task, gate.metric),
                                       "champion": None}
    if champ is not None:
        leak = leakage_problem(_split_spec(champ), _split_spec(mv))
        if leak and not force:
            raise RegistryError(f"refusing to compare v{champ.version} (champion) with v{mv.version}: {leak}. "
                                "Re-split with the champion's salt, or pass --force to promote without comparison")
        if not leak:
            scores["champion"] = score_version(name, champ.version, test.frame, test.y, task, gate.metric)
    decision = decide_promotion(scores["challenger"], scores["champion"], rule)
    if force and not decision.promote:
        decision = GateDecision("PROMOTE", decision.reasons + ["forced by operator"], decision.improvement)
    client.set_model_version_tag(name, mv.version, "gate.decision", decision.action)
    client.set_model_version_tag(name, mv.version, "gate.reasons", "; ".join(decision.reasons)[:4000])
    event = None
    if decision.promote:
        event = tracking.move_alias(client, name, CHAMPION, mv.version, action="promote",
                                    reason="; ".join(decision.reasons))
    return PromotionResult(decision, str(mv.version), str(champ.version) if champ else None, scores, event)


def champion_stack(events: list[dict]) -> list[str]:
    """Replay alias events: promotions push, rollbacks pop. Pure; returns versions, current last."""
    stack: list[str] = []
    for e in events:
        if e["alias"] != CHAMPION:
            continue
        if e["action"] == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != e["to_version"]:
                stack.append(e["to_version"])
        else:
            stack.append(e["to_version"])
    return stack


def rollback(cfg, reason: str = "manual rollback") -> dict:
    """Point ``champion`` back at the previous champion (one step per call)."""
    client = tracking.configure(cfg.mlflow)
    name = cfg.registry.model_name
    stack = champion_stack(tracking.alias_history(client, name))
    if len(stack) < 2:
        raise RegistryError(f"model {name!r} has no previous champion to roll back to (history: {stack or 'empty'})")
    return tracking.move_alias(client, name, CHAMPION, stack[-2], action="rollback", reason=reason)


def list_models(cfg) -> list[dict[str, Any]]:
    """Versions with aliases, key metrics and data fingerprints (newest first)."""
    client = tracking.configure(cfg.mlflow)
    name = cfg.registry.model_name
    out = []
    aliases = tracking.aliases_by_version(client, name)
    for mv in reversed(tracking.list_versions(client, name)):
        out.append({
            "version": str(mv.version), "aliases": aliases.get(str(mv.version), []), "run_id": mv.run_id,
            "snapshot_id": mv.tags.get("snapshot_id"), "data_fingerprint": mv.tags.get("data_fingerprint", "")[:12],
            "metrics": {k: v for k, v in mv.tags.items() if k.startswith("test_")},
            "gate": mv.tags.get("gate.decision"), "created": mv.creation_timestamp,
        })
    return out
