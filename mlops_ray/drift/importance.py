"""Model drift: how what drives the model changed (pure NumPy/SciPy).

As MLOps practice defines model drift: retrain on new data and compare what drives the model.
Inputs are permutation importances (drop in the task's metric when one raw feature is shuffled)
of the same features: as logged at training, of the reference model on the new data's validation
rows, and of a model trained on the new data on the same rows. Importances are compared as
shares (negative importances count as 0, then divided by the total), by Spearman rank
correlation, by the features whose share moved most, and by whether the top-k drivers are still
the top-k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SPEARMAN_CHANGED = 0.5  # below this rank correlation the drivers are called "changed"


def shares(importance: dict[str, float], features: list[str]) -> np.ndarray:
    v = np.array([max(float(importance.get(f, 0.0)), 0.0) for f in features])
    total = v.sum()
    return v / total if total > 0 else v


def top_k(importance: dict[str, float], features: list[str], k: int) -> list[str]:
    return sorted(features, key=lambda f: (-float(importance.get(f, 0.0)), f))[:k]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return None  # undefined for a constant ranking
    return float(spearmanr(a, b).statistic)


def _versus(base: dict[str, float], other: dict[str, float], features: list[str], k: int) -> dict[str, Any]:
    a, b = shares(base, features), shares(other, features)
    rho = spearman(a, b)
    tk_a, tk_b = top_k(base, features, k), top_k(other, features, k)
    same = set(tk_a) == set(tk_b)
    return {
        "spearman": rho,
        "top_k_same": same,
        "top_k": {"base": tk_a, "other": tk_b},
        "changed": (rho is not None and rho < SPEARMAN_CHANGED) or not same,
    }


def compare_importance(
    training: dict[str, float],
    reference_now: dict[str, float],
    candidate_now: dict[str, float],
    *,
    k: int = 3,
    moved: int = 5,
) -> dict[str, Any]:
    """The model-drift report.

    Args:
        training: the reference model's importances logged at training (its validation rows).
        reference_now: the reference model's importances on the new data's validation rows.
        candidate_now: importances of a model trained on the new data, on the same rows.
    """
    features = sorted(set(training) | set(reference_now) | set(candidate_now))
    k = min(k, len(features))
    s_train, s_ref, s_cand = (shares(d, features) for d in (training, reference_now, candidate_now))
    changes = [
        {
            "feature": f,
            "training": float(s_train[i]),
            "reference_now": float(s_ref[i]),
            "candidate_now": float(s_cand[i]),
            "change": float(s_cand[i] - s_train[i]),
        }
        for i, f in enumerate(features)
    ]
    changes.sort(key=lambda c: (-abs(c["change"]), c["feature"]))
    cand = _versus(training, candidate_now, features, k)
    return {
        "k": k,
        "features": features,
        "candidate_vs_training": cand,
        "reference_now_vs_training": _versus(training, reference_now, features, k),
        "candidate_vs_reference_now": _versus(reference_now, candidate_now, features, k),
        "moved": changes[:moved],
        "status": "changed" if cand["changed"] else "stable",
        "importance": {"training": training, "reference_now": reference_now, "candidate_now": candidate_now},
    }


def format_model_drift(report: dict[str, Any]) -> str:
    """A short text report for a terminal."""
    c = report["candidate_vs_training"]
    r = report["reference_now_vs_training"]

    def rho(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        f"model drift: {report['status'].upper()}  (k={report['k']})",
        f"  candidate (new data) vs training: Spearman {rho(c['spearman'])}, "
        f"top-{report['k']} {'same' if c['top_k_same'] else 'CHANGED'}: {', '.join(c['top_k']['base'])} -> "
        f"{', '.join(c['top_k']['other'])}",
        f"  reference model on new data vs training: Spearman {rho(r['spearman'])}, "
        f"top-{report['k']} {'same' if r['top_k_same'] else 'CHANGED'}",
        f"  {'feature':<24} {'training':>9} {'ref now':>9} {'new model':>9} {'change':>8}",
    ]
    for m in report["moved"]:
        lines.append(
            f"  {m['feature'][:24]:<24} {m['training']:>9.3f} {m['reference_now']:>9.3f} "
            f"{m['candidate_now']:>9.3f} {m['change']:>+8.3f}"
        )
    return "\n".join(lines)


__all__ = ["compare_importance", "format_model_drift", "shares", "spearman", "top_k"]
