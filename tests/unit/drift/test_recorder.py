"""The replica-side drift recorder without Ray: buffering, compaction, pushes, sampling."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mlops_ray.config import DriftConfig
from mlops_ray.serve import drift_recorder as M


class _Remote:
    def __init__(self, calls, name):
        self.calls, self.name = calls, name

    def remote(self, *args):
        self.calls.append((self.name, args))


class _Handle:
    def __init__(self):
        self.calls = []
        self.register = _Remote(self.calls, "register")
        self.push = _Remote(self.calls, "push")


STATS = {
    "rows": 1000,
    "numeric": {"x": {"edges": [float("-inf"), 0.0, float("inf")], "proportions": [0.5, 0.5, 0.0]}},
    "categorical": {"c": {"categories": ["a"], "proportions": [1.0, 0.0, 0.0]}},
}


class _Inner:
    reference_stats = STATS
    meta = {"snapshot_id": "s"}


class _Model:
    version, task, model = "3", "binary", _Inner()


@pytest.fixture
def handle(monkeypatch):
    h = _Handle()
    monkeypatch.setattr(M, "get_monitor", lambda *a, **k: h)
    return h


def table(n, x=1.0):
    return pa.table({"x": np.full(n, x), "c": ["a"] * n})


def pushed(h):
    return [args for name, args in h.calls if name == "push"]


def test_counts_every_row_once_with_one_registration(handle):
    rec = M.DriftRecorder("m", DriftConfig(push_every_rows=100, sample_rows_per_s=0), None, "")
    for i in range(250):  # 1-row requests: compacted every 64, pushed every 100 rows
        rec.observe(_Model, table(1, x=-1.0 if i % 2 else 1.0), np.array([0.3]), f"r{i}")
    rec.flush()
    pushes = pushed(handle)
    assert [p[2] for p in pushes] == [100, 100, 50]
    total = sum(p[1]["x"] for p in pushes)
    assert total.tolist() == [125, 125, 0]  # (-inf, 0), [0, inf), missing
    assert [name for name, _ in handle.calls].count("register") == 1 and handle.calls[0][0] == "register"
    scored = pushes[0][3]
    assert scored["table"].num_rows == 100 and scored["request_ids"][:2] == ["r0", "r1"]
    assert scored["table"].column("x").num_chunks == 1  # one contiguous table per push


def test_samples_above_the_row_rate_budget(handle):
    rec = M.DriftRecorder("m", DriftConfig(push_every_rows=10_000, sample_rows_per_s=500), None, "")
    for i in range(2000):  # 20,000 rows in well under a second
        rec.observe(_Model, table(10), np.zeros(10), f"r{i}")
    rec.flush()
    (push,) = pushed(handle)
    counted, skipped = push[2], push[4]
    assert counted + skipped == 20_000
    assert 500 <= counted < 5_000, counted  # about the budget, not every row


def test_a_model_without_reference_is_not_monitored(handle):
    class Bare:
        version, task = "1", "binary"

        class model:  # noqa: N801
            reference_stats = None
            meta = {}

    rec = M.DriftRecorder("m", DriftConfig(push_every_rows=1), None, "")
    rec.observe(Bare, table(5), np.zeros(5), "r")
    rec.flush()
    assert handle.calls == []
