"""CLI behaviour (local engine, no Ray): output, exit codes, clean errors."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import yaml
from click.testing import CliRunner

from mlops_ray.cli import main
from mlops_ray.data.fingerprint import fingerprint_table


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_every_command_has_help():
    for cmd in (["--help"], ["data", "--help"], ["quickstart", "--help"]) + tuple(
        ["data", c, "--help"] for c in ("generate", "split", "fingerprint", "prepare", "list", "show")
    ):
        r = _run(*cmd)
        assert r.exit_code == 0 and "Usage" in r.output


def test_generate_fingerprint_split(tmp_path):
    out = tmp_path / "raw"
    r = _run("data", "generate", "--rows", "2000", "--out", str(out), "--shards", "3", "--seed", "5")
    assert r.exit_code == 0, r.output
    assert len(list(out.glob("*.parquet"))) == 3
    r = _run("data", "fingerprint", str(out), "--json")
    assert json.loads(r.output) == {"fingerprint": fingerprint_table(pq.read_table(out)), "rows": 2000}
    r = _run(
        "data",
        "split",
        str(out),
        "--id-column",
        "customer_id",
        "--fractions",
        "train=0.7,test=0.3",
        "--salt",
        "s",
        "--out",
        str(tmp_path / "sp"),
        "--engine",
        "local",
    )
    assert r.exit_code == 0, r.output
    n_train = pq.read_table(tmp_path / "sp" / "train").num_rows
    n_test = pq.read_table(tmp_path / "sp" / "test").num_rows
    assert n_train + n_test == 2000 and f"train: {n_train:>10}" in r.output


def test_bad_inputs_exit_2_with_message_not_traceback(tmp_path):
    cases = [
        (
            ["data", "split", str(tmp_path), "--id-column", "x", "--fractions", "train=0.8,test=0.1", "--out", "o"],
            "sum to 1",
        ),
        (
            ["data", "split", str(tmp_path), "--id-column", "x", "--fractions", "train=abc", "--out", "o"],
            "is not a number",
        ),
        (["data", "fingerprint", str(tmp_path / "missing")], "does not exist"),
        (["data", "prepare", "--config", str(tmp_path / "nope.yaml")], "config file not found"),
        (["data", "show", "abcdef"], "no snapshot matches"),
        (["data", "generate", "--rows", "3", "--shards", "5", "--out", str(tmp_path / "g")], "must not exceed"),
    ]
    for args, msg in cases:
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output, (args, r.output)


def test_split_with_missing_id_column_is_clear(tmp_path):
    _run("data", "generate", "--rows", "100", "--out", str(tmp_path / "raw"), "--shards", "1")
    r = CliRunner().invoke(
        main,
        [
            "data",
            "split",
            str(tmp_path / "raw"),
            "--id-column",
            "nope",
            "--out",
            str(tmp_path / "o"),
            "--engine",
            "local",
        ],
    )
    assert r.exit_code == 2 and "id column 'nope' not found" in r.output


def test_prepare_list_show(tmp_path, workspace):
    _run("data", "generate", "--rows", "1500", "--out", str(tmp_path / "raw"), "--shards", "2")
    cfg = {
        "data": {
            "name": "clitest",
            "source": str(tmp_path / "raw"),
            "id_column": "customer_id",
            "label_column": "label",
            "timestamp_column": "event_time",
        }
    }
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = _run("data", "prepare", "--config", str(p), "--engine", "local")
    assert r.exit_code == 0, r.output
    assert "created" in r.output
    r2 = _run("data", "prepare", "--config", str(p), "--engine", "local")
    assert "reused" in r2.output
    listing = _run("data", "list")
    assert "clitest" in listing.output
    sid = json.loads(_run("data", "list", "--json").output)[0]["snapshot_id"]
    shown = json.loads(_run("data", "show", sid).output)
    assert shown["snapshot_id"] == sid and shown["rows"] == 1500
    # inferred features: numerics and strings other than id/label/timestamp
    assert "income" in shown["spec"]["numeric_features"] and "region" in shown["spec"]["categorical_features"]


def test_watch_with_max_runs_exits_when_done_not_when_duration_ends(monkeypatch, tmp_path):
    """`pipeline watch --max-runs 1 --duration 600`: once the watcher stops, no timer thread is left
    to keep the process (a Ray job's driver) alive until the duration passes."""
    import threading

    from mlops_ray.demo.quickstart import bundled_config_path
    from mlops_ray.pipeline import watch

    class Done:
        def __init__(self, *a, **kw):
            pass

        def run_forever(self, stop, max_runs=None):
            return None  # as after its max_runs runs

    monkeypatch.setattr(watch, "Watcher", Done)
    before = set(threading.enumerate())
    r = _run("pipeline", "watch", "--config", str(bundled_config_path()), "--max-runs", "1", "--duration", "600")
    assert r.exit_code == 0 and "[watch] stopped" in r.output
    left = [t for t in set(threading.enumerate()) - before if t.is_alive() and not t.daemon]
    assert not left, left
