"""`mlops-ray reproduce RUN_ID`: re-run training from what a run logged and compare metrics.

Uses the run's logged config, its snapshot (by id), its hyperparameters and its
execution plan (mode, workers, threads); refuses clearly when the snapshot is gone
or the code differs, instead of silently training on something else.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_ray.errors import ReproduceError, SnapshotNotFoundError

if TYPE_CHECKING:
    from mlops_ray.context import Context


@dataclass
class Comparison:
    run_id: str
    new_run_id: str
    rows: list[tuple[str, float, float]]  # metric, original, reproduced
    notes: list[str]

    @property
    def exact(self) -> bool:
        return all(a == b for _, a, b in self.rows)


def reproduce_run(ctx: Context, run_id: str, *, allow_code_change: bool = False) -> Comparison:
    """Re-train ``run_id`` from what it logged, in ``ctx``'s workspace and store; compare metrics."""
    import yaml

    from mlops_ray.config import TrainingSpec, config_from_dict
    from mlops_ray.errors import TrackingError
    from mlops_ray.registry import tracking
    from mlops_ray.train.execution import ExecutionPlan
    from mlops_ray.train.run import train_model

    client = ctx.client
    try:
        run = client.get_run(run_id)
    except Exception as err:
        if tracking.is_not_found(err):
            raise ReproduceError(f"run {run_id!r} not found at {ctx.tracking_uri}") from None
        raise TrackingError(f"cannot read run {run_id!r} at {ctx.tracking_uri}: {type(err).__name__}: {err}") from None
    tags, params = run.data.tags, run.data.params
    if "snapshot_id" not in tags:
        raise ReproduceError(f"run {run_id} was not logged by mlops-ray train/tune (no snapshot_id tag)")
    with tempfile.TemporaryDirectory() as tmp:
        path = tracking.download_artifact(ctx.tracking_uri, run_id, "config.yaml", tmp)
        cfg = config_from_dict(yaml.safe_load(Path(path).read_text()), origin=f"run {run_id} config.yaml")
    try:
        snap = ctx.snapshots.find_for(tags["snapshot_id"], tags.get("dataset"))
    except SnapshotNotFoundError:
        raise ReproduceError(
            f"snapshot {tags['snapshot_id']} used by run {run_id} is gone from the workspace; "
            "re-prepare the exact same source data and split spec to restore it"
        ) from None
    snap.verify()  # SnapshotCorruptError: the data the run saw has changed since
    notes = []
    now = tracking.code_version()
    if now["code_digest"] != tags.get("code_digest"):
        msg = (
            f"code differs: run used commit {tags.get('git_commit')} (dirty={tags.get('git_dirty')}, code digest "
            f"{tags.get('code_digest')}), now commit {now['git_commit']} (dirty={now['git_dirty']}, digest "
            f"{now['code_digest']})"
        )
        if not allow_code_change:
            raise ReproduceError(msg + "; check out that commit, or pass --allow-code-change to compare anyway")
        notes.append(msg)
    overrides = json.loads(tags.get("param_overrides") or "{}")
    mode = params.get("execution.mode", "local")
    nworkers = int(params.get("execution.num_workers", 0))
    nthread = int(params.get("execution.nthread", 1))
    plan = ExecutionPlan(mode, nworkers, float(nthread), nthread, f"reproducing run {run_id}")
    res = train_model(
        ctx,
        TrainingSpec.from_config(cfg),
        snap,
        param_overrides=overrides,
        register=False,
        plan=plan,
        run_name=f"reproduce-{run_id[:8]}",
        tags={"reproduces": run_id},
    )
    rows = [
        (k, float(v), float(res.metrics[k]))
        for k, v in sorted(run.data.metrics.items())
        if (k.startswith("valid_") or k.startswith("test_")) and k in res.metrics
    ]
    return Comparison(run_id, res.run_id, rows, notes)
