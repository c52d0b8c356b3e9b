"""Snapshots are verified: per-file size + SHA-256 in the manifest, checked before reuse, training
and ``data show --verify``; staging directories of killed prepares are cleaned (local engine, no Ray)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from mlops_ray.cli import main
from mlops_ray.data.owner import ProcessOwner
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.data.snapshot import MANIFEST, STAGING_OWNER, Snapshot, SnapshotStore
from mlops_ray.data.splits import read_split_table
from mlops_ray.errors import SnapshotCorruptError
from mlops_ray.workspace import get_workspace


def _cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def prepared(small_config):
    cfg = small_config()
    return cfg, prepare_snapshot(cfg.data, get_workspace(), engine="local").snapshot


def _first_split_file(snap: Snapshot):
    rel = sorted(r for r in snap.manifest["files"] if r.startswith("splits/train/"))[0]
    return rel, snap.path / rel


def _truncate(path, n=100):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - n])


def test_manifest_records_size_and_sha256_of_every_file(prepared):
    _, snap = prepared
    files = snap.manifest["files"]
    on_disk = sorted(
        p.relative_to(snap.path).as_posix() for p in snap.path.rglob("*") if p.is_file() and p.name != MANIFEST
    )
    assert sorted(files) == on_disk
    assert "preprocessor.json" in files and "reference_stats.json" in files
    assert any(r.startswith("splits/test/") and r.endswith(".parquet") for r in files)
    for rel, rec in files.items():
        data = (snap.path / rel).read_bytes()
        assert rec == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert STAGING_OWNER not in files and not (snap.path / STAGING_OWNER).exists()
    check = snap.verify()
    assert check.files == len(files) and check.note is None and check.describe().startswith(f"verified {len(files)}")


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: _truncate(p), r"has \d+ bytes, the manifest recorded \d+"),
        (lambda p: p.write_bytes(bytes([p.read_bytes()[0] ^ 1]) + p.read_bytes()[1:]), "content differs"),
        (lambda p: p.unlink(), "is missing"),
    ],
    ids=["truncated", "same-size-changed", "deleted"],
)
def test_verify_names_the_bad_file_and_what_is_wrong(prepared, damage, expected):
    _, snap = prepared
    rel, path = _first_split_file(snap)
    damage(path)
    with pytest.raises(SnapshotCorruptError, match=expected) as exc:
        snap.verify()
    msg = str(exc.value)
    assert rel in msg and snap.id in msg and "delete the directory" in msg and "data prepare" in msg
    assert "\n" not in msg


def test_verify_rejects_an_unexpected_extra_split_file(prepared):
    _, snap = prepared
    rel, path = _first_split_file(snap)
    (path.parent / "part-extra.parquet").write_bytes(path.read_bytes())  # would be read as more train rows
    with pytest.raises(SnapshotCorruptError, match="unexpected extra file splits/train/part-extra.parquet"):
        snap.verify()


def test_snapshot_without_checksums_verifies_with_a_note(prepared):
    _, snap = prepared
    legacy = {k: v for k, v in snap.manifest.items() if k != "files"}
    (snap.path / MANIFEST).write_text(json.dumps(legacy))
    old = SnapshotStore(get_workspace()).find(snap.id)
    check = old.verify()
    assert check.files == 0 and "no checksums recorded" in check.note


@pytest.mark.parametrize("cached_fingerprint", [True, False], ids=["source-unchanged", "source-reread"])
def test_prepare_refuses_to_reuse_a_corrupt_identical_snapshot(small_config, cached_fingerprint):
    """Before: 'reused existing' for a snapshot whose split file was truncated."""
    cfg = small_config()
    ws = get_workspace()
    snap = prepare_snapshot(cfg.data, ws, engine="local").snapshot
    rel, path = _first_split_file(snap)
    _truncate(path)
    if not cached_fingerprint:
        (ws.root / "cache" / "source_fingerprints.json").unlink()
    with pytest.raises(SnapshotCorruptError, match=rel):
        prepare_snapshot(cfg.data, ws, engine="local")
    # the advice works: delete it, prepare again -> a verified snapshot with the same id
    import shutil

    shutil.rmtree(snap.path)
    again = prepare_snapshot(cfg.data, ws, engine="local")
    assert not again.reused and again.snapshot.id == snap.id and again.snapshot.verify().files > 0


def test_prepare_reuses_an_intact_snapshot_and_notes_a_legacy_one(small_config):
    cfg = small_config()
    ws = get_workspace()
    snap = prepare_snapshot(cfg.data, ws, engine="local").snapshot
    res = prepare_snapshot(cfg.data, ws, engine="local")
    assert res.reused and res.snapshot.id == snap.id
    legacy = {k: v for k, v in snap.manifest.items() if k != "files"}
    (snap.path / MANIFEST).write_text(json.dumps(legacy))
    res = prepare_snapshot(cfg.data, ws, engine="local")
    assert res.reused and any("no checksums recorded" in n for n in res.notes)


def test_unreadable_split_file_is_a_corrupt_snapshot_error(prepared):
    _, snap = prepared
    _, path = _first_split_file(snap)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(SnapshotCorruptError, match="cannot read snapshot file"):
        read_split_table(snap.split_files("train"), snap.spec.id_column)


# ------------------------------------------------------------------ staging directories
def _staging(ws, name: str, owner: dict | None, age_s: float = 0.0):
    d = ws.datasets / "unit" / f".staging-{name}"
    (d / "splits" / "train").mkdir(parents=True)
    (d / "splits" / "train" / "part-x.parquet").write_bytes(b"partial")
    if owner is not None:
        (d / STAGING_OWNER).write_text(json.dumps(owner))
    if age_s:
        t = time.time() - age_s
        os.utime(d, (t, t))
    return d


def test_staging_dirs_of_killed_prepares_are_removed_at_the_next_prepare(small_config):
    """Before: .staging-* directories of a killed prepare stayed forever."""
    cfg = small_config()
    ws = get_workspace()
    me = ProcessOwner.current().to_dict()
    dead = _staging(ws, "dead", dict(me, pid=_dead_pid(), started=None))
    live = _staging(ws, "live", me)  # a concurrent prepare in a live process
    remote = _staging(ws, "remote", {"host": "other-host", "pid": 1})
    legacy_old = _staging(ws, "legacy-old", None, age_s=2 * 3600)
    legacy_new = _staging(ws, "legacy-new", None)
    res = prepare_snapshot(cfg.data, ws, engine="local")
    assert not dead.exists() and not legacy_old.exists()
    assert live.exists() and remote.exists() and legacy_new.exists()
    removed = [n for n in res.notes if "removed stale staging directory" in n]
    assert len(removed) == 2 and any(str(dead) in n and "is gone" in n for n in removed)
    # the published snapshot carries no owner record, and no staging directory of ours is left
    assert not (res.snapshot.path / STAGING_OWNER).exists()
    assert sorted(p.name for p in (ws.datasets / "unit").glob(".staging-*")) == [
        ".staging-legacy-new",
        ".staging-live",
        ".staging-remote",
    ]


def test_a_reused_pid_does_not_keep_a_staging_dir_alive(small_config):
    ws = get_workspace()
    me = ProcessOwner.current().to_dict()
    if me["started"] is None:
        pytest.skip("no /proc start times on this platform")
    # our own pid, but a different start time: the pid was reused after the writer died
    stale = _staging(ws, "reused", dict(me, started=str(int(me["started"]) + 1)))
    SnapshotStore(ws).remove_stale_staging()
    assert not stale.exists()


# ------------------------------------------------------------------ CLI
def test_cli_data_show_verify(prepared):
    _, snap = prepared
    r = _cli("data", "show", snap.id, "--verify")
    assert r.exit_code == 0 and f"verified {len(snap.manifest['files'])} files" in r.output
    rel, path = _first_split_file(snap)
    _truncate(path)
    r = CliRunner().invoke(main, ["data", "show", snap.id, "--verify"])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and rel in r.output and "Traceback" not in r.output


def test_cli_data_prepare_on_a_corrupt_snapshot_exits_2_naming_the_file(small_config, tmp_path):
    import yaml

    cfg = small_config()
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": cfg.data.model_dump(mode="json")}))
    r = _cli("data", "prepare", "--config", str(path), "--engine", "local")
    assert r.exit_code == 0, r.output
    snap = SnapshotStore(get_workspace()).list()[0]
    rel, file = _first_split_file(snap)
    _truncate(file)
    r = CliRunner().invoke(main, ["data", "prepare", "--config", str(path), "--engine", "local"])
    assert r.exit_code == 2 and "reused existing" not in r.output
    assert f"error: snapshot unit/{snap.id} is corrupt: file {rel}" in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------ train / tune check first (no Ray needed)
@pytest.mark.parametrize("stage", ["train", "tune"])
def test_train_and_tune_verify_the_snapshot_before_starting_ray(small_config, workspace, mlflow_db_template, stage):
    """This unit test refuses ray.init: the corrupt snapshot must be reported before Ray is needed."""
    import shutil

    from mlops_ray.config import config_from_dict
    from mlops_ray.context import Context

    cfg = small_config()
    raw = {"data": cfg.data.model_dump(mode="json"), "tune": {"search_space": {"max_depth": {"choice": [2, 3]}}}}
    cfg = config_from_dict(raw)
    workspace.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_db_template, workspace.mlflow_db)
    ctx = Context.create(cfg, workspace=workspace.root)
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    rel, path = _first_split_file(snap)
    _truncate(path)
    if stage == "train":
        from mlops_ray.train.run import train_model as run_stage
    else:
        from mlops_ray.train.tune import tune_model as run_stage
    with pytest.raises(SnapshotCorruptError, match=rel):
        run_stage(ctx, cfg, snap)
