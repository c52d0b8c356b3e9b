"""benchmarks/drift_detection.py at a small size: the live drift code on the quickstart data (no Ray).

The generator is deterministic per seed, so every figure asserted here is reproducible.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from mlops_ray.config import DriftConfig

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("drift_detection_bench", ROOT / "benchmarks" / "drift_detection.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def setup(bench, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("drift-bench")
    return workdir, bench.build_reference(workdir), DriftConfig()


def test_reference_is_the_snapshot_reference(setup):
    _, ref, _ = setup
    stats = ref["stats"]
    assert ref["source_rows"] == 20_000 and ref["seed"] == 0
    assert 15_000 < stats["rows"] < 17_000  # the 80% train split, not the whole source
    assert len(stats["numeric"]) == 9 and len(stats["categorical"]) == 4
    assert stats["task"] == "binary"


def test_no_alert_on_in_distribution_traffic(bench, setup):
    workdir, ref, cfg = setup
    fa = bench.false_alarms(ref["stats"], workdir, cfg, windows=10, seed=1)
    assert fa["windows"] == 10
    # windows close at the first push reaching window_rows: 4 pushes of 256 rows
    assert fa["window_rows"] == [bench.rows_for(cfg, 1)] == [1024]
    assert fa["alerts"] == 0 and "alert" not in fa["statuses"]
    assert fa["psi_all"]["max"] < cfg.psi_alert
    assert fa["feature_windows"] == 10 * 13
    # features with dense bins stay far below the warn band on in-distribution traffic
    dense = {k: v for k, v in fa["per_feature"].items() if k != "merchant_category"}
    assert all(v["psi_max"] < cfg.psi_warn and v["warn"] == 0 for v in dense.values())


def test_detection_delay_finite_and_ordered_by_drift(bench, setup):
    workdir, ref, cfg = setup
    dd = bench.detection_delay(ref["stats"], workdir, cfg, drifts=(0.3, 0.6, 1.0), seeds=(1,), max_windows=20)
    rows = {lv["drift"]: lv["runs"][0]["first_alert"] and lv["runs"][0]["first_alert"]["rows"] for lv in dd["levels"]}

    strong = rows[1.0]
    assert strong is not None and strong >= cfg.min_rows
    assert strong == bench.rows_for(cfg, 1)  # drift 1.0 alerts at the very first window
    alerted = dd["levels"][-1]["runs"][0]["first_alert"]["features"]
    assert {"utilization", "region"} <= set(alerted)
    assert all(psi >= cfg.psi_alert for psi in alerted.values())

    def key(r):
        return math.inf if r is None else r

    # same seed = same customers, shifted more: a larger drift is detected no later
    assert key(rows[1.0]) <= key(rows[0.6]) <= key(rows[0.3])
    for lv in dd["levels"]:
        warn, alert = lv["runs"][0]["first_warn"], lv["runs"][0]["first_alert"]
        if alert is not None:
            assert warn is not None and warn["rows"] <= alert["rows"]
