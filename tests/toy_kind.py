"""A third-party model kind, written the way a user would: one module, registered with one line.

scikit-learn's ``HistGradientBoostingClassifier`` / ``Regressor`` with *native* categorical
support: with ``data.preprocessing.categorical.encoding: ordinal`` each categorical feature is one
column of codes, and the estimator is told which columns those are (``categorical_features``), so
it splits on category sets instead of one-hot columns. It has no multi-worker mode: it fits in the
driver (and in a Tune worker per trial).

Registration (one line, in the test)::

    register_kind(HistGBKind())

Imported as ``tests.toy_kind`` (the repository root is the working directory Ray puts on its
workers' ``sys.path``), so batch-inference actors and Serve replicas find it through the
``kind_ref`` the logged model records.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ray.model.kinds import SklearnApiKind

if TYPE_CHECKING:
    from mlops_ray.config import ModelConfig


class HistGBKind(SklearnApiKind):  # model side: joblib file, predict_proba / predict
    name = "toy_hgb"
    tasks = ("binary", "multiclass", "regression")
    distributed = False

    # ------------------------------------------------------------ config
    def param_problems(self, params: dict[str, Any]) -> list[str]:
        out = []
        for key in ("max_iter", "max_leaf_nodes"):
            v = params.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 2):
                out.append(f"{key}: must be an integer >= 2, got {v!r}")
        return out

    # ------------------------------------------------------------ train side
    def fit(
        self,
        model: ModelConfig,
        snapshot,
        plan,
        out_dir: Path,
        *,
        run_name: str,
        storage: Path,
        overrides: dict | None = None,
    ):
        from mlops_ray.data.splits import load_split
        from mlops_ray.train.kinds import Fitted

        pre = snapshot.preprocessor()
        train = load_split(snapshot, "train", pre)
        params = dict(model.params, **(overrides or {}))
        t0 = time.perf_counter()
        est = build(snapshot.spec.task, pre, params, model.seed).fit(train.x, train.y)
        seconds = time.perf_counter() - t0
        path = Path(out_dir) / self.model_file
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save(est, str(path))
        return Fitted(est, path, {"toy_hgb": params}, None, seconds, {"train_rows": len(train)})

    def fit_fold(
        self, model: ModelConfig, snapshot, pre, train, test, nthread: int, overrides: dict | None = None
    ) -> np.ndarray:
        est = build(snapshot.spec.task, pre, dict(model.params, **(overrides or {})), model.seed)
        return self.scores(est.fit(train.x, train.y), test.x, snapshot.spec.task)

    def tune_trial(self, model: ModelConfig, snapshot, pre, cpus_per_trial: int, out_dir: Path, metric: str):
        from mlops_ray.train.kinds import TrialSpec

        kwargs = {
            "params": dict(model.params),
            "seed": model.seed,
            "snapshot_path": str(snapshot.path),
            "manifest": snapshot.manifest,
            "metric": metric,
        }
        return TrialSpec(_trial, kwargs)

    def best_fitted(self, checkpoint_dir: Path, out_dir: Path, model: ModelConfig, spec, best_config: dict):
        from mlops_ray.train.kinds import Fitted

        path = Path(out_dir) / self.model_file
        path.write_bytes((Path(checkpoint_dir) / self.model_file).read_bytes())
        return Fitted(self.load(str(path)), path, {"toy_hgb": dict(model.params, **best_config)})


def build(task: str, pre, params: dict, seed: int):
    """The estimator, told which columns are ordinal category codes (native categorical splits)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cats = {p.name for p in pre.categorical} if pre.encoding == "ordinal" else set()
    mask = [name in cats for name in pre.feature_names]
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    return cls(categorical_features=mask if any(mask) else None, random_state=seed, **params)


def _trial(config: dict, params: dict, seed: int, snapshot_path: str, manifest: dict, metric: str) -> None:
    """One Tune trial: fit with the sampled params, report the validation metric and the model once."""
    import tempfile

    from mlops_ray.data.snapshot import Snapshot
    from mlops_ray.data.splits import load_split
    from mlops_ray.model.metrics import compute_metrics
    from mlops_ray.train.tune import report_trial

    snap = Snapshot(Path(snapshot_path), manifest)
    pre = snap.preprocessor()
    task = snap.spec.task
    train, valid = load_split(snap, "train", pre), load_split(snap, "valid", pre)
    kind = HistGBKind()
    est = build(task, pre, dict(params, **config), seed).fit(train.x, train.y)
    value = compute_metrics(task, valid.y, kind.scores(est, valid.x, task))[metric]
    with tempfile.TemporaryDirectory() as tmp:
        kind.save(est, str(Path(tmp) / kind.model_file))
        report_trial({f"valid-{metric}": value, "final": 1}, checkpoint_dir=tmp)
