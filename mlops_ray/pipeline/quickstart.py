"""The quickstart: every stage on generated sample data, local Ray, local MLflow, plus a printer.

generate sample data (if missing) -> prepare a snapshot -> tune (or train) -> gate exactly the
candidate just trained -> deploy it if it wins -> serve it and send a few real requests.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable

from mlops_ray.pipeline import stages


def bundled_config_path() -> Path:
    """Path of the packaged copy of ``examples/quickstart.yaml``."""
    return Path(str(resources.files("mlops_ray") / "resources" / "quickstart.yaml"))


class QuickstartPrinter:
    """Turns stage events into the quickstart's numbered console lines."""

    def __init__(self, cfg, echo: Callable[[str], None] = print):
        self.cfg, self.echo = cfg, echo

    def __call__(self, event: str, info: dict) -> None:
        e = self.echo
        if event == "sample_data":
            if info["generated"]:
                e(f"[1/5] sample data: generating {info['rows']} rows in {info['shards']} shards -> {info['path']}")
            else:
                e(f"[1/5] sample data: using existing {info['path']}")
        elif event == "prepare":
            e("[2/5] prepare: validate, hash-split, fingerprint, fit preprocessing on train, snapshot")
        elif event == "prepared":
            res = info["result"]
            m = res.snapshot.manifest
            state = "reused" if res.reused else "created"
            e(f"snapshot {m['name']}/{m['snapshot_id']} ({state} in {res.seconds:.1f}s)")
            e(f"  fingerprint: {m['fingerprint']}")
            for k, v in m["rows_per_split"].items():
                e(f"  {k:>6}: {v:>8} rows ({v / max(m['rows'], 1):.1%})")
            e(f"  path: {res.snapshot.path}")
        elif event == "tune":
            e(
                f"[3/5] tune: {info['trials']} trials ({info['search_alg']}, {info['scheduler']}) on Ray Tune, "
                f"ranked by valid {info['metric']}"
            )
        elif event == "train":
            e(f"[3/5] train: Ray Train v2 {info['model']}")
        elif event == "trained":
            cand = info["candidate"]
            if "best_config" in cand.extra:
                e(f"  best of {cand.extra['trials']} trials: {cand.extra['best_config']}")
            for k in sorted(cand.metrics):
                if k.startswith("test_"):
                    e(f"  {k:<14} {cand.metrics[k]:.4f}")
            e(f"  MLflow run {cand.run_id}; registered {self.cfg.registry.model_name} v{cand.version}")
        elif event == "gate":
            e(f"[4/5] gate: v{info['version']} vs the current '{info['alias']}' on the same test rows")
        elif event == "gated":
            d = info["result"].decision
            e(f"  {d.action}: " + "; ".join(d.reasons))
        elif event == "deployed":
            ev = info["event"]
            e(f"  '{ev['alias']}' -> v{ev['to_version']} (was {ev['from_version'] or 'none'})")


def run_quickstart(ctx, cfg, config_label: str, echo: Callable[[str], None] = print, engine: str = "ray"):
    """Run every stage in order; returns ``(prepare result, candidate, gate result)``."""
    printer = QuickstartPrinter(cfg, echo)
    echo(f"workspace: {ctx.workspace.root}  (set MLOPS_RAY_HOME to move it)")
    stages.ensure_sample_data(ctx, cfg, printer)
    res = stages.prepare(ctx, cfg, engine=engine, progress=True, on_event=printer)
    cand, decision = stages.train_gate_deploy(ctx, cfg, res.snapshot, on_event=printer)
    serve_demo(ctx, cfg, res.snapshot, config_label, echo)
    echo(f"see it: mlflow ui --backend-store-uri {ctx.tracking_uri} --port 5000   (then open http://127.0.0.1:5000)")
    echo(f"next: mlops-ray models --config {config_label} --history | mlops-ray serve --config {config_label}")
    return res, cand, decision


def serve_demo(ctx, cfg, snapshot, config_label: str, echo: Callable[[str], None] = print, n: int = 3) -> list[dict]:
    """Start the service, send a few real requests, print them and the curl that sends them, shut down."""
    import json

    import httpx

    from mlops_ray.data.splits import load_split
    from mlops_ray.serve.runner import start_service, stop_service

    echo(
        f"[5/5] serve: Ray Serve on http://{cfg.serve.host}:{cfg.serve.port} "
        f"({cfg.serve.model_alias}, batching, autoscaling)"
    )
    url = start_service(ctx, cfg)
    answers = []
    try:
        frame = load_split(snapshot, "test", snapshot.preprocessor(), keep_frame=True).frame
        rows = frame[snapshot.spec.features].head(n)
        records = json.loads(rows.to_json(orient="records"))
        r = httpx.post(f"{url}/predict", json={"records": records}, timeout=30)
        r.raise_for_status()
        answers.append(r.json())
        echo(f"  POST /predict ({n} records) -> {json.dumps(r.json())}")
        echo(
            f"  curl -s -X POST {url}/predict -H 'content-type: application/json' "
            f"-d '{json.dumps({'records': records[:1]})}'"
        )
        bad_field = snapshot.spec.numeric_features[0] if snapshot.spec.numeric_features else snapshot.spec.features[0]
        bad = httpx.post(f"{url}/predict", json={"records": [dict(records[0], **{bad_field: "forty"})]}, timeout=30)
        echo(f"  a bad request is refused clearly: {bad.status_code} {bad.text}")
    finally:
        stop_service()
        echo(f"  service stopped (run it in the foreground with: mlops-ray serve --config {config_label})")
    return answers
