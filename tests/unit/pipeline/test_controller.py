"""The pipeline controller with fake steps and fake callbacks (no Ray, no MLflow): states, caching,
validity checks, failure and resume, held resources, and the events callbacks see."""

from __future__ import annotations

import contextlib

import pytest

from mlops_ray.pipeline.controller import (
    PipelineCallback,
    PipelineController,
    RunInfo,
    RunStatus,
    Step,
    StepCache,
    StepStatus,
)
from mlops_ray.state import LocalStateStore

S = StepStatus


class Recorder(PipelineCallback):
    """Every event in order: ("start",), (step, previous, current), ("end", status)."""

    def __init__(self):
        self.events: list[tuple] = []

    def on_run_start(self, run):
        self.events.append(("start", run.run_id))

    def on_step_state(self, event):
        self.events.append((event.step.name, event.previous, event.step.status))

    def on_run_end(self, run, result):
        self.events.append(("end", result.status))

    def transitions(self, step):
        return [(p, c) for (n, *rest) in self.events if n == step for p, c in [rest]]


class FakeWork:
    """Step functions that count calls and can be told to fail."""

    def __init__(self):
        self.calls: list[str] = []
        self.fail: set[str] = set()

    def fn(self, name, out):
        def run(inputs):
            self.calls.append(name)
            if name in self.fail:
                raise RuntimeError(f"{name} broke")
            upstream = {k: v.get("n") for k, v in inputs.outputs.items()}
            return {**out, "upstream": upstream}

        return run


def steps(work: FakeWork, source: str = "v1") -> list[Step]:
    return [
        Step("a", work.fn("a", {"n": 1}), key=lambda i: {"source": i.values["source"]}),
        Step("b", work.fn("b", {"n": 2}), key=lambda i: {"a": i["a"]["n"]}),
        Step("c", work.fn("c", {"n": 3})),  # never cached
    ]


@pytest.fixture
def cache(tmp_path):
    return StepCache(LocalStateStore(tmp_path), "pipeline/m/cache")


def run(ctrl, values=None, rid="r1"):
    return ctrl.run(RunInfo(rid, "m", "manual", "test"), values or {"source": "v1"})


def test_first_run_moves_each_step_pending_running_succeeded_in_order(cache):
    work, rec = FakeWork(), Recorder()
    res = run(PipelineController(steps(work), cache=cache, callbacks=[rec]))
    assert res.status == RunStatus.SUCCEEDED and work.calls == ["a", "b", "c"]
    assert [s.status for s in res.steps] == [S.SUCCEEDED] * 3
    assert rec.events[0] == ("start", "r1") and rec.events[-1] == ("end", RunStatus.SUCCEEDED)
    for name in "abc":
        assert rec.transitions(name) == [(S.PENDING, S.RUNNING), (S.RUNNING, S.SUCCEEDED)]
    # b saw a's outputs; c saw both
    assert res.step("c").outputs["upstream"] == {"a": 1, "b": 2}


def test_identical_rerun_is_cached_except_uncached_steps(cache):
    work = FakeWork()
    run(PipelineController(steps(work), cache=cache))
    rec = Recorder()
    res = run(PipelineController(steps(work), cache=cache, callbacks=[rec]), rid="r2")
    assert [s.status for s in res.steps] == [S.CACHED, S.CACHED, S.SUCCEEDED]
    assert work.calls == ["a", "b", "c", "c"]
    assert rec.transitions("a") == [(S.PENDING, S.CACHED)]
    assert res.step("b").outputs["n"] == 2  # the cached outputs flow downstream
    assert res.step("c").outputs["upstream"] == {"a": 1, "b": 2}


def test_changed_input_reruns_that_step_and_force_reruns_all(cache):
    work = FakeWork()
    run(PipelineController(steps(work), cache=cache))
    res = run(PipelineController(steps(work), cache=cache), {"source": "v2"})
    assert [s.status for s in res.steps][:2] == [S.SUCCEEDED, S.CACHED]  # b's key (a's n) did not change
    forced = run(PipelineController(steps(work), cache=cache, force=True))
    assert [s.status for s in forced.steps] == [S.SUCCEEDED] * 3


def test_a_cached_output_that_is_no_longer_valid_reruns(cache):
    work = FakeWork()
    valid = {"ok": True}
    mk = lambda: [Step("a", work.fn("a", {"n": 1}), key=lambda i: {}, valid=lambda i, o: valid["ok"])]  # noqa: E731
    run(PipelineController(mk(), cache=cache))
    assert run(PipelineController(mk(), cache=cache)).steps[0].status == S.CACHED
    valid["ok"] = False
    assert run(PipelineController(mk(), cache=cache)).steps[0].status == S.SUCCEEDED
    # a validity check that raises counts as invalid (never a crash)
    crash = [Step("a", work.fn("a", {"n": 1}), key=lambda i: {}, valid=lambda i, o: 1 / 0)]
    assert run(PipelineController(crash, cache=cache)).steps[0].status == S.SUCCEEDED


def test_a_failed_step_stops_the_run_and_the_next_run_resumes_there(cache):
    work, rec = FakeWork(), Recorder()
    work.fail = {"b"}
    res = run(PipelineController(steps(work), cache=cache, callbacks=[rec]))
    assert res.status == RunStatus.FAILED and "step b failed: RuntimeError: b broke" in res.error
    assert [s.status for s in res.steps] == [S.SUCCEEDED, S.FAILED, S.NOT_RUN]
    assert rec.transitions("c") == [(S.PENDING, S.NOT_RUN)]
    assert res.step("b").error == "RuntimeError: b broke"
    work.fail = set()
    again = run(PipelineController(steps(work), cache=cache), rid="r2")
    assert [s.status for s in again.steps] == [S.CACHED, S.RESUMED, S.SUCCEEDED]
    third = run(PipelineController(steps(work), cache=cache), rid="r3")
    assert [s.status for s in third.steps] == [S.CACHED, S.CACHED, S.SUCCEEDED]  # resumed once, then cached


def test_a_key_function_that_raises_fails_its_step(cache):
    work = FakeWork()
    bad = [Step("a", work.fn("a", {}), key=lambda i: i.values["missing"])]
    res = run(PipelineController(bad, cache=cache))
    assert res.steps[0].status == S.FAILED and "KeyError" in res.error and work.calls == []


def test_a_resource_is_held_around_consecutive_steps_and_released_on_failure(cache):
    work, log = FakeWork(), []

    @contextlib.contextmanager
    def lock(inputs):
        log.append(("enter", list(inputs.outputs)))
        try:
            yield
        finally:
            log.append(("exit", list(inputs.outputs)))

    mk = lambda: [  # noqa: E731
        Step("a", work.fn("a", {"n": 1})),
        Step("g", work.fn("g", {"n": 2}), hold="lock"),
        Step("d", work.fn("d", {"n": 3}), hold="lock"),
        Step("z", work.fn("z", {"n": 4})),
    ]
    run(PipelineController(mk(), cache=cache, resources={"lock": lock}))
    assert log == [("enter", ["a"]), ("exit", ["a", "g", "d"])]  # one hold around g and d, released before z
    log.clear()
    work.fail = {"d"}
    res = run(PipelineController(mk(), cache=cache, resources={"lock": lock}))
    assert res.status == RunStatus.FAILED and [e[0] for e in log] == ["enter", "exit"]
    with pytest.raises(ValueError, match="no resource"):
        PipelineController(mk(), resources={})


def test_a_callback_that_raises_never_fails_the_run(cache):
    class Broken(PipelineCallback):
        def on_step_state(self, event):
            raise RuntimeError("printer broke")

    rec = Recorder()
    res = run(PipelineController(steps(FakeWork()), cache=cache, callbacks=[Broken(), rec]))
    assert res.status == RunStatus.SUCCEEDED and rec.events[-1] == ("end", RunStatus.SUCCEEDED)


def test_a_tracking_callback_can_name_the_run_before_the_first_step(cache):
    class Tracker(PipelineCallback):
        def on_run_start(self, run):
            run.tracking_run_id = "mlflow-123"

    seen = []
    s = [Step("a", lambda i: seen.append(i.run.tracking_run_id) or {})]
    res = run(PipelineController(s, cache=cache, callbacks=[Tracker()]))
    assert seen == ["mlflow-123"] and res.mlflow_run_id == "mlflow-123"


def test_step_names_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        PipelineController([Step("a", lambda i: {}), Step("a", lambda i: {})])


def test_history_written_before_the_controller_reads_ran_as_succeeded(tmp_path):
    from mlops_ray.pipeline import history as hist

    store = LocalStateStore(tmp_path)
    store.append_record("pipeline/m/history.jsonl", {"kind": "run", "steps": [{"name": "a", "status": "ran"}]})
    (entry,) = hist.read(store, "pipeline/m")
    assert entry["steps"][0]["status"] == "succeeded"
    assert "1/0/0" in hist.format_runs([entry])
    assert StepStatus.parse("ran") is StepStatus.SUCCEEDED and StepStatus.parse("cached") is StepStatus.CACHED


def test_summary_shows_only_what_happened(cache):
    from mlops_ray.pipeline.callbacks import summary_table
    from mlops_ray.pipeline.steps import DETAILS

    work = FakeWork()
    work.fail = {"b"}
    mk = [
        Step("prepare", work.fn("a", {"snapshot_id": "s" * 12, "rows": {"train": 5}}), key=lambda i: {}),
        Step("register", work.fn("b", {})),
        Step("gate", work.fn("c", {})),
    ]
    table = summary_table(run(PipelineController(mk, cache=cache)), DETAILS)
    assert "snapshot ssssssssssss (5 train rows)" in table and "RuntimeError: b broke" in table
    assert "None" not in table  # the gate that never ran has no "None:" detail
