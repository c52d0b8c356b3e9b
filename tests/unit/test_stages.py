"""Pipeline stages with fakes (no Ray, no MLflow): what each stage calls, with what, in which order.

In the style of Ray Train's controller tests: the functions the stages delegate to are
replaced by recording fakes, a fake context stands in for :class:`mlops_ray.context.Context`,
and the config is a real validated one. Where the stages look names up:

* ``promotion.gate`` / ``promotion.deploy``: attributes of ``mlops_ray.registry.promotion``
  (looked up at call time);
* ``train_model`` / ``tune_model``: imported inside ``train()`` from ``mlops_ray.train.run`` /
  ``mlops_ray.train.tune`` at call time;
* ``prepare_snapshot``: imported into ``mlops_ray.pipeline.stages`` at module import.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from mlops_ray.config import TrainingSpec, config_from_dict
from mlops_ray.errors import MlopsRayError, SourceNotFoundError
from mlops_ray.pipeline import stages
from mlops_ray.registry import promotion
from mlops_ray.registry.gate import KEEP, PROMOTE, GateDecision
from mlops_ray.registry.promotion import PromotionResult
from mlops_ray.train import run as train_run
from mlops_ray.train import tune as train_tune
from mlops_ray.train.run import Candidate


def make_cfg(source, **sections):
    raw = {"data": {"name": "unit", "source": str(source), "id_column": "customer_id", "label_column": "label"}}
    for key, value in sections.items():
        if key == "generate":
            raw["data"]["generate"] = value
        else:
            raw[key] = value
    return config_from_dict(raw)


def make_ctx(tmp_path):
    return SimpleNamespace(workspace=SimpleNamespace(root=tmp_path / "ws", location=str(tmp_path / "ws")))


def fake_snapshot(task="binary"):
    return SimpleNamespace(id="snap-1", spec=SimpleNamespace(task=task))


def candidate(version):
    return Candidate(
        run_id=f"run-{version}",
        model_uri=f"models:/m/{version}",
        version=version,
        metrics={"test_auc": 0.9},
        snapshot_id="snap-1",
    )


class FakeRegistry:
    """Records every call the stages make and plays a registry with a moving challenger marker."""

    def __init__(self, gate_action=PROMOTE, reasons=("no current champion",)):
        self.calls: list[tuple] = []
        self.challenger: str | None = None
        self.champion: str | None = None
        self.gate_action = gate_action
        self.reasons = list(reasons)

    # -- train / tune: register "7", then a concurrent run registers "8" and moves the marker
    def _register(self, what, ctx, spec, snapshot):
        self.calls.append((what, ctx, spec, snapshot))
        self.challenger = "7"
        cand = candidate("7")
        self.challenger = "8"  # a concurrent run finished between our train and our gate
        return cand

    def train_model(self, ctx, spec, snapshot, *, register=True, tags=None):
        assert register and tags is None  # what stages.train passes by default
        return self._register("train_model", ctx, spec, snapshot)

    def tune_model(self, ctx, spec, snapshot, *, register=True):
        assert register
        return self._register("tune_model", ctx, spec, snapshot)

    def gate(self, ctx, registry, alias, version, *, force=False):
        self.calls.append(("gate", version, force))
        decision = GateDecision(self.gate_action, list(self.reasons))
        return PromotionResult(decision, challenger_version=str(version), champion_version=self.champion, alias=alias)

    def deploy(self, ctx, model_name, alias, version, reason):
        self.calls.append(("deploy", version, reason))
        prev, self.champion = self.champion, str(version)
        # the shape of mlops_ray.registry.tracking.move_alias's history event
        return {
            "alias": alias,
            "from_version": prev,
            "to_version": str(version),
            "action": "deploy",
            "reason": reason,
        }

    @contextlib.contextmanager
    def serialized(self, ctx, model_name, purpose):
        self.calls.append(("lock", purpose))
        yield
        self.calls.append(("unlock", purpose))

    def prepare_snapshot(self, data, workspace, *, source=None, engine="ray", progress=False):
        self.calls.append(("prepare_snapshot", data, workspace, source, engine, progress))
        return SimpleNamespace(snapshot=fake_snapshot(data.task), reused=False, seconds=0.0, notes=[])

    def names(self):
        return [c[0] for c in self.calls]


@pytest.fixture
def reg(monkeypatch):
    r = FakeRegistry()
    monkeypatch.setattr(promotion, "gate", r.gate)
    monkeypatch.setattr(promotion, "deploy", r.deploy)
    monkeypatch.setattr(promotion, "serialized", r.serialized)
    monkeypatch.setattr(train_run, "train_model", r.train_model)
    monkeypatch.setattr(train_tune, "tune_model", r.tune_model)
    monkeypatch.setattr(stages, "prepare_snapshot", r.prepare_snapshot)
    return r


class Events:
    def __init__(self):
        self.items: list[tuple[str, dict]] = []

    def __call__(self, event, info):
        assert isinstance(event, str) and isinstance(info, dict)
        self.items.append((event, info))

    def names(self):
        return [e for e, _ in self.items]

    def get(self, name):
        (info,) = [i for e, i in self.items if e == name]
        return info


# ------------------------------------------------------------------ (a) exact version through the chain
def test_train_gate_deploy_uses_its_own_version_not_the_moved_challenger(reg, tmp_path):
    cfg, ctx = make_cfg(tmp_path / "src"), make_ctx(tmp_path)
    snap = fake_snapshot()
    cand, res = stages.train_gate_deploy(ctx, cfg, snap)
    assert reg.challenger == "8"  # the marker moved under us ...
    assert cand.version == "7"
    assert ("gate", "7", False) in reg.calls  # ... but we gated exactly our version
    assert ("deploy", "7", "no current champion") in reg.calls
    assert [c for c in reg.calls if c[0] in ("gate", "deploy")] == [
        ("gate", "7", False),
        ("deploy", "7", "no current champion"),
    ]
    # gate and deploy happen under one registry lock
    assert reg.names() == ["train_model", "lock", "gate", "deploy", "unlock"]
    assert reg.calls[0][1:] == (ctx, TrainingSpec.from_config(cfg), snap)
    assert reg.champion == "7"
    assert isinstance(res, PromotionResult) and res.challenger_version == "7"
    assert res.event == {
        "alias": "champion",
        "from_version": None,
        "to_version": "7",
        "action": "deploy",
        "reason": "no current champion",
    }


def test_deploy_reason_joins_all_gate_reasons(reg, tmp_path):
    reg.reasons = ["auc 0.91 vs champion 0.90: +0.01 >= +0.005 required", "no leakage"]
    cfg = make_cfg(tmp_path / "src", serve={"model_alias": "prod"})
    _, res = stages.train_gate_deploy(make_ctx(tmp_path), cfg, fake_snapshot())
    assert reg.calls[-2] == ("deploy", "7", "auc 0.91 vs champion 0.90: +0.01 >= +0.005 required; no leakage")
    assert res.event["alias"] == "prod" and res.alias == "prod"


# ------------------------------------------------------------------ (b) KEEP: no deploy
def test_keep_does_not_deploy(reg, tmp_path):
    reg.gate_action = KEEP
    reg.reasons = ["auc 0.80 vs champion 0.85: -0.05 < +0.00 required"]
    events = Events()
    cand, res = stages.train_gate_deploy(
        make_ctx(tmp_path), make_cfg(tmp_path / "src"), fake_snapshot(), on_event=events
    )
    assert reg.names() == ["train_model", "lock", "gate", "unlock"]
    assert not any(c[0] == "deploy" for c in reg.calls)
    assert res.decision.action == KEEP and not res.decision.promote
    assert res.event is None
    assert reg.champion is None
    assert cand.version == "7" and reg.calls[-2] == ("gate", "7", False)
    assert "deployed" not in events.names()
    assert events.names() == ["train", "trained", "gate", "gated"]


# ------------------------------------------------------------------ (c) tune vs train
def test_train_calls_train_model_when_tune_disabled(reg, tmp_path):
    cfg = make_cfg(tmp_path / "src")
    assert cfg.tune.enabled is False
    events = Events()
    cand = stages.train(make_ctx(tmp_path), cfg, fake_snapshot(), on_event=events)
    assert reg.names() == ["train_model"]
    assert cand.version == "7"
    assert events.names() == ["train", "trained"]
    assert events.get("train") == {"model": "xgboost"}
    assert events.get("trained")["candidate"] is cand


def test_train_calls_tune_model_when_tune_enabled(reg, tmp_path):
    cfg = make_cfg(
        tmp_path / "src", tune={"enabled": True, "num_samples": 3, "search_alg": "grid", "scheduler": "none"}
    )
    events = Events()
    ctx, snap = make_ctx(tmp_path), fake_snapshot("regression")
    cand = stages.train(ctx, cfg, snap, on_event=events)
    assert reg.names() == ["tune_model"]
    assert reg.calls[0][1:] == (ctx, TrainingSpec.from_config(cfg), snap)
    assert cand.version == "7"
    assert events.names() == ["tune", "trained"]
    # the metric defaults to the snapshot's task's default metric
    assert events.get("tune") == {"trials": 3, "search_alg": "grid", "scheduler": "none", "metric": "rmse"}


def test_train_gate_deploy_with_tune_gates_the_tuned_version(reg, tmp_path):
    cfg = make_cfg(tmp_path / "src", tune={"enabled": True})
    cand, _ = stages.train_gate_deploy(make_ctx(tmp_path), cfg, fake_snapshot())
    assert reg.names() == ["tune_model", "lock", "gate", "deploy", "unlock"]
    assert reg.calls[2] == ("gate", "7", False) and reg.calls[3][:2] == ("deploy", "7")


def test_gate_stage_passes_force_and_version(reg, tmp_path):
    events = Events()
    res = stages.gate(make_ctx(tmp_path), make_cfg(tmp_path / "src"), "12", force=True, on_event=events)
    assert reg.calls == [("gate", "12", True)]
    assert res.challenger_version == "12"
    assert events.names() == ["gate", "gated"]
    assert events.get("gate") == {"version": "12", "alias": "champion"}
    assert events.get("gated")["result"] is res


def test_deploy_stage(reg, tmp_path):
    events = Events()
    ev = stages.deploy(make_ctx(tmp_path), make_cfg(tmp_path / "src"), "3", "manual", on_event=events)
    assert reg.calls == [("deploy", "3", "manual")]
    assert events.items == [("deployed", {"event": ev})]


def test_prepare_stage_passes_workspace_engine_progress(reg, tmp_path):
    cfg, ctx = make_cfg(tmp_path / "src"), make_ctx(tmp_path)
    events = Events()
    res = stages.prepare(ctx, cfg, engine="local", progress=True, on_event=events)
    assert reg.calls == [("prepare_snapshot", cfg.data, ctx.workspace, cfg.source(ctx.workspace.root), "local", True)]
    assert events.names() == ["prepare", "prepared"]
    assert events.get("prepare") == {"source": str(tmp_path / "src")}
    assert events.get("prepared")["result"] is res
    stages.prepare(ctx, cfg)
    assert reg.calls[-1][4:] == ("ray", False)  # defaults


# ------------------------------------------------------------------ (d) events in order, nothing printed
def test_full_chain_events_in_order_and_silent(reg, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "part-00000.parquet").write_bytes(b"")  # only its presence is checked
    cfg, ctx = make_cfg(src), make_ctx(tmp_path)
    events = Events()

    path = stages.ensure_sample_data(ctx, cfg, on_event=events)
    snap = stages.prepare(ctx, cfg, on_event=events).snapshot
    cand, res = stages.train_gate_deploy(ctx, cfg, snap, on_event=events)

    assert path == str(src)
    assert events.names() == ["sample_data", "prepare", "prepared", "train", "trained", "gate", "gated", "deployed"]
    assert events.get("sample_data") == {"path": str(src), "generated": False}
    assert events.get("trained")["candidate"] is cand
    assert events.get("gate") == {"version": "7", "alias": "champion"}
    assert events.get("gated")["result"] is res
    assert events.get("deployed")["event"] is res.event
    assert reg.names() == ["prepare_snapshot", "train_model", "lock", "gate", "deploy", "unlock"]
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_default_on_event_is_silent(reg, tmp_path, capsys):
    cfg, ctx = make_cfg(tmp_path / "src"), make_ctx(tmp_path)
    snap = stages.prepare(ctx, cfg).snapshot
    stages.train_gate_deploy(ctx, cfg, snap)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


# ------------------------------------------------------------------ (e) ensure_sample_data
def test_missing_source_without_generate_raises_source_not_found(tmp_path):
    src = tmp_path / "nope"
    cfg = make_cfg(src)
    assert cfg.data.generate is None
    events = Events()
    with pytest.raises(SourceNotFoundError, match="data.generate") as info:
        stages.ensure_sample_data(make_ctx(tmp_path), cfg, on_event=events)
    assert not isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, MlopsRayError)
    assert str(src) in str(info.value)
    assert events.items == []
    assert not src.exists()


def test_empty_source_dir_without_generate_raises(tmp_path):
    src = tmp_path / "empty"
    src.mkdir()
    (src / "notes.txt").write_text("no data here")
    with pytest.raises(SourceNotFoundError):
        stages.ensure_sample_data(make_ctx(tmp_path), make_cfg(src))


def test_missing_source_with_generate_creates_data(tmp_path, capsys):
    import pyarrow.parquet as pq

    src = tmp_path / "gen" / "src"
    cfg = make_cfg(src, generate={"rows": 50, "shards": 2, "seed": 3})
    events = Events()
    path = stages.ensure_sample_data(make_ctx(tmp_path), cfg, on_event=events)
    assert path == str(src)
    files = sorted(src.glob("*.parquet"))
    assert len(files) == 2
    assert sum(pq.read_metadata(f).num_rows for f in files) == 50
    cols = pq.read_schema(files[0]).names
    assert "customer_id" in cols and "label" in cols
    assert events.items == [("sample_data", {"path": str(src), "generated": True, "rows": 50, "shards": 2})]

    # a second call finds the data and does not regenerate
    before = {f: f.stat().st_mtime_ns for f in files}
    events2 = Events()
    assert stages.ensure_sample_data(make_ctx(tmp_path), cfg, on_event=events2) == str(src)
    assert events2.items == [("sample_data", {"path": str(src), "generated": False})]
    assert {f: f.stat().st_mtime_ns for f in sorted(src.glob("*.parquet"))} == before
    out, err = capsys.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("layout", ["csv_file", "nested_parquet", "glob"])
def test_existing_data_in_any_readable_layout_is_used_not_generated(tmp_path, layout):
    import pandas as pd

    df = pd.DataFrame({"customer_id": ["a", "b"], "x": [1.0, 2.0], "label": [0, 1]})
    if layout == "csv_file":
        src = tmp_path / "data.csv"
        df.to_csv(src, index=False)
    elif layout == "nested_parquet":
        (tmp_path / "d" / "day=1").mkdir(parents=True)
        df.to_parquet(tmp_path / "d" / "day=1" / "part.parquet")
        src = tmp_path / "d"
    else:
        (tmp_path / "g").mkdir()
        df.to_parquet(tmp_path / "g" / "p1.parquet")
        src = f"{tmp_path / 'g'}/*.parquet"
    cfg = make_cfg(src, generate={"rows": 50, "shards": 1, "seed": 0})
    events = Events()
    assert stages.ensure_sample_data(make_ctx(tmp_path), cfg, on_event=events) == str(src)
    assert events.items == [("sample_data", {"path": str(src), "generated": False})]
    assert not list(tmp_path.rglob("part-*.parquet"))  # nothing generated
