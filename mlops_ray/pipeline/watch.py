"""``mlops-ray pipeline watch``: observe the source, the schedule, the drift monitor and the code,
ask the trigger policy (:mod:`mlops_ray.pipeline.triggers`) and run the pipeline when it says so.

Each tick (``pipeline.poll_interval_s``) every registered trigger kind observes through the
watcher (:class:`~mlops_ray.pipeline.triggers.WatchEnv`), which gives them:

* the source's cheap stat key, and its full fingerprint only when the policy asks;
* the closed drift windows of the serving version and the rolling feedback metric, from the
  service's ``GET /drift`` (the drift monitor; none while no service runs);
* the package's code digest and the champion's (``lineage.code_digest``, else its run's
  ``code_digest`` tag), and the champion's training-data fingerprint;
* whether a run it started is still going.

Runs happen in a background thread, so the watcher keeps observing: triggers that arrive during
a run coalesce into one follow-up run. Every decision (run, skip, coalesce, and why) goes to the
pipeline history; the policy state is saved after every tick (``pipeline/<model>/watch_state.json``
in the state store), so a restarted watcher neither fires twice nor forgets what was pending.
When a run ends, triggers that waited for it and whose evidence it made moot are dropped as
``superseded`` (recorded with the reason).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops_ray.errors import PipelineBusyError
from mlops_ray.pipeline import history as hist
from mlops_ray.pipeline.run import pipeline_prefix, run_pipeline
from mlops_ray.pipeline.triggers import Action, Decision, PolicyState, TriggerPolicy
from mlops_ray.registry import tracking

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context
    from mlops_ray.pipeline.controller import PipelineResult

log = logging.getLogger("mlops_ray.pipeline")


class Watcher:
    """Ticks the trigger policy and runs the pipeline; also the :class:`WatchEnv` the kinds observe with."""

    def __init__(
        self,
        ctx: Context,
        cfg: PipelineConfig,
        *,
        echo: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time,
        service_url: str | None = None,
        run: Callable[..., PipelineResult] = run_pipeline,
    ):
        self.ctx, self.cfg, self.echo, self.clock, self.run = ctx, cfg, echo, clock, run
        self.store, self.prefix = ctx.state, pipeline_prefix(cfg)
        self.state_key = f"{self.prefix}/watch_state.json"
        state = None
        # A fresh watcher counts only drift windows that close after it starts (not an old alert).
        self.since: float | None = clock()
        saved = self.store.read_json(self.state_key)
        if saved is not None:
            try:
                state = PolicyState.from_dict(saved)
                self.since = None  # the saved state knows which windows it has seen
            except (ValueError, KeyError, TypeError) as err:
                log.warning("watch state %s unreadable (%s); starting fresh", self.state_key, err)
        self.policy = TriggerPolicy(cfg.pipeline, state)
        from mlops_ray.drift.commands import service_url as _url

        self.url = _url(cfg, service_url)
        # the code this watcher (and the runs it starts) runs: digest once, not per tick
        self._code_digest = tracking.code_version()["code_digest"]
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._printed: dict[str, str] = {}
        self.results: list = []
        self.last_report: dict | None = None

    # ---------------------------------------------------------------- WatchEnv
    def source_key(self) -> str | None:
        from mlops_ray.data.sources import list_source

        try:
            return list_source(self.cfg.source(self.ctx.workspace.location), self.cfg.data.format).stat_key()
        except Exception:
            return None

    def fingerprint(self) -> str:
        from mlops_ray.data.split_files import fingerprint_source

        return fingerprint_source(self.cfg.source(self.ctx.workspace.location), fmt=self.cfg.data.format)[0]

    def drift_report(self) -> dict[str, Any] | None:
        """``GET /drift`` of the service, with only the windows that closed since this watcher started
        (a fresh watcher) or all of them (a restored one: its state knows which it has seen)."""
        import httpx

        try:
            r = httpx.get(f"{self.url}/drift", timeout=5)
            rep = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            rep = None
        if not rep:
            return None
        self.last_report = rep
        if self.since is not None:
            for ver in (rep.get("versions") or {}).values():
                ver["windows"] = [ev for ev in ver.get("windows", []) if (ev["window"]["end"] or 0) >= self.since]
        return rep

    def champion(self) -> dict[str, str | None]:
        mv = tracking.alias_version(self.ctx.client, self.cfg.registry.model_name, self.cfg.serve.model_alias)
        if mv is None:
            return {"version": None, "code_digest": None, "fingerprint": None}
        code = mv.tags.get("lineage.code_digest")
        if code is None:
            try:
                code = self.ctx.client.get_run(mv.run_id).data.tags.get("code_digest")
            except Exception:
                code = None
        return {"version": str(mv.version), "code_digest": code, "fingerprint": mv.tags.get("data_fingerprint")}

    def code_digest(self) -> str:
        return self._code_digest

    def read_state(self, key: str) -> Any:
        return self.store.read_json(f"{self.prefix}/{key}")

    # ---------------------------------------------------------------- one tick
    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def observe(self):
        return self.policy.observe(self, now=self.clock(), running=self.running)

    def tick(self) -> list[Decision]:
        obs = self.observe()
        with self._lock:
            decisions = self.policy.evaluate(obs)
            self._save_state()
        self._record(decisions)
        for d in decisions:
            if d.action == Action.RUN:
                self._start(d)
        return decisions

    def _record(self, decisions: list[Decision]) -> None:
        for d in decisions:
            hist.append(self.store, self.prefix, {"kind": "decision", **d.to_dict()})
            # every decision is in the history; the console shows a repeated skip/coalesce once
            if d.action in (Action.RUN, Action.SUPERSEDED) or self._printed.get(d.trigger) != d.action:
                self.echo(f"[watch] {d.action} ({d.trigger}): {d.reason}")
            self._printed = {} if d.action == Action.RUN else {**self._printed, d.trigger: d.action}

    def _save_state(self) -> None:
        self.store.write_json(self.state_key, self.policy.state.to_dict())

    def _start(self, decision: Decision) -> None:
        context = {"decision": decision.to_dict()}
        if decision.trigger == "drift" and self.last_report:
            context["drift_report"] = self.last_report

        def target():
            try:
                res = self.run(self.ctx, self.cfg, trigger=decision.trigger, reason=decision.reason, context=context)
                self.results.append(res)
                prep, deploy = res.step("prepare"), res.step("deploy")
                fingerprint = prep.outputs.get("fingerprint") if prep is not None else None
                deployed = deploy.outputs.get("version") if deploy is not None and deploy.outputs.get("moved") else None
                with self._lock:
                    dropped = self.policy.run_finished(
                        fingerprint, res.status == "succeeded", deployed_version=deployed, at=self.clock()
                    )
                    self._save_state()
                self.echo(
                    f"[watch] pipeline run {res.run_id} {res.status}: version {res.version or '-'} "
                    f"{res.decision or ''} in {res.seconds:.1f}s"
                )
                self._record(dropped)
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
            f"[watch] watching {self.cfg.source(self.ctx.workspace.location)} and {self.url}/drift for model "
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
