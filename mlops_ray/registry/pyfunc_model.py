"""The MLflow pyfunc that carries preprocessing + estimator, so raw rows score anywhere.

``mlflow.pyfunc.load_model("models:/NAME@champion").predict(raw_dataframe)`` returns a
DataFrame with ``prediction`` (and ``probability`` for binary, ``probability_<k>`` for
multiclass). The model ships this module (``code_paths``), its fitted preprocessor,
the booster/estimator and the drift reference statistics, and imports neither Ray
nor MLflow's tracking side.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

try:  # mlflow is present wherever a pyfunc is loaded; keep this module importable without it
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object

ARTIFACT_MODEL = "model"
ARTIFACT_PREPROCESSOR = "preprocessor"
ARTIFACT_META = "meta"
ARTIFACT_REFERENCE = "reference_stats"


class TabularModel(PythonModel):
    """Raw rows -> preprocessing -> XGBoost booster or scikit-learn estimator."""

    def load_context(self, context) -> None:
        from mlops_ray.data.preprocess import Preprocessor

        self.meta = json.loads(open(context.artifacts[ARTIFACT_META]).read())
        self.preprocessor = Preprocessor.load(context.artifacts[ARTIFACT_PREPROCESSOR])
        path = context.artifacts[ARTIFACT_MODEL]
        if self.meta["flavor"] == "xgboost":
            import xgboost as xgb

            self.booster = xgb.Booster()
            self.booster.load_model(path)
            self.booster.set_param({"nthread": 1})
            self.estimator = None
        else:
            import joblib

            self.estimator = joblib.load(path)
            self.booster = None

    @classmethod
    def from_parts(cls, task: str, preprocessor, booster=None, estimator=None, meta: dict | None = None):
        """The same model in-process (training, tuning, CV), without an MLflow round trip."""
        model = cls()
        model.meta = dict(meta or {}, task=task)
        model.preprocessor, model.booster, model.estimator = preprocessor, booster, estimator
        return model

    def score_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows -> scores (preprocessing included)."""
        return self.scores(self.preprocessor.transform(frame))

    # -- fast path used by the server: matrix in, scores out (no DataFrame work)
    def scores(self, x: np.ndarray) -> np.ndarray:
        """Scores for a preprocessed float32 matrix: P(1) (binary), (n,k) probs, or values."""
        task = self.meta["task"]
        if self.booster is not None:
            return np.asarray(self.booster.inplace_predict(x))
        if task == "regression":
            return np.asarray(self.estimator.predict(x), dtype=np.float64)
        prob = self.estimator.predict_proba(x)
        return prob[:, 1] if task == "binary" else prob

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        s = self.score_frame(frame)
        task = self.meta["task"]
        if task == "binary":
            return pd.DataFrame({"prediction": (s >= 0.5).astype(np.int64), "probability": s.astype(np.float64)})
        if task == "multiclass":
            out = pd.DataFrame({"prediction": s.argmax(axis=1).astype(np.int64)})
            for k in range(s.shape[1]):
                out[f"probability_{k}"] = s[:, k].astype(np.float64)
            return out
        return pd.DataFrame({"prediction": s.astype(np.float64)})

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.predict_frame(frame)
