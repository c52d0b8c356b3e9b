"""The ``sklearn`` model kind: any scikit-learn estimator named by ``model.estimator``.

Model side: the estimator pickled with joblib (``model.joblib``), scored with ``predict_proba``
(classification) or ``predict`` (regression). Train side: one Ray task per fit
(:mod:`mlops_ray.train.sklearn_trainer`); there is no multi-worker mode. A Tune trial fits once and
reports once (no early stopping). Training imports stay inside the methods.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ray.model.kinds import SklearnApiKind

if TYPE_CHECKING:
    from mlops_ray.config import ModelConfig


class SklearnKind(SklearnApiKind):  # model side: joblib file, predict_proba / predict
    name = "sklearn"
    distributed = False

    # ------------------------------------------------------------ config
    def config_problems(self, model_cfg: ModelConfig) -> list[str]:
        if not model_cfg.estimator:
            return [f"model.type {self.name!r} needs model.estimator (an importable class path)"]
        return []

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
        from mlops_ray.train.kinds import Fitted
        from mlops_ray.train.sklearn_trainer import MODEL_FILE, fit_sklearn

        meta = fit_sklearn(model, snapshot, out_dir, num_cpus=plan.cpus_per_worker, param_overrides=overrides)
        path = out_dir / MODEL_FILE
        params = {"estimator": model.estimator, **model.params, **(overrides or {})}
        return Fitted(self.load(str(path)), path, params, None, meta["train_seconds"], meta)

    def fit_fold(
        self, model: ModelConfig, snapshot, pre, train, test, nthread: int, overrides: dict | None = None
    ) -> np.ndarray:
        from mlops_ray.train.sklearn_trainer import build_estimator

        est = build_estimator(model.estimator, dict(model.params, **(overrides or {})), model.seed)
        est.fit(train.x, train.y)
        return self.scores(est, test.x, snapshot.spec.task)

    def tune_trial(self, model: ModelConfig, snapshot, pre, cpus_per_trial: int, out_dir: Path, metric: str):
        from mlops_ray.train.kinds import TrialSpec

        kwargs = {
            "cfg_model": model.model_dump(),
            "snapshot_path": str(snapshot.path),
            "manifest": snapshot.manifest,
            "metric": metric,
        }
        return TrialSpec(_trial, kwargs, 1, None)

    def best_fitted(self, checkpoint_dir: Path, out_dir: Path, model: ModelConfig, spec, best_config: dict):
        from mlops_ray.train.kinds import Fitted

        path = out_dir / self.model_file
        path.write_bytes((Path(checkpoint_dir) / self.model_file).read_bytes())
        params: dict[str, Any] = {"estimator": model.estimator, **model.params, **best_config}
        return Fitted(self.load(str(path)), path, params)


def _trial(config: dict, cfg_model: dict, snapshot_path: str, manifest: dict, metric: str) -> None:
    """One Tune trial: fit the estimator with the sampled params, report the validation metric once."""
    import tempfile

    from mlops_ray.data.snapshot import Snapshot
    from mlops_ray.data.splits import load_split
    from mlops_ray.model.metrics import compute_metrics
    from mlops_ray.train.sklearn_trainer import MODEL_FILE, fit_estimator
    from mlops_ray.train.tune import report_trial

    started = time.time()
    kind = SklearnKind()
    with tempfile.TemporaryDirectory() as tmp:
        fit_estimator(
            cfg_model["estimator"], dict(cfg_model["params"], **config), cfg_model["seed"], snapshot_path, manifest, tmp
        )
        snap = Snapshot.at(snapshot_path, manifest)
        valid = load_split(snap, "valid", snap.preprocessor())
        task = snap.spec.task
        m = compute_metrics(task, valid.y, kind.scores(kind.load(str(Path(tmp) / MODEL_FILE)), valid.x, task))
        report_trial(
            {f"valid-{metric}": m[metric], "final": 1, "started_at": started, "ended_at": time.time()},
            checkpoint_dir=tmp,
        )
