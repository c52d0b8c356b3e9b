"""Shared set-up of the e2e service tests: a config over generated data, a trained and promoted
model in a workspace, and a running service on the test session's Ray cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from mlops_ray.data.generate import FEATURE_SPEC

FEATURES = FEATURE_SPEC["numeric"] + FEATURE_SPEC["categorical"]


def raw_config(name: str, src: Path, model_name: str, rounds: int, serve: dict) -> dict:
    """A pipeline config (as a mapping) over generated sample data at ``src``."""
    return {
        "data": {
            "name": name,
            "source": str(src),
            "id_column": "customer_id",
            "label_column": "label",
            "timestamp_column": "event_time",
            "numeric_features": FEATURE_SPEC["numeric"],
            "categorical_features": FEATURE_SPEC["categorical"],
        },
        "model": {"num_boost_round": rounds, "params": {"max_depth": 3}},
        "registry": {"model_name": model_name},
        "serve": serve,
    }


def train_and_promote(raw: dict, home: Path):
    """Prepare, train and promote v1 in workspace ``home``; returns ``(ctx, cfg, snapshot, version)``."""
    from mlops_ray.config import TrainingSpec, config_from_dict
    from mlops_ray.context import Context
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.registry import promotion
    from mlops_ray.train.run import train_model

    cfg = config_from_dict(raw)
    ctx = Context.create(cfg, workspace=home)
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    version = train_model(ctx, TrainingSpec.from_config(cfg), snap).version
    promotion.promote(ctx, cfg.registry, cfg.serve.model_alias, version)
    return ctx, cfg, snap, str(version)


@contextmanager
def running_service(raw: dict, home: Path) -> Iterator[dict]:
    """A trained, promoted model served on the current Ray cluster until the block ends."""
    from mlops_ray.serve.runner import start_service, stop_service

    ctx, cfg, snap, version = train_and_promote(raw, home)
    url = start_service(ctx, cfg)
    try:
        yield {"url": url, "cfg": cfg, "snap": snap, "ctx": ctx, "version": version}
    finally:
        stop_service()


def rows(snap, n: int = 20) -> pd.DataFrame:
    """``n`` raw feature rows of the snapshot's test split."""
    from mlops_ray.data.splits import load_split

    return load_split(snap, "test", snap.preprocessor(), keep_frame=True).frame[FEATURES].head(n)


def records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records"))
