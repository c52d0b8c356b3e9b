"""Runs left RUNNING by a killed ``train``/``tune`` are marked FAILED at the next run (MLflow on SQLite, no Ray)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest

from mlops_ray.context import Context
from mlops_ray.data.owner import ProcessOwner
from mlops_ray.registry import tracking


@pytest.fixture
def ctx(workspace, mlflow_db_template):
    workspace.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_db_template, workspace.mlflow_db)
    return Context.create(None, workspace=workspace.root)


def _running_run(ctx, name: str, owner: dict | None) -> str:
    """A RUNNING run as a process that was then killed would have left it."""
    tags = {} if owner is None else {tracking.RUN_OWNER_TAG: json.dumps(owner)}
    return ctx.client.create_run(ctx.experiment_id, run_name=name, tags=tags).info.run_id


def test_runs_of_killed_processes_are_failed_when_the_next_run_starts(ctx, caplog):
    """Before: a run whose process was killed stayed RUNNING forever."""
    me = ProcessOwner.current().to_dict()
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = _running_run(ctx, "killed", dict(me, pid=int(dead_pid.stdout), started=None))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = _running_run(ctx, "alive", dict(me, pid=sleeper.pid, started=None))
        remote = _running_run(ctx, "remote", {"host": "another-host", "pid": 1})
        foreign = _running_run(ctx, "not-ours", None)  # not started by mlops-ray
        with caplog.at_level(logging.WARNING, logger="mlops_ray.registry.tracking"):
            with tracking.run(ctx, "next") as r:
                new_id = r.info.run_id
        status = {rid: ctx.client.get_run(rid).info.status for rid in (killed, alive, remote, foreign, new_id)}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert status == {killed: "FAILED", alive: "RUNNING", remote: "RUNNING", foreign: "RUNNING", new_id: "FINISHED"}
    assert "is gone" in ctx.client.get_run(killed).data.tags["mlops_ray.failed_reason"]
    assert any(killed in m and "FAILED" in m for m in caplog.messages)  # said so


def test_every_run_is_tagged_with_its_process(ctx):
    with tracking.run(ctx, "parent") as parent:
        with tracking.run(ctx, "child", nested=True) as child:
            ids = (parent.info.run_id, child.info.run_id)
    me = ProcessOwner.current()
    for rid in ids:
        tags = ctx.client.get_run(rid).data.tags
        assert tags["mlops_ray.host"] == me.host and tags["mlops_ray.pid"] == str(me.pid)
        assert ProcessOwner.from_dict(json.loads(tags[tracking.RUN_OWNER_TAG])) == me


def test_a_running_run_of_this_process_is_left_alone(ctx):
    with tracking.run(ctx, "outer") as outer:
        # another top-level run started by this (live) process while 'outer' is active in MLflow's stack
        tracking.fail_dead_runs(ctx.client, ctx.experiment_id)
        assert ctx.client.get_run(outer.info.run_id).info.status == "RUNNING"
