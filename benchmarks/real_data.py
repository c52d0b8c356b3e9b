"""Model quality on real data: mlops-ray's default config vs plain baselines on the same split rows.

    .venv/bin/python benchmarks/real_data.py

scikit-learn's bundled datasets (no download): breast_cancer (binary, 569 rows), wine (multiclass,
178 rows), diabetes (regression, 442 rows), and breast_cancer with a categorical column derived
from a binned feature (10% missing, a few rare values). Each is written as CSV with string ids
(``id-0001``) and as 3 Parquet shards; both are prepared (same content: same fingerprint and
splits) and one goes through ``prepare -> train -> promote`` with the default config (only the
data section and ``registry.model_name``). The baselines are fitted on exactly the rows of the
snapshot's train/valid/test split files, from their raw columns (not mlops-ray's preprocessing):
plain ``xgboost.train`` (same objective, early stopping on logloss / mlogloss / rmse on valid),
scikit-learn ``HistGradientBoosting*`` (early stopping on valid) and a linear model
(``LogisticRegression`` / ``Ridge`` on imputed, scaled, one-hot features). The table compares
mlops-ray's test metrics with the best boosted-tree baseline per metric (the same model family:
what the margins check), and shows the best of all baselines, the linear model included (on
these small, nearly linear sets it often has the lowest logloss; that is a modelling choice, not
a defect of the pipeline).

``tests/integration/test_real_data_quality.py`` runs the same comparison and asserts the margins
in :data:`MARGINS`; with ``MLOPS_RAY_WRITE_RESULTS=1`` it writes the JSON this script writes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlops_ray.context import Context

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "real_data.json"
FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}
MIN_TREES = 10  # a handful of trees is the symptom of early stopping on a plateauing metric
BOOSTED = ("xgboost.train", "HistGradientBoosting")  # the baselines the margins compare with

# metric -> (direction, how far mlops-ray may be from the best baseline)
MARGINS = {
    "accuracy": "mlops-ray >= baseline - max(0.03, 1 / test rows)  (one more misclassified row at most)",
    "logloss": "mlops-ray <= baseline * 1.15 + 0.02",
    "rmse": "mlops-ray <= baseline * 1.10",
}
CHECKED = {"binary": ("accuracy", "logloss"), "multiclass": ("accuracy", "logloss"), "regression": ("rmse",)}
REPORTED = {
    "binary": ("accuracy", "logloss", "auc"),
    "multiclass": ("accuracy", "logloss"),
    "regression": ("rmse", "r2"),
}


@dataclass(frozen=True)
class Case:
    name: str
    task: str
    frame: pd.DataFrame  # id, features..., label
    train_format: str  # which written copy goes through train -> promote


def _frame(loader, *, task: str) -> pd.DataFrame:
    bunch = loader(as_frame=True)
    x = bunch.data.copy()
    x.columns = [str(c).replace(" ", "_") for c in x.columns]
    ids = [f"id-{i + 1:04d}" for i in range(len(x))]
    y = bunch.target.astype(int if task != "regression" else float)
    return pd.concat(
        [pd.Series(ids, name="id"), x.reset_index(drop=True), y.rename("label").reset_index(drop=True)], axis=1
    )


def _with_category(df: pd.DataFrame, column: str, seed: int = 0) -> pd.DataFrame:
    """Replace ``column`` by a category from its quintiles; 10% missing, 5 rows with rare values."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    cat = pd.qcut(out[column], 5, labels=[f"q{i}" for i in range(5)]).astype(object)
    idx = rng.permutation(len(out))
    cat.iloc[idx[: len(out) // 10]] = None
    for k, i in enumerate(idx[len(out) // 10 : len(out) // 10 + 5]):
        cat.iloc[i] = f"rare-{k}"
    pos = out.columns.get_loc(column)
    out = out.drop(columns=[column])
    out.insert(pos, f"{column}_band", cat)
    return out


CASE_NAMES = ("breast_cancer", "wine", "diabetes", "breast_cancer+category")


def cases() -> list[Case]:
    from sklearn import datasets

    cancer = _frame(datasets.load_breast_cancer, task="binary")
    return [
        Case("breast_cancer", "binary", cancer, "csv"),
        Case("wine", "multiclass", _frame(datasets.load_wine, task="multiclass"), "parquet"),
        Case("diabetes", "regression", _frame(datasets.load_diabetes, task="regression"), "csv"),
        Case("breast_cancer+category", "binary", _with_category(cancer, "mean_radius"), "parquet"),
    ]


def write_sources(case: Case, root: Path) -> dict[str, Path]:
    """The case as one CSV file and as a directory of 3 Parquet shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = root / case.name.replace("+", "_")
    base.mkdir(parents=True, exist_ok=True)
    csv = base / "data.csv"
    case.frame.to_csv(csv, index=False)
    shards = base / "parquet"
    shards.mkdir(exist_ok=True)
    table = pa.Table.from_pandas(case.frame, preserve_index=False)
    step = -(-table.num_rows // 3)
    for k in range(3):
        pq.write_table(table.slice(k * step, step), shards / f"part-{k}.parquet")
    return {"csv": csv, "parquet": shards}


def config_for(case: Case, source: Path, fmt: str):
    from mlops_ray.config import config_from_dict

    data = {
        "name": f"{case.name.replace('+', '_')}-{fmt}",
        "source": str(source),
        "format": fmt,
        "id_column": "id",
        "label_column": "label",
        "task": case.task,
        "split": {"fractions": FRACTIONS},
    }
    return config_from_dict({"data": data, "registry": {"model_name": f"real-{case.name.replace('+', '-')}"}})


# ------------------------------------------------------------------ baselines
def split_frames(snapshot) -> dict[str, pd.DataFrame]:
    """The raw rows of each split file of ``snapshot`` (what mlops-ray trained and scored on)."""
    from mlops_ray.data.splits import load_split

    pre = snapshot.preprocessor()
    return {s: load_split(snapshot, s, pre, keep_frame=True).frame for s in ("train", "valid", "test")}


def _xy(frame: pd.DataFrame, spec, *, category_dtype: bool):
    x = frame[list(spec.features)].copy()
    for c in spec.numeric_features:
        x[c] = pd.to_numeric(x[c], errors="coerce").astype(float)
    if category_dtype:
        for c in spec.categorical_features:
            x[c] = x[c].astype("category")
    return x, frame[spec.label_column].to_numpy()


def _score(task: str, model, x) -> np.ndarray:
    if task == "binary":
        return model.predict_proba(x)[:, 1]
    if task == "multiclass":
        return model.predict_proba(x)
    return model.predict(x)


def baselines(snapshot, frames: dict[str, pd.DataFrame], seed: int = 0) -> dict[str, dict[str, float]]:
    """Test metrics of plain XGBoost, HistGradientBoosting and a linear model fitted on the split rows."""
    import xgboost as xgb
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from mlops_ray.model.metrics import compute_metrics

    spec, task = snapshot.spec, snapshot.spec.task
    cats = list(spec.categorical_features)
    # all categories of the categorical columns, so that every split's category codes agree
    levels = {c: sorted({v for f in frames.values() for v in f[c].dropna().astype(str)}) for c in cats}

    def xy(split, category_dtype=True):
        x, y = _xy(frames[split], spec, category_dtype=False)
        for c in cats:
            x[c] = x[c].astype(object).where(x[c].notna(), None)
            if category_dtype:
                x[c] = pd.Categorical(x[c].astype("string").astype(object), categories=levels[c])
        return x, y

    (xtr, ytr), (xva, yva), (xte, yte) = xy("train"), xy("valid"), xy("test")
    out: dict[str, dict[str, float]] = {}

    # plain xgboost.train: native missing values and categories, early stopping on a proper scoring rule
    num_class = int(max(ytr.max(), yva.max(), yte.max()) + 1) if task == "multiclass" else None
    objective, metric = {
        "binary": ("binary:logistic", "logloss"),
        "multiclass": ("multi:softprob", "mlogloss"),
        "regression": ("reg:squarederror", "rmse"),
    }[task]
    params = {"objective": objective, "eval_metric": metric, "tree_method": "hist", "seed": seed, "nthread": 2}
    if num_class:
        params["num_class"] = num_class
    dm = {s: xgb.DMatrix(x, label=y, enable_categorical=True) for s, x, y in (("tr", xtr, ytr), ("va", xva, yva))}
    booster = xgb.train(
        params,
        dm["tr"],
        num_boost_round=1000,
        evals=[(dm["va"], "valid")],
        early_stopping_rounds=20,
        verbose_eval=False,
    )
    pred = booster.predict(xgb.DMatrix(xte, enable_categorical=True), iteration_range=(0, booster.best_iteration + 1))
    out["xgboost.train"] = {**compute_metrics(task, yte, pred), "trees": booster.best_iteration + 1}

    # HistGradientBoosting: native missing values and categories; early stopping on the valid rows
    # (its own early stopping scores a split of the train rows), by warm-started steps of 10 trees
    hgb_cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    hgb = hgb_cls(categorical_features="from_dtype", early_stopping=False, warm_start=True, random_state=seed)
    best, best_iter, since = np.inf, 0, 0
    for it in range(10, 1001, 10):
        hgb.set_params(max_iter=it).fit(xtr, ytr)
        loss = _loss(task, yva, _score(task, hgb, xva))
        if loss < best - 1e-12:
            best, best_iter, since = loss, it, 0
        elif (since := since + 10) >= 20:
            break
    hgb = hgb_cls(categorical_features="from_dtype", early_stopping=False, max_iter=best_iter, random_state=seed)
    hgb.fit(xtr, ytr)
    out["HistGradientBoosting"] = {**compute_metrics(task, yte, _score(task, hgb, xte)), "trees": best_iter}

    # linear model on imputed, scaled, one-hot features (the C / alpha with the best valid loss)
    def linear(c):
        prep = ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), list(spec.numeric_features)),
                *(
                    [
                        (
                            "cat",
                            make_pipeline(
                                SimpleImputer(strategy="constant", fill_value="__missing__"),
                                OneHotEncoder(handle_unknown="ignore"),
                            ),
                            cats,
                        )
                    ]
                    if cats
                    else []
                ),
            ]
        )
        est = Ridge(alpha=1 / c) if task == "regression" else LogisticRegression(C=c, max_iter=5000)
        return make_pipeline(prep, est)

    xtr_o, _ = xy("train", category_dtype=False)
    xva_o, _ = xy("valid", category_dtype=False)
    xte_o, _ = xy("test", category_dtype=False)
    fitted = []
    for c in (0.01, 0.1, 1.0, 10.0, 100.0):
        m = linear(c).fit(xtr_o, ytr)
        fitted.append((_loss(task, yva, _score(task, m, xva_o)), c, m))
    _, c, m = min(fitted, key=lambda t: (t[0], t[1]))
    name = "Ridge" if task == "regression" else "LogisticRegression"
    out[name] = {**compute_metrics(task, yte, _score(task, m, xte_o)), "C" if task != "regression" else "alpha": c}
    return out


def _loss(task: str, y, score) -> float:
    from mlops_ray.model.metrics import compute_metrics

    m = compute_metrics(task, y, score)
    return m["rmse"] if task == "regression" else m["logloss"]


# ------------------------------------------------------------------ comparison
def best_baseline(metric: str, base: dict[str, dict[str, float]], among=None) -> tuple[str, float]:
    from mlops_ray.model.tasks import METRIC_DIRECTIONS

    pick = max if METRIC_DIRECTIONS[metric] else min
    name = pick([k for k in base if among is None or k in among], key=lambda k: base[k][metric])
    return name, base[name][metric]


def min_trees(base: dict[str, dict[str, float]]) -> int:
    """Trees mlops-ray must keep: :data:`MIN_TREES`, or fewer when plain XGBoost itself stops earlier."""
    return min(MIN_TREES, int(base["xgboost.train"]["trees"]))


def within_margin(metric: str, ours: float, baseline: float, test_rows: int) -> bool:
    if metric == "accuracy":
        return ours >= baseline - max(0.03, 1.0 / test_rows) - 1e-12
    if metric == "logloss":
        return ours <= baseline * 1.15 + 0.02
    if metric == "rmse":
        return ours <= baseline * 1.10
    raise ValueError(metric)


def compare(case: Case, ours: dict[str, float], base: dict, test_rows: int, trees: int) -> list[dict]:
    """Table rows (one per reported metric); ``ok`` is None for metrics without a margin."""
    rows = []
    for metric in REPORTED[case.task]:
        who, value = best_baseline(metric, base, BOOSTED)
        any_who, any_value = best_baseline(metric, base)
        mine = ours[f"test_{metric}"]
        rows.append(
            {
                "dataset": case.name,
                "task": case.task,
                "format": case.train_format,
                "metric": metric,
                "mlops_ray": mine,
                "baseline": value,
                "baseline_model": who,
                "best_any": any_value,
                "best_any_model": any_who,
                "ratio": mine / value if value else float("nan"),
                "test_rows": test_rows,
                "trees": trees,
                "baseline_trees": int(base["xgboost.train"]["trees"]),
                "ok": within_margin(metric, mine, value, test_rows) if metric in CHECKED[case.task] else None,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| dataset | task | source | test rows | metric | mlops-ray | boosted baseline | ratio | best of all "
        "| trees (plain XGBoost) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['task']} | {r['format']} | {r['test_rows']} | {r['metric']} | "
            f"{r['mlops_ray']:.4f} | {r['baseline']:.4f} ({r['baseline_model']}) | {r['ratio']:.3f} | "
            f"{r['best_any']:.4f} ({r['best_any_model']}) | {r['trees']} ({r['baseline_trees']}) |"
        )
    return "\n".join(lines)


def write_results(rows: list[dict], seconds: float, path: Path = RESULTS) -> None:
    import importlib.metadata as md

    path.parent.mkdir(parents=True, exist_ok=True)
    versions = {p: md.version(p) for p in ("ray", "xgboost", "scikit-learn", "mlflow")}
    doc = {
        "benchmark": "real_data",
        "fractions": FRACTIONS,
        "margins": MARGINS,
        "min_trees": f"min({MIN_TREES}, trees kept by plain xgboost.train)",
        "boosted_baselines": list(BOOSTED),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), **versions},
        "seconds": seconds,
        "rows": rows,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


# ------------------------------------------------------------------ the mlops-ray path
def run_case(ctx: Context, case: Case, root: Path) -> dict:
    """Prepare both copies, check they hold the same content, train + promote one; compare."""
    from mlops_ray.config import TrainingSpec
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.registry import promotion
    from mlops_ray.train.run import train_model

    paths = write_sources(case, root)
    snaps = {}
    for fmt, path in paths.items():
        cfg = config_for(case, path, fmt)
        snaps[fmt] = (cfg, prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot)
    cfg, snap = snaps[case.train_format]
    other = snaps["parquet" if case.train_format == "csv" else "csv"][1]
    same = (
        snap.manifest["fingerprint"] == other.manifest["fingerprint"]
        and snap.manifest["rows_per_split"] == other.manifest["rows_per_split"]
    )
    cand = train_model(ctx, TrainingSpec.from_config(cfg), snap)
    promoted = promotion.promote(ctx, cfg.registry, cfg.serve.model_alias, cand.version)
    params = ctx.client.get_run(cand.run_id).data.params
    trees = int(params["model.rounds_trained"])
    frames = split_frames(snap)
    base = baselines(snap, frames)
    rows = compare(case, cand.metrics, base, len(frames["test"]), trees)
    return {
        "case": case,
        "rows": rows,
        "baselines": base,
        "trees": trees,
        "same_content_csv_parquet": same,
        "promoted": promoted.decision.promote,
        "early_stopping_metric": params.get("model.early_stopping_metric"),
        "snapshot": snap,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLOPS_RAY_PROGRESS", "0")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mlops-bench-real-"))

    from mlops_ray.context import Context
    from mlops_ray.ray_runtime import ensure_ray

    t0 = time.perf_counter()
    ensure_ray(num_cpus=2)
    rows, problems = [], []
    for case in cases():
        cfg = config_for(case, workdir / "unused", "csv")
        ctx = Context.create(cfg, workspace=workdir / "ws")
        res = run_case(ctx, case, workdir / "src")
        rows += res["rows"]
        problems += [f"{r['dataset']} {r['metric']}" for r in res["rows"] if r["ok"] is False]
        if res["trees"] < min_trees(res["baselines"]):
            problems.append(f"{case.name}: {res['trees']} trees")
        if not res["same_content_csv_parquet"]:
            problems.append(f"{case.name}: CSV and Parquet copies prepared to different content")
    seconds = time.perf_counter() - t0
    print(format_table(rows))
    print(f"\n{seconds:.1f}s; margins: " + "; ".join(f"{k}: {v}" for k, v in MARGINS.items()))
    write_results(rows, seconds, Path(args.out))
    if problems:
        print("outside the margins: " + ", ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
