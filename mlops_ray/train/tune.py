"""Hyperparameter search with Ray Tune; every trial an MLflow child run under one parent.

Trials are function trainables that share :func:`~mlops_ray.train.xgboost_trainer.boost`
with Train's workers (so the best trial is reproducible through the normal training
path) and report the watched validation metric every ``report_every`` rounds, which
is what ASHA stops on. The driver logs all trials to MLflow after the search: Train
v2 rejects Tune's logger callbacks, and logging from one process means concurrent
trials never collide in the tracking store.

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
from typing import Any

from mlops_ray.errors import ConfigError

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


def _xgb_trial(
    config: dict, base: dict, train, valid, feature_names: list[str], report_every: int, task: str, metric: str
) -> None:
    """One Tune trial: boost with the sampled params; every ``report_every`` rounds report ``metric``
    (our metric name, e.g. ``auc``) computed on the validation split by the model so far."""
    import tempfile
    from pathlib import Path

    import xgboost as xgb
    from ray import tune

    from mlops_ray.model.metrics import compute_metrics
    from mlops_ray.train.xgboost_trainer import boost, make_dmatrix

    loop = dict(base)
    loop["params"] = dict(base["params"], **{k: v for k, v in config.items() if k != "num_boost_round"})
    rounds = int(config.get("num_boost_round", base["num_boost_round"]))
    nthread = base["params"]["nthread"]
    started = time.time()
    dtrain, dvalid = make_dmatrix(train, feature_names, nthread), make_dmatrix(valid, feature_names, nthread)
    key = f"valid-{metric}"

    def score(model, upto: int | None = None) -> float:
        kw = {"iteration_range": (0, upto)} if upto else {}
        return compute_metrics(task, valid.y, model.inplace_predict(valid.x, **kw))[metric]

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            if (epoch + 1) % report_every == 0:
                tune.report({key: score(model, epoch + 1), "rounds": epoch + 1, "final": 0, "started_at": started})
            return False

    history: dict = {}
    booster = boost(loop, dtrain, dvalid, rounds, history, callbacks=[Report()])
    with tempfile.TemporaryDirectory() as tmp:
        booster.save_model(str(Path(tmp) / "model.ubj"))
        (Path(tmp) / "history.json").write_text(
            json.dumps(
                {
                    "history": history,
                    "rounds": booster.num_boosted_rounds(),
                    "best_iteration": int(booster.best_iteration) if base.get("early_stopping_rounds") else None,
                }
            )
        )
        # The final (early-stopped, best-iteration) model is what would be registered: rank by it.
        tune.report(
            {
                key: score(booster),
                "rounds": booster.num_boosted_rounds(),
                "final": 1,
                "started_at": started,
                "ended_at": time.time(),
            },
            checkpoint=tune.Checkpoint.from_directory(tmp),
        )


def _sk_trial(config: dict, cfg_model: dict, snapshot_path: str, manifest: dict, metric: str) -> None:
    import tempfile
    from pathlib import Path

    from ray import tune

    from mlops_ray.data.snapshot import Snapshot
    from mlops_ray.data.splits import load_split
    from mlops_ray.model.kinds import get_kind
    from mlops_ray.model.metrics import compute_metrics
    from mlops_ray.train.sklearn_trainer import MODEL_FILE, fit_estimator

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        fit_estimator(
            cfg_model["estimator"], dict(cfg_model["params"], **config), cfg_model["seed"], snapshot_path, manifest, tmp
        )
        snap = Snapshot(Path(snapshot_path), manifest)
        valid = load_split(snap, "valid", snap.preprocessor())
        kind = get_kind("sklearn")
        task = snap.spec.task
        m = compute_metrics(task, valid.y, kind.scores(kind.load(str(Path(tmp) / MODEL_FILE)), valid.x, task))
        tune.report(
            {f"valid-{metric}": m[metric], "final": 1, "started_at": started, "ended_at": time.time()},
            checkpoint=tune.Checkpoint.from_directory(tmp),
        )


def _xgb_trainable(cfg, snapshot, pre, cpus_per_trial: int, out_dir, metric: str):
    """(trainable, max_t, base loop config) for XGBoost trials."""
    from ray import tune

    from mlops_ray.data.splits import load_split
    from mlops_ray.train.xgboost_trainer import loop_config

    base = loop_config(cfg, snapshot, cpus_per_trial, out_dir)
    report_every = max(1, min(10, base["num_boost_round"] // 10))
    train, valid = load_split(snapshot, "train", pre), load_split(snapshot, "valid", pre)
    trainable = tune.with_parameters(
        _xgb_trial,
        base=base,
        train=train,
        valid=valid,
        feature_names=pre.feature_names,
        report_every=report_every,
        task=snapshot.spec.task,
        metric=metric,
    )
    return trainable, math.ceil(base["num_boost_round"] / report_every) + 1, base


def _sk_trainable(cfg, snapshot, pre, cpus_per_trial: int, out_dir, metric: str):
    from ray import tune

    trainable = tune.with_parameters(
        _sk_trial,
        cfg_model=cfg.model.model_dump(),
        snapshot_path=str(snapshot.path),
        manifest=snapshot.manifest,
        metric=metric,
    )
    return trainable, 1, None


_TRAINABLES = {"xgboost": _xgb_trainable, "sklearn": _sk_trainable}


def _best_fitted(kind, ck, out_dir, cfg, base: dict | None, best_config: dict):
    """The best trial's checkpoint as a :class:`~mlops_ray.train.kinds.Fitted` in the run directory."""
    from pathlib import Path

    from mlops_ray.train.kinds import Fitted

    ck = Path(ck)
    path = out_dir / kind.model_file
    path.write_bytes((ck / kind.model_file).read_bytes())
    estimator = kind.load(str(path))
    if base is not None:  # boosted: history + rounds from the trial
        hist = json.loads((ck / "history.json").read_text())
        params = {
            "xgboost": dict(base["params"], **{k: v for k, v in best_config.items() if k != "num_boost_round"}),
            "num_boost_round": base["num_boost_round"],
            "rounds_trained": hist["rounds"],
        }
        return Fitted(estimator, path, params, hist["history"])
    return Fitted(estimator, path, {"estimator": cfg.model.estimator, **cfg.model.params, **best_config})


def tune_model(ctx, cfg, snapshot, *, register: bool = True):
    """Run the configured search on ``snapshot``; the best trial's model becomes a registered candidate.

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

    parsed = parse_search_space(cfg.tune.search_space)
    if not parsed:
        raise ConfigError("tune.search_space is empty: add at least one parameter to search")
    ctx.client  # noqa: B018 - fail fast on an unusable tracking store
    snapshot.verify()  # SnapshotCorruptError before any trial starts
    ensure_ray()
    plan = plan_for(cfg, "local")
    total_cpus = int(sum(alive_node_cpus()))
    concurrent = max(1, min(cfg.tune.max_concurrent_trials, total_cpus))
    cpus_per_trial = max(1, total_cpus // concurrent)
    name = f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out_dir = ctx.run_dir("runs", name)
    task = snapshot.spec.task
    pre = snapshot.preprocessor()
    watch = cfg.tune.metric_for(task)
    maximize = METRIC_DIRECTIONS[watch]
    trainable, max_t, base = _TRAINABLES[cfg.model.type](cfg, snapshot, pre, cpus_per_trial, out_dir, watch)
    metric, mode = f"valid-{watch}", ("max" if maximize else "min")
    rf = 2
    milestones = asha_milestones(max_t, min(3, max_t), rf) if cfg.tune.scheduler == "asha" and max_t > 1 else []
    scheduler = _asha_scheduler(metric, maximize, milestones, rf) if milestones else FIFOScheduler()
    has_grid = any(kind == "grid" for kind, _ in parsed.values())
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_trial}),
        param_space=to_tune_space(parsed),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=1 if cfg.tune.search_alg == "grid" and has_grid else cfg.tune.num_samples,
            scheduler=scheduler,
            # the cap is the generator's: Ray ignores max_concurrent_trials next to a generator instance
            search_alg=search_algorithm(cfg.model.seed, concurrent),
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(ctx.run_dir("ray", "tune")), verbose=0),
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

    kind = get_kind(cfg.model.type)
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
            fitted = _best_fitted(kind, ck, out_dir, cfg, base, best.config)
        model = TabularModel.from_parts(task, pre, kind, fitted.estimator)
        evaluation = evaluate(model, snapshot, seed=cfg.model.seed)
        trial_plan = type(plan)("local", 0, float(cpus_per_trial), cpus_per_trial, "tune trial")
        model_uri = log_candidate(
            cfg,
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
    version = register_candidate(ctx, cfg, snapshot, run_id, model_uri, evaluation["metrics"]) if register else None
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
