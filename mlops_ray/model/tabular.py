"""The model object: preprocessing + estimator of any registered kind, and the MLflow pyfunc.

The same :class:`TabularModel` is used by training, tuning, CV, the gate, the HTTP
service and batch inference; ``mlflow.pyfunc.load_model("models:/NAME@ALIAS")`` loads it
with its fitted preprocessor, estimator and drift reference statistics, and
``.predict(raw_dataframe)`` returns a DataFrame with ``prediction`` (and
``probability`` for binary, ``probability_<k>`` for multiclass; see
:class:`~mlops_ray.model.prediction.Prediction`). The model ships this package
(``code_paths``) and imports neither Ray nor MLflow's tracking side.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mlops_ray.model.kinds import ModelKind, get_kind
from mlops_ray.model.prediction import Prediction

try:  # mlflow is present wherever a pyfunc is loaded; keep this module importable without it
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object

ARTIFACT_MODEL = "model"
ARTIFACT_PREPROCESSOR = "preprocessor"
ARTIFACT_META = "meta"
ARTIFACT_REFERENCE = "reference_stats"


class TabularModel(PythonModel):
    """Raw rows -> preprocessing -> estimator of kind ``meta["flavor"]`` -> :class:`Prediction`."""

    def load_context(self, context) -> None:
        from mlops_ray.data.preprocess import Preprocessor

        with open(context.artifacts[ARTIFACT_META]) as f:
            self.meta = json.load(f)
        self.preprocessor = Preprocessor.load(context.artifacts[ARTIFACT_PREPROCESSOR])
        # kind_ref: the kind's module, for a kind this process has not registered (None before it was logged)
        self.kind = get_kind(self.meta["flavor"], ref=self.meta.get("kind_ref"))
        self.estimator = self.kind.load(context.artifacts[ARTIFACT_MODEL])
        self.reference_stats = None  # drift reference (models logged before it was shipped have none)
        if ARTIFACT_REFERENCE in context.artifacts:
            with open(context.artifacts[ARTIFACT_REFERENCE]) as f:
                self.reference_stats = json.load(f)

    @classmethod
    def from_parts(cls, task: str, preprocessor, kind: str | ModelKind, estimator, meta: dict | None = None):
        """The same model in-process (training, tuning, CV), without an MLflow round trip."""
        model = cls()
        model.kind = get_kind(kind) if isinstance(kind, str) else kind
        model.meta = dict(meta or {}, task=task, flavor=model.kind.name)
        model.preprocessor, model.estimator = preprocessor, estimator
        return model

    @property
    def task(self) -> str:
        return self.meta["task"]

    # -- fast path used by the server: matrix in, scores out (no DataFrame work)
    def scores(self, x: np.ndarray) -> np.ndarray:
        """Scores for a preprocessed float32 matrix (see :mod:`mlops_ray.model.prediction`)."""
        return self.kind.scores(self.estimator, x, self.task)

    def score_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows -> scores (preprocessing included)."""
        return self.scores(self.preprocessor.transform(frame))

    def predict_scores(self, x: np.ndarray) -> Prediction:
        return Prediction(self.task, self.scores(x))

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return Prediction(self.task, self.score_frame(frame)).to_frame()

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.predict_frame(frame)
