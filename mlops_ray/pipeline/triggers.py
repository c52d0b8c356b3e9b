"""The continuous-training trigger policy: when ``mlops-ray pipeline watch`` starts a run.

A pure state machine over registered **trigger kinds**: each kind is one class behind a small
interface (:class:`TriggerKind`: ``observe`` gathers its inputs through the watcher's
:class:`WatchEnv`, ``decide`` fires or skips, pure) registered in one place
(:func:`register_trigger`); the built-ins are ``data``, ``schedule``, ``drift`` and ``code``. The
watcher gathers an :class:`Observation` at every tick (every ``pipeline.poll_interval_s``) and calls
:meth:`TriggerPolicy.evaluate`, which returns the :class:`Decision` list of that tick. The policy
does no I/O, reads no clock (the time is ``Observation.now``) and uses neither Ray nor MLflow; its
:class:`PolicyState` round-trips through JSON (``to_dict`` / ``from_dict``) so the watcher can
persist it and resume after a restart without firing twice. Every decision is returned, so the watcher can record it::

    policy = TriggerPolicy(cfg.pipeline, PolicyState.from_dict(saved) if saved else None)
    for d in policy.evaluate(obs):          # obs: what the watcher saw at this tick
        record(d.to_dict())
        if d.action == Action.RUN:
            start_pipeline_run(reason=d.reason)
    save(policy.state.to_dict())

Rules (the ``pipeline:`` section of the config, :class:`~mlops_ray.config.AutomationConfig`):

* **One run at a time.** An ``evaluate`` call returns at most one ``"run"`` decision. When
  several triggers fire in one tick and no run is in progress, the run goes to the
  highest-priority trigger (drift > data > code > schedule), its reason names the others,
  and each other trigger gets a ``"coalesce"`` decision. While a run is in progress
  (``Observation.running``), every trigger that fires gets a ``"coalesce"`` decision and is
  remembered as pending; the first tick with no run in progress turns everything pending
  (plus whatever fires in that tick) into exactly one ``"run"``, even if nothing new fired.
* **data** (``data.enabled``): the baseline is the champion's training-data fingerprint when
  known, else the first fingerprint seen (which starts no run). The expensive full
  fingerprint is computed only when the cheap stat key of the source files
  (``source_key``) differs from the last one seen; a fingerprint that differs from the
  baseline fires (reason: old -> new fingerprint) and becomes the baseline. A changed stat
  key with unchanged content (``touch``) fires nothing. When the champion's fingerprint
  changes (a run trained on new data was promoted), it becomes the baseline.
* **schedule** (``schedule.interval_s`` or ``schedule.cron``): interval slots are
  ``anchor + k * interval_s`` with the anchor at the first observation; cron slots are the
  times of the expression in UTC (croniter). The slots due at a tick are those after the
  last slot handled and at or before now; none due fires nothing. ``missed: run_once``: any
  number due fires once (reason: the slot, and "N missed slots collapsed into one run").
  ``missed: skip``: only the latest due slot counts, and only when it is at most
  ``max(2 * poll_interval_s, 1 s)`` old and no run is in progress; otherwise it is a
  ``"skip"`` decision. Either way the latest due slot is then handled. So a slot that falls
  while a run is in progress never starts a second run: with ``run_once`` it is coalesced
  into one follow-up run, with ``skip`` it is skipped.
* **drift** (``drift.enabled``): only closed windows of the serving model version not seen
  before count (the last window index is kept per model version; a new version resets the
  counters). Per feature, a window with the feature in alert adds one to its streak and a
  window without resets it; ``insufficient`` windows neither count nor reset. A feature
  reaching ``consecutive_windows`` fires (reason: the features and K) and resets every
  streak, so a long drift fires once, not once per window. A rolling metric (from
  ``POST /feedback`` labels) past ``drift.metric_floor`` (below it for a metric to
  maximize, above it for one to minimize) fires too. Within ``drift.cooldown_s`` of the
  last run decision that included drift, a drift firing is a ``"skip"`` decision instead
  ("cooldown N s left"; streaks reset all the same). A rolling metric that stays past the
  floor fires again once the cooldown is over; in between it gives at most one skip (for a
  breach that the last drift run did not already include).
* **superseded**: a trigger pending behind a run is dropped (a ``"superseded"`` decision, with the
  reason) when the run it waited for made its evidence moot: drift windows about a model version
  that the run replaced by deploying another, or new data that the run trained on
  (:meth:`TriggerPolicy.run_finished`).
* **code** (``code.enabled``): when both the current code digest and the champion's are
  known and differ, it fires once per current digest value; the same digest never fires
  twice (the 256 most recent fired digests are remembered), a later different one fires.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, ClassVar, Protocol

from croniter import croniter

from mlops_ray.config import AutomationConfig


class Action(StrEnum):
    """What one decision says (a str: compares and serialises as ``"run"``, ...)."""

    RUN = "run"  # start a pipeline run
    SKIP = "skip"  # fired, but a rule says not now (cooldown, a missed slot)
    COALESCE = "coalesce"  # fired while a run is in progress (pending: one run follows), or folded into this tick's run
    SUPERSEDED = "superseded"  # a pending trigger dropped: the run it waited for made its evidence moot


RUN, SKIP, COALESCE, SUPERSEDED = Action.RUN, Action.SKIP, Action.COALESCE, Action.SUPERSEDED
DRIFT, DATA, CODE, SCHEDULE = "drift", "data", "code", "schedule"
WINDOW_STATUSES = ("ok", "warn", "alert", "insufficient")
METRIC_DIRECTIONS = ("maximize", "minimize")
STATE_FORMAT = 1

_SHORT = 12  # digest / fingerprint prefix length in reasons
_KEEP_VERSIONS = 32  # model versions whose last seen window index is remembered
_KEEP_CODE_DIGESTS = 256  # fired code digests remembered
_MAX_SLOT_COUNT = 10_000  # cron slots counted one by one before the count is reported as "at least"


def _rank(trigger: str) -> int:
    return trigger_names().index(trigger)


def _iso(t: float) -> str:
    """Epoch seconds as UTC ISO-8601 (``2024-01-01T03:00:00Z``; fractions only when present)."""
    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    text = d.isoformat(timespec="milliseconds" if d.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _short(digest: str) -> str:
    return digest[:_SHORT]


def _seconds(s: float) -> str:
    return f"{s:.1f}".rstrip("0").rstrip(".") if s < 100 else f"{s:.0f}"


# ------------------------------------------------------------------------------ inputs / outputs
@dataclass(frozen=True)
class WindowView:
    """One closed drift-monitor window of the serving model version."""

    version: str
    index: int  # increasing per version
    status: str  # "ok" | "warn" | "alert" | "insufficient"
    alerted: tuple[str, ...] = ()  # features with status "alert" in that window

    def __post_init__(self) -> None:
        if self.status not in WINDOW_STATUSES:
            raise ValueError(f"window status {self.status!r} is not one of {', '.join(WINDOW_STATUSES)}")
        object.__setattr__(self, "version", str(self.version))
        object.__setattr__(self, "alerted", tuple(self.alerted))

    @classmethod
    def from_evaluation(cls, ev: dict[str, Any]) -> "WindowView":
        """The view of one closed-window evaluation of the drift monitor (``GET /drift`` ``windows``)."""
        return cls(
            version=str(ev["model_version"]),
            index=int(ev["window"]["index"]),
            status=ev["status"],
            alerted=tuple(f["feature"] for f in ev.get("features") or () if f.get("status") == "alert"),
        )


@dataclass(frozen=True)
class Observation:
    """What the watcher saw at one tick."""

    now: float  # epoch seconds
    source_key: str | None = None  # cheap stat digest of the source files (None: not checked / unreadable)
    fingerprint: Callable[[], str] | None = None  # full content fingerprint; called only when source_key changed
    windows: tuple[WindowView, ...] = ()  # closed windows of the serving version, oldest first (may repeat)
    rolling_metric: float | None = None  # metric from ground-truth feedback, if any
    metric_direction: str = "maximize"  # "maximize" | "minimize"
    code_digest: str | None = None  # digest of the code now
    champion_code_digest: str | None = None  # code digest the serving champion was trained with
    champion_fingerprint: str | None = None  # data fingerprint the champion was trained on
    running: bool = False  # a pipeline run is in progress right now
    extra: Mapping[str, Any] = field(default_factory=dict)  # what other trigger kinds observed, by kind name

    def __post_init__(self) -> None:
        if self.metric_direction not in METRIC_DIRECTIONS:
            raise ValueError(f"metric_direction {self.metric_direction!r} is not 'maximize' or 'minimize'")
        object.__setattr__(self, "windows", tuple(self.windows))


@dataclass(frozen=True)
class Decision:
    """One decision of one tick: ``run`` (start a pipeline run), ``skip``, ``coalesce`` or ``superseded``."""

    action: Action
    trigger: str  # a registered trigger kind: "data" | "schedule" | "drift" | "code" | ...
    reason: str  # human-readable and specific
    at: float  # Observation.now of the tick

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", Action(self.action))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "action": str(self.action)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Decision":
        return cls(action=Action(d["action"]), trigger=d["trigger"], reason=d["reason"], at=float(d["at"]))


# ------------------------------------------------------------------------------ state
@dataclass
class PolicyState:
    """Everything the policy remembers between ticks (and across watcher restarts, as JSON)."""

    # data
    source_key: str | None = None  # last stat key seen (after its fingerprint was computed)
    data_baseline: str | None = None  # fingerprint the next one is compared with
    champion_fingerprint: str | None = None  # last champion fingerprint seen (adopted as baseline on change)
    changed_key: str | None = None  # a new stat key waiting for data.settle_s of quiet...
    changed_at: float | None = None  # ...since this time
    # schedule
    schedule_anchor: float | None = None  # first observation time: interval slots are anchor + k * interval_s
    last_slot: float | None = None  # latest slot handled (run, coalesced or skipped)
    # drift
    windows_seen: dict[str, int] = field(default_factory=dict)  # model version -> last window index seen
    drift_version: str | None = None  # model version the streaks belong to
    alert_streaks: dict[str, int] = field(default_factory=dict)  # feature -> consecutive alert windows (> 0)
    last_drift_run_at: float | None = None  # time of the last run decision that included drift
    metric_reported: bool = False  # the current metric breach was acted on (drift run or skip) this cooldown
    # code
    code_digests_fired: list[str] = field(default_factory=list)
    # coalescing: trigger -> {"reason": latest reason, "count": times fired, "since": first time,
    # "evidence": what the latest firing was about, e.g. {"model_version": "1"} (see run_finished)}
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    # state of trigger kinds other than the built-ins: kind name -> its JSON-able state
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PolicyState":
        """The state of :meth:`to_dict` (missing keys take their defaults; unknown keys are ignored)."""
        fmt = d.get("format", STATE_FORMAT)
        if fmt != STATE_FORMAT:
            raise ValueError(f"trigger policy state format {fmt!r} is not {STATE_FORMAT}")
        names = {f.name for f in dataclasses.fields(cls)}
        st = cls(**{k: v for k, v in d.items() if k in names})

        def opt_float(x: Any) -> float | None:
            return None if x is None else float(x)

        st.schedule_anchor = opt_float(st.schedule_anchor)
        st.changed_at = opt_float(st.changed_at)
        st.last_slot = opt_float(st.last_slot)
        st.last_drift_run_at = opt_float(st.last_drift_run_at)
        st.metric_reported = bool(st.metric_reported)
        st.windows_seen = {str(k): int(v) for k, v in (st.windows_seen or {}).items()}
        st.alert_streaks = {str(k): int(v) for k, v in (st.alert_streaks or {}).items()}
        st.code_digests_fired = [str(x) for x in st.code_digests_fired or ()]
        st.pending = {
            str(t): {
                "reason": str(p["reason"]),
                "count": int(p.get("count", 1)),
                "since": float(p["since"]),
                "evidence": dict(p.get("evidence") or {}),
            }
            for t, p in (st.pending or {}).items()
            if t in trigger_names()
        }
        st.kinds = {str(k): dict(v) for k, v in (st.kinds or {}).items()}
        return st

    def copy(self) -> "PolicyState":
        return PolicyState.from_dict(self.to_dict())


# ------------------------------------------------------------------------------ schedule slots
def interval_slots_due(anchor: float, interval_s: float, last_slot: float, now: float) -> tuple[int, float | None]:
    """``(count, latest)`` of the slots ``anchor + k * interval_s`` in ``(last_slot, now]``."""
    k_hi = math.floor((now - anchor) / interval_s)
    while anchor + k_hi * interval_s > now:
        k_hi -= 1
    while anchor + (k_hi + 1) * interval_s <= now:
        k_hi += 1
    k_lo = math.floor((last_slot - anchor) / interval_s) + 1
    while anchor + (k_lo - 1) * interval_s > last_slot:
        k_lo -= 1
    while anchor + k_lo * interval_s <= last_slot:
        k_lo += 1
    count = k_hi - k_lo + 1
    return (count, anchor + k_hi * interval_s) if count > 0 else (0, None)


def cron_slots_due(expr: str, last_slot: float, now: float) -> tuple[int, float | None, bool]:
    """``(count, latest, capped)`` of the times of cron ``expr`` (UTC) in ``(last_slot, now]``.

    More than 10,000 due slots are not counted one by one: ``capped`` is then True and
    ``count`` a lower bound (``latest`` is still exact).
    """
    it = croniter(expr, last_slot)
    count, latest = 0, None
    while count < _MAX_SLOT_COUNT:
        t = it.get_next(float)
        if t > now:
            return count, latest, False
        count, latest = count + 1, t
    latest = croniter(expr, now).get_prev(float)  # strictly before now...
    at_now = croniter(expr, latest).get_next(float)
    if at_now <= now:  # ...so a slot exactly at now is the next one
        latest = at_now
    return count, latest, True


# ------------------------------------------------------------------------------ trigger kinds
@dataclass(frozen=True)
class _Fire:
    trigger: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)  # what the firing is about (see run_finished)


@dataclass
class Tick:
    """One evaluation: the observation, the state being updated (a copy, written back at the end),
    and what the kinds decided so far. Kinds call :meth:`fire` and :meth:`decide`."""

    obs: Observation
    state: PolicyState
    fires: list[_Fire] = field(default_factory=list)
    others: list[Decision] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # what a kind's decide leaves for its on_run this tick

    def fire(self, trigger: str, reason: str, **evidence: Any) -> None:
        """``trigger`` wants a run (the policy turns this into ``run`` or ``coalesce``)."""
        self.fires.append(_Fire(trigger, reason, evidence))

    def decide(self, action: Action, trigger: str, reason: str) -> None:
        """A decision that is not a firing (``skip``)."""
        self.others.append(Decision(action, trigger, reason, self.obs.now))


@dataclass(frozen=True)
class RunOutcome:
    """How a run started by the policy ended (:meth:`TriggerPolicy.run_finished`)."""

    succeeded: bool
    fingerprint: str | None = None  # the data it trained on (prepare step)
    deployed_version: str | None = None  # the version it deployed (None: it moved no alias)


class WatchEnv(Protocol):
    """What the watcher offers trigger kinds to observe with (the I/O lives there, not in the kinds)."""

    def source_key(self) -> str | None: ...  # cheap stat digest of the source files (None: unreadable)

    def fingerprint(self) -> str: ...  # full content fingerprint of the source (expensive)

    def drift_report(self) -> dict[str, Any] | None: ...  # the service's GET /drift (None: no service)

    def champion(self) -> dict[str, str | None]: ...  # {"version", "code_digest", "fingerprint"} of the deployed model

    def code_digest(self) -> str: ...  # digest of the code running now

    def read_state(self, key: str) -> Any: ...  # a JSON value of the model's pipeline state (None: missing)


class TriggerKind(abc.ABC):
    """One kind of trigger. Subclass, set ``name`` and ``priority`` (lower runs first when several
    fire in one tick), implement :meth:`decide` (pure: reads ``tick.obs``, updates ``tick.state``,
    calls ``tick.fire`` / ``tick.decide``) and, to gather inputs, :meth:`observe`; then
    ``register_trigger(MyTrigger)``. A kind's settings are ``pipeline.triggers.<name>`` in the config
    (built-ins keep their own sections) and its persisted state is ``state.kinds[<name>]``."""

    name: ClassVar[str]
    priority: ClassVar[int]

    def __init__(self, cfg: AutomationConfig):
        self.cfg = cfg
        self.settings: dict[str, Any] = dict(cfg.triggers.get(self.name, {}))

    def enabled(self) -> bool:
        return self.name in self.cfg.triggers and bool(self.settings.get("enabled", True))

    def observe(self, env: WatchEnv) -> dict[str, Any]:
        """Inputs for :meth:`decide`: :class:`Observation` field values, or ``{name: value}`` for a kind's
        own input (it lands in ``Observation.extra[name]``). Called by the watcher at every tick."""
        return {}

    @abc.abstractmethod
    def decide(self, tick: Tick) -> None: ...

    def on_run(self, tick: Tick) -> None:
        """This tick starts a run that includes this kind (e.g. note what the run consumes)."""
        return None

    def on_coalesce(self, tick: Tick) -> None:
        """This kind fired while a run is in progress (a follow-up run is promised)."""
        return None

    def superseded(self, evidence: dict[str, Any], outcome: RunOutcome) -> str | None:
        """Why a pending firing with ``evidence`` is moot after the run ``outcome`` (None: still stands)."""
        return None

    def my_state(self, st: PolicyState) -> dict[str, Any]:
        """This kind's persisted state (for kinds other than the built-ins)."""
        return st.kinds.setdefault(self.name, {})


class DataKind(TriggerKind):
    name, priority = DATA, 20

    def enabled(self) -> bool:
        return self.cfg.data.enabled

    def observe(self, env: WatchEnv) -> dict[str, Any]:
        return {"source_key": env.source_key(), "fingerprint": env.fingerprint}

    def decide(self, tick: Tick) -> None:
        st, obs = tick.state, tick.obs
        if obs.champion_fingerprint is not None and obs.champion_fingerprint != st.champion_fingerprint:
            st.champion_fingerprint = obs.champion_fingerprint
            st.data_baseline = obs.champion_fingerprint
        if not self.enabled() or obs.source_key is None or obs.fingerprint is None:
            return
        if obs.source_key == st.source_key:
            st.changed_key = st.changed_at = None
            return
        settle = self.cfg.data.settle_s
        if settle > 0:
            if obs.source_key != st.changed_key:  # (still) changing: wait for quiet
                st.changed_key, st.changed_at = obs.source_key, obs.now
                return
            if obs.now - (st.changed_at or obs.now) < settle:
                return
        fp = obs.fingerprint()
        st.source_key = obs.source_key
        st.changed_key = st.changed_at = None
        if st.data_baseline is None:
            st.data_baseline = fp  # the first fingerprint is the baseline: nothing to compare with yet
            return
        if fp != st.data_baseline:
            tick.fire(DATA, f"source fingerprint {_short(st.data_baseline)} -> {_short(fp)}", fingerprint=fp)
            st.data_baseline = fp

    def on_run(self, tick: Tick) -> None:
        if self.enabled() and tick.obs.source_key is not None:
            # The run trains on the source as it is now: that data is consumed (its fingerprint becomes
            # the baseline in run_finished), so it does not fire again while the run is in progress.
            tick.state.source_key = tick.obs.source_key
            tick.state.changed_key = tick.state.changed_at = None

    def superseded(self, evidence: dict[str, Any], outcome: RunOutcome) -> str | None:
        fp = evidence.get("fingerprint")
        if outcome.succeeded and fp and fp == outcome.fingerprint:
            return f"the run it waited for trained on this data (fingerprint {_short(fp)})"
        return None


class CodeKind(TriggerKind):
    name, priority = CODE, 30

    def enabled(self) -> bool:
        return self.cfg.code.enabled

    def observe(self, env: WatchEnv) -> dict[str, Any]:
        return {"code_digest": env.code_digest()}

    def decide(self, tick: Tick) -> None:
        st, obs = tick.state, tick.obs
        now, champ = obs.code_digest, obs.champion_code_digest
        if not self.enabled() or now is None or champ is None or now == champ:
            return
        if now in st.code_digests_fired:
            return
        st.code_digests_fired = (st.code_digests_fired + [now])[-_KEEP_CODE_DIGESTS:]
        tick.fire(CODE, f"code digest {_short(now)} differs from the champion's {_short(champ)}", code_digest=now)


class ScheduleKind(TriggerKind):
    name, priority = SCHEDULE, 40

    def enabled(self) -> bool:
        return self.cfg.schedule.interval_s is not None or self.cfg.schedule.cron is not None

    def decide(self, tick: Tick) -> None:
        st, obs, sch = tick.state, tick.obs, self.cfg.schedule
        if not self.enabled():
            return
        if st.schedule_anchor is None:
            st.schedule_anchor = obs.now
        if st.last_slot is None:
            st.last_slot = st.schedule_anchor if sch.interval_s is not None else obs.now
            if sch.cron is not None:
                return  # slots are those after the first observation
        capped = False
        if sch.interval_s is not None:
            count, latest = interval_slots_due(st.schedule_anchor, sch.interval_s, st.last_slot, obs.now)
            what = f"every {_seconds(sch.interval_s)} s"
        else:
            count, latest, capped = cron_slots_due(sch.cron, st.last_slot, obs.now)
            what = f"cron {sch.cron!r}"
        if count == 0 or latest is None:
            return
        st.last_slot = latest
        n = f"{count}{'+' if capped else ''}"
        if sch.missed == "run_once":
            reason = f"slot {_iso(latest)} ({what})"
            if count > 1:
                reason += f"; {n} missed slots collapsed into one run"
            tick.fire(SCHEDULE, reason)
            return
        late = obs.now - latest
        tolerance = max(2 * self.cfg.poll_interval_s, 1.0)
        if late > tolerance:
            reason = f"missed slot at {_iso(latest)} ({what}; {_seconds(late)} s late"
            reason += f", more than {_seconds(tolerance)} s"
            reason += f"; {n} slots due)" if count > 1 else ")"
            tick.decide(SKIP, SCHEDULE, reason + "; policy skip")
        elif obs.running:
            tick.decide(SKIP, SCHEDULE, f"slot {_iso(latest)} ({what}) fell while a run was in progress; policy skip")
        else:
            tick.fire(SCHEDULE, f"slot {_iso(latest)} ({what})")


class DriftKind(TriggerKind):
    name, priority = DRIFT, 10

    def enabled(self) -> bool:
        return self.cfg.drift.enabled

    def observe(self, env: WatchEnv) -> dict[str, Any]:
        """Closed windows of the serving version and the rolling feedback metric, from ``GET /drift``."""
        rep = env.drift_report() if self.enabled() else None
        if not rep:
            return {}
        v = rep.get("serving_version")
        ver = (rep.get("versions") or {}).get(v) or {}
        fb = ver.get("feedback") or {}
        metric = fb.get("metric")
        from mlops_ray.model.tasks import direction

        return {
            "windows": tuple(WindowView.from_evaluation(ev) for ev in ver.get("windows", [])),
            "rolling_metric": fb.get("rolling"),
            "metric_direction": direction(metric) if metric else "maximize",
        }

    def decide(self, tick: Tick) -> None:
        """Window streaks and the metric floor."""
        st, obs, dc = tick.state, tick.obs, self.cfg.drift
        k = dc.consecutive_windows
        reasons: list[str] = []
        version = None
        for w in obs.windows:
            last = st.windows_seen.get(w.version)
            if last is not None and w.index <= last:
                continue  # seen at an earlier tick (or earlier in this list)
            st.windows_seen.pop(w.version, None)
            st.windows_seen[w.version] = w.index  # most recently updated version last
            while len(st.windows_seen) > _KEEP_VERSIONS:
                del st.windows_seen[next(iter(st.windows_seen))]
            if not dc.enabled:
                continue
            if w.version != st.drift_version:
                st.drift_version, st.alert_streaks = w.version, {}
            if w.status == "insufficient":
                continue  # neither counts nor resets
            st.alert_streaks = {f: st.alert_streaks.get(f, 0) + 1 for f in sorted(set(w.alerted))}
            hit = sorted(f for f, n in st.alert_streaks.items() if n >= k)
            if hit:
                reasons.append(
                    f"feature{'s' if len(hit) > 1 else ''} {', '.join(hit)} in alert for {k} consecutive"
                    f" window{'s' if k > 1 else ''} of model version {w.version} (up to window {w.index})"
                )
                version = w.version
                st.alert_streaks = {}  # a long drift fires once, not once per window

        left = self._cooldown_left(st, obs.now)
        breached = self._metric_breach(obs)
        tick.notes["drift_breach"] = breached
        if breached is None:
            st.metric_reported = False
        elif left > 0:
            if not st.metric_reported:
                reasons.append(breached)
                st.metric_reported = True
        elif not (obs.running and DRIFT in st.pending):  # already pending: no coalesce at every tick
            reasons.append(breached)
        if not reasons:
            return
        if left > 0:
            since = _iso(st.last_drift_run_at) if st.last_drift_run_at is not None else "?"
            tick.decide(
                SKIP, DRIFT, f"{'; '.join(reasons)}; cooldown {_seconds(left)} s left (last drift run at {since})"
            )
        else:
            evidence = {"model_version": version or st.drift_version}
            tick.fire(DRIFT, "; ".join(reasons), **{k: v for k, v in evidence.items() if v is not None})

    def on_run(self, tick: Tick) -> None:
        tick.state.last_drift_run_at = tick.obs.now
        tick.state.metric_reported = tick.notes.get("drift_breach") is not None  # this run answers this tick's breach

    def on_coalesce(self, tick: Tick) -> None:
        tick.state.last_drift_run_at = tick.obs.now  # a follow-up run is promised: later drift firings are skipped

    def superseded(self, evidence: dict[str, Any], outcome: RunOutcome) -> str | None:
        about = evidence.get("model_version")
        if about and outcome.deployed_version and str(outcome.deployed_version) != str(about):
            return (
                f"its drift evidence is about model version {about}, which the run it waited for replaced "
                f"by deploying version {outcome.deployed_version}"
            )
        return None

    def _cooldown_left(self, st: PolicyState, now: float) -> float:
        if st.last_drift_run_at is None:
            return 0.0
        elapsed = now - st.last_drift_run_at
        return self.cfg.drift.cooldown_s - elapsed if elapsed < self.cfg.drift.cooldown_s else 0.0

    def _metric_breach(self, obs: Observation) -> str | None:
        """The reason when the rolling metric is past ``drift.metric_floor``, else None."""
        floor, m = self.cfg.drift.metric_floor, obs.rolling_metric
        if not self.cfg.drift.enabled or floor is None or m is None:
            return None
        if obs.metric_direction == "maximize" and m < floor:
            return f"rolling metric {m:.6g} below the floor {floor:.6g} (maximize)"
        if obs.metric_direction == "minimize" and m > floor:
            return f"rolling metric {m:.6g} above the floor {floor:.6g} (minimize)"
        return None


# ------------------------------------------------------------------------------ the registry
_KINDS: dict[str, type[TriggerKind]] = {}


def register_trigger(kind: type[TriggerKind]) -> type[TriggerKind]:
    """Register a trigger kind (usable as a class decorator); a name is registered once."""
    name = getattr(kind, "name", None)
    if not isinstance(name, str) or not name or name == "manual":
        raise ValueError(f"trigger kind {kind.__name__} needs a class attribute 'name' (not 'manual')")
    if not isinstance(getattr(kind, "priority", None), int):
        raise ValueError(f"trigger kind {name!r} needs an int class attribute 'priority'")
    if name in _KINDS and _KINDS[name] is not kind:
        raise ValueError(f"a trigger kind named {name!r} is registered already ({_KINDS[name].__name__})")
    _KINDS[name] = kind
    return kind


def unregister_trigger(name: str) -> None:
    if name in (DATA, CODE, SCHEDULE, DRIFT):
        raise ValueError(f"{name!r} is a built-in trigger kind")
    _KINDS.pop(name, None)


def trigger_kinds() -> list[type[TriggerKind]]:
    """The registered kinds, highest priority first."""
    return sorted(_KINDS.values(), key=lambda k: (k.priority, k.name))


def trigger_names() -> tuple[str, ...]:
    """Registered kind names, highest priority first (drift > data > code > schedule > others)."""
    return tuple(k.name for k in trigger_kinds())


for _kind in (DataKind, CodeKind, ScheduleKind, DriftKind):  # built-ins; evaluation order as registered
    register_trigger(_kind)


# ------------------------------------------------------------------------------ the policy
class TriggerPolicy:
    """The trigger rules of the module docstring over a :class:`PolicyState`, for every registered kind.

    :meth:`evaluate` is atomic: it works on a copy of the state and writes it back only when it
    returns (a ``fingerprint()`` that raises leaves the state as it was).
    """

    def __init__(self, cfg: AutomationConfig, state: PolicyState | None = None):
        self.cfg = cfg
        self.state = state if state is not None else PolicyState()
        unknown = sorted(set(cfg.triggers) - set(_KINDS))
        if unknown:
            raise ValueError(
                f"pipeline.triggers: no trigger kind named {', '.join(map(repr, unknown))} is registered "
                f"(registered: {', '.join(_KINDS)})"
            )
        self.kinds = {name: kind(cfg) for name, kind in _KINDS.items()}  # registration order

    def observe(self, env: WatchEnv, *, now: float, running: bool) -> Observation:
        """Every kind's inputs through ``env``, as one :class:`Observation`."""
        fields, extra = {}, {}
        names = {f.name for f in dataclasses.fields(Observation)}
        for kind in self.kinds.values():
            for k, v in kind.observe(env).items():
                (fields if k in names else extra)[k] = v
        champ = env.champion()
        fields.setdefault("champion_code_digest", champ.get("code_digest"))
        fields.setdefault("champion_fingerprint", champ.get("fingerprint"))
        return Observation(now=now, running=running, extra=extra, **fields)

    def evaluate(self, obs: Observation) -> list[Decision]:
        """The decisions of one tick: at most one ``run``, first, then the others by trigger priority."""
        tick = Tick(obs, self.state.copy())
        for kind in self.kinds.values():
            kind.decide(tick)
        run = self._resolve(tick)
        for f in dataclasses.fields(PolicyState):  # keep the state object the caller may hold
            setattr(self.state, f.name, getattr(tick.state, f.name))
        tick.others.sort(key=lambda d: _rank(d.trigger))
        return ([run] if run is not None else []) + tick.others

    # ------------------------------------------------------------------ one run at most
    def _resolve(self, tick: Tick) -> Decision | None:
        st, obs = tick.state, tick.obs
        fires = sorted(tick.fires, key=lambda f: _rank(f.trigger))
        if obs.running:
            for f in fires:
                p = st.pending.get(f.trigger)
                if p is None:
                    st.pending[f.trigger] = {"reason": f.reason, "count": 1, "since": obs.now, "evidence": f.evidence}
                else:
                    p.update(reason=f.reason, count=p["count"] + 1, evidence=f.evidence)
                self.kinds[f.trigger].on_coalesce(tick)
                why = f"{f.reason}; a run is in progress: pending, one run follows when it finishes"
                tick.decide(COALESCE, f.trigger, why)
            return None
        pending, st.pending = st.pending, {}
        new = {f.trigger: f.reason for f in fires}
        triggers = sorted(set(pending) | set(new), key=_rank)
        if not triggers:
            return None
        lead = triggers[0]
        parts = []
        for t in triggers:
            said = []
            if t in pending:
                p = pending[t]
                when = f"while a run was in progress (since {_iso(p['since'])})"
                if p["count"] == 1:
                    said.append(f"{p['reason']} ({when})")
                else:
                    said.append(f"fired {p['count']}x {when}, latest: {p['reason']}")
            if t in new:
                said.append(new[t])
            parts.append(f"{t}: {'; '.join(said)}")
        if len(parts) == 1:
            reason = parts[0].split(": ", 1)[1]  # the decision's trigger says which
        else:
            reason = " | ".join([parts[0]] + [f"also {p}" for p in parts[1:]])
        for f in fires:
            if f.trigger != lead:
                tick.decide(COALESCE, f.trigger, f"{f.reason}; coalesced into this tick's {lead} run")
        for kind in self.kinds.values():
            if kind.name in triggers:
                kind.on_run(tick)
        if DATA not in triggers:
            self.kinds[DATA].on_run(tick)  # whatever fired, the run trains on the source as it is now
        return Decision(RUN, lead, reason, obs.now)

    def run_finished(
        self,
        fingerprint: str | None,
        succeeded: bool,
        *,
        deployed_version: str | None = None,
        at: float | None = None,
    ) -> list[Decision]:
        """Tell the policy how the run it started ended: the data it trained on (``fingerprint``,
        from the prepare step) becomes the data baseline; after a failed run the source is looked
        at again at the next tick (new data that failed to train fires again). Pending triggers whose
        evidence the run made moot are dropped; returns those ``superseded`` decisions (at ``at``)."""
        if succeeded and fingerprint:
            self.state.data_baseline = fingerprint
        elif not succeeded:
            self.state.source_key = None
        outcome = RunOutcome(succeeded, fingerprint, deployed_version)
        dropped = []
        for trigger, p in list(self.state.pending.items()):
            why = self.kinds[trigger].superseded(p.get("evidence") or {}, outcome)
            if why is not None:
                del self.state.pending[trigger]
                dropped.append(Decision(SUPERSEDED, trigger, f"{p['reason']}: superseded, {why}", at or 0.0))
        return dropped


__all__ = [
    "CODE",
    "COALESCE",
    "DATA",
    "DRIFT",
    "RUN",
    "SCHEDULE",
    "SKIP",
    "SUPERSEDED",
    "Action",
    "Decision",
    "Observation",
    "PolicyState",
    "RunOutcome",
    "Tick",
    "TriggerKind",
    "TriggerPolicy",
    "WatchEnv",
    "WindowView",
    "cron_slots_due",
    "interval_slots_due",
    "register_trigger",
    "trigger_kinds",
    "trigger_names",
    "unregister_trigger",
]
