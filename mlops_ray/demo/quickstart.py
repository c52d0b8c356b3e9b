"""The quickstart: the whole product on generated sample data, local Ray, local MLflow.

generate sample data (if missing) -> one pipeline run (prepare, tune, evaluate, register, gate
exactly that version, deploy) -> serve it and send real requests -> in-distribution then drifted
traffic and the drift report -> the loop closing once (drift alert -> retraining -> gate -> the
service switching version).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from mlops_ray.pipeline import stages

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context


def bundled_config_path() -> Path:
    """Path of the packaged copy of ``examples/quickstart.yaml``."""
    return Path(str(resources.files("mlops_ray") / "resources" / "quickstart.yaml"))


class QuickstartPrinter:
    """Turns the sample-data stage's event into the quickstart's first console line."""

    def __init__(self, cfg: PipelineConfig, echo: Callable[[str], None] = print):
        self.cfg, self.echo = cfg, echo

    def __call__(self, event: str, info: dict) -> None:
        if event == "sample_data":
            if info["generated"]:
                self.echo(
                    f"[1/6] sample data: generating {info['rows']} rows in {info['shards']} shards -> {info['path']}"
                )
            else:
                self.echo(f"[1/6] sample data: using existing {info['path']}")


def run_quickstart(
    ctx: Context, cfg: PipelineConfig, config_label: str, echo: Callable[[str], None] = print, engine: str = "ray"
):
    """sample data -> one pipeline run -> serve and answer -> drift demonstration -> the loop closing once.

    Returns the pipeline result of the first run and the closed loop's result.
    """
    from mlops_ray.demo.loop import closed_loop, print_loop
    from mlops_ray.errors import PipelineStepError
    from mlops_ray.pipeline.run import run_pipeline, step_printer
    from mlops_ray.serve.runner import start_service, stop_service

    printer = QuickstartPrinter(cfg, echo)
    echo(f"workspace: {ctx.workspace.root}  (set MLOPS_RAY_HOME to move it)")
    stages.ensure_sample_data(ctx, cfg, printer)
    echo("[2/6] pipeline run: prepare -> tune|train -> evaluate -> register -> gate -> deploy")
    res = run_pipeline(ctx, cfg, trigger="manual", reason="quickstart", engine=engine, callbacks=[step_printer(echo)])
    if res.status != "succeeded":
        raise PipelineStepError(res.error or "pipeline run failed")
    _pipeline_summary(ctx, cfg, res, echo)
    snapshot = ctx.snapshots.find(
        f"{res.step('prepare').outputs['dataset']}/{res.step('prepare').outputs['snapshot_id']}"
    )
    echo(
        f"[3/6] serve: Ray Serve on http://{cfg.serve.host}:{cfg.serve.port} "
        f"({cfg.serve.model_alias}, batching, autoscaling, drift monitor)"
    )
    url = start_service(ctx, cfg)
    loop = None
    try:
        serve_requests(url, snapshot, echo)
        echo("[4/6] drift: in-distribution traffic, then drifted traffic (data generate --drift 1.0)")
        drift_demo(ctx, cfg, url, config_label, echo)
        echo(
            "[5/6] the loop closes: new drifted data lands in the source, drifted traffic arrives; the watcher "
            "fires on drift, the pipeline retrains and gates, the service switches"
        )
        loop = closed_loop(ctx, cfg, echo=echo)
        print_loop(loop, echo)
    finally:
        stop_service()
        echo(f"[6/6] service stopped (run it in the foreground with: mlops-ray serve --config {config_label})")
    echo(f"see it: mlflow ui --backend-store-uri {ctx.tracking_uri} --port 5000   (then open http://127.0.0.1:5000)")
    echo(
        f"next: mlops-ray pipeline history --config {config_label} | mlops-ray models --config {config_label} "
        f"--history | mlops-ray pipeline watch --config {config_label}"
    )
    return res, loop


def _pipeline_summary(ctx: Context, cfg: PipelineConfig, res, echo) -> None:
    prep = res.step("prepare").outputs
    echo(f"  snapshot {prep['dataset']}/{prep['snapshot_id']}  fingerprint: {prep['fingerprint']}")
    echo("  rows per split: " + ", ".join(f"{k} {v}" for k, v in prep["rows"].items()))
    metrics = res.step("train").outputs.get("metrics", {})
    echo("  " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test_")))
    gate = res.step("gate").outputs
    echo(
        f"  registered {cfg.registry.model_name} v{res.version}; gate {gate['decision']}: " + "; ".join(gate["reasons"])
    )
    dep = res.step("deploy").outputs
    if dep.get("moved"):
        echo(f"  '{dep['alias']}' -> v{dep['version']} (was {gate.get('champion_version') or 'none'})")
    echo(f"  pipeline run {res.run_id} in {res.seconds:.1f}s; MLflow parent run {res.mlflow_run_id}")


def drift_demo(
    ctx: Context,
    cfg: PipelineConfig,
    url: str,
    config_label: str,
    echo: Callable[[str], None] = print,
    rows: int = 1200,
) -> dict:
    """Send ``rows`` fresh in-distribution rows then ``rows`` drifted rows; print the windows and a report."""
    import time

    import httpx
    import pandas as pd

    from mlops_ray.data.generate import generate_dataset
    from mlops_ray.drift.commands import fetch_report, pick_evaluation
    from mlops_ray.drift.render import write_png

    features = list(cfg.data.numeric_features) + list(cfg.data.categorical_features)
    work = ctx.workspace.ensure("quickstart-traffic")
    frames = {}
    for name, drift in (("same", 0.0), ("drifted", 1.0)):
        if not (work / name).exists():
            generate_dataset(work / name, rows, shards=1, seed=77, drift=drift)
        frames[name] = pd.read_parquet(work / name)
    before = _closed_windows(fetch_report(cfg, url))
    with httpx.Client(timeout=30) as client:
        for name in ("same", "drifted"):
            frame = frames[name]
            for start in range(0, len(frame), 100):
                recs = frame.iloc[start : start + 100][features].to_json(orient="records")
                r = client.post(
                    f"{url}/predict",
                    content=recs.join(['{"records":', "}"]),
                    headers={"content-type": "application/json"},
                )
                r.raise_for_status()
            deadline = time.monotonic() + 20  # the replicas push every drift.push_interval_s
            while _closed_windows(fetch_report(cfg, url)) < before + (1 if name == "same" else 2):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.3)
    report = fetch_report(cfg, url)
    version = report["serving_version"]
    for ev in report["versions"][version]["windows"][before:]:
        worst = [f for f in ev["features"] if f["status"] in ("warn", "alert")][:4]
        shown = ", ".join(f"{f['feature']} {f['psi']:.2f} {f['status']}" for f in worst) or (
            f"max PSI {ev['features'][0]['psi']:.3f} ({ev['features'][0]['feature']})"
        )
        echo(f"  window {ev['window']['index']}: {ev['status'].upper():<5} {ev['rows']} rows: {shown}")
    latest = pick_evaluation(report)
    png = write_png(latest, ctx.workspace.ensure("reports") / "quickstart-drift.png")
    echo(f"  drift report: {png}   (mlops-ray drift report --config {config_label} [--format png|html|json])")
    return report


def _closed_windows(report: dict) -> int:
    v = report.get("serving_version")
    return len(((report.get("versions") or {}).get(v) or {}).get("windows", []))


def serve_requests(url: str, snapshot, echo: Callable[[str], None] = print, n: int = 3) -> dict:
    """Send a few real requests to the running service; print them, the curl that sends one, and a refusal."""
    import json

    import httpx

    from mlops_ray.data.splits import load_split

    frame = load_split(snapshot, "test", snapshot.preprocessor(), keep_frame=True).frame
    rows = frame[snapshot.spec.features].head(n)
    records = json.loads(rows.to_json(orient="records"))
    r = httpx.post(f"{url}/predict", json={"records": records}, timeout=30)
    r.raise_for_status()
    echo(f"  POST /predict ({n} records) -> {json.dumps(r.json())}")
    echo(
        f"  curl -s -X POST {url}/predict -H 'content-type: application/json' "
        f"-d '{json.dumps({'records': records[:1]})}'"
    )
    bad_field = snapshot.spec.numeric_features[0] if snapshot.spec.numeric_features else snapshot.spec.features[0]
    bad = httpx.post(f"{url}/predict", json={"records": [dict(records[0], **{bad_field: "forty"})]}, timeout=30)
    echo(f"  a bad request is refused clearly: {bad.status_code} {bad.text}")
    return r.json()
