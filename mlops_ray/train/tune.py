"""Hyperparameter search with Ray Tune; every trial an MLflow child run under one parent.

Trials are the model kind's function trainables (:meth:`~mlops_ray.model.kinds.ModelKind.tune_trial`;
XGBoost's share :func:`~mlops_ray.train.xgboost_trainer.boost` with Train's workers, so the best
trial is reproducible through the normal training path) and report the watched validation metric
through :func:`report_trial` every few rounds, which is what ASHA stops on. The driver logs all
trials to MLflow after the search: Train v2 rejects Tune's logger callbacks, and logging from one
process means concurrent trials never collide in the tracking store.

Reproducibility: the search samples its configurations from ``model.seed`` in trial order
(:func:`sample_configs`), and ASHA's decisions are made in *trial order* (:func:`asha_decisions`):
trial ``i`` at a rung is compared only with trials ``0..i-1``, exactly as a one-at-a-time ASHA
would, never with whichever trials happened to report first. With concurrent trials a decision
that is not yet known waits (the trial keeps training) and the search re-applies the same rule to
every trial's recorded rung values when it ends, so the set of surviving trials, and the winner,
do not depend on timing or on ``tune.max_concurrent_trials``.

Search space syntax (config ``tune.search_space``)::

    max_depth: {randint: [3, 9]}          # [low, high)
    eta: {loguniform: [0.01, 0.3]}
    subsample: {uniform: [0.6, 1.0]}
    min_child_weight: {quniform: [1, 10, 1]}
    grow_policy: {choice: [depthwise, lossguide]}
    lambda: {grid: [0.1, 1.0, 10.0]}
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from mlops_ray.errors import ConfigError

if TYPE_CHECKING:
    from mlops_ray.config import TrainingSpec
    from mlops_ray.context import Context

_ARITY = {"uniform": 2, "loguniform": 2, "randint": 2, "quniform": 3, "choice": None, "grid": None}


def parse_search_space(space: dict[str, dict[str, Any]]) -> dict[str, tuple[str, list]]:
    """Validate the config's search space; returns ``{param: (kind, args)}`` (no Ray needed).

    Raises:
        ConfigError: naming the parameter and what is wrong.
    """
    out = {}
    for name, spec in space.items():
        where = f"tune.search_space.{name}"
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(f"{where}: expected one of {sorted(_ARITY)} like {{uniform: [0.1, 1.0]}}, got {spec!r}")
        kind, args = next(iter(spec.items()))
        if kind not in _ARITY:
            raise ConfigError(f"{where}: unknown distribution {kind!r}; use one of {sorted(_ARITY)}")
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}.{kind}: expected a non-empty list, got {args!r}")
        n = _ARITY[kind]
        if n is not None:
            if len(args) != n or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise ConfigError(f"{where}.{kind}: expected {n} numbers, got {args!r}")
            lo, hi = args[0], args[1]
            if not lo < hi:
                raise ConfigError(f"{where}.{kind}: low ({lo}) must be < high ({hi})")
            if kind == "loguniform" and lo <= 0:
                raise ConfigError(f"{where}.loguniform: bounds must be > 0, got {args!r}")
            if kind == "randint" and not all(float(a).is_integer() for a in args):
                raise ConfigError(f"{where}.randint: bounds must be integers, got {args!r}")
            if kind == "quniform" and args[2] <= 0:
                raise ConfigError(f"{where}.quniform: q must be > 0, got {args[2]!r}")
        out[name] = (kind, list(args))
    return out


def to_tune_space(parsed: dict[str, tuple[str, list]]) -> dict[str, Any]:
    from ray import tune

    build = {
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(int(a[0]), int(a[1])),
        "quniform": lambda a: tune.quniform(*a),
        "choice": lambda a: tune.choice(a),
        "grid": lambda a: tune.grid_search(a),
    }
    return {k: build[kind](args) for k, (kind, args) in parsed.items()}


def search_algorithm(seed: int, max_concurrent: int = 0):
    """Tune's variant generator seeded with ``seed``; ``max_concurrent`` (0: unlimited) caps live trials.

    The concurrency cap lives here because Ray ignores ``TuneConfig.max_concurrent_trials`` (with a
    warning) when a ``BasicVariantGenerator`` instance is passed.
    """
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)


def sample_configs(parsed: dict[str, tuple[str, list]], num_samples: int, seed: int) -> list[dict]:
    """The trial configurations a search with ``seed`` runs, in trial order (no Ray cluster needed)."""
    gen = search_algorithm(seed)
    gen.add_configurations(
        {"sample": {"run": _noop_trainable, "config": to_tune_space(parsed), "num_samples": num_samples}}
    )
    out = []
    while (trial := gen.next_trial()) is not None:
        out.append(trial.config)
    return out


def _noop_trainable(config: dict) -> None:  # pragma: no cover - never run, only named in a spec
    pass


# ------------------------------------------------------------------ deterministic ASHA
def asha_milestones(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    """Rungs (in reports) where ASHA compares trials: ``grace * rf**k`` below ``max_t``, as in Ray's ASHA."""
    n = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [m for m in (grace_period * reduction_factor**k for k in range(n)) if m < max_t]


def _asha_stops(value: float, peers: list[float], reduction_factor: int, maximize: bool) -> bool:
    """Ray ASHA's rule: stop when worse than the ``1 - 1/rf`` quantile of the rung's recorded values."""
    import numpy as np

    sign = 1.0 if maximize else -1.0
    seen = [sign * v for v in peers if not math.isnan(v)]
    if not seen or math.isnan(value):
        return False
    return sign * value < float(np.percentile(seen, (1 - 1 / reduction_factor) * 100))


def asha_decisions(
    values: list[list[float]], done: list[bool], reduction_factor: int, maximize: bool
) -> list[tuple[str, int]]:
    """ASHA as if the trials had run one at a time in trial order, on what is known so far.

    Args:
        values: per trial (in trial order), its metric at each rung it reached, lowest rung first.
        done: per trial, True when it has ended (it reaches no further rung).

    Returns:
        per trial ``("stopped", r)`` (ASHA stops it at rung ``r``), ``("pending", r)`` (the decision
        at rung ``r`` needs a value an earlier, still running trial has not reported yet) or
        ``("open", n)`` (it passed the ``n`` rungs it reached). Trial ``i``'s decision at rung ``r``
        uses only trials ``j < i`` that reach rung ``r`` (a trial stopped at a lower rung does not),
        so decisions never depend on which trial reported first; a decided trial stays decided.
    """
    status: list[tuple[str, int]] = []
    for i, own in enumerate(values):
        state: tuple[str, int] = ("open", len(own))
        for r, value in enumerate(own):
            peers: list[float] | None = []
            for j in range(i):
                kind, rung = status[j]
                if kind == "stopped" and rung < r:
                    continue  # stopped below r: never reached it
                if kind == "open" and len(values[j]) <= r:
                    if done[j]:
                        continue  # ended below r
                    peers = None  # may still reach r
                    break
                if kind == "pending" and rung < r:
                    peers = None  # whether it passes its rung is not known yet
                    break
                peers.append(values[j][r])
            if peers is None:
                state = ("pending", r)
                break
            if _asha_stops(value, peers, reduction_factor, maximize):
                state = ("stopped", r)
                break
        status.append(state)
    return status


def rung_values(rows: list[tuple[int, float]], milestones: list[int]) -> list[float]:
    """A trial's metric at each rung it reached from its ``(training_iteration, metric)`` reports."""
    at = dict(rows)
    out = []
    for m in milestones:
        if m not in at:
            break
        out.append(float(at[m]))
    return out


def _asha_scheduler(metric: str, maximize: bool, milestones: list[int], reduction_factor: int):
    """A Tune scheduler that stops trials by :func:`asha_decisions` (trial order, never timing).

    Only the periodic reports count (a trial's last report, marked ``final``, scores the finished
    model). A decision that is pending is retried at the trial's next report.
    """
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class TrialOrderASHA(FIFOScheduler):
        def __init__(self):
            super().__init__()
            self._metric = metric
            self._index: dict[str, int] = {}
            self._rows: list[list[tuple[int, float]]] = []
            self._done: list[bool] = []

        def set_search_properties(self, metric, mode, **spec) -> bool:
            return True  # fixed at construction

        def _end(self, trial) -> None:
            if trial.trial_id in self._index:
                self._done[self._index[trial.trial_id]] = True

        def on_trial_add(self, tune_controller, trial):
            self._index[trial.trial_id] = len(self._rows)
            self._rows.append([])
            self._done.append(False)

        def on_trial_result(self, tune_controller, trial, result):
            i = self._index[trial.trial_id]
            if not result.get("final") and metric in result:
                self._rows[i].append((int(result["training_iteration"]), float(result[metric])))
            values = [rung_values(rows, milestones) for rows in self._rows]
            kind, _ = asha_decisions(values, self._done, reduction_factor, maximize)[i]
            return TrialScheduler.STOP if kind == "stopped" else TrialScheduler.CONTINUE

        def on_trial_complete(self, tune_controller, trial, result):
            self._end(trial)

        def on_trial_error(self, tune_controller, trial):
            self._end(trial)

        def on_trial_remove(self, tune_controller, trial):
            self._end(trial)

        def debug_string(self) -> str:
            return f"ASHA in trial order on {metric} at rungs {milestones}"

    return TrialOrderASHA()


def _reported(result, metric: str) -> list[tuple[int, float]]:
    """``(training_iteration, metric)`` of a finished trial's periodic (not ``final``) reports."""
    df = result.metrics_dataframe
    if df is None or metric not in df or "training_iteration" not in df:
        return []
    if "final" in df:
        df = df[df["final"].isna() | (df["final"] != 1)]
    df = df.dropna(subset=[metric])
    return [(int(t), float(v)) for t, v in zip(df["training_iteration"], df[metric])]


def report_trial(metrics: dict, checkpoint_dir: str | None = None) -> None:
    """Report from inside a trial (a kind's :class:`~mlops_ray.train.kinds.TrialSpec` function).

    The one place kinds reach Tune: with ``checkpoint_dir`` the directory becomes the trial's
    checkpoint (what :meth:`~mlops_ray.model.kinds.ModelKind.best_fitted` reads back).
    """
    from ray import tune

    checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    tune.report(metrics, checkpoint=checkpoint)


def _storage(where: str) -> str:
    """Tune's ``storage_path``: a local directory is created first; a URI (shared by every node) is not."""
    from mlops_ray.storage import Location

    Location.of(where).mkdir()
    return where


def tune_model(ctx: Context, spec: TrainingSpec, snapshot, *, register: bool = True):
    """Run ``spec.tune``'s search over ``spec.model`` on ``snapshot``; the best trial's model becomes a
    registered candidate (as ``spec.model_name``).

    Trials are ranked by ``tune.metric`` (default: the task's default metric) on the validation
    split, computed by :func:`~mlops_ray.model.metrics.compute_metrics`, the same function the
    gate and the reports use.
    """
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from mlops_ray.errors import TrainingError
    from mlops_ray.model.kinds import get_kind
    from mlops_ray.model.tabular import TabularModel
    from mlops_ray.model.tasks import METRIC_DIRECTIONS
    from mlops_ray.ray_runtime import alive_node_cpus, ensure_ray
    from mlops_ray.registry import tracking
    from mlops_ray.train.run import Candidate, evaluate, log_candidate, plan_for, register_candidate

    model_cfg, tune_cfg = spec.model, spec.tune
    parsed = parse_search_space(tune_cfg.search_space)
    if not parsed:
        raise ConfigError("tune.search_space is empty: add at least one parameter to search")
    ctx.client  # noqa: B018 - fail fast on an unusable tracking store
    snapshot.verify()  # SnapshotCorruptError before any trial starts
    ensure_ray()
    plan = plan_for(model_cfg, "local")
    total_cpus = int(sum(alive_node_cpus()))
    concurrent = max(1, min(tune_cfg.max_concurrent_trials, total_cpus))
    cpus_per_trial = max(1, total_cpus // concurrent)
    name = f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out_dir = ctx.run_dir("runs", name)
    task = snapshot.spec.task
    pre = snapshot.preprocessor()
    watch = tune_cfg.metric_for(task)
    maximize = METRIC_DIRECTIONS[watch]
    kind = get_kind(model_cfg.type)
    trial = kind.tune_trial(model_cfg, snapshot, pre, cpus_per_trial, out_dir, watch)
    trainable, max_t = tune.with_parameters(trial.fn, **trial.kwargs), trial.max_t
    metric, mode = f"valid-{watch}", ("max" if maximize else "min")
    rf = 2
    milestones = asha_milestones(max_t, min(3, max_t), rf) if tune_cfg.scheduler == "asha" and max_t > 1 else []
    scheduler = _asha_scheduler(metric, maximize, milestones, rf) if milestones else FIFOScheduler()
    has_grid = any(kind == "grid" for kind, _ in parsed.values())
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_trial}),
        param_space=to_tune_space(parsed),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=1 if tune_cfg.search_alg == "grid" and has_grid else tune_cfg.num_samples,
            scheduler=scheduler,
            # the cap is the generator's: Ray ignores max_concurrent_trials next to a generator instance
            search_alg=search_algorithm(model_cfg.seed, concurrent),
        ),
        run_config=tune.RunConfig(name=name, storage_path=_storage(ctx.workspace.shared_uri("ray", "tune")), verbose=0),
    )
    t0 = time.perf_counter()
    grid = list(tuner.fit())
    seconds = time.perf_counter() - t0
    # ASHA replayed in trial order on every trial's recorded rungs: a trial it stops is out even if
    # it ran to the end while its decision waited for an earlier trial (timing never picks the set).
    decisions = asha_decisions(
        [rung_values(_reported(r, metric), milestones) for r in grid], [True] * len(grid), rf, maximize
    )
    eliminated = {i for i, (kind, _) in enumerate(decisions) if kind == "stopped"}
    finished = [
        i
        for i, r in enumerate(grid)
        if r.error is None and r.checkpoint is not None and (r.metrics or {}).get("final") and i not in eliminated
    ]
    if not finished:
        errors = [str(r.error)[:300] for r in grid if r.error is not None]
        raise TrainingError(f"no tuning trial finished ({len(grid)} started); first errors: {errors[:3]}")
    # Ties broken by trial order, so the winner does not depend on completion order.
    best_i = sorted(finished, key=lambda i: ((-1 if maximize else 1) * grid[i].metrics[metric], i))[0]
    best = grid[best_i]

    with tracking.run(ctx, name, tags={"mlops_ray.kind": "tune"}) as parent:
        for i, r in enumerate(grid):
            with tracking.run(ctx, f"{name}-trial-{i}", nested=True, tags={"mlops_ray.kind": "trial"}):
                tracking.log_params({"trial": r.config})
                df = r.metrics_dataframe
                if df is not None and metric in df:
                    for step, v in enumerate(df[metric].dropna().tolist()):
                        tracking.log_metrics({metric: v}, step=step)
                tracking.set_tags(
                    {
                        "status": "error"
                        if r.error
                        else (
                            "stopped_early" if i in eliminated or not (r.metrics or {}).get("final") else "completed"
                        ),
                        "best": str(i == best_i),
                        "snapshot_id": snapshot.id,
                    }
                )
        with best.checkpoint.as_directory() as ck:
            fitted = kind.best_fitted(ck, out_dir, model_cfg, trial, best.config)
        model = TabularModel.from_parts(task, pre, kind, fitted.estimator)
        evaluation = evaluate(model, snapshot, seed=model_cfg.seed)
        trial_plan = type(plan)("local", 0, float(cpus_per_trial), cpus_per_trial, "tune trial")
        model_uri = log_candidate(
            spec.config_yaml,
            snapshot,
            model,
            fitted=fitted,
            plan=trial_plan,
            evaluation=evaluation,
            tags={
                "mlops_ray.kind": "tune",
                "param_overrides": json.dumps(best.config),
                "tune.num_trials": len(grid),
                "tune.metric": metric,
                "tune.best_metric": best.metrics[metric],
            },
        )
        tracking.log_metrics({"tune_seconds": seconds, f"best_{metric}": best.metrics[metric]})
        run_id = parent.info.run_id
    version = (
        register_candidate(ctx, spec.model_name, snapshot, run_id, model_uri, evaluation["metrics"])
        if register
        else None
    )
    return Candidate(
        run_id,
        model_uri,
        version,
        evaluation["metrics"],
        snapshot.id,
        trial_plan,
        {
            "trials": len(grid),
            "finished": len(finished),
            "stopped_early": sorted(eliminated),
            "best_index": best_i,
            "best_config": best.config,
            "tune_seconds": seconds,
            "metric": metric,
            "max_concurrent_trials": concurrent,
            "cpus_per_trial": cpus_per_trial,
            "trial_results": [
                {
                    "config": r.config,
                    "status": "error" if r.error else ("completed" if i in finished else "stopped_early"),
                    metric: (r.metrics or {}).get(metric) if i in finished else None,
                    "started_at": (r.metrics or {}).get("started_at"),
                    "ended_at": (r.metrics or {}).get("ended_at"),
                }
                for i, r in enumerate(grid)
            ],
        },
    )
