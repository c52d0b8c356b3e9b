"""A numeric column holding a stray string is inferred as categorical: `data prepare` warns (no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops_ray.config import config_from_dict
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.data.validate import numeric_text_warnings
from mlops_ray.workspace import get_workspace


def _frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "id": [f"id-{i:04d}" for i in range(n)],
            "amount": np.round(rng.lognormal(size=n), 3),
            "x": x,
            "city": rng.choice(["paris", "lyon", "nice"], size=n),
            "zip_like": [str(v) for v in rng.integers(10000, 99999, size=n)],
            "label": (x > 0).astype(int),
        }
    )


def _cfg(src, **data):
    raw = {"name": "stray", "source": str(src), "id_column": "id", "label_column": "label"}
    raw.update(data)
    return config_from_dict({"data": raw})


def test_prepare_warns_naming_the_column_and_the_stray_value(tmp_path, workspace):
    df = _frame()
    df["amount"] = df["amount"].astype(str)
    df.loc[137, "amount"] = "n/a?"
    src = tmp_path / "data.csv"
    df.to_csv(src, index=False)
    res = prepare_snapshot(_cfg(src).data, get_workspace(), engine="local")
    assert "amount" in res.snapshot.spec.categorical_features  # inference did treat it as text
    warned = [n for n in res.notes if "'amount'" in n]
    assert len(warned) == 1, res.notes
    assert "'n/a?'" in warned[0] and "99.8% of 400 sampled values are numbers" in warned[0]
    assert "data.numeric_features" in warned[0]
    assert not [n for n in res.notes if "'city'" in n]  # real categoricals stay quiet
    # the warning is repeated when the identical snapshot is reused (every prepare says it)
    again = prepare_snapshot(_cfg(src).data, get_workspace(), engine="local")
    assert again.reused and any("'amount'" in n for n in again.notes)


def test_declaring_the_features_silences_it_and_numeric_reports_the_row(tmp_path, workspace):
    from mlops_ray.errors import DataValidationError

    df = _frame()
    df["amount"] = df["amount"].astype(str)
    df.loc[5, "amount"] = "abc"
    src = tmp_path / "data.csv"
    df.to_csv(src, index=False)
    quiet = prepare_snapshot(
        _cfg(src, categorical_features=["city", "amount", "zip_like"]).data, get_workspace(), engine="local"
    )
    assert not [n for n in quiet.notes if "inferred as categorical" in n]
    with pytest.raises(DataValidationError, match="amount"):
        prepare_snapshot(
            _cfg(src, numeric_features=["amount", "x"], categorical_features=["city"]).data,
            get_workspace(),
            engine="local",
        )


def _batches(cols: dict, size=100):
    t = pa.table(cols)
    return [t.slice(i, size) for i in range(0, t.num_rows, size)]


def test_share_threshold_min_values_and_codes():
    n = 1000
    nums = [str(i * 0.5) for i in range(n)]
    mostly = list(nums)
    mostly[3] = "oops"
    some_text = [str(i) if i % 10 else f"code-{i}" for i in range(n)]  # 90% numbers: a real categorical
    tiny = ["1", "2", "x"]
    out = numeric_text_warnings(
        _batches({"mostly": mostly, "some_text": some_text, "all": nums}), ["mostly", "some_text", "all"]
    )
    assert len(out) == 2
    assert out[0].startswith("column 'mostly'") and "'oops'" in out[0] and "99.9% of 1,000" in out[0]
    assert out[1].startswith("column 'all'") and "no value that is not a number in the first 1,000 rows" in out[1]
    assert numeric_text_warnings(_batches({"tiny": tiny}), ["tiny"]) == []  # too few values to judge


def test_stray_value_beyond_the_sample_is_found_by_the_scan():
    n = 5000
    col = [str(i) for i in range(n)]
    col[4321] = "missing"
    out = numeric_text_warnings(_batches({"c": col}, size=500), ["c"], sample_rows=1000)
    assert len(out) == 1 and "100.0% of 1,000 sampled values" in out[0] and "'missing'" in out[0]
    nulls = [None] * n
    assert numeric_text_warnings(_batches({"c": pa.array(nulls, pa.string())}), ["c"]) == []
