"""Hardening on the real stack (issue 8, "Data, registry and runs"): corrupt snapshots stop train and
reproduce with one clear error, XGBoost's rejections are TrainingErrors, concurrent promotions are
serialized (each gate sees the champion of the moment it moves the alias; no history event lost)."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from mlops_ray.config import TrainingSpec, config_from_dict
from mlops_ray.context import Context
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.data.splits import load_split
from mlops_ray.errors import SnapshotCorruptError, TrainingError
from mlops_ray.registry import promotion, tracking
from mlops_ray.train.reproduce import reproduce_run
from mlops_ray.train.run import train_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
MODEL = "hard-model"
FAST = {"num_boost_round": 15, "params": {"max_depth": 3}}


def _cfg(small_config, **sections):
    base = small_config(rows=2500)
    raw = {"data": base.data.model_dump(mode="json"), "registry": {"model_name": MODEL}, "model": FAST}
    raw.update(sections)
    return config_from_dict(raw)


def _truncate_a_train_file(snap) -> str:
    rel = sorted(r for r in snap.manifest["files"] if r.startswith("splits/train/"))[0]
    f = snap.path / rel
    f.write_bytes(f.read_bytes()[:-64])
    return rel


def test_train_on_a_truncated_snapshot_is_one_clear_error(ray_session, small_config, workspace):
    """Before: a raw pyarrow traceback from the training workers."""
    cfg = _cfg(small_config)
    ctx = Context.create(cfg, workspace=workspace.root)
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    rel = _truncate_a_train_file(snap)
    with pytest.raises(SnapshotCorruptError, match=re.escape(rel)) as exc:
        train_model(ctx, TrainingSpec.from_config(cfg), snap)
    assert "delete the directory" in str(exc.value)
    assert tracking.list_versions(ctx.client, MODEL) == []  # nothing was trained or registered


def test_reproduce_refuses_a_snapshot_changed_since_the_run(ray_session, small_config, workspace):
    cfg = _cfg(small_config)
    ctx = Context.create(cfg, workspace=workspace.root)
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    cand = train_model(ctx, TrainingSpec.from_config(cfg), snap, register=False)
    assert ctx.client.get_run(cand.run_id).data.tags["snapshot_check"].startswith("verified ")
    rel = _truncate_a_train_file(snap)
    with pytest.raises(SnapshotCorruptError, match=re.escape(rel)):
        reproduce_run(ctx, cand.run_id, allow_code_change=True)


def test_xgboost_rejecting_a_passed_through_param_is_a_training_error(ray_session, small_config, workspace):
    """Unknown keys pass the config check; XGBoost's own rejection comes back as a TrainingError."""
    cfg = _cfg(small_config, model={"num_boost_round": 5, "params": {"objective": "binary:nonsense"}})
    ctx = Context.create(cfg, workspace=workspace.root)
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    with pytest.raises(TrainingError, match="XGBoost rejected the training parameters: .*nonsense"):
        train_model(ctx, TrainingSpec.from_config(cfg), snap, execution="local")


def test_concurrent_promotions_are_serialized(ray_session, small_config, workspace, tmp_path):
    """Before: 3 concurrent `promote` commands all moved the alias; one gate compared against a stale
    champion and replaced a better model; history events overwrote each other."""
    cfg = _cfg(small_config)
    ctx = Context.create(cfg, workspace=workspace.root)
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    strong = train_model(
        ctx, TrainingSpec.from_config(cfg), snap, param_overrides={"max_depth": 4, "num_boost_round": 40}
    )
    weak = train_model(
        ctx, TrainingSpec.from_config(cfg), snap, param_overrides={"max_depth": 1, "num_boost_round": 2, "eta": 0.01}
    )
    mid = train_model(ctx, TrainingSpec.from_config(cfg), snap, param_overrides={"max_depth": 2, "num_boost_round": 8})
    versions = [strong.version, weak.version, mid.version]

    # the gate's metric on the gate's rows, per version
    test = load_split(snap, "test", snap.preprocessor(), keep_frame=True)
    frame = test.frame[snap.spec.features]
    metric = cfg.registry.gate.metric_for(snap.spec.task)
    score = {v: promotion.score_version(ctx, MODEL, v, frame, test.y, snap.spec.task, metric) for v in versions}
    assert len(set(score.values())) == 3, score  # distinct, so "the best" is one version

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    def promote(v: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "mlops_ray.cli", "promote", "--config", str(cfg_path), "--version", v]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)

    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(versions, pool.map(promote, versions)))
    for v, r in results.items():
        assert r.returncode == 0, f"v{v}: {r.stdout}\n{r.stderr}"

    client = ctx.client
    champion = str(tracking.alias_version(client, MODEL, "champion").version)
    assert score[champion] == max(score.values()), (champion, score)

    history = tracking.alias_history(client, MODEL)
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    assert sum(e["alias"] == "challenger" for e in history) == 3  # one per registration, none lost
    moves = [e for e in history if e["alias"] == "champion"]
    assert moves and moves[0]["from_version"] is None and moves[-1]["to_version"] == champion
    for prev, cur in zip(moves, moves[1:]):
        assert cur["from_version"] == prev["to_version"]  # an unbroken chain: no move was overwritten
    # each gate compared against the champion of the moment it moved the alias, and each move improved it
    pattern = re.compile(r"^(PROMOTE|KEEP): v(\d+) vs 'champion' (?:v(\d+)|\(none\))", re.M)
    promoted = {}
    for v, r in results.items():
        m = pattern.search(r.stdout)
        assert m and m.group(2) == v, r.stdout
        if m.group(1) == "PROMOTE":
            promoted[v] = m.group(3)
    assert sorted(promoted) == sorted(e["to_version"] for e in moves)
    for e in moves:
        assert promoted[e["to_version"]] == e["from_version"]
        if e["from_version"] is not None:
            assert score[e["to_version"]] >= score[e["from_version"]]
    assert tracking._read_lock(client, tracking.lock_name(MODEL)) is None  # released
