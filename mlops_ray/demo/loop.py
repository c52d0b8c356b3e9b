"""The closed loop, shown end to end on a running service: drift alert -> retraining -> gate -> the
service switching version, with no person involved (``mlops-ray pipeline loop-demo``, the
quickstart's last part, checked by its e2e test, and ``benchmarks/closed_loop.py``).

1. in-distribution traffic (fresh rows from the same generator, another seed): no trigger;
2. new drifted data lands in the source directory and drifted traffic arrives;
3. the watcher (:class:`~mlops_ray.pipeline.watch.Watcher`) sees drift alerts in
   ``drift.consecutive_windows`` windows in a row and fires once; the new data fires too and is
   coalesced into the same run;
4. the pipeline prepares a snapshot that includes the new data, trains, gates the candidate
   against the champion on the same new test rows and, if it wins, moves the deploy alias;
5. the replicas follow the alias; traffic keeps flowing the whole time and every response is
   checked (status, model version).

Lead time = from the first drifted request to the first response from the promoted version.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context


@dataclass
class Traffic:
    """Requests sent by the traffic thread and what came back."""

    sent: int = 0
    rows: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    first_drifted_at: float | None = None
    first_new_version_at: float | None = None


class TrafficThread(threading.Thread):
    """Sends ``frames`` (in order, cycling the last one) in requests of ``per_request`` rows until
    stopped; records every response's version and every failure. Bounded by ``max_seconds``."""

    def __init__(
        self, url: str, features: list[str], *, per_request: int = 50, pause_s: float = 0.02, max_seconds: float = 600.0
    ):
        super().__init__(name="traffic", daemon=True)
        self.url, self.features, self.per_request, self.pause_s = url, features, per_request, pause_s
        self.max_seconds = max_seconds
        self.stats = Traffic()
        self.frames: list[tuple[str, Any]] = []  # (label, DataFrame)
        self.stop_event = threading.Event()
        self.watch_version: str | None = None  # the version to wait for
        self._lock = threading.Lock()

    def add(self, label: str, frame) -> None:
        with self._lock:
            self.frames.append((label, frame))

    def run(self) -> None:
        import httpx

        deadline = time.monotonic() + self.max_seconds
        i = 0
        with httpx.Client(timeout=30) as client:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                with self._lock:
                    label, frame = self.frames[-1] if self.frames else ("", None)  # the newest phase
                if frame is None:
                    time.sleep(0.05)
                    continue
                start = (i * self.per_request) % max(len(frame) - self.per_request, 1)
                chunk = frame.iloc[start : start + self.per_request]
                records = json.loads(chunk[self.features].to_json(orient="records"))
                now = time.time()
                if label == "drifted" and self.stats.first_drifted_at is None:
                    self.stats.first_drifted_at = now
                try:
                    r = client.post(f"{self.url}/predict", json={"records": records})
                    ok = r.status_code == 200
                    version = r.json()["model"]["version"] if ok else None
                except Exception as err:  # a refused connection is a failed request too
                    ok, version = False, None
                    r = err
                self.stats.sent += 1
                self.stats.rows += len(records)
                if not ok:
                    self.stats.failed += 1
                    if len(self.stats.failures) < 20:
                        self.stats.failures.append(str(getattr(r, "status_code", r)))
                else:
                    self.stats.versions[version] = self.stats.versions.get(version, 0) + 1
                    if self.watch_version and version == self.watch_version and self.stats.first_new_version_at is None:
                        self.stats.first_new_version_at = time.time()
                i += 1
                time.sleep(self.pause_s)


@dataclass
class LoopResult:
    champion_before: str
    champion_after: str | None
    lead_time_s: float | None
    traffic: Traffic
    runs: list[dict]
    decisions: list[dict]
    drift_rows_until_trigger: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def closed_loop(
    ctx: Context,
    cfg: PipelineConfig,
    *,
    echo: Callable[[str], None] = print,
    new_rows: int = 6000,
    drift: float = 1.0,
    seed: int = 101,
    in_distribution_rows: int = 1500,
    timeout_s: float = 480.0,
) -> LoopResult:
    """Run the loop once against the service already running for ``cfg`` (see module doc)."""
    import pandas as pd

    from mlops_ray.data.generate import generate_dataset
    from mlops_ray.drift.commands import service_url
    from mlops_ray.pipeline import history as hist
    from mlops_ray.pipeline.run import pipeline_prefix
    from mlops_ray.pipeline.watch import Watcher
    from mlops_ray.registry import tracking

    t_start = time.monotonic()
    name, alias = cfg.registry.model_name, cfg.serve.model_alias
    url = service_url(cfg)
    before = str(tracking.alias_version(ctx.client, name, alias).version)
    spec_features = list(cfg.data.numeric_features) + list(cfg.data.categorical_features)
    work = ctx.workspace.ensure("loop-demo", time.strftime("%Y%m%d-%H%M%S"))
    generate_dataset(work / "same", max(in_distribution_rows, 500), shards=1, seed=seed)
    same = pd.read_parquet(work / "same")
    n_decisions = len(hist.read(ctx.state, pipeline_prefix(cfg), "decision"))
    n_runs = len(hist.read(ctx.state, pipeline_prefix(cfg), "run"))

    watcher = Watcher(ctx, cfg, echo=lambda m: echo(f"  {m}"), service_url=url)
    stop = threading.Event()
    wthread = threading.Thread(target=watcher.run_forever, args=(stop,), name="watcher", daemon=True)
    traffic = TrafficThread(url, spec_features, max_seconds=timeout_s + 120)
    try:
        wthread.start()
        echo(f"  in-distribution traffic: {len(same)} fresh rows (seed {seed}) -> no trigger expected")
        traffic.add("same", same)
        traffic.start()
        _wait_rows(traffic, len(same), timeout=120)
        source = Path(cfg.source(ctx.workspace.location))
        landing = source / f"new-{time.strftime('%Y%m%d-%H%M%S')}" if source.is_dir() else work / "new"
        generate_dataset(landing, new_rows, shards=1, seed=seed + 1, drift=drift)
        drifted = pd.read_parquet(landing)
        echo(f"  new data lands: {new_rows} rows with drift {drift} -> {landing}")
        echo("  drifted traffic starts")
        rows_at_drift = traffic.stats.rows
        traffic.add("drifted", drifted)
        deadline = time.monotonic() + timeout_s
        new_version = None
        trigger_rows = None
        while time.monotonic() < deadline:
            runs = hist.read(ctx.state, pipeline_prefix(cfg), "run")[n_runs:]
            if trigger_rows is None and watcher.running:
                trigger_rows = traffic.stats.rows - rows_at_drift
            done = [r for r in runs if r.get("trigger") == "drift" or "drift" in r.get("reason", "")]
            if done:
                run = done[0]
                if run.get("decision") != "PROMOTE" or run.get("status") != "succeeded":
                    break
                new_version = str(run["version"])
                traffic.watch_version = new_version
                if traffic.stats.first_new_version_at is not None or traffic.stats.versions.get(new_version):
                    if traffic.stats.first_new_version_at is None:
                        traffic.stats.first_new_version_at = time.time()
                    break
            time.sleep(0.5)
        time.sleep(1.0)  # a little traffic on the new version
    finally:
        traffic.stop_event.set()
        stop.set()
        if traffic.is_alive():
            traffic.join(30)
        wthread.join(timeout_s)
    st = traffic.stats
    lead = st.first_new_version_at - st.first_drifted_at if st.first_new_version_at and st.first_drifted_at else None
    after = tracking.alias_version(ctx.client, name, alias)
    return LoopResult(
        champion_before=before,
        champion_after=str(after.version) if after else None,
        lead_time_s=lead,
        traffic=st,
        runs=hist.read(ctx.state, pipeline_prefix(cfg), "run")[n_runs:],
        decisions=hist.read(ctx.state, pipeline_prefix(cfg), "decision")[n_decisions:],
        drift_rows_until_trigger=trigger_rows,
        seconds=time.monotonic() - t_start,
    )


def _wait_rows(traffic: TrafficThread, rows: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while traffic.stats.rows < rows and time.monotonic() < deadline:
        time.sleep(0.1)


def print_loop(res: LoopResult, echo: Callable[[str], None] = print) -> None:
    """The loop's outcome for a person."""
    st = res.traffic
    runs = ", ".join(
        f"{r.get('trigger')} run {r.get('run_id')}: v{r.get('version')} {r.get('decision')} ({r.get('status')})"
        for r in res.runs
    )
    echo(f"  pipeline runs: {runs or 'none'}")
    fired = [d for d in res.decisions if d.get("action") == "run"]
    echo(
        f"  trigger decisions: {len(res.decisions)} ({len(fired)} run: " + "; ".join(d["trigger"] for d in fired) + ")"
    )
    if res.drift_rows_until_trigger is not None:
        echo(f"  drifted rows until the run started: {res.drift_rows_until_trigger}")
    lead = f"{res.lead_time_s:.1f}s" if res.lead_time_s is not None else "n/a (no promotion)"
    echo(
        f"  champion v{res.champion_before} -> v{res.champion_after}; drift-to-deploy lead time {lead}; "
        f"{st.sent} requests, {st.failed} failed, responses by version {st.versions}"
    )


def run_loop_demo(ctx: Context, cfg: PipelineConfig, *, echo: Callable[[str], None] = print, **kw) -> LoopResult:
    """Serve the champion (a pipeline run first when there is none), run the loop, stop the service."""
    from mlops_ray.pipeline.run import run_pipeline
    from mlops_ray.registry import tracking
    from mlops_ray.serve.runner import start_service, stop_service

    if tracking.alias_version(ctx.client, cfg.registry.model_name, cfg.serve.model_alias) is None:
        echo("no champion yet: one pipeline run first")
        res = run_pipeline(ctx, cfg, reason="loop demo: first champion")
        if res.status != "succeeded":
            from mlops_ray.errors import PipelineStepError

            raise PipelineStepError(res.error or "pipeline run failed")
    url = start_service(ctx, cfg)
    echo(f"service up at {url}; closing the loop (watcher + drift monitor + pipeline)")
    try:
        res = closed_loop(ctx, cfg, echo=echo, **kw)
    finally:
        stop_service()
    print_loop(res, echo)
    return res


__all__ = ["LoopResult", "Traffic", "TrafficThread", "closed_loop", "print_loop", "run_loop_demo"]
