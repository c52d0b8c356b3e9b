"""``mlops-ray pipeline watch``: observe the source, the schedule, the drift monitor and the code,
ask the trigger policy (:mod:`mlops_ray.pipeline.triggers`) and run the pipeline when it says so.

Each tick (``pipeline.poll_interval_s``) the watcher gathers an
:class:`~mlops_ray.pipeline.triggers.Observation`:

* the source's cheap stat key, and its full fingerprint only when the policy asks;
* the closed drift windows of the serving version and the rolling feedback metric, from the
  service's ``GET /drift`` (the drift monitor; none while no service runs);
* the package's code digest and the champion's (``lineage.code_digest``, else its run's
  ``code_digest`` tag), and the champion's training-data fingerprint;
* whether a run it started is still going.

Runs happen in a background thread, so the watcher keeps observing: triggers that arrive during
a run coalesce into one follow-up run. Every decision (run, skip, coalesce, and why) goes to the
pipeline history; the policy state is saved after every tick (``watch_state.json``), so a
restarted watcher neither fires twice nor forgets what was pending.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from mlops_ray.errors import PipelineBusyError
from mlops_ray.pipeline import history as hist
from mlops_ray.pipeline.run import pipeline_dir, run_pipeline
from mlops_ray.pipeline.triggers import Observation, PolicyState, TriggerPolicy, WindowView
from mlops_ray.registry import tracking

log = logging.getLogger("mlops_ray.pipeline")


class Watcher:
    def __init__(
        self,
        ctx,
        cfg,
        *,
        echo: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time,
        service_url: str | None = None,
        run: Callable[..., Any] = run_pipeline,
    ):
        self.ctx, self.cfg, self.echo, self.clock, self.run = ctx, cfg, echo, clock, run
        self.dir = pipeline_dir(ctx, cfg)
        self.state_path = self.dir / "watch_state.json"
        state = None
        # A fresh watcher counts only drift windows that close after it starts (not an old alert).
        self.since: float | None = clock()
        if self.state_path.exists():
            try:
                state = PolicyState.from_dict(json.loads(self.state_path.read_text()))
                self.since = None  # the saved state knows which windows it has seen
            except (ValueError, KeyError) as err:
                log.warning("watch state %s unreadable (%s); starting fresh", self.state_path, err)
        self.policy = TriggerPolicy(cfg.pipeline, state)
        from mlops_ray.drift.commands import service_url as _url

        self.url = _url(cfg, service_url)
        # the code this watcher (and the runs it starts) runs: digest once, not per tick
        self.code_digest = tracking.code_version()["code_digest"]
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._printed: dict[str, str] = {}
        self.results: list = []
        self.last_report: dict | None = None

    # ---------------------------------------------------------------- observation
    def _drift(self) -> tuple[tuple[WindowView, ...], float | None, str]:
        import httpx

        try:
            r = httpx.get(f"{self.url}/drift", timeout=5)
            rep = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            rep = None
        if not rep:
            return (), None, "maximize"
        self.last_report = rep
        v = rep.get("serving_version")
        ver = (rep.get("versions") or {}).get(v) or {}
        evs = [ev for ev in ver.get("windows", []) if self.since is None or (ev["window"]["end"] or 0) >= self.since]
        windows = tuple(WindowView.from_evaluation(ev) for ev in evs)
        fb = ver.get("feedback") or {}
        from mlops_ray.model.tasks import direction

        metric = fb.get("metric")
        return windows, fb.get("rolling"), direction(metric) if metric else "maximize"

    def _champion(self) -> tuple[str | None, str | None]:
        mv = tracking.alias_version(self.ctx.client, self.cfg.registry.model_name, self.cfg.serve.model_alias)
        if mv is None:
            return None, None
        code = mv.tags.get("lineage.code_digest")
        if code is None:
            try:
                code = self.ctx.client.get_run(mv.run_id).data.tags.get("code_digest")
            except Exception:
                code = None
        return code, mv.tags.get("data_fingerprint")

    def observe(self) -> Observation:
        from mlops_ray.data.sources import list_source
        from mlops_ray.data.split_files import fingerprint_source

        uri, fmt = self.ctx.source(self.cfg), self.cfg.data.format
        try:
            key = list_source(uri, fmt).stat_key()
        except Exception:
            key = None
        windows, rolling, direction = self._drift() if self.cfg.pipeline.drift.enabled else ((), None, "maximize")
        champ_code, champ_fp = self._champion()
        return Observation(
            now=self.clock(),
            source_key=key,
            fingerprint=lambda: fingerprint_source(uri, fmt=fmt)[0],
            windows=windows,
            rolling_metric=rolling,
            metric_direction=direction,
            code_digest=self.code_digest,
            champion_code_digest=champ_code,
            champion_fingerprint=champ_fp,
            running=self.running,
        )

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    # ---------------------------------------------------------------- one tick
    def tick(self) -> list:
        obs = self.observe()
        with self._lock:
            decisions = self.policy.evaluate(obs)
            self._save_state()
        for d in decisions:
            hist.append(self.dir, {"kind": "decision", **d.to_dict()})
            # every decision is in the history; the console shows a repeated skip/coalesce once
            if d.action == "run" or self._printed.get(d.trigger) != d.action:
                self.echo(f"[watch] {d.action} ({d.trigger}): {d.reason}")
            self._printed = {} if d.action == "run" else {**self._printed, d.trigger: d.action}
            if d.action == "run":
                self._start(d)
        return decisions

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.policy.state.to_dict()))
        os.replace(tmp, self.state_path)

    def _start(self, decision) -> None:
        context = {"decision": decision.to_dict()}
        if decision.trigger == "drift" and self.last_report:
            context["drift_report"] = self.last_report

        def target():
            try:
                res = self.run(self.ctx, self.cfg, trigger=decision.trigger, reason=decision.reason, context=context)
                self.results.append(res)
                prep = res.step("prepare")
                fingerprint = prep.outputs.get("fingerprint") if prep is not None else None
                with self._lock:
                    self.policy.run_finished(fingerprint, res.status == "succeeded")
                    self._save_state()
                self.echo(
                    f"[watch] pipeline run {res.run_id} {res.status}: version {res.version or '-'} "
                    f"{res.decision or ''} in {res.seconds:.1f}s"
                )
            except PipelineBusyError as err:  # a manual run holds the lock: the trigger stays recorded
                self.echo(f"[watch] run not started: {err}")
            except Exception as err:
                self.echo(f"[watch] run crashed: {type(err).__name__}: {err}")

        self.thread = threading.Thread(target=target, name="pipeline-run", daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- loop
    def run_forever(self, stop: threading.Event | None = None, *, max_runs: int | None = None) -> None:
        """Tick every ``pipeline.poll_interval_s`` until ``stop`` is set (or ``max_runs`` runs finished)."""
        stop = stop or threading.Event()
        self.echo(
            f"[watch] watching {self.ctx.source(self.cfg)} and {self.url}/drift for model "
            f"{self.cfg.registry.model_name} (every {self.cfg.pipeline.poll_interval_s:g}s; Ctrl-C stops)"
        )
        while not stop.is_set():
            try:
                self.tick()
            except Exception as err:  # one bad tick (a flaky registry) must not end the watcher
                self.echo(f"[watch] tick failed: {type(err).__name__}: {err}")
            if max_runs is not None and len(self.results) >= max_runs and not self.running:
                break
            stop.wait(self.cfg.pipeline.poll_interval_s)
        if self.thread is not None:
            self.thread.join()


__all__ = ["Watcher"]
