"""PSI, its chance threshold and the per-feature verdict: one definition for the offline command,
the live monitor and the tests (pure NumPy/SciPy).

``PSI = Σ_bins (cur − ref) · ln(cur / ref)`` over the reference bins frozen with the snapshot
(:mod:`mlops_ray.data.bins`). Empty bins: proportions are floored and then **renormalised** to
sum 1, so PSI stays a divergence between two distributions (≥ 0, 0 only when they are equal).
The floor is :data:`EPSILON` (1e-4) for proportions, and ``max(1e-4, 0.5 / n)`` -- half a row --
for a current sample given as ``n`` counts: a bin a window of 1,000 rows leaves empty by chance
then costs what half a row would, not ``r · ln(r / 1e-4)``. (With a 1e-4 floor, a categorical
feature with ~100 sparse categories exceeded its 0.077% chance threshold in 5.6% of no-drift
windows; with half a row, 0.01% -- ``benchmarks/drift_detection.py``.) Evidently floors at 1e-4
without renormalising.

Small samples inflate PSI: with no drift at all, ``PSI ≈ (1/n_ref + 1/n_cur) · χ²(B − 1)`` where B
is the number of bins the reference populates. :func:`chance_threshold` is the PSI that chance
alone exceeds with probability ``alpha / n_features`` (Bonferroni over the features judged
together). A feature warns (alerts) only when its PSI is at least ``psi_warn`` (``psi_alert``)
**and** above the chance threshold; below ``min_rows`` rows nothing is judged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from enum import StrEnum

import numpy as np

EPSILON = 1e-4


class DriftStatus(StrEnum):
    """The verdict on one feature or one window (a str: compares, hashes and serialises -- JSON,
    checkpoints, HTTP, the CLI's ``--fail-on`` -- as ``"ok"``, ...)."""

    OK = "ok"
    WARN = "warn"  # at least psi_warn and above chance
    ALERT = "alert"  # at least psi_alert and above chance
    INSUFFICIENT = "insufficient"  # fewer than min_rows rows: nothing judged


OK, WARN, ALERT, INSUFFICIENT = DriftStatus.OK, DriftStatus.WARN, DriftStatus.ALERT, DriftStatus.INSUFFICIENT
SEVERITY = {INSUFFICIENT: -1, OK: 0, WARN: 1, ALERT: 2}  # also looked up by plain strings read back from JSON


def floor_for(values) -> float:
    """The floor of one distribution: EPSILON for proportions, ``max(EPSILON, 0.5 / n)`` for ``n`` counts."""
    a = np.asarray(values)
    if np.issubdtype(a.dtype, np.integer) and a.sum() > 0:
        return max(EPSILON, 0.5 / float(a.sum()))
    return EPSILON


def floored(p, floor: float | None = None) -> np.ndarray:
    """Proportions (or counts) -> proportions floored (default :func:`floor_for`) and renormalised to sum 1."""
    floor = floor_for(p) if floor is None else floor
    q = np.asarray(p, dtype=np.float64)
    total = q.sum()
    q = q / total if total > 0 else np.full(q.shape, 1.0 / max(len(q), 1))
    q = np.maximum(q, floor)
    return q / q.sum()


def psi(reference, current) -> float:
    """PSI of ``current`` against ``reference`` over the same bins: each is proportions (floats) or
    counts (integers), floored as the module says."""
    r, c = floored(reference), floored(current)
    if r.shape != c.shape:
        raise ValueError(f"bins differ: reference has {r.shape[0]}, current {c.shape[0]}")
    return float(np.sum((c - r) * np.log(c / r)))


def effective_bins(reference) -> int:
    """Bins the reference populates (the χ² degrees of freedom are this minus one)."""
    return int(np.count_nonzero(np.asarray(reference, dtype=np.float64) > 0))


def chance_threshold(n_ref: int, n_cur: int, n_bins: int, alpha: float, n_tests: int = 1) -> float:
    """PSI that no-drift sampling noise exceeds with probability ``alpha / n_tests``.

    ``(1/n_ref + 1/n_cur) · χ²_{1 − alpha/n_tests}(n_bins − 1)``; ``inf`` for an empty sample.
    """
    if n_cur <= 0:
        return math.inf
    q = _chi2_isf(alpha / max(n_tests, 1), max(n_bins - 1, 1))
    inv_ref = 1.0 / n_ref if n_ref > 0 else 0.0
    return (inv_ref + 1.0 / n_cur) * q


@functools.lru_cache(maxsize=1024)
def _chi2_isf(p: float, df: int) -> float:
    """χ² quantile (cached: the monitor evaluates every closed window, and scipy's call costs ~0.1 ms)."""
    from scipy.stats import chi2

    return float(chi2.isf(p, df))


def fixed_status(value: float, psi_warn: float, psi_alert: float) -> DriftStatus:
    if value >= psi_alert:
        return ALERT
    if value >= psi_warn:
        return WARN
    return OK


def verdict(
    value: float, threshold: float, rows: int, *, psi_warn: float, psi_alert: float, min_rows: int
) -> DriftStatus:
    """ok | warn | alert | insufficient: the fixed band, kept only where PSI is above chance."""
    if rows < min_rows:
        return INSUFFICIENT
    band = fixed_status(value, psi_warn, psi_alert)
    return band if value > threshold else OK


def worst(statuses: Iterable[str]) -> DriftStatus:
    """The most severe status (insufficient when there is nothing to judge); plain strings read
    back from JSON count as their members."""
    return DriftStatus(max(statuses, key=SEVERITY.__getitem__, default=INSUFFICIENT))


__all__ = [
    "ALERT",
    "EPSILON",
    "INSUFFICIENT",
    "OK",
    "SEVERITY",
    "WARN",
    "DriftStatus",
    "chance_threshold",
    "effective_bins",
    "fixed_status",
    "floor_for",
    "floored",
    "psi",
    "verdict",
    "worst",
]
