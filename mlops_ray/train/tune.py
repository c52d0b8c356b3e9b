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
        "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(int(a[0]), int(a[1])), "quniform": lambda a: tune.quniform(*a),
        "choice": lambda a: tune.choice(a), "grid": lambda a: tune.grid_search(a),
    }
    return {k: build[kind](args) for k, (kind, args) in parsed.items()}


def _xgb_trial(config: dict, base: dict, train, valid, feature_names: list[str], report_every: int) -> None:
    """One Tune trial: boost with the sampled params, reporting every ``report_every`` rounds."""
    import tempfile
    from pathlib import Path

    import xgboost as xgb
    from ray import tune

    from mlops_ray.train.xgboost_trainer import boost, make_dmatrix

    loop = dict(base)
    loop["params"] = dict(base["params"], **{k: v for k, v in config.items() if k != "num_boost_round"})
    rounds = int(config.get("num_boost_round", base["num_boost_round"]))
    nthread = base["params"]["nthread"]
    dtrain, dvalid = make_dmatrix(train, feature_names, nthread), make_dmatrix(valid, feature_names, nthread)
    key = f"valid-{base['watch_metric']}"

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            if (epoch + 1) % report_every == 0:
                tune.report({key: evals_log["valid"][base["watch_metric"]][-1], "rounds": epoch + 1})
            return False

    history: dict = {}
    booster = boost(loop, dtrain, dvalid, rounds, history, callbacks=[Report()])
    with tempfile.TemporaryDirectory() as tmp:
        booster.save_model(str(Path(tmp) / "model.ubj"))
        (Path(tmp) / "history.json").write_text(json.dumps({"history": history, "rounds": booster.num_boosted_rounds(),
                                                            "best_iteration": int(booster.best_iteration)
                                                            if base.get("early_stopping_rounds") else None}))
        final = history["valid"][base["watch_metric"]]
        best = max(final) if base["maximize"] else min(final)
        tune.report({key: best, "rounds": booster.num_boosted_rounds(), "final": 1},
                    checkpoint=tune.Checkpoint.from_directory(tmp))


def _sk_trial(config: dict, cfg_model: dict, snapshot_path: str, manifest: dict, metric: str) -> None:
    import tempfile

    import joblib
    from ray import tune

    from mlops_ray.data.snapshot import Snapshot
    from mlops_ray.train.evaluate import compute_metrics
    from mlops_ray.train.features import load_split
    from mlops_ray.registry.pyfunc_model import TabularModel
    from mlops_ray.train.sklearn_trainer import fit_estimator

    with tempfile.TemporaryDirectory() as tmp:
        fit_estimator(cfg_model["estimator"], dict(cfg_model["params"], **config), cfg_model["seed"], snapshot_path,
                      manifest, tmp)
        from pathlib import Path

        snap = Snapshot(Path(snapshot_path), manifest)
        pre = snap.preprocessor()
        valid = load_split(snap, "valid", pre)
        est = joblib.load(Path(tmp) / "model.joblib")
        m = compute_metrics(manifest["spec"]["task"], valid.y, TabularModel.from_parts(manifest["spec"]["task"], pre, estimator=est).scores(valid.x))
        tune.report({f"valid-{metric}": m[metric], "final": 1}, checkpoint=tune.Checkpoint.from_directory(tmp))


def tune_model(cfg, *, snapshot_ref: str | None = None, register: bool = True):
    """Run the configured search; the best trial's model becomes the registered challenger."""
    import joblib
    import xgboost as xgb
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from mlops_ray.ray_runtime import alive_node_cpus, ensure_ray
    from mlops_ray.registry import tracking
    from mlops_ray.train.evaluate import METRIC_DIRECTIONS, primary_metric
    from mlops_ray.train.features import load_split
    from mlops_ray.registry.pyfunc_model import TabularModel
    from mlops_ray.train.run import CandidateResult, evaluate, log_candidate, plan_for, register_challenger, resolve_snapshot
    from mlops_ray.train.xgboost_trainer import loop_config
    from mlops_ray.workspace import get_workspace

    parsed = parse_search_space(cfg.tune.search_space)
    if not parsed:
        raise ConfigError("tune.search_space is empty: add at least one parameter to search")
    client = tracking.configure(cfg.mlflow)
    ensure_ray()
    snapshot = resolve_snapshot(cfg, snapshot_ref)
    plan = plan_for(cfg, "local")
    total_cpus = int(sum(alive_node_cpus()))
    concurrent = max(1, min(cfg.tune.max_concurrent_trials, total_cpus))
    cpus_per_trial = max(1, total_cpus // concurrent)
    name = f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out_dir = get_workspace().ensure("runs", name)
    task = snapshot.manifest["spec"]["task"]
    pre = snapshot.preprocessor()

    if cfg.model.type == "xgboost":
        base = loop_config(cfg, snapshot, cpus_per_trial, out_dir)
        watch, maximize = base["watch_metric"], base["maximize"]
        report_every = max(1, min(10, base["num_boost_round"] // 10))
        train = load_split(snapshot, "train", pre)
        valid = load_split(snapshot, "valid", pre)
        trainable = tune.with_parameters(_xgb_trial, base=base, train=train, valid=valid,
                                         feature_names=pre.feature_names, report_every=report_every)
        max_t = math.ceil(base["num_boost_round"] / report_every) + 1
    else:
        watch = primary_metric(task)
        maximize = METRIC_DIRECTIONS[watch]
        trainable = tune.with_parameters(_sk_trial, cfg_model=cfg.model.model_dump(), snapshot_path=str(snapshot.path),
                                         manifest=snapshot.manifest, metric=watch)
        max_t = 1
    metric, mode = f"valid-{watch}", ("max" if maximize else "min")
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(3, max_t),
                               reduction_factor=2)
                 if cfg.tune.scheduler == "asha" and max_t > 1 else FIFOScheduler())
    has_grid = any(kind == "grid" for kind, _ in parsed.values())
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_trial}),
        param_space=to_tune_space(parsed),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=1 if cfg.tune.search_alg == "grid" and has_grid
                                    else cfg.tune.num_samples, max_concurrent_trials=concurrent, scheduler=scheduler,
                                    search_alg=BasicVariantGenerator(random_state=cfg.model.seed)),
        run_config=tune.RunConfig(name=name, storage_path=str(get_workspace().ensure("ray", "tune")), verbose=0),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - t0
    finished = [r for r in grid if r.error is None and r.checkpoint is not None and r.metrics]
    if not finished:
        errors = [str(r.error)[:300] for r in grid if r.error is not None]
        raise ConfigError(f"no tuning trial finished; first errors: {errors[:3]}")
    best = (max if maximize else min)(finished, key=lambda r: r.metrics[metric])

    with tracking.run(name, tags={"mlops_ray.kind": "tune"}) as parent:
        for i, r in enumerate(grid):
            with tracking.run(f"{name}-trial-{i}", nested=True, tags={"mlops_ray.kind": "trial"}):
                tracking.log_params({"trial": r.config})
                df = r.metrics_dataframe
                if df is not None and metric in df:
                    for step, v in enumerate(df[metric].dropna().tolist()):
                        tracking.log_metrics({metric: v}, step=step)
                tracking.set_tags({"status": "error" if r.error else ("stopped_early" if not (r.metrics or {}).get("final")
                                                                      else "completed"),
                                   "best": str(r is best), "snapshot_id": snapshot.id})
        with best.checkpoint.as_directory() as ck:
            from pathlib import Path

            ck = Path(ck)
            if cfg.model.type == "xgboost":
                booster = xgb.Booster()
                booster.load_model(str(ck / "model.ubj"))
                (out_dir / "model.ubj").write_bytes((ck / "model.ubj").read_bytes())
                hist = json.loads((ck / "history.json").read_text())
                scorer, flavor, model_path, history = TabularModel.from_parts(task, pre, booster=booster), "xgboost", str(out_dir / "model.ubj"), hist["history"]
                params = {"xgboost": dict(base["params"], **{k: v for k, v in best.config.items() if k != "num_boost_round"}),
                          "num_boost_round": base["num_boost_round"], "rounds_trained": hist["rounds"]}
            else:
                (out_dir / "model.joblib").write_bytes((ck / "model.joblib").read_bytes())
                scorer = TabularModel.from_parts(task, pre, estimator=joblib.load(out_dir / "model.joblib"))
                flavor, model_path, history = "sklearn", str(out_dir / "model.joblib"), None
                params = {"estimator": cfg.model.estimator, **cfg.model.params, **best.config}
        evaluation = evaluate(scorer, snapshot, seed=cfg.model.seed)
        trial_plan = type(plan)("local", 0, float(cpus_per_trial), cpus_per_trial, "tune trial")
        model_uri = log_candidate(cfg, snapshot, scorer, flavor=flavor, model_path=model_path, params=params,
                                  history=history, plan=trial_plan, evaluation=evaluation,
                                  tags={"mlops_ray.kind": "tune", "param_overrides": json.dumps(best.config),
                                        "tune.num_trials": len(grid), "tune.best_metric": best.metrics[metric]})
        tracking.log_metrics({"tune_seconds": seconds, f"best_{metric}": best.metrics[metric]})
        run_id = parent.info.run_id
    version = register_challenger(cfg, client, snapshot, run_id, model_uri, evaluation["metrics"]) if register else None
    return CandidateResult(run_id, model_uri, version, evaluation["metrics"], snapshot.id, trial_plan,
                           {"trials": len(grid), "finished": len(finished), "best_config": best.config,
                            "tune_seconds": seconds})
