"""The quickstart job: the whole pipeline on generated sample data, local Ray, local MLflow.

Stages so far: generate sample data (if missing) -> prepare a snapshot -> tune (or
train) with MLflow tracking -> register as challenger -> gate -> champion. Later
stages (serve, monitor) extend :func:`run_quickstart` in order.
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
        echo(f"[1/5] sample data: using existing {src}")
        return str(src)
    g = cfg.data.generate
    if g is None:
        raise FileNotFoundError(f"source {src} is missing and the config has no data.generate section")
    echo(f"[1/5] sample data: generating {g.rows} rows in {g.shards} shards -> {src}")
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
    echo("[2/5] prepare: validate, hash-split, fingerprint, fit preprocessing on train, snapshot")
    res = prepare_snapshot(cfg, engine=engine, progress=True)
    m = res.snapshot.manifest
    echo(f"snapshot {m['name']}/{m['snapshot_id']} ({'reused' if res.reused else 'created'} in {res.seconds:.1f}s)")
    echo(f"  fingerprint: {m['fingerprint']}")
    for k, v in m["rows_per_split"].items():
        echo(f"  {k:>6}: {v:>8} rows ({v / max(m['rows'], 1):.1%})")
    echo(f"  path: {res.snapshot.path}")
    from mlops_ray.registry.promotion import promote

    if cfg.tune.enabled:
        from mlops_ray.train.tune import tune_model

        echo(f"[3/5] tune: {cfg.tune.num_samples} trials ({cfg.tune.search_alg}, {cfg.tune.scheduler}) on Ray Tune")
        cand = tune_model(cfg, snapshot_ref=res.snapshot.id)
        echo(f"  best of {cand.extra['trials']} trials: {cand.extra['best_config']}")
    else:
        from mlops_ray.train.run import train_model

        echo("[3/5] train: Ray Train v2 XGBoost")
        cand = train_model(cfg, snapshot_ref=res.snapshot.id)
    for k in sorted(cand.metrics):
        if k.startswith("test_"):
            echo(f"  {k:<14} {cand.metrics[k]:.4f}")
    echo(f"  MLflow run {cand.run_id}; registered {cfg.registry.model_name} v{cand.version} as challenger")
    echo("[4/5] gate: challenger vs champion on the same test rows")
    decision = promote(cfg)
    echo(f"  {decision.decision.action}: " + "; ".join(decision.decision.reasons))
    serve_demo(cfg, res.snapshot, echo)
    uri = cfg.mlflow.resolved_tracking_uri()
    echo(f"see it: mlflow ui --backend-store-uri {uri} --port 5000   (then open http://127.0.0.1:5000)")
    echo("next: mlops-ray models --config examples/quickstart.yaml --history | "
         "mlops-ray serve --config examples/quickstart.yaml")
    return res


def serve_demo(cfg, snapshot, echo: Callable[[str], None] = print, n: int = 3) -> list[dict]:
    """Start the service, send a few real requests, print them and the curl that sends them, shut down."""
    import json

    import httpx

    from mlops_ray.serve.runner import start_service, stop_service
    from mlops_ray.train.features import load_split

    echo(f"[5/5] serve: Ray Serve on http://{cfg.serve.host}:{cfg.serve.port} (champion, batching, autoscaling)")
    url = start_service(cfg)
    answers = []
    try:
        spec = snapshot.manifest["spec"]
        frame = load_split(snapshot, "test", snapshot.preprocessor(), keep_frame=True).frame
        rows = frame[spec["numeric_features"] + spec["categorical_features"]].head(n)
        records = json.loads(rows.to_json(orient="records"))
        body = {"records": records}
        r = httpx.post(f"{url}/predict", json=body, timeout=30)
        r.raise_for_status()
        answers.append(r.json())
        echo(f"  POST /predict ({n} records) -> {json.dumps(r.json())}")
        echo(f"  curl -s -X POST {url}/predict -H 'content-type: application/json' -d '{json.dumps({'records': records[:1]})}'")
        bad = httpx.post(f"{url}/predict", json={"records": [dict(records[0], age="forty")]}, timeout=30)
        echo(f"  a bad request is refused clearly: {bad.status_code} {bad.text}")
    finally:
        stop_service()
        echo("  service stopped (run it in the foreground with: mlops-ray serve --config examples/quickstart.yaml)")
    return answers
