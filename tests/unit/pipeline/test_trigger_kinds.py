"""Trigger kinds: the registry, a toy kind added as one module + one registration line, and pending
triggers dropped as superseded when the run they waited for made them moot (fake clock, no I/O)."""

from __future__ import annotations

import json

import pytest

from mlops_ray.config import AutomationConfig
from mlops_ray.pipeline import triggers as tr
from mlops_ray.pipeline.triggers import (
    Action,
    Observation,
    PolicyState,
    TriggerKind,
    TriggerPolicy,
    WindowView,
    register_trigger,
    trigger_names,
)

T0 = 1_700_000_000.0
OFF = {"data": {"enabled": False, "settle_s": 0}, "code": {"enabled": False}, "drift": {"enabled": False}}


@pytest.fixture
def toy():
    from tests.unit.pipeline import toy_trigger

    register_trigger(toy_trigger.RunRequestTrigger)  # idempotent for the same class
    yield toy_trigger.RunRequestTrigger
    tr.unregister_trigger("request")


class FakeEnv:
    """The watcher's side, faked: a state store dict and nothing else."""

    def __init__(self, state=None):
        self.state = dict(state or {})

    def source_key(self):
        return None

    def fingerprint(self):
        raise AssertionError("not asked for")

    def drift_report(self):
        return None

    def champion(self):
        return {"version": "1", "code_digest": None, "fingerprint": None}

    def code_digest(self):
        return "c" * 16

    def read_state(self, key):
        return self.state.get(key)


def test_builtin_kinds_are_registered_with_their_priority():
    assert trigger_names()[:4] == ("drift", "data", "code", "schedule")


def test_toy_kind_is_one_module_and_one_line_and_fires_once_per_request(toy):
    assert "request" in trigger_names() and trigger_names().index("request") == 3  # priority 35: before schedule
    cfg = AutomationConfig.model_validate({**OFF, "triggers": {"request": {}}})
    policy = TriggerPolicy(cfg)
    env = FakeEnv({"run-request.json": {"id": "r-1", "why": "new labels from the call centre"}})
    d1 = policy.evaluate(policy.observe(env, now=T0, running=False))
    assert [(d.action, d.trigger) for d in d1] == [(Action.RUN, "request")]
    assert d1[0].reason == "run request r-1: new labels from the call centre"
    assert policy.evaluate(policy.observe(env, now=T0 + 2, running=False)) == []  # the same request: nothing
    # its state survives a restart (JSON round trip) ...
    restored = TriggerPolicy(cfg, PolicyState.from_dict(json.loads(json.dumps(policy.state.to_dict()))))
    assert restored.evaluate(restored.observe(env, now=T0 + 4, running=False)) == []
    # ... a new request during a run coalesces, and runs when the run is over
    env.state["run-request.json"] = {"id": "r-2"}
    d2 = restored.evaluate(restored.observe(env, now=T0 + 6, running=True))
    assert [(d.action, d.trigger) for d in d2] == [(Action.COALESCE, "request")]
    d3 = restored.evaluate(restored.observe(env, now=T0 + 8, running=False))
    assert [(d.action, d.trigger) for d in d3] == [(Action.RUN, "request")]


def test_toy_kind_is_off_unless_configured(toy):
    policy = TriggerPolicy(AutomationConfig.model_validate(OFF))
    env = FakeEnv({"run-request.json": {"id": "r-1"}})
    assert policy.evaluate(policy.observe(env, now=T0, running=False)) == []


def test_a_config_naming_an_unregistered_kind_is_refused():
    with pytest.raises(ValueError, match="no trigger kind named 'nope' is registered"):
        TriggerPolicy(AutomationConfig.model_validate({**OFF, "triggers": {"nope": {}}}))


def test_registry_refuses_bad_or_clashing_kinds():
    class NoName(TriggerKind):
        def decide(self, tick):
            return None

    with pytest.raises(ValueError, match="name"):
        register_trigger(NoName)

    class Clash(NoName):
        name, priority = "drift", 1

    with pytest.raises(ValueError, match="registered already"):
        register_trigger(Clash)
    with pytest.raises(ValueError, match="built-in"):
        tr.unregister_trigger("data")


def drift_policy(k=1):
    return TriggerPolicy(
        AutomationConfig.model_validate(
            {**OFF, "data": {"enabled": True, "settle_s": 0}, "drift": {"enabled": True, "consecutive_windows": k}}
        )
    )


def alert(version, index):
    return WindowView(version, index, "alert", ("f1",))


def test_drift_about_the_version_a_run_replaced_is_superseded_not_run():
    policy = drift_policy()
    # a data run starts (fingerprint baseline first, then new data)
    policy.evaluate(Observation(now=T0, source_key="k0", fingerprint=lambda: "fp0"))
    (run,) = policy.evaluate(Observation(now=T0 + 2, source_key="k1", fingerprint=lambda: "fp1"))
    assert (run.action, run.trigger) == (Action.RUN, "data")
    # while it runs, drift alerts arrive about version 1 (the version being replaced)
    (co,) = policy.evaluate(Observation(now=T0 + 4, windows=(alert("1", 0),), running=True))
    assert (co.action, co.trigger) == (Action.COALESCE, "drift")
    # the run deployed version 2: the pending drift about version 1 is dropped, with the reason
    (sup,) = policy.run_finished("fp1", True, deployed_version="2", at=T0 + 6)
    assert (sup.action, sup.trigger, sup.at) == (Action.SUPERSEDED, "drift", T0 + 6)
    assert "model version 1" in sup.reason and "deploying version 2" in sup.reason
    assert policy.evaluate(Observation(now=T0 + 8, source_key="k1", fingerprint=lambda: "fp1")) == []


def test_drift_still_runs_when_the_run_it_waited_for_kept_the_old_version():
    policy = drift_policy()
    policy.evaluate(Observation(now=T0, source_key="k0", fingerprint=lambda: "fp0"))
    policy.evaluate(Observation(now=T0 + 2, source_key="k1", fingerprint=lambda: "fp1"))
    policy.evaluate(Observation(now=T0 + 4, windows=(alert("1", 0),), running=True))
    assert policy.run_finished("fp1", True, deployed_version=None, at=T0 + 6) == []  # gate said KEEP
    (run,) = policy.evaluate(Observation(now=T0 + 8, source_key="k1", fingerprint=lambda: "fp1"))
    assert (run.action, run.trigger) == (Action.RUN, "drift")


def test_new_data_the_run_already_trained_on_is_superseded():
    policy = drift_policy()
    policy.evaluate(Observation(now=T0, source_key="k0", fingerprint=lambda: "fp0"))
    policy.evaluate(Observation(now=T0 + 2, windows=(alert("1", 0),)))  # a drift run starts
    # data lands while the run is still at its prepare step: it fires (pending)...
    (co,) = policy.evaluate(Observation(now=T0 + 4, source_key="k1", fingerprint=lambda: "fp1", running=True))
    assert (co.action, co.trigger) == (Action.COALESCE, "data")
    # ...but the run's snapshot already included it (same fingerprint): no second run for it
    (sup,) = policy.run_finished("fp1", True, deployed_version="2", at=T0 + 6)
    assert (sup.action, sup.trigger) == (Action.SUPERSEDED, "data") and "trained on this data" in sup.reason
    # data that differs from what the run trained on still runs
    policy.evaluate(Observation(now=T0 + 8, source_key="k2", fingerprint=lambda: "fp2", running=True))
    assert policy.run_finished("fp1", True, deployed_version="3", at=T0 + 10) == []
    (run,) = policy.evaluate(Observation(now=T0 + 12, source_key="k2", fingerprint=lambda: "fp2"))
    assert (run.action, run.trigger) == (Action.RUN, "data")


def test_decisions_serialise_their_enum_as_the_plain_string():
    d = tr.Decision(Action.SUPERSEDED, "drift", "why", T0)
    assert json.loads(json.dumps(d.to_dict()))["action"] == "superseded"
    assert tr.Decision.from_dict(d.to_dict()) == d and d.action == "superseded"
