"""One prediction type that owns the task -> output mapping (pure NumPy/pandas/Arrow).

Every consumer (the pyfunc, the HTTP service, batch inference, the gate) turns model
scores into outputs here, so binary thresholds, multiclass probabilities and
regression values are defined once.

Scores by task:

* ``binary``: P(class 1), shape (n,); predicted class = ``score >= threshold`` (0.5).
* ``multiclass``: class probabilities, shape (n, k); predicted class = argmax.
* ``regression``: predicted values, shape (n,).

Example::

    p = Prediction("binary", np.array([0.2, 0.7]))
    p.labels          # array([0, 1])
    p.to_json()       # {"predictions": [0, 1], "probabilities": [0.2, 0.7]}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_ray.model.tasks import TASKS

BINARY_THRESHOLD = 0.5


@dataclass(frozen=True)
class Prediction:
    """Scores of one model on ``n`` rows, with every output view derived from them."""

    task: str
    scores: np.ndarray
    threshold: float = BINARY_THRESHOLD

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        s = np.asarray(self.scores)
        want = 2 if self.task == "multiclass" else 1
        if s.ndim != want:
            raise ValueError(f"{self.task} scores must be {want}-D, got shape {s.shape}")
        object.__setattr__(self, "scores", s)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def labels(self) -> np.ndarray:
        """Predicted class (int64) for classification, predicted value (float64) for regression."""
        if self.task == "binary":
            return (self.scores >= self.threshold).astype(np.int64)
        if self.task == "multiclass":
            return self.scores.argmax(axis=1).astype(np.int64)
        return self.scores.astype(np.float64)

    @property
    def probabilities(self) -> np.ndarray | None:
        """P(1) (n,) for binary, (n, k) for multiclass, None for regression."""
        return None if self.task == "regression" else self.scores.astype(np.float64)

    def columns(self) -> dict[str, np.ndarray]:
        """Output columns by name: ``prediction``, then ``probability`` or ``probability_<k>``."""
        out = {"prediction": self.labels}
        p = self.probabilities
        if p is not None and p.ndim == 1:
            out["probability"] = p
        elif p is not None:
            out.update({f"probability_{k}": p[:, k] for k in range(p.shape[1])})
        return out

    def to_frame(self) -> pd.DataFrame:
        """The pyfunc's output frame (what ``mlflow.pyfunc`` users get)."""
        return pd.DataFrame(self.columns())

    def to_arrow(self) -> dict[str, pa.Array]:
        """Output columns as Arrow arrays (batch inference files)."""
        return {k: pa.array(v) for k, v in self.columns().items()}

    def to_json(self) -> dict[str, list]:
        """``/predict`` body: ``predictions`` (+ ``probabilities`` for classification) as JSON lists."""
        out = {"predictions": self.labels.tolist()}
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities.tolist()
        return out

    def records(self) -> list[dict]:
        """One dict per row with the output columns (MLflow scoring-server ``predictions``)."""
        cols = {k: v.tolist() for k, v in self.columns().items()}
        return [dict(zip(cols, row)) for row in zip(*cols.values())]

    @classmethod
    def from_frame(cls, task: str, frame: pd.DataFrame) -> "Prediction":
        """Inverse of :meth:`to_frame`: scores back from a pyfunc output frame."""
        if task == "binary":
            return cls(task, frame["probability"].to_numpy(dtype=np.float64))
        if task == "multiclass":
            cols = sorted(
                (c for c in frame.columns if c.startswith("probability_")), key=lambda c: int(c.rsplit("_", 1)[1])
            )
            return cls(task, frame[cols].to_numpy(dtype=np.float64))
        return cls(task, frame["prediction"].to_numpy(dtype=np.float64))


def prediction_values(task: str, scores: np.ndarray):
    """What the prediction-drift histogram bins: P(1) (binary), the value (regression), the
    predicted class as a string (multiclass)."""
    s = np.asarray(scores)
    if task == "multiclass":
        return pa.array(s.argmax(axis=1).astype(str))
    return s.astype(np.float64)


def prediction_reference(task: str, scores: np.ndarray, n_bins: int = 10) -> dict:
    """The reference histogram of a model's predictions (on the validation split, at training).

    Binary/regression: decile edges of the scores (as for numeric features); multiclass: the
    predicted classes as categories. Same entry format as ``reference_stats.json``'s features,
    plus ``kind`` and ``rows``.
    """
    from mlops_ray.data.bins import categorical_bin_counts, numeric_bin_counts, proportions
    from mlops_ray.data.stats import quantile_edges

    values = prediction_values(task, scores)
    if task == "multiclass":
        k = np.asarray(scores).shape[1]
        cats = [str(i) for i in range(k)]
        counts = categorical_bin_counts(values, cats)
        return {
            "kind": "categorical",
            "categories": cats,
            "proportions": proportions(counts).tolist(),
            "rows": len(values),
        }
    edges = quantile_edges(values[~np.isnan(values)], n_bins)
    counts = numeric_bin_counts(values, edges)
    return {"kind": "numeric", "edges": edges, "proportions": proportions(counts).tolist(), "rows": len(values)}
