"""scikit-learn estimators chosen by config, trained as Ray tasks (or inside Tune trials).

``model.estimator`` is any importable class path (e.g.
``sklearn.ensemble.HistGradientBoostingClassifier``) and ``model.params`` its keyword
arguments. The estimator sees the snapshot's preprocessed float32 matrix.
"""

from __future__ import annotations

import importlib
import inspect
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_ray.errors import ConfigError

if TYPE_CHECKING:
    from mlops_ray.config import ModelConfig

MODEL_FILE = "model.joblib"


def import_estimator(path: str):
    """Resolve ``package.module.Class`` to an estimator class, or raise ConfigError naming the problem."""
    if not path or "." not in path:
        raise ConfigError(
            f"model.estimator {path!r}: expected a class path like 'sklearn.ensemble.HistGradientBoostingClassifier'"
        )
    mod_name, cls_name = path.rsplit(".", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise ConfigError(f"model.estimator {path!r}: cannot import module {mod_name!r} ({err})") from None
    cls = getattr(mod, cls_name, None)
    if cls is None or not inspect.isclass(cls):
        raise ConfigError(f"model.estimator {path!r}: module {mod_name!r} has no class {cls_name!r}")
    if not hasattr(cls, "fit") or not (hasattr(cls, "predict") or hasattr(cls, "predict_proba")):
        raise ConfigError(f"model.estimator {path!r} is not an estimator (needs fit and predict)")
    return cls


def build_estimator(path: str, params: dict, seed: int):
    cls = import_estimator(path)
    sig = inspect.signature(cls)
    unknown = [k for k in params if k not in sig.parameters]
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        raise ConfigError(f"model.params: {unknown} are not parameters of {path}; valid: {sorted(sig.parameters)}")
    kwargs = dict(params)
    if "random_state" in sig.parameters:
        kwargs.setdefault("random_state", seed)
    return cls(**kwargs)


def fit_estimator(
    estimator_path: str, params: dict, seed: int, snapshot_path: str, manifest: dict, output_dir: str
) -> dict:
    """Fit on the train split and save with joblib; returns timing. Runs wherever it is called."""
    import joblib

    from mlops_ray.data.snapshot import Snapshot
    from mlops_ray.data.splits import load_split

    snap = Snapshot.at(snapshot_path, manifest)
    train = load_split(snap, "train", snap.preprocessor())
    est = build_estimator(estimator_path, params, seed)
    t0 = time.perf_counter()
    est.fit(train.x, train.y)
    buf = io.BytesIO()
    joblib.dump(est, buf)  # returned, not written here: this task may run on another node
    return {"train_seconds": time.perf_counter() - t0, "train_rows": len(train), "model_bytes": buf.getvalue()}


def fit_sklearn(
    model: ModelConfig, snapshot, output_dir: Path, num_cpus: float, param_overrides: dict | None = None
) -> dict:
    """Train the configured estimator as a Ray task with ``num_cpus``; returns meta (model at output_dir)."""
    import ray

    params = dict(model.params, **(param_overrides or {}))
    build_estimator(model.estimator, params, model.seed)  # fail fast in the driver
    task = ray.remote(num_cpus=num_cpus)(fit_estimator)
    meta = ray.get(
        task.remote(model.estimator, params, model.seed, str(snapshot.path), snapshot.manifest, str(output_dir))
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / MODEL_FILE).write_bytes(meta.pop("model_bytes"))
    return meta
