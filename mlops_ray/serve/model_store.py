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

from mlops_ray.model.prediction import Prediction
from mlops_ray.serve.schema import FeatureSchema


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str | None
    run_id: str
    model: Any  # mlops_ray.model.tabular.TabularModel
    schema: FeatureSchema
    loaded_at: float = field(default_factory=time.time)

    @property
    def task(self) -> str:
        return self.model.meta["task"]

    def info(self) -> dict[str, Any]:
        meta = self.model.meta
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "task": self.task,
            "snapshot_id": meta.get("snapshot_id"),
            "data_fingerprint": meta.get("fingerprint"),
            "feature_schema": self.schema.describe(),
            "loaded_at": self.loaded_at,
        }

    @property
    def feature_names(self) -> list[str]:
        """Names of the columns of :meth:`transform`'s matrix."""
        return self.model.preprocessor.feature_names

    def transform(self, table: pa.Table) -> np.ndarray:
        return self.model.preprocessor.transform(table)

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.model.scores(x)

    def prediction(self, scores: np.ndarray) -> Prediction:
        return Prediction(self.task, scores)


def resolve_version(client, name: str, alias: str | None, version: str | None) -> str:
    """``version`` if given, else the version behind ``name@alias``.

    Raises:
        ModelVersionNotFoundError: no such alias; TrackingError: the registry failed.
    """
    from mlops_ray.errors import ModelVersionNotFoundError, TrackingError
    from mlops_ray.registry import tracking

    if version:
        return str(version)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except Exception as err:
        if tracking.is_not_found(err):
            raise ModelVersionNotFoundError(f"model {name!r} has no alias {alias!r}") from None
        raise TrackingError(f"cannot read {name}@{alias}: {type(err).__name__}: {err}") from None
    return str(mv.version)


def load_version(client, tracking_uri: str, name: str, version: str, alias: str | None = None) -> LoadedModel:
    """Load ``models:/name/version`` (pyfunc with preprocessing) for fast in-process scoring."""
    from mlops_ray.registry import tracking

    mv = client.get_model_version(name, version)
    model = tracking.load_pyfunc(tracking_uri, f"models:/{name}/{version}").unwrap_python_model()
    return LoadedModel(name, str(version), alias, mv.run_id, model, FeatureSchema.from_meta(model.meta))
