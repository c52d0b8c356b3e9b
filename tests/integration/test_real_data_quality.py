"""Model quality on real data: prepare -> train -> promote with the default config, vs plain baselines.

scikit-learn's bundled datasets (binary, multiclass, regression, and one with a categorical
column that has missing and rare values), written as CSV with string ids and as Parquet shards.
mlops-ray's test metrics must be within a small margin of plain XGBoost / scikit-learn fitted on
exactly the same split rows, and the model must keep more than a handful of trees (what a model
that stopped early on a plateauing metric fails). The comparison itself lives in
``benchmarks/real_data.py`` (the README table); ``MLOPS_RAY_WRITE_RESULTS=1`` writes its JSON.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

from mlops_ray.context import Context

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "real_data.py"
STOPS_ON = {"binary": "logloss", "multiclass": "mlogloss", "regression": "rmse"}


def _bench():
    name = "mlops_ray_bench_real_data"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


CASES = _bench().CASE_NAMES


@pytest.fixture(scope="module")
def table():
    """Rows of every case of this module; printed and (with MLOPS_RAY_WRITE_RESULTS=1) written at the end."""
    rows: list[dict] = []
    t0 = time.perf_counter()
    yield rows
    bench = _bench()
    print("\n" + bench.format_table(rows))
    if rows and os.environ.get("MLOPS_RAY_WRITE_RESULTS") == "1":
        bench.write_results(rows, time.perf_counter() - t0)


@pytest.mark.parametrize("name", CASES)
def test_default_config_is_within_a_small_margin_of_plain_baselines(ray_session, tmp_path, name, table):
    bench = _bench()
    case = next(c for c in bench.cases() if c.name == name)
    cfg = bench.config_for(case, tmp_path / "src", case.train_format)
    ctx = Context.create(cfg, workspace=tmp_path / "ws")
    res = bench.run_case(ctx, case, tmp_path / "src")
    table.extend(res["rows"])
    shown = bench.format_table(res["rows"])
    print("\n" + shown)
    assert res["same_content_csv_parquet"], "the CSV and the Parquet copy prepared to different content"
    assert res["promoted"], "the first version of a model must be promoted (no champion yet)"
    assert res["early_stopping_metric"] == STOPS_ON[case.task]
    assert res["trees"] >= bench.min_trees(res["baselines"]), f"{res['trees']} trees kept\n{shown}"
    outside = [r for r in res["rows"] if r["ok"] is False]
    assert not outside, f"outside the margins {bench.MARGINS}:\n{bench.format_table(outside)}"
    if case.name.endswith("+category"):  # the categorical column, with its missing and rare values, is used
        spec = res["snapshot"].spec
        assert spec.categorical_features == ("mean_radius_band",)
