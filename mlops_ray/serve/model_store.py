"""Loading registered models for serving and following an alias (MLflow side; no Ray).

A :class:`LoadedModel` is immutable: a replica swaps the whole object when the alias
moves, so a request always completes on the version it started with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mlops_ray.serve.schema import FeatureSchema


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str | None
    run_id: str
    model: Any  # mlops_ray.registry.pyfunc_model.TabularModel
    schema: FeatureSchema
    loaded_at: float = field(default_factory=time.time)

    @property
    def task(self) -> str:
        return self.model.meta["task"]

    def info(self) -> dict[str, Any]:
        meta = self.model.meta
        return {"name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id,
                "task": self.task, "snapshot_id": meta.get("snapshot_id"), "data_fingerprint": meta.get("fingerprint"),
                "feature_schema": self.schema.describe(), "loaded_at": self.loaded_at}

    def transform(self, table: pa.Table) -> np.ndarray:
        return self.model.preprocessor.transform(table)

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.model.scores(x)

    def format(self, scores: np.ndarray) -> dict[str, list]:
        """``predictions`` (+ ``probabilities`` for classification) as JSON-ready lists."""
        if self.task == "binary":
            p = scores.astype(np.float64)
            return {"predictions": (p >= 0.5).astype(int).tolist(), "probabilities": p.tolist()}
        if self.task == "multiclass":
            return {"predictions": scores.argmax(axis=1).astype(int).tolist(),
                    "probabilities": scores.astype(np.float64).tolist()}
        return {"predictions": scores.astype(np.float64).tolist()}


def resolve_version(client, name: str, alias: str | None, version: str | None) -> str:
    if version:
        return str(version)
    mv = client.get_model_version_by_alias(name, alias)
    return str(mv.version)


def load_version(client, name: str, version: str, alias: str | None = None) -> LoadedModel:
    """Load ``models:/name/version`` (pyfunc with preprocessing) for fast in-process scoring."""
    import mlflow

    mv = client.get_model_version(name, version)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    model = pyfunc.unwrap_python_model()
    return LoadedModel(name, str(version), alias, mv.run_id, model, FeatureSchema.from_meta(model.meta))
