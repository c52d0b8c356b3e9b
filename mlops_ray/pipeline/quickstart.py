"""The quickstart job: the whole pipeline on generated sample data, local Ray, local MLflow.

Stages so far: generate sample data (if missing) -> prepare a snapshot. Later stages
(train, register, serve, monitor) extend :func:`run_quickstart` in order.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable

from mlops_ray.config import load_config
from mlops_ray.workspace import get_workspace


def bundled_config_path() -> Path:
    """Path of the packaged copy of ``examples/quickstart.yaml``."""
    return Path(str(resources.files("mlops_ray") / "resources" / "quickstart.yaml"))


def ensure_sample_data(cfg, echo: Callable[[str], None] = print) -> str:
    """Generate the configured sample source when it does not exist yet; returns its path."""
    from mlops_ray.data.generate import generate_dataset

    src = Path(cfg.source())
    if src.is_dir() and any(src.glob("*.parquet")):
        echo(f"[1/2] sample data: using existing {src}")
        return str(src)
    g = cfg.data.generate
    if g is None:
        raise FileNotFoundError(f"source {src} is missing and the config has no data.generate section")
    echo(f"[1/2] sample data: generating {g.rows} rows in {g.shards} shards -> {src}")
    generate_dataset(src, g.rows, shards=g.shards, seed=g.seed, drift=g.drift)
    return str(src)


def run_quickstart(config_path: str | None = None, echo: Callable[[str], None] = print, engine: str = "ray"):
    """Run every implemented stage; returns the prepare result."""
    from mlops_ray.data.prepare import prepare_snapshot

    path = config_path or bundled_config_path()
    cfg = load_config(path)
    ws = get_workspace()
    echo(f"workspace: {ws.root}  (set MLOPS_RAY_HOME to move it)")
    ensure_sample_data(cfg, echo)
    echo("[2/2] prepare: validate, hash-split, fingerprint, fit preprocessing on train, snapshot")
    res = prepare_snapshot(cfg, engine=engine, progress=True)
    m = res.snapshot.manifest
    echo(f"snapshot {m['name']}/{m['snapshot_id']} ({'reused' if res.reused else 'created'} in {res.seconds:.1f}s)")
    echo(f"  fingerprint: {m['fingerprint']}")
    for k, v in m["rows_per_split"].items():
        echo(f"  {k:>6}: {v:>8} rows ({v / max(m['rows'], 1):.1%})")
    echo(f"  path: {res.snapshot.path}")
    echo("next: mlops-ray data list | mlops-ray data show " + m["snapshot_id"])
    return res
