"""Pure policies: promotion gate, leakage check, alias history replay, execution plan, search space."""

from __future__ import annotations

import pytest

from mlops_ray.data.snapshot import SplitSpec
from mlops_ray.errors import ConfigError
from mlops_ray.registry.gate import GateRule, decide_promotion, leakage_problem
from mlops_ray.registry.promotion import deploy_stack
from mlops_ray.train.execution import choose_execution
from mlops_ray.train.tune import parse_search_space

FR = (("train", 0.8), ("valid", 0.1), ("test", 0.1))


def test_no_champion_promotes():
    assert decide_promotion(0.7, None, GateRule("auc")).promote


@pytest.mark.parametrize(
    "chal,champ,rule,promote",
    [
        (0.86, 0.85, GateRule("auc", "maximize", 0.005), True),
        (0.853, 0.85, GateRule("auc", "maximize", 0.005), False),
        (0.84, 0.85, GateRule("auc"), False),
        (0.85, 0.85, GateRule("auc"), True),  # tie with no margin: newer model
        (0.40, 0.42, GateRule("logloss", "minimize"), True),
        (0.44, 0.42, GateRule("logloss", "minimize"), False),
        (0.88, 0.80, GateRule("auc", min_improvement_rel=0.05), True),  # needs +0.04
        (0.83, 0.80, GateRule("auc", min_improvement_rel=0.05), False),
        (0.83, 0.80, GateRule("auc", min_improvement_abs=0.01, min_improvement_rel=0.05), False),  # both must hold
    ],
)
def test_gate_margins(chal, champ, rule, promote):
    d = decide_promotion(chal, champ, rule)
    assert d.promote is promote and d.reasons


def test_non_finite_challenger_is_kept():
    assert not decide_promotion(float("nan"), 0.8, GateRule("auc")).promote


def test_bad_rule_rejected():
    with pytest.raises(ValueError):
        GateRule("auc", "up")


def test_leakage_rules():
    a = SplitSpec("v1", FR, "id")
    assert leakage_problem(a, a) is None
    assert "salts differ" in leakage_problem(a, SplitSpec("v2", FR, "id"))
    assert "id columns differ" in leakage_problem(a, SplitSpec("v1", FR, "other"))
    # champion trained on 90% -> its train range covers the challenger's test range
    big_train = SplitSpec("v1", (("train", 0.95), ("test", 0.05)), "id")
    assert "overlap" in leakage_problem(big_train, a)
    # champion with a smaller train range is safe
    assert leakage_problem(SplitSpec("v1", (("train", 0.5), ("valid", 0.4), ("test", 0.1)), "id"), a) is None


def test_deploy_stack_replays_promotions_and_rollbacks_of_one_alias():
    ev = lambda a, to, act: {"alias": a, "to_version": to, "action": act}  # noqa: E731
    events = [
        ev("challenger", "1", "register"),
        ev("champion", "1", "promote"),
        ev("champion", "2", "promote"),
        ev("champion", "3", "promote"),
        ev("champion", "2", "rollback"),
    ]
    assert deploy_stack(events, "champion") == ["1", "2"]
    assert deploy_stack(events + [ev("champion", "1", "rollback")], "champion") == ["1"]
    # another deploy alias has its own history
    other = events + [ev("production", "3", "promote"), ev("production", "1", "force-promote")]
    assert deploy_stack(other, "production") == ["3", "1"]
    assert deploy_stack(other, "champion") == ["1", "2"]


def test_split_spec_round_trips_through_registry_tags():
    spec = SplitSpec("s1", (("train", 0.7), ("valid", 0.2), ("test", 0.1)), "cid")
    tags = spec.to_tags()
    assert all(isinstance(v, str) for v in tags.values())
    assert SplitSpec.from_tags(tags) == spec
    with pytest.raises(KeyError, match="salt"):
        SplitSpec.from_tags({k: v for k, v in tags.items() if k != "salt"})


def test_execution_policy():
    p = choose_execution([2.0])
    assert (p.mode, p.num_workers, p.nthread) == ("local", 0, 2)
    p = choose_execution([16.0, 16.0, 16.0])
    assert (p.mode, p.num_workers, p.cpus_per_worker) == ("distributed", 3, 16.0)
    p = choose_execution([2.0], "distributed", num_workers=2, cpus_per_worker=1)
    assert (p.mode, p.num_workers, p.nthread) == ("distributed", 2, 1)
    assert choose_execution([8.0, 8.0], "local").mode == "local"
    with pytest.raises(ValueError):
        choose_execution([])


def test_device_follows_the_gpus_of_the_nodes_training_uses():
    assert choose_execution([2.0]).device == "cpu"  # no GPUs: CPU
    assert choose_execution([8.0], node_gpus=[1.0]).device == "cuda"  # local mode on a GPU node
    p = choose_execution([8.0, 8.0], node_gpus=[1.0, 1.0])
    assert (p.mode, p.num_workers, p.device) == ("distributed", 2, "cuda") and "cuda" in p.reason
    # two workers, one GPU node: auto stays on CPUs, cuda refuses and says why
    assert choose_execution([8.0, 8.0], node_gpus=[0.0, 1.0]).device == "cpu"
    with pytest.raises(ValueError, match=r"model.device is cuda but 1 alive node\(s\) have a GPU and the plan needs 2"):
        choose_execution([8.0, 8.0], node_gpus=[0.0, 1.0], device="cuda")
    assert choose_execution([8.0], node_gpus=[1.0], device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        choose_execution([8.0], device="tpu")


def test_device_reaches_xgboost_params_and_a_param_wins():
    from types import SimpleNamespace

    from mlops_ray.config import ModelConfig
    from mlops_ray.train.xgboost_trainer import loop_config

    snap = SimpleNamespace(
        manifest={"spec": {"task": "binary"}, "label_distribution_train": {"0": 1, "1": 1}}, path="/x"
    )
    assert "device" not in loop_config(ModelConfig(), snap, 2, "/out")["params"]
    assert loop_config(ModelConfig(), snap, 2, "/out", device="cuda")["params"]["device"] == "cuda"
    own = ModelConfig(params={"device": "cuda:1"})
    assert loop_config(own, snap, 2, "/out", device="cuda")["params"]["device"] == "cuda:1"


def test_search_space_accepts_all_kinds():
    parsed = parse_search_space(
        {
            "a": {"uniform": [0, 1]},
            "b": {"loguniform": [0.01, 0.3]},
            "c": {"randint": [3, 9]},
            "d": {"quniform": [1, 10, 1]},
            "e": {"choice": ["x", "y"]},
            "f": {"grid": [1, 2]},
        }
    )
    assert parsed["c"] == ("randint", [3, 9])


@pytest.mark.parametrize(
    "space,msg",
    [
        ({"eta": {"gaussian": [0, 1]}}, "tune.search_space.eta: unknown distribution 'gaussian'"),
        ({"eta": {"uniform": [1, 0]}}, "low (1) must be < high (0)"),
        ({"eta": {"loguniform": [0, 1]}}, "bounds must be > 0"),
        ({"depth": {"randint": [1.5, 4]}}, "must be integers"),
        ({"depth": {"uniform": [1]}}, "expected 2 numbers"),
        ({"depth": 5}, "expected one of"),
        ({"x": {"choice": []}}, "non-empty list"),
    ],
)
def test_search_space_errors_name_the_parameter(space, msg):
    with pytest.raises(ConfigError) as ei:
        parse_search_space(space)
    assert msg in str(ei.value)
