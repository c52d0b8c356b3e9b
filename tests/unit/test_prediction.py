"""Prediction (task -> outputs), model kinds (save/load/score) and TabularModel.from_parts.

Expected values are computed independently (explicit comparisons, numpy argmax, the
estimator's own predict/predict_proba), never through the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops_ray.model.kinds import BUILTIN_KINDS, ModelKind, get_kind
from mlops_ray.model.prediction import BINARY_THRESHOLD, Prediction
from mlops_ray.model.tabular import TabularModel

BIN_SCORES = np.array([0.1, 0.5, 0.49999999, 0.9, 0.0, 1.0])
BIN_LABELS_05 = [0, 1, 0, 1, 0, 1]  # 0.5 exactly -> class 1
MC_SCORES = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5]])
MC_LABELS = [0, 2, 1, 2]
REG_SCORES = np.array([1.5, -2.25, 0.0, 1e6])


# ------------------------------------------------------------------ Prediction: binary
def test_default_threshold_is_one_half():
    assert BINARY_THRESHOLD == 0.5
    assert Prediction("binary", BIN_SCORES).threshold == 0.5


def test_binary_labels_threshold_exactly_half_is_class_one():
    p = Prediction("binary", BIN_SCORES)
    expected = np.array([1 if s >= 0.5 else 0 for s in BIN_SCORES])
    assert expected.tolist() == BIN_LABELS_05
    assert p.labels.tolist() == BIN_LABELS_05
    assert p.labels.dtype == np.int64
    assert Prediction("binary", np.array([0.5])).labels.tolist() == [1]
    assert Prediction("binary", np.array([np.nextafter(0.5, 0.0)])).labels.tolist() == [0]


@pytest.mark.parametrize("threshold", [0.3, 0.9, 0.1])
def test_binary_custom_threshold(threshold):
    p = Prediction("binary", BIN_SCORES, threshold=threshold)
    assert p.labels.tolist() == [int(s >= threshold) for s in BIN_SCORES.tolist()]
    # the threshold only changes labels, never probabilities
    assert p.probabilities.tolist() == BIN_SCORES.tolist()


def test_binary_custom_threshold_at_boundary():
    p = Prediction("binary", np.array([0.29, 0.3, 0.31]), threshold=0.3)
    assert p.labels.tolist() == [0, 1, 1]


def test_binary_views():
    p = Prediction("binary", BIN_SCORES)
    assert len(p) == len(BIN_SCORES)
    assert p.probabilities.dtype == np.float64
    np.testing.assert_array_equal(p.probabilities, BIN_SCORES)
    cols = p.columns()
    assert list(cols) == ["prediction", "probability"]
    assert cols["prediction"].tolist() == BIN_LABELS_05
    assert cols["probability"].tolist() == BIN_SCORES.tolist()

    frame = p.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["prediction", "probability"]
    assert frame["prediction"].dtype == np.int64 and frame["probability"].dtype == np.float64
    assert frame["prediction"].tolist() == BIN_LABELS_05
    assert frame["probability"].tolist() == BIN_SCORES.tolist()

    arrow = p.to_arrow()
    assert list(arrow) == ["prediction", "probability"]
    assert arrow["prediction"].type == pa.int64() and arrow["probability"].type == pa.float64()
    assert arrow["prediction"].to_pylist() == BIN_LABELS_05
    assert arrow["probability"].to_pylist() == BIN_SCORES.tolist()

    body = p.to_json()
    assert body == {"predictions": BIN_LABELS_05, "probabilities": BIN_SCORES.tolist()}
    assert json.loads(json.dumps(body)) == {"predictions": BIN_LABELS_05, "probabilities": BIN_SCORES.tolist()}
    assert all(type(v) is int for v in body["predictions"])
    assert all(type(v) is float for v in body["probabilities"])

    recs = p.records()
    assert recs == [{"prediction": lab, "probability": s} for lab, s in zip(BIN_LABELS_05, BIN_SCORES.tolist())]
    assert json.loads(json.dumps(recs)) == recs


def test_binary_float32_scores_are_widened_exactly():
    s32 = np.array([0.1, 0.5, 0.75], dtype=np.float32)
    p = Prediction("binary", s32)
    assert p.probabilities.dtype == np.float64
    assert p.probabilities.tolist() == [float(x) for x in s32]
    assert p.labels.tolist() == [0, 1, 1]
    json.dumps(p.to_json())
    json.dumps(p.records())


def test_binary_accepts_lists():
    p = Prediction("binary", [0.2, 0.8])
    assert isinstance(p.scores, np.ndarray)
    assert p.labels.tolist() == [0, 1]


# ------------------------------------------------------------------ Prediction: multiclass
def test_multiclass_views():
    p = Prediction("multiclass", MC_SCORES)
    assert len(p) == 4
    assert np.argmax(MC_SCORES, axis=1).tolist() == MC_LABELS
    assert p.labels.tolist() == MC_LABELS
    assert p.labels.dtype == np.int64
    assert p.probabilities.shape == (4, 3) and p.probabilities.dtype == np.float64
    np.testing.assert_array_equal(p.probabilities, MC_SCORES)

    cols = p.columns()
    assert list(cols) == ["prediction", "probability_0", "probability_1", "probability_2"]
    for k in range(3):
        assert cols[f"probability_{k}"].tolist() == MC_SCORES[:, k].tolist()

    frame = p.to_frame()
    assert list(frame.columns) == ["prediction", "probability_0", "probability_1", "probability_2"]
    assert frame["prediction"].tolist() == MC_LABELS
    np.testing.assert_array_equal(frame[["probability_0", "probability_1", "probability_2"]].to_numpy(), MC_SCORES)

    arrow = p.to_arrow()
    assert list(arrow) == list(cols)
    assert arrow["prediction"].type == pa.int64()
    assert all(arrow[f"probability_{k}"].type == pa.float64() for k in range(3))
    assert arrow["probability_2"].to_pylist() == MC_SCORES[:, 2].tolist()

    expected = {
        "predictions": MC_LABELS,
        "probabilities": [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5]],
    }
    assert p.to_json() == expected
    assert json.loads(json.dumps(p.to_json())) == expected

    recs = p.records()
    assert recs[1] == {"prediction": 2, "probability_0": 0.1, "probability_1": 0.3, "probability_2": 0.6}
    assert [r["prediction"] for r in recs] == MC_LABELS
    assert json.loads(json.dumps(recs)) == recs


def test_multiclass_ties_pick_first_max():
    p = Prediction("multiclass", np.array([[0.4, 0.4, 0.2], [0.1, 0.45, 0.45]]))
    assert p.labels.tolist() == [0, 1]


def test_multiclass_many_classes_column_order():
    rng = np.random.default_rng(0)
    k = 12
    raw = rng.random((7, k))
    scores = raw / raw.sum(axis=1, keepdims=True)
    p = Prediction("multiclass", scores)
    names = ["prediction"] + [f"probability_{i}" for i in range(k)]
    assert list(p.columns()) == names
    assert list(p.to_frame().columns) == names
    assert list(p.to_arrow()) == names
    # probability_10 comes right after probability_9 (numeric, not lexicographic order)
    i9 = names.index("probability_9")
    assert names[i9 + 1] == "probability_10" and names[i9 + 2] == "probability_11"
    assert p.labels.tolist() == [int(np.argmax(row)) for row in scores]


# ------------------------------------------------------------------ Prediction: regression
def test_regression_views():
    p = Prediction("regression", REG_SCORES)
    assert p.labels.dtype == np.float64
    assert p.labels.tolist() == REG_SCORES.tolist()
    assert p.probabilities is None
    cols = p.columns()
    assert list(cols) == ["prediction"]
    frame = p.to_frame()
    assert list(frame.columns) == ["prediction"]
    assert frame["prediction"].dtype == np.float64
    assert frame["prediction"].tolist() == [1.5, -2.25, 0.0, 1e6]
    arrow = p.to_arrow()
    assert list(arrow) == ["prediction"] and arrow["prediction"].type == pa.float64()
    assert p.to_json() == {"predictions": [1.5, -2.25, 0.0, 1e6]}
    assert "probabilities" not in p.to_json()
    assert json.loads(json.dumps(p.to_json())) == {"predictions": [1.5, -2.25, 0.0, 1e6]}
    assert p.records() == [{"prediction": 1.5}, {"prediction": -2.25}, {"prediction": 0.0}, {"prediction": 1e6}]


def test_regression_int_scores_become_float():
    p = Prediction("regression", np.array([1, 2, 3]))
    assert p.labels.dtype == np.float64
    assert p.to_json() == {"predictions": [1.0, 2.0, 3.0]}
    assert all(type(v) is float for v in p.to_json()["predictions"])


# ------------------------------------------------------------------ round trip and errors
@pytest.mark.parametrize(
    "task,scores",
    [
        ("binary", BIN_SCORES),
        ("multiclass", MC_SCORES),
        ("regression", REG_SCORES),
        ("multiclass", np.random.default_rng(1).dirichlet(np.ones(11), size=5)),
        ("multiclass", np.random.default_rng(2).dirichlet(np.ones(13), size=9)),
    ],
)
def test_from_frame_round_trips_scores_exactly(task, scores):
    p = Prediction(task, scores)
    back = Prediction.from_frame(task, p.to_frame())
    assert back.task == task
    assert back.scores.shape == scores.shape
    assert back.scores.dtype == np.float64
    np.testing.assert_array_equal(back.scores, scores)
    np.testing.assert_array_equal(back.labels, p.labels)


def test_from_frame_many_classes_ignores_frame_column_order():
    scores = np.random.default_rng(3).dirichlet(np.ones(12), size=4)
    frame = Prediction("multiclass", scores).to_frame()
    # lexicographic order puts probability_10 before probability_2; from_frame must not care
    shuffled = frame[sorted(frame.columns)]
    assert list(shuffled.columns).index("probability_10") < list(shuffled.columns).index("probability_2")
    np.testing.assert_array_equal(Prediction.from_frame("multiclass", shuffled).scores, scores)


def test_empty_prediction():
    p = Prediction("binary", np.array([], dtype=np.float64))
    assert len(p) == 0
    assert p.records() == []
    assert p.to_json() == {"predictions": [], "probabilities": []}
    assert list(p.to_frame().columns) == ["prediction", "probability"]


@pytest.mark.parametrize("task", ["classification", "Binary", "", "ranking"])
def test_invalid_task_raises(task):
    with pytest.raises(ValueError, match="unknown task"):
        Prediction(task, np.array([0.1, 0.2]))


@pytest.mark.parametrize(
    "task,scores",
    [
        ("binary", np.zeros((3, 2))),
        ("binary", np.float64(0.3)),
        ("multiclass", np.array([0.2, 0.8])),
        ("multiclass", np.zeros((2, 3, 1))),
        ("regression", np.zeros((3, 1))),
        ("regression", np.float64(1.0)),
    ],
)
def test_wrong_score_dimensionality_raises(task, scores):
    with pytest.raises(ValueError, match="-D"):
        Prediction(task, scores)


def test_prediction_is_frozen():
    p = Prediction("binary", BIN_SCORES)
    with pytest.raises(Exception):
        p.task = "regression"


# ------------------------------------------------------------------ model kinds
def test_get_kind_known_and_unknown():
    assert set(BUILTIN_KINDS) == {"xgboost", "sklearn"}
    for name in BUILTIN_KINDS:
        k = get_kind(name)
        assert isinstance(k, ModelKind) and k.name == name
    assert get_kind("xgboost").model_file == "model.ubj"
    assert get_kind("sklearn").model_file == "model.joblib"
    with pytest.raises(ValueError, match="unknown model kind 'lightgbm'"):
        get_kind("lightgbm")


def test_kind_requirements_pin_installed_versions():
    import importlib.metadata as md

    import sklearn

    assert get_kind("xgboost").requirements() == [f"xgboost=={md.version('xgboost')}"]
    reqs = get_kind("sklearn").requirements()
    assert reqs == [f"scikit-learn=={sklearn.__version__}", f"joblib=={md.version('joblib')}"]


def _xy(n=60, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng


def test_sklearn_binary_save_load_scores(tmp_path):
    from sklearn.linear_model import LogisticRegression

    x, rng = _xy()
    y = (x[:, 0] + 0.3 * rng.normal(size=len(x)) > 0).astype(int)
    est = LogisticRegression().fit(x, y)
    kind = get_kind("sklearn")
    path = str(tmp_path / kind.model_file)
    kind.save(est, path)
    loaded = kind.load(path)
    scores = kind.scores(loaded, x, "binary")
    assert scores.shape == (len(x),)
    np.testing.assert_array_equal(scores, est.predict_proba(x)[:, 1])
    # and the threshold view agrees with sklearn's own predict
    np.testing.assert_array_equal(Prediction("binary", scores).labels, est.predict(x))


def test_sklearn_multiclass_save_load_scores(tmp_path):
    from sklearn.linear_model import LogisticRegression

    x, _ = _xy(n=90)
    y = np.argmax(x[:, :3], axis=1)
    est = LogisticRegression(max_iter=500).fit(x, y)
    kind = get_kind("sklearn")
    path = str(tmp_path / kind.model_file)
    kind.save(est, path)
    scores = kind.scores(kind.load(path), x, "multiclass")
    assert scores.shape == (len(x), 3)
    np.testing.assert_array_equal(scores, est.predict_proba(x))
    np.testing.assert_array_equal(Prediction("multiclass", scores).labels, est.predict(x))


def test_sklearn_regression_save_load_scores(tmp_path):
    from sklearn.linear_model import LinearRegression

    x, rng = _xy()
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=len(x))
    est = LinearRegression().fit(x, y)
    kind = get_kind("sklearn")
    path = str(tmp_path / kind.model_file)
    kind.save(est, path)
    scores = kind.scores(kind.load(path), x, "regression")
    assert scores.dtype == np.float64 and scores.shape == (len(x),)
    np.testing.assert_array_equal(scores, est.predict(x))


def test_xgboost_save_load_round_trip(tmp_path):
    import xgboost as xgb

    x, rng = _xy(n=80)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, xgb.DMatrix(x, label=y), num_boost_round=3
    )
    kind = get_kind("xgboost")
    path = str(tmp_path / kind.model_file)
    kind.save(booster, path)
    loaded = kind.load(path)
    assert isinstance(loaded, xgb.Booster)
    expected = booster.inplace_predict(x)
    np.testing.assert_array_equal(loaded.inplace_predict(x), expected)
    scores = kind.scores(loaded, x, "binary")
    assert scores.shape == (len(x),)
    np.testing.assert_array_equal(scores, expected)
    assert ((scores >= 0) & (scores <= 1)).all()


# ------------------------------------------------------------------ TabularModel.from_parts
class FakePreprocessor:
    """Selects and orders feature columns as float32; counts calls."""

    def __init__(self, feature_names):
        self.feature_names = list(feature_names)
        self.calls = 0

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        self.calls += 1
        return frame[self.feature_names].to_numpy(dtype=np.float32)


def _frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"b": rng.normal(size=n), "a": rng.normal(size=n), "ignored": rng.normal(size=n)})


def test_tabular_from_parts_binary_sklearn():
    from sklearn.linear_model import LogisticRegression

    frame = _frame()
    pre = FakePreprocessor(["a", "b"])
    x = frame[["a", "b"]].to_numpy(dtype=np.float32)
    y = (x[:, 0] > 0).astype(int)
    est = LogisticRegression().fit(x, y)
    model = TabularModel.from_parts("binary", pre, "sklearn", est, meta={"extra": 1, "task": "ignored"})
    assert model.task == "binary" and model.meta["flavor"] == "sklearn" and model.meta["extra"] == 1
    assert model.kind is get_kind("sklearn")

    out = model.predict_frame(frame)
    expected = Prediction("binary", est.predict_proba(x)[:, 1]).to_frame()
    pd.testing.assert_frame_equal(out, expected)
    assert list(out.columns) == ["prediction", "probability"]
    assert out["prediction"].tolist() == [int(v) for v in est.predict(x)]
    pd.testing.assert_frame_equal(model.predict(None, frame), expected)
    np.testing.assert_array_equal(model.score_frame(frame), est.predict_proba(x)[:, 1])
    assert pre.calls == 3


def test_tabular_from_parts_multiclass_and_regression():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    frame = _frame(n=60, seed=1)
    pre = FakePreprocessor(["b", "a"])
    x = frame[["b", "a"]].to_numpy(dtype=np.float32)
    y_mc = np.digitize(x[:, 0], [-0.5, 0.5])
    mc = LogisticRegression(max_iter=500).fit(x, y_mc)
    out = TabularModel.from_parts("multiclass", pre, get_kind("sklearn"), mc).predict_frame(frame)
    pd.testing.assert_frame_equal(out, Prediction("multiclass", mc.predict_proba(x)).to_frame())
    assert list(out.columns) == ["prediction", "probability_0", "probability_1", "probability_2"]
    assert out["prediction"].tolist() == np.argmax(mc.predict_proba(x), axis=1).tolist()

    reg = LinearRegression().fit(x, 2 * x[:, 0] - x[:, 1])
    out = TabularModel.from_parts("regression", pre, "sklearn", reg).predict_frame(frame)
    pd.testing.assert_frame_equal(out, Prediction("regression", reg.predict(x)).to_frame())
    assert out["prediction"].tolist() == reg.predict(x).astype(np.float64).tolist()


def test_tabular_from_parts_with_custom_kind():
    """Any ModelKind works: the model only calls kind.scores on the preprocessed matrix."""
    seen = {}

    def raw_scores(est, x, task):
        seen["x"], seen["task"] = x, task
        return x.sum(axis=1).astype(np.float64) * est

    class Toy(ModelKind):
        name, model_file = "toy", "toy.bin"

        def raw_scores(self, est, x, task):
            return raw_scores(est, x, task)

    kind = Toy()
    frame = _frame(n=5)
    model = TabularModel.from_parts("regression", FakePreprocessor(["a"]), kind, 3.0)
    assert model.meta == {"task": "regression", "flavor": "toy"}
    out = model.predict_frame(frame)
    assert seen["task"] == "regression" and seen["x"].dtype == np.float32 and seen["x"].shape == (5, 1)
    assert out["prediction"].tolist() == (frame["a"].to_numpy(dtype=np.float32).astype(np.float64) * 3.0).tolist()
    p = model.predict_scores(seen["x"])
    assert isinstance(p, Prediction) and p.task == "regression"
