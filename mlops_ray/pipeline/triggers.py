"""The continuous-training trigger policy: when ``mlops-ray pipeline watch`` starts a run.

A pure state machine. The watcher gathers an :class:`Observation` at every tick (every
``pipeline.poll_interval_s``) and calls :meth:`TriggerPolicy.evaluate`, which returns the
:class:`Decision` list of that tick. The policy does no I/O, reads no clock (the time is
``Observation.now``) and uses neither Ray nor MLflow; its :class:`PolicyState` round-trips
through JSON (``to_dict`` / ``from_dict``) so the watcher can persist it and resume after a
restart without firing twice. Every decision is returned, so the watcher can record it::

    policy = TriggerPolicy(cfg.pipeline, PolicyState.from_dict(saved) if saved else None)
    for d in policy.evaluate(obs):          # obs: what the watcher saw at this tick
        record(d.to_dict())
        if d.action == "run":
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
* **code** (``code.enabled``): when both the current code digest and the champion's are
  known and differ, it fires once per current digest value; the same digest never fires
  twice (the 256 most recent fired digests are remembered), a later different one fires.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from croniter import croniter

from mlops_ray.config import AutomationConfig

RUN, SKIP, COALESCE = "run", "skip", "coalesce"
DRIFT, DATA, CODE, SCHEDULE = "drift", "data", "code", "schedule"
PRIORITY: tuple[str, ...] = (DRIFT, DATA, CODE, SCHEDULE)  # highest first
WINDOW_STATUSES = ("ok", "warn", "alert", "insufficient")
METRIC_DIRECTIONS = ("maximize", "minimize")
STATE_FORMAT = 1

_SHORT = 12  # digest / fingerprint prefix length in reasons
_KEEP_VERSIONS = 32  # model versions whose last seen window index is remembered
_KEEP_CODE_DIGESTS = 256  # fired code digests remembered
_MAX_SLOT_COUNT = 10_000  # cron slots counted one by one before the count is reported as "at least"


def _rank(trigger: str) -> int:
    return PRIORITY.index(trigger)


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

    def __post_init__(self) -> None:
        if self.metric_direction not in METRIC_DIRECTIONS:
            raise ValueError(f"metric_direction {self.metric_direction!r} is not 'maximize' or 'minimize'")
        object.__setattr__(self, "windows", tuple(self.windows))


@dataclass(frozen=True)
class Decision:
    """One decision of one tick: ``run`` (start a pipeline run), ``skip`` or ``coalesce``."""

    action: str  # "run" | "skip" | "coalesce"
    trigger: str  # "data" | "schedule" | "drift" | "code"
    reason: str  # human-readable and specific
    at: float  # Observation.now of the tick

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Decision":
        return cls(action=d["action"], trigger=d["trigger"], reason=d["reason"], at=float(d["at"]))


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
    # coalescing: trigger -> {"reason": latest reason, "count": times fired, "since": first time}
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)

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
            str(t): {"reason": str(p["reason"]), "count": int(p.get("count", 1)), "since": float(p["since"])}
            for t, p in (st.pending or {}).items()
            if t in PRIORITY
        }
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


# ------------------------------------------------------------------------------ the policy
@dataclass(frozen=True)
class _Fire:
    trigger: str
    reason: str


class TriggerPolicy:
    """The trigger rules of the module docstring over a :class:`PolicyState`.

    :meth:`evaluate` is atomic: it works on a copy of the state and writes it back only when it
    returns (a ``fingerprint()`` that raises leaves the state as it was).
    """

    def __init__(self, cfg: AutomationConfig, state: PolicyState | None = None):
        self.cfg = cfg
        self.state = state if state is not None else PolicyState()

    def evaluate(self, obs: Observation) -> list[Decision]:
        """The decisions of one tick: at most one ``run``, first, then the others by trigger priority."""
        st = self.state.copy()
        fires: list[_Fire] = []
        others: list[Decision] = []
        self._data(st, obs, fires)
        self._code(st, obs, fires)
        self._schedule(st, obs, fires, others)
        breach = self._drift(st, obs, fires, others)
        run = self._resolve(st, obs, fires, others, breach)
        for f in dataclasses.fields(PolicyState):  # keep the state object the caller may hold
            setattr(self.state, f.name, getattr(st, f.name))
        others.sort(key=lambda d: _rank(d.trigger))
        return ([run] if run is not None else []) + others

    # ------------------------------------------------------------------ data
    def _data(self, st: PolicyState, obs: Observation, fires: list[_Fire]) -> None:
        if obs.champion_fingerprint is not None and obs.champion_fingerprint != st.champion_fingerprint:
            st.champion_fingerprint = obs.champion_fingerprint
            st.data_baseline = obs.champion_fingerprint
        if not self.cfg.data.enabled or obs.source_key is None or obs.fingerprint is None:
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
            fires.append(_Fire(DATA, f"source fingerprint {_short(st.data_baseline)} -> {_short(fp)}"))
            st.data_baseline = fp

    # ------------------------------------------------------------------ code
    def _code(self, st: PolicyState, obs: Observation, fires: list[_Fire]) -> None:
        now, champ = obs.code_digest, obs.champion_code_digest
        if not self.cfg.code.enabled or now is None or champ is None or now == champ:
            return
        if now in st.code_digests_fired:
            return
        st.code_digests_fired = (st.code_digests_fired + [now])[-_KEEP_CODE_DIGESTS:]
        fires.append(_Fire(CODE, f"code digest {_short(now)} differs from the champion's {_short(champ)}"))

    # ------------------------------------------------------------------ schedule
    def _schedule(self, st: PolicyState, obs: Observation, fires: list[_Fire], others: list[Decision]) -> None:
        sch = self.cfg.schedule
        if sch.interval_s is None and sch.cron is None:
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
            fires.append(_Fire(SCHEDULE, reason))
            return
        late = obs.now - latest
        tolerance = max(2 * self.cfg.poll_interval_s, 1.0)
        if late > tolerance:
            reason = f"missed slot at {_iso(latest)} ({what}; {_seconds(late)} s late"
            reason += f", more than {_seconds(tolerance)} s"
            reason += f"; {n} slots due)" if count > 1 else ")"
            others.append(Decision(SKIP, SCHEDULE, reason + "; policy skip", obs.now))
        elif obs.running:
            reason = f"slot {_iso(latest)} ({what}) fell while a run was in progress; policy skip"
            others.append(Decision(SKIP, SCHEDULE, reason, obs.now))
        else:
            fires.append(_Fire(SCHEDULE, f"slot {_iso(latest)} ({what})"))

    # ------------------------------------------------------------------ drift
    def _drift(self, st: PolicyState, obs: Observation, fires: list[_Fire], others: list[Decision]) -> str | None:
        """Window streaks and the metric floor; returns the metric breach reason (None: no breach)."""
        dc = self.cfg.drift
        k = dc.consecutive_windows
        reasons: list[str] = []
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
                st.alert_streaks = {}  # a long drift fires once, not once per window

        left = self._cooldown_left(st, obs.now)
        breached = self._metric_breach(obs)
        if breached is None:
            st.metric_reported = False
        elif left > 0:
            if not st.metric_reported:
                reasons.append(breached)
                st.metric_reported = True
        elif not (obs.running and DRIFT in st.pending):  # already pending: no coalesce at every tick
            reasons.append(breached)
        if not reasons:
            return breached
        if left > 0:
            since = _iso(st.last_drift_run_at) if st.last_drift_run_at is not None else "?"
            why = f"{'; '.join(reasons)}; cooldown {_seconds(left)} s left (last drift run at {since})"
            others.append(Decision(SKIP, DRIFT, why, obs.now))
        else:
            fires.append(_Fire(DRIFT, "; ".join(reasons)))
        return breached

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

    # ------------------------------------------------------------------ one run at most
    def _resolve(
        self, st: PolicyState, obs: Observation, fires: list[_Fire], others: list[Decision], breach: str | None
    ) -> Decision | None:
        fires = sorted(fires, key=lambda f: _rank(f.trigger))
        if obs.running:
            for f in fires:
                p = st.pending.get(f.trigger)
                if p is None:
                    st.pending[f.trigger] = {"reason": f.reason, "count": 1, "since": obs.now}
                else:
                    p.update(reason=f.reason, count=p["count"] + 1)
                if f.trigger == DRIFT:  # a follow-up run is promised: later drift firings are skipped
                    st.last_drift_run_at = obs.now
                why = f"{f.reason}; a run is in progress: pending, one run follows when it finishes"
                others.append(Decision(COALESCE, f.trigger, why, obs.now))
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
                why = f"{f.reason}; coalesced into this tick's {lead} run"
                others.append(Decision(COALESCE, f.trigger, why, obs.now))
        if DRIFT in triggers:
            st.last_drift_run_at = obs.now
            st.metric_reported = breach is not None  # this run answers the breach of this tick
        if self.cfg.data.enabled and obs.source_key is not None:
            # The run trains on the source as it is now: that data is consumed (its fingerprint becomes
            # the baseline in run_finished), so it does not fire again while the run is in progress.
            st.source_key = obs.source_key
            st.changed_key = st.changed_at = None
        return Decision(RUN, lead, reason, obs.now)

    def run_finished(self, fingerprint: str | None, succeeded: bool) -> None:
        """Tell the policy how the run it started ended: the data it trained on (``fingerprint``,
        from the prepare step) becomes the data baseline; after a failed run the source is looked
        at again at the next tick (new data that failed to train fires again)."""
        if succeeded and fingerprint:
            self.state.data_baseline = fingerprint
        elif not succeeded:
            self.state.source_key = None


__all__ = [
    "CODE",
    "COALESCE",
    "DATA",
    "DRIFT",
    "PRIORITY",
    "RUN",
    "SCHEDULE",
    "SKIP",
    "Decision",
    "Observation",
    "PolicyState",
    "TriggerPolicy",
    "WindowView",
    "cron_slots_due",
    "interval_slots_due",
]
