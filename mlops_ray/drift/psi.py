"""PSI, its chance threshold and the per-feature verdict: one definition for the offline command,
the live monitor and the tests (pure NumPy/SciPy).

``PSI = Σ_bins (cur − ref) · ln(cur / ref)`` over the reference bins frozen with the snapshot
(:mod:`mlops_ray.data.bins`). Empty bins: both proportion vectors are floored at
:data:`EPSILON` (1e-4) and then **renormalised** to sum 1, so PSI stays a divergence between two
distributions (≥ 0, 0 only when they are equal). Evidently floors at 1e-4 without renormalising;
on 10 bins the two differ by less than 1e-3 unless several bins are empty.

Small samples inflate PSI: with no drift at all, ``PSI ≈ (1/n_ref + 1/n_cur) · χ²(B − 1)`` where B
is the number of bins the reference populates. :func:`chance_threshold` is the PSI that chance
alone exceeds with probability ``alpha / n_features`` (Bonferroni over the features judged
together). A feature warns (alerts) only when its PSI is at least ``psi_warn`` (``psi_alert``)
**and** above the chance threshold; below ``min_rows`` rows nothing is judged.
"""

from __future__ import annotations

import math

import numpy as np

EPSILON = 1e-4

OK, WARN, ALERT, INSUFFICIENT = "ok", "warn", "alert", "insufficient"
SEVERITY = {INSUFFICIENT: -1, OK: 0, WARN: 1, ALERT: 2}


def floored(p: np.ndarray) -> np.ndarray:
    """Proportions (or counts) -> proportions floored at EPSILON and renormalised to sum 1."""
    q = np.asarray(p, dtype=np.float64)
    total = q.sum()
    q = q / total if total > 0 else np.full(q.shape, 1.0 / max(len(q), 1))
    q = np.maximum(q, EPSILON)
    return q / q.sum()


def psi(reference, current) -> float:
    """PSI of ``current`` against ``reference`` (proportions or counts over the same bins)."""
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
    from scipy.stats import chi2

    if n_cur <= 0:
        return math.inf
    df = max(n_bins - 1, 1)
    q = float(chi2.isf(alpha / max(n_tests, 1), df))
    inv_ref = 1.0 / n_ref if n_ref > 0 else 0.0
    return (inv_ref + 1.0 / n_cur) * q


def fixed_status(value: float, psi_warn: float, psi_alert: float) -> str:
    if value >= psi_alert:
        return ALERT
    if value >= psi_warn:
        return WARN
    return OK


def verdict(value: float, threshold: float, rows: int, *, psi_warn: float, psi_alert: float, min_rows: int) -> str:
    """ok | warn | alert | insufficient: the fixed band, kept only where PSI is above chance."""
    if rows < min_rows:
        return INSUFFICIENT
    band = fixed_status(value, psi_warn, psi_alert)
    return band if value > threshold else OK


def worst(statuses) -> str:
    """The most severe status (insufficient when there is nothing to judge)."""
    return max(statuses, key=SEVERITY.__getitem__, default=INSUFFICIENT)


__all__ = [
    "ALERT",
    "EPSILON",
    "INSUFFICIENT",
    "OK",
    "WARN",
    "chance_threshold",
    "effective_bins",
    "fixed_status",
    "floored",
    "psi",
    "verdict",
    "worst",
]
