"""A toy trigger kind, as a user would add one: this module plus its one registration line.

``request``: an operator (or another system) writes ``pipeline/<model>/run-request.json``
(``{"id": "...", "why": "..."}``) into the state store; each new request id starts one run.
"""

from __future__ import annotations

from typing import Any

from mlops_ray.pipeline.triggers import Tick, TriggerKind, WatchEnv, register_trigger


class RunRequestTrigger(TriggerKind):
    name, priority = "request", 35  # after code, before schedule

    def observe(self, env: WatchEnv) -> dict[str, Any]:
        return {self.name: env.read_state(self.settings.get("key", "run-request.json"))}

    def decide(self, tick: Tick) -> None:
        req = tick.obs.extra.get(self.name)
        mine = self.my_state(tick.state)
        if not self.enabled() or not isinstance(req, dict) or req.get("id") in (None, mine.get("last_id")):
            return
        mine["last_id"] = req["id"]
        tick.fire(self.name, f"run request {req['id']}: {req.get('why', 'no reason given')}", request=req["id"])


register_trigger(RunRequestTrigger)
