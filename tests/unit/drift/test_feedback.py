"""The feedback store (pure): reservoir of scored rows by request id, label joining, the rolling
metric and permutation importance, cached until new labels arrive."""

from __future__ import annotations

import asyncio

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from mlops_ray.drift.feedback import FeedbackStore


class _Pre:
    input_columns = ["x", "noise"]


class _Model:
    """Scores P(y=1) = sigmoid(x): x carries all the signal, noise none."""

    task = "binary"
    preprocessor = _Pre()
    meta = {"metrics": {"test_auc": 0.9}, "permutation_importance": {"x": {"mean": 0.3}, "noise": {"mean": 0.0}}}

    def score_frame(self, frame):
        return 1.0 / (1.0 + np.exp(-frame["x"].to_numpy()))


def scored(ids, rows_each, seed=0):
    """One push: ``len(ids)`` consecutive requests of ``rows_each`` rows."""
    rng = np.random.default_rng(seed)
    n = len(ids) * rows_each
    table = pa.table({"x": rng.normal(0, 2, n), "noise": rng.normal(0, 1, n)})
    scores = _Model().score_frame(table.to_pandas())
    return {"table": table, "scores": scores, "request_ids": list(ids), "lengths": [rows_each] * len(ids)}


def summary(store, version, loader):
    return asyncio.run(store.summary(version, loader))


def test_reservoir_keeps_the_most_recent_whole_requests():
    fb = FeedbackStore(keep_rows=25, min_rows=1)
    fb.keep_scored("1", scored([f"a{i}" for i in range(3)], 10))
    fb.keep_scored("1", scored(["b0"], 10, seed=1))
    assert list(fb.reservoir) == ["a2", "b0"] and fb.reservoir_rows == 20
    out = fb.join([{"request_id": "a0", "label": 1}, {"request_id": "b0", "record": 9, "label": 0}])
    assert out == {"accepted": 1, "unknown": [0]}
    out = fb.join([{"request_id": "b0", "record": 10, "label": 0}, {"request_id": "zz", "label": 1}])
    assert out == {"accepted": 0, "unknown": [0, 1]}  # record out of range, never seen


def test_labels_join_the_scored_row_of_their_record_and_version():
    fb = FeedbackStore(keep_rows=100, min_rows=1)
    push = scored(["r0", "r1"], 5)
    fb.keep_scored("4", push)
    fb.join([{"request_id": "r1", "record": 2, "label": 1}])
    lab = fb.labelled["4"]
    assert list(lab["y"]) == [1]
    assert lab["scores"][0] == push["scores"][7]
    assert lab["rows"][0].to_pylist() == push["table"].slice(7, 1).to_pylist()


def test_labelled_rows_are_bounded_by_keep_rows():
    fb = FeedbackStore(keep_rows=8, min_rows=1)
    for i in range(5):
        fb.keep_scored("1", scored([f"r{i}"], 4, seed=i))
        fb.join([{"request_id": f"r{i}", "record": k, "label": k % 2} for k in range(4)])
    assert len(fb.labelled["1"]["y"]) == 8 and fb.reservoir_rows == 8


def test_feedback_off_keeps_nothing():
    fb = FeedbackStore(keep_rows=0, min_rows=1)
    fb.keep_scored("1", scored(["r"], 3))
    assert fb.join([{"request_id": "r", "label": 1}]) == {"accepted": 0, "unknown": [0]}


def test_metrics_from_min_rows_match_an_independent_auc_and_importance_ranks_the_signal():
    fb = FeedbackStore(keep_rows=1000, min_rows=100)
    push = scored([f"r{i}" for i in range(60)], 5)
    fb.keep_scored("1", push)
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=300) < push["scores"]).astype(int)
    items = [{"request_id": f"r{i // 5}", "record": i % 5, "label": int(y[i])} for i in range(300)]
    fb.join(items[:99])
    below = summary(fb, "1", lambda v: _Model())
    assert below == {"labelled_rows": 99, "min_rows": 100, "kept_rows": 300}
    fb.join(items[99:])
    out = summary(fb, "1", lambda v: _Model())
    assert out["metric"] == "auc" and out["test"] == 0.9
    assert out["rolling"] == pytest.approx(roc_auc_score(y, push["scores"]))
    assert out["permutation_importance"]["x"] > 0.1 > abs(out["permutation_importance"]["noise"])
    assert out["training_importance"] == {"x": 0.3, "noise": 0.0}


def test_metrics_are_cached_until_new_labels_arrive():
    fb = FeedbackStore(keep_rows=1000, min_rows=10)
    fb.keep_scored("1", scored([f"r{i}" for i in range(20)], 1))
    loads = []

    def loader(version):
        loads.append(version)
        return _Model()

    fb.join([{"request_id": f"r{i}", "label": i % 2} for i in range(12)])
    first = summary(fb, "1", loader)
    assert summary(fb, "1", loader) == first and loads == ["1"]
    fb.join([{"request_id": "r15", "label": 1}])
    assert summary(fb, "1", loader)["labelled_rows"] == 13 and loads == ["1", "1"]


def test_a_model_that_fails_to_load_reports_the_error():
    fb = FeedbackStore(keep_rows=100, min_rows=1)
    fb.keep_scored("1", scored(["r"], 1))
    fb.join([{"request_id": "r", "label": 1}])

    def broken(version):
        raise OSError("registry unreachable")

    assert summary(fb, "1", broken)["error"] == "OSError: registry unreachable"
