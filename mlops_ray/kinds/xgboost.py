"""The ``xgboost`` model kind: boosters trained with Ray Train (local or distributed), tuned per round.

Model side: a booster saved as UBJSON (``model.ubj``) and scored with ``inplace_predict`` on one
thread. Train side: :mod:`mlops_ray.train.xgboost_trainer` (Ray Train v2, local mode or workers);
Tune trials boost in the Tune worker and report the watched metric every ``report_every`` rounds,
which is what ASHA stops on. Every training import is inside a method: the pyfunc imports this
module in every replica.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ray.model.kinds import ModelKind

if TYPE_CHECKING:
    from mlops_ray.config import ModelConfig

# XGBoost parameters whose type and range are documented (model.params is checked at load time;
# keys not listed here are passed through, and XGBoost's own rejection becomes a TrainingError).
# (kind, low, high, low_inclusive): kind "int" | "float"; None = unbounded.
_XGB_NUMERIC: dict[str, tuple[str, float | None, float | None, bool]] = {
    "max_depth": ("int", 0, None, True),
    "max_leaves": ("int", 0, None, True),
    "max_bin": ("int", 2, None, True),
    "num_parallel_tree": ("int", 1, None, True),
    "seed": ("int", None, None, True),
    "random_state": ("int", None, None, True),
    "nthread": ("int", 0, None, True),
    "verbosity": ("int", 0, 3, True),
    "eta": ("float", 0, None, True),
    "learning_rate": ("float", 0, None, True),
    "min_child_weight": ("float", 0, None, True),
    "subsample": ("float", 0, 1, False),
    "colsample_bytree": ("float", 0, 1, False),
    "colsample_bylevel": ("float", 0, 1, False),
    "colsample_bynode": ("float", 0, 1, False),
    "lambda": ("float", 0, None, True),
    "reg_lambda": ("float", 0, None, True),
    "alpha": ("float", 0, None, True),
    "reg_alpha": ("float", 0, None, True),
    "gamma": ("float", 0, None, True),
    "min_split_loss": ("float", 0, None, True),
    "scale_pos_weight": ("float", 0, None, True),
    "max_delta_step": ("float", 0, None, True),
    "base_score": ("float", None, None, True),
}
_XGB_CHOICES: dict[str, tuple[str, ...]] = {
    "tree_method": ("auto", "exact", "approx", "hist"),
    "grow_policy": ("depthwise", "lossguide"),
    "booster": ("gbtree", "gblinear", "dart"),
    "sampling_method": ("uniform", "gradient_based"),
}


def xgboost_param_problems(params: dict[str, Any]) -> list[str]:
    """One line per known XGBoost parameter with a wrong type or out-of-range value (empty: fine)."""
    out = []
    for key, value in params.items():
        shown = f"got {type(value).__name__} {value!r}"
        if key in _XGB_NUMERIC:
            kind, lo, hi, lo_incl = _XGB_NUMERIC[key]
            ok_type = int if kind == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, ok_type):
                out.append(f"{key}: must be {'an integer' if kind == 'int' else 'a number'}, {shown}")
                continue
            below = lo is not None and (value < lo if lo_incl else value <= lo)
            if below or (hi is not None and value > hi) or value != value:
                lo_s = "" if lo is None else f"{lo} {'<=' if lo_incl else '<'} "
                hi_s = "" if hi is None else f" <= {hi}"
                out.append(f"{key}: must be {lo_s}{key}{hi_s}, {shown}")
        elif key in _XGB_CHOICES and value not in _XGB_CHOICES[key]:
            out.append(f"{key}: must be one of {list(_XGB_CHOICES[key])}, {shown}")
        elif key == "objective" and not isinstance(value, str):
            out.append(f"{key}: must be a string, {shown}")
        elif key == "eval_metric" and not (
            isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
        ):
            out.append(f"{key}: must be a metric name or a non-empty list of them, {shown}")
    return out


class XGBoostKind(ModelKind):
    name = "xgboost"
    model_file = "model.ubj"
    packages = ("xgboost",)
    distributed = True

    # ------------------------------------------------------------ model side
    def load(self, path: str):
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(path)
        booster.set_param({"nthread": 1})
        return booster

    def save(self, booster, path: str) -> None:
        booster.save_model(path)

    def raw_scores(self, booster, x: np.ndarray, task: str) -> np.ndarray:
        return np.asarray(booster.inplace_predict(x))

    # ------------------------------------------------------------ config
    def param_problems(self, params: dict[str, Any]) -> list[str]:
        return xgboost_param_problems(params)

    # ------------------------------------------------------------ train side
    def fit(
        self,
        model: ModelConfig,
        snapshot,
        plan,
        out_dir: Path,
        *,
        run_name: str,
        storage: Path,
        overrides: dict | None = None,
    ):
        from mlops_ray.train.kinds import Fitted
        from mlops_ray.train.xgboost_trainer import fit_xgboost, loop_config

        res = fit_xgboost(model, snapshot, plan, out_dir, run_name=run_name, storage=storage, param_overrides=overrides)
        loop = loop_config(model, snapshot, plan.nthread, out_dir, overrides)
        params = {
            "xgboost": loop["params"],
            "num_boost_round": loop["num_boost_round"],
            "rounds_trained": res.meta["rounds"],
            "best_iteration": res.meta["best_iteration"],
            "early_stopping_metric": loop["watch_metric"],
            # > 0 when Ray Train restarted the worker group from a checkpoint after a failure
            "resumed_from_round": res.meta["resumed_from_round"],
        }
        return Fitted(res.booster, out_dir / self.model_file, params, res.history, res.seconds, res.meta)

    def fit_fold(
        self, model: ModelConfig, snapshot, pre, train, test, nthread: int, overrides: dict | None = None
    ) -> np.ndarray:
        from mlops_ray.train.xgboost_trainer import boost, loop_config, make_dmatrix

        loop = loop_config(model, snapshot, nthread, "", overrides)
        booster = boost(
            loop,
            make_dmatrix(train, pre.feature_names, nthread),
            make_dmatrix(test, pre.feature_names, nthread),
            loop["num_boost_round"],
            {},
        )
        return self.scores(booster, test.x, snapshot.spec.task)

    def tune_trial(self, model: ModelConfig, snapshot, pre, cpus_per_trial: int, out_dir: Path, metric: str):
        from mlops_ray.data.splits import load_split
        from mlops_ray.train.kinds import TrialSpec
        from mlops_ray.train.xgboost_trainer import loop_config

        base = loop_config(model, snapshot, cpus_per_trial, out_dir)
        report_every = max(1, min(10, base["num_boost_round"] // 10))
        kwargs = {
            "base": base,
            "train": load_split(snapshot, "train", pre),
            "valid": load_split(snapshot, "valid", pre),
            "feature_names": pre.feature_names,
            "report_every": report_every,
            "task": snapshot.spec.task,
            "metric": metric,
        }
        return TrialSpec(_trial, kwargs, math.ceil(base["num_boost_round"] / report_every) + 1, base)

    def best_fitted(self, checkpoint_dir: Path, out_dir: Path, model: ModelConfig, spec, best_config: dict):
        from mlops_ray.train.kinds import Fitted

        ck, base = Path(checkpoint_dir), spec.state
        path = out_dir / self.model_file
        path.write_bytes((ck / self.model_file).read_bytes())
        hist = json.loads((ck / "history.json").read_text())
        params = {
            "xgboost": dict(base["params"], **{k: v for k, v in best_config.items() if k != "num_boost_round"}),
            "num_boost_round": base["num_boost_round"],
            "rounds_trained": hist["rounds"],
        }
        return Fitted(self.load(str(path)), path, params, hist["history"])


def _trial(
    config: dict, base: dict, train, valid, feature_names: list[str], report_every: int, task: str, metric: str
) -> None:
    """One Tune trial: boost with the sampled params; every ``report_every`` rounds report ``metric``
    (our metric name, e.g. ``auc``) computed on the validation split by the model so far."""
    import tempfile

    import xgboost as xgb

    from mlops_ray.model.metrics import compute_metrics
    from mlops_ray.train.tune import report_trial
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
                report_trial({key: score(model, epoch + 1), "rounds": epoch + 1, "final": 0, "started_at": started})
            return False

    history: dict = {}
    booster = boost(loop, dtrain, dvalid, rounds, history, callbacks=[Report()])
    with tempfile.TemporaryDirectory() as tmp:
        booster.save_model(str(Path(tmp) / XGBoostKind.model_file))
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
        report_trial(
            {
                key: score(booster),
                "rounds": booster.num_boosted_rounds(),
                "final": 1,
                "started_at": started,
                "ended_at": time.time(),
            },
            checkpoint_dir=tmp,
        )
