"""The model-kind registry: lookup, refusal of duplicates, entry points, logged references, config."""

from __future__ import annotations

import importlib.metadata as md

import numpy as np
import pytest

from mlops_ray.config import config_from_dict
from mlops_ray.errors import ConfigError
from mlops_ray.model import kinds
from mlops_ray.model.kinds import (
    ENTRY_POINT_GROUP,
    ModelKind,
    UnknownModelKindError,
    get_kind,
    register_kind,
    registered_kinds,
    unregister_kind,
)
from tests.toy_kind import HistGBKind

TOY = "toy_hgb"
TOY_REF = "tests.toy_kind:HistGBKind"
DATA = {"name": "d", "source": "s", "id_column": "i", "label_column": "l"}


@pytest.fixture(autouse=True)
def _forget_toy_kinds(monkeypatch):
    """No entry points from the environment, and no toy kind left registered after a test."""
    monkeypatch.setattr(kinds, "_entry_points", lambda: {})
    yield
    for name in (TOY, "other", "regression_only"):
        unregister_kind(name)


def _fake_entry_points(monkeypatch, *eps: md.EntryPoint) -> None:
    """Real EntryPoint objects (their ``load()`` imports ``module:attr``) as if a package declared them."""
    monkeypatch.setattr(kinds, "_entry_points", lambda: {ep.name: ep for ep in eps})


def test_unknown_kind_error_names_every_registered_kind():
    register_kind(HistGBKind())
    with pytest.raises(UnknownModelKindError) as ei:
        get_kind("lightgbm")
    msg = str(ei.value)
    assert "unknown model kind 'lightgbm'" in msg
    assert f"registered: {sorted(['sklearn', 'xgboost', TOY])}" in msg
    assert ENTRY_POINT_GROUP in msg


def test_builtins_are_found_by_name_and_registered_once():
    xgb, sk = get_kind("xgboost"), get_kind("sklearn")
    assert (xgb.name, xgb.model_file, xgb.distributed) == ("xgboost", "model.ubj", True)
    assert (sk.name, sk.model_file, sk.distributed) == ("sklearn", "model.joblib", False)
    assert get_kind("xgboost") is xgb  # the same object on every lookup
    assert xgb.ref == "mlops_ray.kinds.xgboost:XGBoostKind"


def test_another_kind_under_a_taken_name_is_refused_unless_replace():
    first = register_kind(HistGBKind())
    assert register_kind(first) is first  # the same object again: a no-op
    with pytest.raises(ValueError, match="'toy_hgb' is already registered .*replace=True"):
        register_kind(HistGBKind())
    assert get_kind(TOY) is first
    second = register_kind(HistGBKind(), replace=True)
    assert get_kind(TOY) is second and second is not first


def test_a_builtin_name_cannot_be_taken_silently():
    class FakeXGBoost(HistGBKind):
        name = "xgboost"

    get_kind("xgboost")
    with pytest.raises(ValueError, match="'xgboost' is already registered"):
        register_kind(FakeXGBoost())
    assert get_kind("xgboost").ref == "mlops_ray.kinds.xgboost:XGBoostKind"


def test_register_refuses_what_is_not_a_kind():
    with pytest.raises(TypeError, match="not a mlops_ray.model.kinds.ModelKind"):
        register_kind(object())


def test_entry_point_kind_is_found_and_listed(monkeypatch):
    _fake_entry_points(monkeypatch, md.EntryPoint(TOY, TOY_REF, ENTRY_POINT_GROUP))
    assert TOY in registered_kinds()
    kind = get_kind(TOY)
    assert isinstance(kind, HistGBKind) and kind.name == TOY
    assert get_kind(TOY) is kind  # registered after the first load


def test_entry_point_with_the_wrong_name_or_object_is_an_error(monkeypatch):
    _fake_entry_points(
        monkeypatch,
        md.EntryPoint("other", TOY_REF, ENTRY_POINT_GROUP),  # names 'other' but is toy_hgb
        md.EntryPoint("regression_only", "tests.toy_kind:build", ENTRY_POINT_GROUP),  # a function, not a kind
    )
    with pytest.raises(ValueError, match="is model kind 'toy_hgb', not 'other'"):
        get_kind("other")
    with pytest.raises(TypeError, match="not a mlops_ray.model.kinds.ModelKind"):
        get_kind("regression_only")


def test_a_logged_kind_ref_loads_a_kind_this_process_never_registered():
    with pytest.raises(UnknownModelKindError):
        get_kind(TOY)
    kind = get_kind(TOY, ref=TOY_REF)
    assert isinstance(kind, HistGBKind)
    assert get_kind(TOY) is kind
    with pytest.raises(ValueError, match="expected 'module:attribute'"):
        get_kind("other", ref="tests.toy_kind")


def test_config_type_is_checked_against_the_registry():
    with pytest.raises(ConfigError) as ei:
        config_from_dict({"data": DATA, "model": {"type": TOY}})
    assert "model.type: unknown model kind 'toy_hgb'; registered: ['sklearn', 'xgboost']" in str(ei.value)
    register_kind(HistGBKind())  # the one registration line
    cfg = config_from_dict({"data": DATA, "model": {"type": TOY, "params": {"max_iter": 20}}})
    assert cfg.model.type == TOY and cfg.model.params == {"max_iter": 20}


def test_config_params_are_checked_by_the_kind():
    register_kind(HistGBKind())
    with pytest.raises(ConfigError, match=r"model.params: .*max_iter: must be an integer >= 2, got 1"):
        config_from_dict({"data": DATA, "model": {"type": TOY, "params": {"max_iter": 1}}})
    # the XGBoost table applies only to xgboost: the same key is fine for another kind
    config_from_dict({"data": DATA, "model": {"type": TOY, "params": {"max_depth": -1}}})
    with pytest.raises(ConfigError, match="model.params: max_depth: must be 0 <= max_depth"):
        config_from_dict({"data": DATA, "model": {"params": {"max_depth": -1}}})


def test_config_refuses_a_task_the_kind_does_not_support():
    class RegressionOnly(HistGBKind):
        name = "regression_only"
        tasks = ("regression",)

    register_kind(RegressionOnly())
    with pytest.raises(ConfigError, match="'regression_only' does not support data.task 'binary'"):
        config_from_dict({"data": DATA, "model": {"type": "regression_only"}})
    cfg = config_from_dict({"data": dict(DATA, task="regression"), "model": {"type": "regression_only"}})
    assert cfg.model.type == "regression_only"


def test_today_s_configs_stay_valid():
    assert config_from_dict({"data": DATA}).model.type == "xgboost"
    cfg = config_from_dict(
        {"data": DATA, "model": {"type": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression"}}
    )
    assert cfg.model.estimator == "sklearn.linear_model.LogisticRegression"
    with pytest.raises(ConfigError, match="model.type 'sklearn' needs model.estimator"):
        config_from_dict({"data": DATA, "model": {"type": "sklearn"}})


def test_a_kind_without_a_train_side_says_so():
    class ScoreOnly(ModelKind):
        name, model_file = "score_only", "m.bin"

    with pytest.raises(NotImplementedError, match="'score_only' cannot be trained"):
        ScoreOnly().fit(None, None, None, None, run_name="r", storage=None)
    with pytest.raises(NotImplementedError, match="'score_only' does not implement load"):
        ScoreOnly().load("m.bin")


def test_toy_kind_splits_natively_on_ordinal_category_codes():
    """With ordinal encoding the toy kind marks the category-code columns as categorical."""
    from types import SimpleNamespace

    from tests.toy_kind import build

    cat = SimpleNamespace(name="region")
    pre = SimpleNamespace(categorical=[cat], encoding="ordinal", feature_names=["age", "region"])
    est = build("binary", pre, {"max_iter": 5}, 0)
    assert list(est.categorical_features) == [False, True]
    # a label that depends only on a category set {1, 3} that no single threshold separates
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=400), rng.integers(0, 4, size=400)]).astype(np.float32)
    y = np.isin(x[:, 1], [1, 3]).astype(int)
    est = build("binary", pre, {"max_iter": 2, "max_depth": 1}, 0).fit(x, y)
    assert (est.predict(x) == y).all()
    onehot = SimpleNamespace(categorical=[cat], encoding="onehot", feature_names=["age", "region=a"])
    assert build("binary", onehot, {}, 0).categorical_features is None
