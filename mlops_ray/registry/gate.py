"""Champion/challenger gate: a pure policy returning a decision with reasons.

The engine (``mlops_ray.registry.promotion``) gathers scores on the same rows and
acts on the decision; nothing here touches MLflow.

Example::

    d = decide_promotion(0.86, 0.85, GateRule("auc", "maximize", min_improvement_abs=0.005))
    d.action      # 'PROMOTE'
    d.reasons     # ['auc 0.8600 vs champion 0.8500: +0.0100 >= +0.0050 required']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from mlops_ray.data.hashing import split_boundaries
from mlops_ray.data.snapshot import SplitSpec


class GateAction(StrEnum):
    """What the gate decides (a str: compares and serialises as ``"PROMOTE"`` / ``"KEEP"``)."""

    PROMOTE = "PROMOTE"
    KEEP = "KEEP"


PROMOTE = GateAction.PROMOTE
KEEP = GateAction.KEEP


@dataclass(frozen=True)
class GateRule:
    metric: str
    direction: str = "maximize"  # or "minimize"
    min_improvement_abs: float = 0.0
    min_improvement_rel: float = 0.0

    def __post_init__(self):
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {self.direction!r}")
        if self.min_improvement_abs < 0 or self.min_improvement_rel < 0:
            raise ValueError("minimum improvements must be >= 0")


@dataclass(frozen=True)
class GateDecision:
    action: GateAction
    reasons: list[str] = field(default_factory=list)
    improvement: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "action", GateAction(self.action))

    @property
    def promote(self) -> bool:
        return self.action == PROMOTE


def decide_promotion(challenger: float, champion: float | None, rule: GateRule) -> GateDecision:
    """Promote when there is no champion, or when the challenger beats it by the required margins.

    Both margins must hold: improvement >= ``min_improvement_abs`` and
    improvement >= ``min_improvement_rel * |champion|``; improvement is signed so
    that positive is better under ``direction``. A tie with zero margins promotes
    (the newer model on equal evidence).
    """
    if challenger is None or not math.isfinite(challenger):
        return GateDecision(KEEP, [f"challenger {rule.metric} is not a finite number ({challenger!r})"])
    if champion is None:
        return GateDecision(PROMOTE, ["no current champion"])
    if not math.isfinite(champion):
        return GateDecision(PROMOTE, [f"champion {rule.metric} is not finite ({champion!r})"])
    delta = challenger - champion if rule.direction == "maximize" else champion - challenger
    need = max(rule.min_improvement_abs, rule.min_improvement_rel * abs(champion))
    verdict = f"{rule.metric} {challenger:.4f} vs champion {champion:.4f}: {delta:+.4f}"
    if delta >= need:
        return GateDecision(PROMOTE, [f"{verdict} >= {need:+.4f} required"], delta)
    return GateDecision(KEEP, [f"{verdict} < {need:+.4f} required"], delta)


def leakage_problem(champion: SplitSpec, challenger: SplitSpec, eval_split: str = "test") -> str | None:
    """Why scoring the champion on the challenger's ``eval_split`` would leak, or None if it is safe.

    Safe only when both used the same id column and salt and the champion's *train*
    bucket range does not overlap the challenger's evaluation bucket range.
    """
    if champion.id_column != challenger.id_column:
        return f"id columns differ ({champion.id_column!r} vs {challenger.id_column!r})"
    if champion.salt != challenger.salt:
        return (
            f"split salts differ (champion {champion.salt!r}, challenger {challenger.salt!r}): the challenger's "
            f"{eval_split} rows may be rows the champion trained on"
        )
    cb = {n: (lo, hi) for n, lo, hi in split_boundaries(dict(champion.fractions))}
    eb = {n: (lo, hi) for n, lo, hi in split_boundaries(dict(challenger.fractions))}
    if eval_split not in eb:
        return f"challenger has no {eval_split!r} split"
    lo, hi = eb[eval_split]
    tlo, thi = cb.get("train", (0, 0))
    if lo < thi and tlo < hi:
        return (
            f"champion trained on buckets [{tlo},{thi}) which overlap the challenger's {eval_split} buckets [{lo},{hi})"
        )
    return None
