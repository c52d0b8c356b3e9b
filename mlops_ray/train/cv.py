"""k-fold cross-validation inside the train split, folds assigned by the hash rule.

Fold of a row = split code of ``assign_splits(id, salt + ':fold', {fold0: 1/k, ...})``: the
same rows land in the same fold on every machine, and the folds are independent of the
train/valid/test assignment (another salt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mlops_ray.data.hashing import assign_splits
from mlops_ray.model.metrics import compute_metrics

if TYPE_CHECKING:
    from mlops_ray.config import ModelConfig


def assign_folds(ids, salt: str, k: int) -> np.ndarray:
    """Fold index in [0, k) per id (int8), by the hash rule with salt ``salt + ':fold'``."""
    if k < 2:
        raise ValueError(f"cv folds must be >= 2, got {k}")
    return assign_splits(ids, f"{salt}:fold", {f"fold{i}": 1.0 / k for i in range(k)})


def summarize_folds(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """``cv_<metric>_mean`` and ``cv_<metric>_std`` (population std) over folds."""
    out = {}
    for m in per_fold[0]:
        vals = np.array([f[m] for f in per_fold], dtype=np.float64)
        out[f"cv_{m}_mean"] = float(vals.mean())
        out[f"cv_{m}_std"] = float(vals.std())
    return out


def cross_validate(model: ModelConfig, snapshot, k: int, nthread: int, param_overrides: dict | None = None) -> dict:
    """Train k models on k-1 folds of the train split, score each on its held-out fold.

    Returns:
        ``{"folds": [{metric: v}, ...], "summary": {cv_<m>_mean, cv_<m>_std}}``.
    """
    import pyarrow as pa

    from mlops_ray.data.splits import SplitData, load_split
    from mlops_ray.model.kinds import get_kind

    pre = snapshot.preprocessor()
    spec = snapshot.spec
    data = load_split(snapshot, "train", pre)
    folds = assign_folds(pa.array(data.ids.astype(str)), spec.split.salt, k)
    task = spec.task
    kind = get_kind(model.type)
    per_fold = []
    for i in range(k):
        tr, te = folds != i, folds == i
        train = SplitData(data.x[tr], data.y[tr], None, data.ids[tr])
        test = SplitData(data.x[te], data.y[te], None, data.ids[te])
        score = kind.fit_fold(model, snapshot, pre, train, test, nthread, param_overrides)
        per_fold.append(compute_metrics(task, test.y, score))
    return {"folds": per_fold, "summary": summarize_folds(per_fold)}
