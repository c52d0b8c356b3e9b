"""A third-party model kind end to end: one module (tests/toy_kind.py) plus one registration line.

The toy kind (scikit-learn's HistGradientBoosting with native categorical splits) is trained,
tuned (2 trials in Tune workers), gated and promoted, scored by batch inference on Ray Data actors
and served by a real Ray Serve replica over HTTP. Neither the actors nor the replica ever call
``register_kind``: they find the kind through the ``kind_ref`` the logged model recorded, importing
``tests.toy_kind`` from the driver's working directory (which Ray puts on its workers' path), the way
a user's own kind module is found.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from mlops_ray.config import TrainingSpec, config_from_dict
from mlops_ray.context import Context
from mlops_ray.data.generate import FEATURE_SPEC
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.data.splits import load_split
from mlops_ray.model.kinds import register_kind, unregister_kind
from mlops_ray.model.metrics import compute_metrics
from mlops_ray.registry import promotion, tracking
from mlops_ray.train.run import train_model
from mlops_ray.train.tune import tune_model
from tests.toy_kind import HistGBKind

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FEATURES = FEATURE_SPEC["numeric"] + FEATURE_SPEC["categorical"]
NAME = "toy-kind-model"


@pytest.fixture
def toy_kind():
    kind = register_kind(HistGBKind())  # the one registration line a user writes
    yield kind
    unregister_kind(kind.name)


def _free_port() -> int:
    from mlops_ray.ray_runtime import free_ports  # outside Ray's worker and the ephemeral port ranges

    return free_ports(1)[0]


def _cfg(small_config):
    data = small_config(rows=1500).data.model_dump(mode="json")
    data["preprocessing"]["categorical"]["encoding"] = "ordinal"  # native categorical splits
    return config_from_dict(
        {
            "data": data,
            "registry": {"model_name": NAME},
            "serve": {"port": _free_port(), "min_replicas": 1, "max_replicas": 1},
            "model": {"type": "toy_hgb", "params": {"max_iter": 5, "max_leaf_nodes": 4}},
            "tune": {
                "num_samples": 2,
                "max_concurrent_trials": 2,
                "scheduler": "none",
                "search_space": {"max_iter": {"choice": [40]}, "learning_rate": {"uniform": [0.05, 0.2]}},
            },
        }
    )


def test_a_toy_kind_trains_tunes_gates_serves_and_batch_scores(ray_session, small_config, toy_kind, tmp_path):
    from mlops_ray.batch.predict import predict_files

    cfg = _cfg(small_config)
    ctx = Context.create(cfg, workspace=tmp_path / "ws")
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot

    # train: the kind fits in the driver; the run is tagged with its flavor and the model knows its module
    trained = train_model(ctx, TrainingSpec.from_config(cfg), snap)
    run = ctx.client.get_run(trained.run_id)
    assert run.data.tags["flavor"] == "toy_hgb"
    weak = tracking.load_pyfunc(ctx.tracking_uri, trained.model_uri).unwrap_python_model()
    assert weak.meta["kind_ref"] == "tests.toy_kind:HistGBKind"
    assert weak.estimator.categorical_features is not None  # native categorical support was used

    # tune: both trials ran the kind's trial function in Tune workers; the best is a registered candidate
    tuned = tune_model(ctx, TrainingSpec.from_config(cfg), snap)
    assert (tuned.extra["trials"], tuned.extra["finished"]) == (2, 2)
    assert tuned.extra["best_config"]["max_iter"] == 40

    # gate: the first version is deployed (no champion yet); the tuned one is gated against it on the
    # test split, with scores the toy kind's own models give there
    first = promotion.promote(ctx, cfg.registry, cfg.serve.model_alias, trained.version)
    assert first.decision.promote and first.champion_version is None
    second = promotion.promote(ctx, cfg.registry, cfg.serve.model_alias, tuned.version)
    test = load_split(snap, "test", snap.preprocessor())
    models = {
        v: tracking.load_pyfunc(ctx.tracking_uri, c.model_uri).unwrap_python_model()
        for v, c in (("challenger", tuned), ("champion", trained))
    }
    for role, model in models.items():
        assert second.scores[role] == pytest.approx(compute_metrics("binary", test.y, model.scores(test.x))["auc"])
    assert second.decision.promote == (second.scores["challenger"] > second.scores["champion"])
    deployed, model = (tuned, models["challenger"]) if second.decision.promote else (trained, models["champion"])
    alias = cfg.serve.model_alias
    assert str(tracking.alias_version(ctx.client, NAME, alias).version) == deployed.version

    # batch inference on Ray Data actors, which never registered the kind
    raw = pd.concat(pd.read_parquet(f) for f in snap.split_files("test")).set_index(cfg.data.id_column)
    manifest = predict_files(ctx, cfg, str(snap.split_dir("test")), str(tmp_path / "out"))
    out = pd.read_parquet(tmp_path / "out").set_index(cfg.data.id_column)
    assert manifest["rows"] == len(raw) == len(out) and manifest["model"]["version"] == deployed.version
    expected = model.score_frame(raw.reset_index())
    np.testing.assert_allclose(out.loc[raw.index, "probability"].to_numpy(), expected, rtol=1e-6)

    # serving: the real Ray Serve replica loads the deployed version without ever registering the kind
    from mlops_ray.serve.runner import start_service, stop_service

    sample = raw.head(20)
    url = start_service(ctx, cfg)
    try:
        records = json.loads(sample[FEATURES].to_json(orient="records"))
        r = httpx.post(f"{url}/predict", json={"records": records}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
    finally:
        stop_service()
    assert body["model"]["version"] == deployed.version
    np.testing.assert_allclose(body["probabilities"], expected[:20], rtol=1e-6)
