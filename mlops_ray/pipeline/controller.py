"""The pipeline controller: runs a declared list of steps through explicit states, with a step
cache, and tells callbacks about every state change (pure: no Ray, no MLflow, no printing).

A :class:`Step` declares its name, the inputs that key its cache, the function it runs and how to
check that a cached output is still valid. The controller owns the states; the steps own the work;
everything else (the console printer, MLflow parent/child runs, lineage tags, history) is a
:class:`PipelineCallback` hooked to the typed events, like Ray Train v2's controller and its
``after_controller_state_update(previous, current)`` callbacks::

    controller = PipelineController(steps, cache=StepCache(store, "pipeline/churn/cache"),
                                    callbacks=[printer, history])
    result = controller.run(RunInfo("a1b2c3", "churn", "manual", "first run"), inputs)

Per step, the states go ``PENDING -> RUNNING -> SUCCEEDED | FAILED``, or ``PENDING -> CACHED`` when an
identical completed step is cached and its output still valid, or ``PENDING -> RUNNING -> RESUMED``
when the step succeeds where the previous run with the same cache key failed. After a failed step
the steps left are ``NOT_RUN``; the next run resumes at the failed step with the earlier steps cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from mlops_ray.errors import PipelineStepError

if TYPE_CHECKING:
    from mlops_ray.state import StateStore

log = logging.getLogger("mlops_ray.pipeline")


class StepStatus(StrEnum):
    """The state of one step in one run (the value is what history and MLflow record)."""

    PENDING = "pending"
    RUNNING = "running"
    CACHED = "cached"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RESUMED = "resumed"  # succeeded where the previous run with the same inputs failed
    NOT_RUN = "not run"  # an earlier step failed

    @property
    def is_terminal(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.RUNNING)

    @property
    def done(self) -> bool:
        """The step's outputs exist (ran now or earlier)."""
        return self in (StepStatus.CACHED, StepStatus.SUCCEEDED, StepStatus.RESUMED)

    @classmethod
    def parse(cls, value: str) -> StepStatus:
        """A status as recorded; history written before the controller said ``ran`` for succeeded."""
        return cls.SUCCEEDED if value == "ran" else cls(value)


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def digest(obj: Any) -> str:
    """sha256 of canonical JSON (16 hex chars)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ declarations
@dataclass
class RunInfo:
    """Who runs the pipeline and why (set before the first step)."""

    run_id: str
    model: str
    trigger: str
    reason: str
    context: dict[str, Any] = field(default_factory=dict)  # the reports that led to the run
    tracking_run_id: str | None = None  # set by a tracking callback (the MLflow parent run)


@dataclass
class StepInputs:
    """What a step sees: the run, the outputs of the steps before it, and fixed values of this run
    (``values``: e.g. the source's stat key, the code digest, config digests)."""

    run: RunInfo
    outputs: dict[str, dict[str, Any]]
    values: dict[str, Any]

    def __getitem__(self, step: str) -> dict[str, Any]:
        return self.outputs[step]


def _always(inputs: StepInputs, out: dict) -> bool:
    return True


@dataclass(frozen=True)
class Step:
    """One declared step.

    Args:
        name: unique in the pipeline.
        run: does the work; returns the step's outputs (JSON-able).
        key: the inputs that key the cache (None: never cached, always runs).
        valid: whether a cached output is still valid (e.g. the snapshot or the version still exists).
        hold: name of a resource held around this step and the consecutive steps with the same ``hold``
            (e.g. the registry lock around gate and deploy); the controller asks ``resources[hold]``.
        detail: a one-line summary of the outputs, for printers.
    """

    name: str
    run: Callable[[StepInputs], dict[str, Any]]
    key: Callable[[StepInputs], dict[str, Any] | None] = lambda inputs: None
    valid: Callable[[StepInputs, dict], bool] = _always
    hold: str | None = None
    detail: Callable[[dict[str, Any]], str] = lambda out: ""


# ------------------------------------------------------------------------------------ results
@dataclass
class StepResult:
    name: str
    status: StepStatus = StepStatus.PENDING
    seconds: float = 0.0
    key: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class PipelineResult:
    run_id: str
    model: str
    trigger: str
    reason: str
    status: RunStatus = RunStatus.RUNNING
    started_at: float = field(default_factory=time.time)
    seconds: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    version: str | None = None
    decision: str | None = None
    mlflow_run_id: str | None = None
    error: str | None = None

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "run", **asdict(self)}


# ------------------------------------------------------------------------------------ events
@dataclass(frozen=True)
class StepStateChanged:
    """A step moved from ``previous`` to ``step.status``."""

    run: RunInfo
    step: StepResult
    previous: StepStatus


class PipelineCallback:
    """Hooks of the controller; every method is optional. A callback that raises is reported through
    ``on_callback_error`` of the others and never fails the run (bookkeeping must not fail the pipeline)."""

    def on_run_start(self, run: RunInfo) -> None: ...

    def on_step_state(self, event: StepStateChanged) -> None: ...

    def on_run_end(self, run: RunInfo, result: PipelineResult) -> None: ...


# ------------------------------------------------------------------------------------ cache
class StepCache:
    """Completed step outputs (and failure marks) by step and key, in a state store."""

    def __init__(self, store: StateStore, prefix: str):
        self.store, self.prefix = store, prefix.rstrip("/")

    def _key(self, step: str, key: str, failed: bool = False) -> str:
        return f"{self.prefix}/{step}-{key}{'.failed' if failed else ''}.json"

    def get(self, step: str, key: str) -> dict | None:
        out = self.store.read_json(self._key(step, key))
        return out if isinstance(out, dict) else None

    def put(self, step: str, key: str, outputs: dict) -> None:
        self.store.write_json(self._key(step, key), outputs)
        self.store.delete(self._key(step, key, failed=True))

    def mark_failed(self, step: str, key: str, error: str) -> None:
        self.store.write_json(self._key(step, key, failed=True), {"error": error, "at": time.time()})

    def failed_before(self, step: str, key: str) -> bool:
        return self.store.exists(self._key(step, key, failed=True))


# ------------------------------------------------------------------------------------ the controller
class PipelineController:
    """Runs ``steps`` in order through their states; see the module docstring."""

    def __init__(
        self,
        steps: list[Step] | tuple[Step, ...],
        *,
        cache: StepCache | None = None,
        callbacks: list[PipelineCallback] | tuple[PipelineCallback, ...] = (),
        resources: dict[str, Callable[[StepInputs], contextlib.AbstractContextManager]] | None = None,
        force: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ):
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique: {names}")
        self.steps, self.cache, self.callbacks = tuple(steps), cache, list(callbacks)
        self.resources, self.force, self.clock = dict(resources or {}), force, clock
        for s in self.steps:
            if s.hold is not None and s.hold not in self.resources:
                raise ValueError(f"step {s.name!r} holds {s.hold!r}, which no resource provides")

    # ---------------------------------------------------------------- callbacks
    def _emit(self, method: str, *args) -> None:
        for cb in self.callbacks:
            try:
                getattr(cb, method)(*args)
            except Exception:  # noqa: BLE001 - bookkeeping must not fail the pipeline
                log.warning("pipeline callback %s.%s failed", type(cb).__name__, method, exc_info=True)

    def _move(self, run: RunInfo, s: StepResult, status: StepStatus) -> None:
        previous, s.status = s.status, status
        self._emit("on_step_state", StepStateChanged(run, s, previous))

    # ---------------------------------------------------------------- the run
    def run(self, run: RunInfo, values: dict[str, Any] | None = None) -> PipelineResult:
        """Run every step once (cached where possible); returns the result, ``FAILED`` with the error
        of the failing step when one fails (the steps after it are ``NOT_RUN``)."""
        t0 = self.clock()
        res = PipelineResult(run.run_id, run.model, run.trigger, run.reason)
        res.steps = [StepResult(s.name) for s in self.steps]
        self._emit("on_run_start", run)
        res.mlflow_run_id = run.tracking_run_id
        inputs = StepInputs(run, {}, dict(values or {}))
        try:
            with contextlib.ExitStack() as held:
                holding: str | None = None
                for step, s in zip(self.steps, res.steps):
                    if step.hold != holding:  # leave the previous resource, enter this step's
                        held.close()
                        if step.hold is not None:
                            held.enter_context(self.resources[step.hold](inputs))
                        holding = step.hold
                    inputs.outputs[step.name] = self._step(step, s, inputs)
            res.status = RunStatus.SUCCEEDED
        except PipelineStepError as err:
            res.status, res.error = RunStatus.FAILED, str(err)
        except Exception as err:  # outside a step (a resource): still a result
            res.status, res.error = RunStatus.FAILED, f"{type(err).__name__}: {err}"
        for s in res.steps:
            if not s.status.is_terminal:
                self._move(run, s, StepStatus.NOT_RUN)
        res.seconds = self.clock() - t0
        self._emit("on_run_end", run, res)
        return res

    def _step(self, step: Step, s: StepResult, inputs: StepInputs) -> dict[str, Any]:
        t0 = self.clock()
        try:
            parts = step.key(inputs)
        except Exception as err:
            return self._fail(step, s, inputs, t0, err)
        s.key = digest({"step": step.name, **parts}) if parts is not None else None
        cache = self.cache if s.key is not None else None
        if cache is not None and not self.force:
            hit = cache.get(step.name, s.key)
            if hit is not None and _holds(step.valid, inputs, hit):
                s.outputs, s.seconds = hit, self.clock() - t0
                self._move(inputs.run, s, StepStatus.CACHED)
                return hit
        self._move(inputs.run, s, StepStatus.RUNNING)
        try:
            out = step.run(inputs)
        except Exception as err:
            if cache is not None:
                _quietly(cache.mark_failed, step.name, s.key, f"{type(err).__name__}: {err}")
            return self._fail(step, s, inputs, t0, err)
        resumed = cache is not None and _quietly(cache.failed_before, step.name, s.key)
        if cache is not None:
            cache.put(step.name, s.key, out)
        s.outputs, s.seconds = out, self.clock() - t0
        self._move(inputs.run, s, StepStatus.RESUMED if resumed else StepStatus.SUCCEEDED)
        return out

    def _fail(self, step: Step, s: StepResult, inputs: StepInputs, t0: float, err: Exception):
        s.seconds, s.error = self.clock() - t0, f"{type(err).__name__}: {err}"
        self._move(inputs.run, s, StepStatus.FAILED)
        raise PipelineStepError(f"step {step.name} failed: {s.error}") from err


def _holds(valid: Callable[[StepInputs, dict], bool], inputs: StepInputs, out: dict) -> bool:
    try:
        return bool(valid(inputs, out))
    except Exception:
        return False


def _quietly(fn: Callable[..., Any], *args) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


__all__ = [
    "PipelineCallback",
    "PipelineController",
    "PipelineResult",
    "RunInfo",
    "RunStatus",
    "Step",
    "StepCache",
    "StepInputs",
    "StepResult",
    "StepStateChanged",
    "StepStatus",
    "digest",
]
