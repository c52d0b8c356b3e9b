"""Hyperparameter search with Ray Tune; every trial an MLflow child run under one parent.

Trials are function trainables that share :func:`~mlops_ray.train.xgboost_trainer.boost`
with Train's workers (so the best trial is reproducible through the normal training
path) and report the watched validation metric every ``report_every`` rounds, which
is what ASHA stops on. The driver logs all trials to MLflow after the search: Train
v2 rejects Tune's logger callbacks, and logging from one process means concurrent
trials never collide in the tracking store.

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
    dtrain, dvalid = make_dmatrix(train, feature_names, nthread), make_dmatrix(valid, feature_names, nthread)
    key = f"valid-{metric}"

    def score(model, upto: int | None = None) -> float:
        kw = {"iteration_range": (0, upto)} if upto else {}
        return compute_metrics(task, valid.y, model.inplace_predict(valid.x, **kw))[metric]

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            if (epoch + 1) % report_every == 0:
                tune.report({key: score(model, epoch + 1), "rounds": epoch + 1})
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
            {key: score(booster), "rounds": booster.num_boosted_rounds(), "final": 1},
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

    with tempfile.TemporaryDirectory() as tmp:
        fit_estimator(
            cfg_model["estimator"], dict(cfg_model["params"], **config), cfg_model["seed"], snapshot_path, manifest, tmp
        )
        snap = Snapshot(Path(snapshot_path), manifest)
        valid = load_split(snap, "valid", snap.preprocessor())
        kind = get_kind("sklearn")
        task = snap.spec.task
        m = compute_metrics(task, valid.y, kind.scores(kind.load(str(Path(tmp) / MODEL_FILE)), valid.x, task))
        tune.report({f"valid-{metric}": m[metric], "final": 1}, checkpoint=tune.Checkpoint.from_directory(tmp))


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
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

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
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(3, max_t), reduction_factor=2)
        if cfg.tune.scheduler == "asha" and max_t > 1
        else FIFOScheduler()
    )
    has_grid = any(kind == "grid" for kind, _ in parsed.values())
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_trial}),
        param_space=to_tune_space(parsed),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=1 if cfg.tune.search_alg == "grid" and has_grid else cfg.tune.num_samples,
            max_concurrent_trials=concurrent,
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(random_state=cfg.model.seed),
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(ctx.run_dir("ray", "tune")), verbose=0),
    )
    t0 = time.perf_counter()
    grid = list(tuner.fit())
    seconds = time.perf_counter() - t0
    finished = [
        i for i, r in enumerate(grid) if r.error is None and r.checkpoint is not None and (r.metrics or {}).get("final")
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
                        else ("stopped_early" if not (r.metrics or {}).get("final") else "completed"),
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
            "best_config": best.config,
            "tune_seconds": seconds,
            "metric": metric,
        },
    )
