"""The continuous-training trigger policy (mlops_ray.pipeline.triggers): a fake clock, fake inputs."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_ray.config import AutomationConfig
from mlops_ray.pipeline.triggers import (
    Decision,
    Observation,
    PolicyState,
    TriggerPolicy,
    WindowView,
    cron_slots_due,
    interval_slots_due,
)

T0 = dt.datetime(2024, 1, 1, 0, 0, 30, tzinfo=dt.timezone.utc).timestamp()
NO_AUTO = {"data": {"enabled": False, "settle_s": 0}, "code": {"enabled": False}, "drift": {"enabled": False}}


def cfg(**over) -> AutomationConfig:
    """A config with every trigger off except what ``over`` turns on."""
    d = {k: dict(v) for k, v in NO_AUTO.items()}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return AutomationConfig.model_validate(d)


def drift_cfg(k=2, cooldown=600.0, **extra) -> AutomationConfig:
    return cfg(drift={"enabled": True, "consecutive_windows": k, "cooldown_s": cooldown, **extra})


class Fingerprint:
    """A fake full fingerprint: returns ``value`` and counts its calls."""

    def __init__(self, value: str):
        self.value, self.calls = value, 0

    def __call__(self) -> str:
        self.calls += 1
        return self.value


def runs(decisions: list[Decision]) -> list[Decision]:
    return [d for d in decisions if d.action == "run"]


def actions(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.action, d.trigger) for d in decisions]


class Windows:
    """A fake drift monitor: closed windows of one version, all of them listed at every tick."""

    def __init__(self, version: str = "1"):
        self.version, self.closed = version, []

    def close(self, status: str, *alerted: str) -> tuple[WindowView, ...]:
        self.closed.append(WindowView(self.version, len(self.closed), status, tuple(alerted)))
        return tuple(self.closed)


def alert(w: Windows, *features: str) -> tuple[WindowView, ...]:
    return w.close("alert", *(features or ("f1",)))


# ------------------------------------------------------------------------------ drift
def test_k_minus_1_alert_windows_then_ok_is_no_run():
    policy, w, t = TriggerPolicy(drift_cfg(k=3)), Windows(), T0
    for windows in (alert(w), alert(w), w.close("ok"), alert(w), alert(w), w.close("warn"), alert(w)):
        t += 60
        assert policy.evaluate(Observation(now=t, windows=windows)) == []
    assert policy.state.alert_streaks == {"f1": 1}


def test_warn_only_drift_is_no_run():
    policy, w = TriggerPolicy(drift_cfg(k=1)), Windows()
    for i in range(10):
        assert policy.evaluate(Observation(now=T0 + i, windows=w.close("warn"))) == []


def test_k_alert_windows_one_run_then_ten_more_within_cooldown_only_skips():
    policy, w, t = TriggerPolicy(drift_cfg(k=2, cooldown=3600)), Windows(), T0
    assert policy.evaluate(Observation(now=t, windows=alert(w, "age", "income"))) == []
    t += 60
    first = policy.evaluate(Observation(now=t, windows=alert(w, "age", "income")))
    assert actions(first) == [("run", "drift")]
    assert "age, income" in first[0].reason and "2 consecutive windows" in first[0].reason
    assert "model version 1" in first[0].reason
    later = []
    for _ in range(10):
        t += 60
        later += policy.evaluate(Observation(now=t, windows=alert(w, "age", "income")))
    assert runs(later) == []
    # 10 windows, K = 2: the streak completes (and resets) every 2nd window -> 5 skips, no run
    assert actions(later) == [("skip", "drift")] * 5
    assert all("cooldown" in d.reason and "s left" in d.reason for d in later)
    assert "cooldown 3480 s left" in later[0].reason  # 3600 s from the run decision, 120 s later


def test_without_cooldown_a_long_drift_fires_once_per_k_windows_not_once_per_window():
    # cooldown 0: every K new alert windows is a new run, never one per window
    policy, w = TriggerPolicy(drift_cfg(k=3, cooldown=0)), Windows()
    out = [policy.evaluate(Observation(now=T0 + i, windows=alert(w))) for i in range(9)]
    assert [i for i, d in enumerate(out) if runs(d)] == [2, 5, 8]


def test_cooldown_expiry_then_renewed_drift_runs_again():
    policy, w = TriggerPolicy(drift_cfg(k=2, cooldown=600)), Windows()
    policy.evaluate(Observation(now=T0, windows=alert(w)))
    assert actions(policy.evaluate(Observation(now=T0 + 10, windows=alert(w)))) == [("run", "drift")]
    policy.evaluate(Observation(now=T0 + 20, windows=alert(w)))
    assert actions(policy.evaluate(Observation(now=T0 + 30, windows=alert(w)))) == [("skip", "drift")]
    # the skip reset the streaks: renewed drift after the cooldown needs K new windows
    assert policy.evaluate(Observation(now=T0 + 700, windows=alert(w))) == []
    again = policy.evaluate(Observation(now=T0 + 710, windows=alert(w)))
    assert actions(again) == [("run", "drift")]
    assert policy.state.last_drift_run_at == T0 + 710


def test_insufficient_windows_neither_count_nor_reset():
    policy, w = TriggerPolicy(drift_cfg(k=3, cooldown=0)), Windows()
    assert policy.evaluate(Observation(now=T0, windows=alert(w))) == []
    assert policy.evaluate(Observation(now=T0 + 1, windows=w.close("insufficient"))) == []
    assert policy.evaluate(Observation(now=T0 + 2, windows=alert(w))) == []
    assert policy.evaluate(Observation(now=T0 + 3, windows=w.close("insufficient"))) == []
    assert actions(policy.evaluate(Observation(now=T0 + 4, windows=alert(w)))) == [("run", "drift")]


def test_streaks_are_per_feature():
    policy, w = TriggerPolicy(drift_cfg(k=2, cooldown=0)), Windows()
    assert policy.evaluate(Observation(now=T0, windows=alert(w, "a"))) == []
    assert policy.evaluate(Observation(now=T0 + 1, windows=alert(w, "b"))) == []  # a reset, b at 1
    out = policy.evaluate(Observation(now=T0 + 2, windows=alert(w, "b", "c")))
    assert actions(out) == [("run", "drift")]
    assert "feature b in alert" in out[0].reason and "c" not in out[0].reason.split("in alert")[0]


def test_windows_seen_before_are_not_counted_again():
    policy, w = TriggerPolicy(drift_cfg(k=2, cooldown=0)), Windows()
    windows = alert(w)
    for i in range(5):  # the same one alert window, listed at every tick
        assert policy.evaluate(Observation(now=T0 + i, windows=windows)) == []
    assert policy.state.alert_streaks == {"f1": 1}
    assert policy.state.windows_seen == {"1": 0}


def test_several_new_windows_in_one_tick_and_the_at_most_one_run_rule():
    policy, w = TriggerPolicy(drift_cfg(k=2, cooldown=0)), Windows()
    for _ in range(6):
        alert(w)
    out = policy.evaluate(Observation(now=T0, windows=tuple(w.closed)))  # 3 streaks of 2, one tick
    assert actions(out) == [("run", "drift")]
    assert out[0].reason.count("in alert for 2 consecutive windows") == 3


def test_new_model_version_resets_streaks():
    policy = TriggerPolicy(drift_cfg(k=2, cooldown=0))
    old, new = Windows("3"), Windows("4")
    assert policy.evaluate(Observation(now=T0, windows=alert(old))) == []
    assert policy.evaluate(Observation(now=T0 + 1, windows=alert(new))) == []  # 1 window of v4, not 2
    assert actions(policy.evaluate(Observation(now=T0 + 2, windows=alert(new)))) == [("run", "drift")]
    # back to version 3 (a rollback): its windows seen before stay seen
    assert policy.evaluate(Observation(now=T0 + 3, windows=tuple(old.closed))) == []


def test_drift_disabled_never_fires_and_later_enabling_does_not_replay_old_windows():
    off = TriggerPolicy(cfg())
    w = Windows()
    for i in range(5):
        assert off.evaluate(Observation(now=T0 + i, windows=alert(w))) == []
    on = TriggerPolicy(drift_cfg(k=2, cooldown=0), PolicyState.from_dict(off.state.to_dict()))
    assert on.evaluate(Observation(now=T0 + 10, windows=tuple(w.closed))) == []


@pytest.mark.parametrize(
    "direction,metric,fires",
    [("maximize", 0.69, True), ("maximize", 0.70, False), ("minimize", 0.71, True), ("minimize", 0.70, False)],
)
def test_metric_floor(direction, metric, fires):
    policy = TriggerPolicy(drift_cfg(metric_floor=0.70))
    out = policy.evaluate(Observation(now=T0, rolling_metric=metric, metric_direction=direction))
    assert actions(out) == ([("run", "drift")] if fires else [])
    if fires:
        side = "below" if direction == "maximize" else "above"
        assert out[0].reason == f"rolling metric {metric:g} {side} the floor 0.7 ({direction})"


def test_metric_floor_cooldown_and_refire():
    policy = TriggerPolicy(drift_cfg(cooldown=100, metric_floor=0.7))
    bad = dict(rolling_metric=0.5)
    assert actions(policy.evaluate(Observation(now=T0, **bad))) == [("run", "drift")]
    # still below the floor during the cooldown: the run already answers it, nothing at every tick
    for i in range(1, 10):
        assert policy.evaluate(Observation(now=T0 + 5 * i, **bad)) == []
    # recovered, then a new breach within the cooldown: one skip, then quiet
    assert policy.evaluate(Observation(now=T0 + 60, rolling_metric=0.8)) == []
    skip = policy.evaluate(Observation(now=T0 + 70, **bad))
    assert actions(skip) == [("skip", "drift")] and "cooldown 30 s left" in skip[0].reason
    assert policy.evaluate(Observation(now=T0 + 80, **bad)) == []
    # the cooldown is over and the metric is still past the floor: it fires again
    assert actions(policy.evaluate(Observation(now=T0 + 100, **bad))) == [("run", "drift")]


# ------------------------------------------------------------------------------ data
def test_fingerprint_is_called_only_when_the_stat_key_changes():
    policy = TriggerPolicy(cfg(data={"enabled": True}))
    fp = Fingerprint("a" * 64)
    assert policy.evaluate(Observation(now=T0, source_key="k1", fingerprint=fp)) == []  # baseline, no run
    assert fp.calls == 1 and policy.state.data_baseline == "a" * 64
    for i in range(5):
        assert policy.evaluate(Observation(now=T0 + i + 1, source_key="k1", fingerprint=fp)) == []
    assert fp.calls == 1
    fp.value = "b" * 64
    out = policy.evaluate(Observation(now=T0 + 10, source_key="k2", fingerprint=fp))
    assert fp.calls == 2
    assert actions(out) == [("run", "data")]
    assert out[0].reason == f"source fingerprint {'a' * 12} -> {'b' * 12}"
    assert policy.state.data_baseline == "b" * 64
    assert policy.evaluate(Observation(now=T0 + 11, source_key="k2", fingerprint=fp)) == []
    assert fp.calls == 2


def test_touch_without_content_change_is_no_run():
    policy = TriggerPolicy(cfg(data={"enabled": True}))
    fp = Fingerprint("same")
    policy.evaluate(Observation(now=T0, source_key="mtime=1", fingerprint=fp))
    assert policy.evaluate(Observation(now=T0 + 1, source_key="mtime=2", fingerprint=fp)) == []
    assert fp.calls == 2 and policy.state.source_key == "mtime=2"
    assert policy.evaluate(Observation(now=T0 + 2, source_key="mtime=2", fingerprint=fp)) == []
    assert fp.calls == 2


def test_champion_fingerprint_is_the_baseline_and_is_adopted_when_it_changes():
    policy = TriggerPolicy(cfg(data={"enabled": True}))
    fp = Fingerprint("new-data")
    out = policy.evaluate(Observation(now=T0, source_key="k1", fingerprint=fp, champion_fingerprint="old-data"))
    assert actions(out) == [("run", "data")] and "old-data -> new-data" in out[0].reason
    # the run trained on new-data and was promoted: the champion's fingerprint is adopted
    obs = dict(source_key="k1", fingerprint=fp, champion_fingerprint="new-data")
    assert policy.evaluate(Observation(now=T0 + 100, **obs)) == []
    assert policy.state.data_baseline == "new-data" and fp.calls == 1
    fp.value = "newer"
    assert actions(policy.evaluate(Observation(now=T0 + 200, **{**obs, "source_key": "k2"}))) == [("run", "data")]


def test_champion_on_the_same_data_is_no_run():
    policy = TriggerPolicy(cfg(data={"enabled": True}))
    fp = Fingerprint("fp1")
    assert policy.evaluate(Observation(now=T0, source_key="k", fingerprint=fp, champion_fingerprint="fp1")) == []


def test_data_disabled_or_unchecked_never_fingerprints():
    fp = Fingerprint("x")
    off = TriggerPolicy(cfg())
    on = TriggerPolicy(cfg(data={"enabled": True}))
    for i in range(3):
        assert off.evaluate(Observation(now=T0 + i, source_key=f"k{i}", fingerprint=fp)) == []
        assert on.evaluate(Observation(now=T0 + i, source_key=None, fingerprint=fp)) == []
    assert fp.calls == 0


def test_fingerprint_that_raises_leaves_the_state_unchanged():
    policy = TriggerPolicy(cfg(data={"enabled": True}, drift={"enabled": True, "consecutive_windows": 1}))
    before = json.dumps(policy.state.to_dict())

    def broken() -> str:
        raise OSError("source unreadable")

    with pytest.raises(OSError):
        # the champion fingerprint is adopted before the fingerprint call: it must not stick either
        obs = dict(source_key="k", fingerprint=broken, champion_fingerprint="c", windows=alert(Windows()))
        policy.evaluate(Observation(now=T0, **obs))
    assert json.dumps(policy.state.to_dict()) == before


# ------------------------------------------------------------------------------ code
def test_code_fires_once_per_digest():
    policy = TriggerPolicy(cfg(code={"enabled": True}))
    champ = dict(champion_code_digest="c0" * 32)
    assert policy.evaluate(Observation(now=T0, code_digest="c0" * 32, **champ)) == []
    out = policy.evaluate(Observation(now=T0 + 1, code_digest="c1" * 32, **champ))
    assert actions(out) == [("run", "code")]
    assert out[0].reason == f"code digest {'c1' * 6} differs from the champion's {'c0' * 6}"
    for i in range(5):  # the candidate was not promoted: the same digest never fires again
        assert policy.evaluate(Observation(now=T0 + 2 + i, code_digest="c1" * 32, **champ)) == []
    assert actions(policy.evaluate(Observation(now=T0 + 10, code_digest="c2" * 32, **champ))) == [("run", "code")]
    assert policy.evaluate(Observation(now=T0 + 11, code_digest="c1" * 32, **champ)) == []
    assert policy.evaluate(Observation(now=T0 + 12, code_digest="c3" * 32)) == []  # champion's unknown


def test_code_disabled():
    policy = TriggerPolicy(cfg())
    assert policy.evaluate(Observation(now=T0, code_digest="a", champion_code_digest="b")) == []


# ------------------------------------------------------------------------------ schedule
def test_no_schedule_never_fires():
    policy = TriggerPolicy(cfg())
    for i in range(100):
        assert policy.evaluate(Observation(now=T0 + i * 3600)) == []


def test_interval_schedule_runs_once_per_slot_anchored_at_the_first_observation():
    policy = TriggerPolicy(cfg(schedule={"interval_s": 60}, poll_interval_s=2))
    slots = []
    for i in range(0, 301, 2):  # ticks every 2 s for 300 s
        for d in policy.evaluate(Observation(now=T0 + i)):
            assert d.action == "run" and d.trigger == "schedule"
            slots.append(i)
    assert slots == [60, 120, 180, 240, 300]


@pytest.mark.parametrize("missed", ["run_once", "skip"])
def test_interval_schedule_watcher_down_for_five_intervals(missed):
    policy = TriggerPolicy(cfg(schedule={"interval_s": 100, "missed": missed}, poll_interval_s=2))
    assert policy.evaluate(Observation(now=T0)) == []
    out = policy.evaluate(Observation(now=T0 + 530))  # down: slots at +100 .. +500 passed
    slot = dt.datetime.fromtimestamp(T0 + 500, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if missed == "run_once":
        assert actions(out) == [("run", "schedule")]
        assert slot in out[0].reason and "5 missed slots collapsed into one run" in out[0].reason
    else:
        assert actions(out) == [("skip", "schedule")]
        assert f"missed slot at {slot}" in out[0].reason and "policy skip" in out[0].reason
    assert policy.state.last_slot == T0 + 500
    assert policy.evaluate(Observation(now=T0 + 532)) == []  # nothing due twice
    assert actions(policy.evaluate(Observation(now=T0 + 601))) == [("run", "schedule")]  # on time again


def test_skip_policy_runs_a_slot_seen_on_time():
    policy = TriggerPolicy(cfg(schedule={"interval_s": 100, "missed": "skip"}, poll_interval_s=2))
    policy.evaluate(Observation(now=T0))
    assert actions(policy.evaluate(Observation(now=T0 + 103.9))) == [("run", "schedule")]  # 3.9 s <= 2 * 2 s
    assert actions(policy.evaluate(Observation(now=T0 + 204.1))) == [("skip", "schedule")]  # 4.1 s late


def test_cron_every_5_minutes_across_hours_runs_once_per_slot():
    policy = TriggerPolicy(cfg(schedule={"cron": "*/5 * * * *"}, poll_interval_s=60))
    seen = []
    t = T0  # 00:00:30 UTC
    while t < T0 + 3 * 3600:
        t += 60
        out = policy.evaluate(Observation(now=t))
        assert len(runs(out)) == len(out) <= 1
        seen += [d.reason for d in out]
    expected = [
        (dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=5 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for k in range(1, 37)
    ]
    assert len(seen) == 36
    assert [r.split()[1] for r in seen] == expected  # "slot 2024-01-01T00:05:00Z (cron '*/5 * * * *')"


def test_cron_down_for_an_hour_collapses_into_one_run():
    policy = TriggerPolicy(cfg(schedule={"cron": "*/5 * * * *"}))
    assert policy.evaluate(Observation(now=T0)) == []
    out = policy.evaluate(Observation(now=T0 + 3600))
    assert actions(out) == [("run", "schedule")] and "12 missed slots collapsed" in out[0].reason


def test_slot_helpers():
    assert interval_slots_due(0.0, 10.0, 0.0, 9.99) == (0, None)
    assert interval_slots_due(0.0, 10.0, 0.0, 10.0) == (1, 10.0)
    assert interval_slots_due(0.0, 10.0, 10.0, 55.0) == (4, 50.0)
    assert interval_slots_due(0.0, 0.1, 0.0, 1.0) == (10, pytest.approx(1.0))
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    assert cron_slots_due("0 3 * * *", base, base + 3 * 3600) == (1, base + 3 * 3600, False)
    assert cron_slots_due("0 3 * * *", base + 3 * 3600, base + 4 * 3600) == (0, None, False)
    n, latest, capped = cron_slots_due("* * * * *", base, base + 30 * 86400)  # 43,200 slots
    assert capped and n == 10_000 and latest == base + 30 * 86400


# ------------------------------------------------------------------------------ one run at a time
def test_several_triggers_in_one_tick_one_run_for_the_highest_priority():
    c = cfg(
        data={"enabled": True},
        code={"enabled": True},
        drift={"enabled": True, "consecutive_windows": 1},
        schedule={"interval_s": 60},
    )
    policy = TriggerPolicy(c)
    policy.evaluate(Observation(now=T0, source_key="k1", fingerprint=Fingerprint("d1")))
    obs = Observation(
        now=T0 + 60,
        source_key="k2",
        fingerprint=Fingerprint("d2"),
        windows=alert(Windows(), "age"),
        code_digest="new",
        champion_code_digest="old",
    )
    out = policy.evaluate(obs)
    assert actions(out) == [("run", "drift"), ("coalesce", "data"), ("coalesce", "code"), ("coalesce", "schedule")]
    reason = out[0].reason
    assert reason.startswith("drift: feature age in alert")
    assert "also data: source fingerprint d1 -> d2" in reason and "also code:" in reason and "also schedule:" in reason
    assert all("coalesced into this tick's drift run" in d.reason for d in out[1:])
    json.dumps([d.to_dict() for d in out])


def test_priority_without_drift_is_data_then_code_then_schedule():
    policy = TriggerPolicy(cfg(code={"enabled": True}, schedule={"interval_s": 10}))
    policy.evaluate(Observation(now=T0))
    out = policy.evaluate(Observation(now=T0 + 10, code_digest="n", champion_code_digest="o"))
    assert actions(out) == [("run", "code"), ("coalesce", "schedule")]


def test_triggers_while_running_are_coalesced_into_one_follow_up_run():
    c = cfg(data={"enabled": True}, drift={"enabled": True, "consecutive_windows": 1}, schedule={"interval_s": 60})
    policy, fp, w = TriggerPolicy(c), Fingerprint("d1"), Windows()
    policy.evaluate(Observation(now=T0, source_key="k1", fingerprint=fp))
    out = policy.evaluate(Observation(now=T0 + 60, source_key="k1", fingerprint=fp, running=True))
    assert actions(out) == [("coalesce", "schedule")]
    assert "a run is in progress" in out[0].reason
    fp.value = "d2"
    out = policy.evaluate(Observation(now=T0 + 70, source_key="k2", fingerprint=fp, running=True))
    assert actions(out) == [("coalesce", "data")]
    out = policy.evaluate(Observation(now=T0 + 80, running=True, windows=alert(w, "age")))
    assert actions(out) == [("coalesce", "drift")]
    out = policy.evaluate(Observation(now=T0 + 120, running=True))  # a second slot, still running
    assert actions(out) == [("coalesce", "schedule")]
    assert set(policy.state.pending) == {"schedule", "data", "drift"}
    assert policy.state.pending["schedule"]["count"] == 2
    # the run finished: nothing new fired, the pending ones give exactly one run
    out = policy.evaluate(Observation(now=T0 + 130))
    assert actions(out) == [("run", "drift")]
    assert "also data: source fingerprint d1 -> d2" in out[0].reason
    assert "also schedule: fired 2x while a run was in progress" in out[0].reason
    assert policy.state.pending == {} and policy.state.last_drift_run_at == T0 + 130
    assert policy.evaluate(Observation(now=T0 + 132)) == []


def test_skip_policy_slot_while_running_is_skipped_run_once_is_coalesced():
    for missed, expected in (("run_once", [("coalesce", "schedule")]), ("skip", [("skip", "schedule")])):
        policy = TriggerPolicy(cfg(schedule={"interval_s": 60, "missed": missed}))
        policy.evaluate(Observation(now=T0))
        assert actions(policy.evaluate(Observation(now=T0 + 60, running=True))) == expected
        follow = policy.evaluate(Observation(now=T0 + 90))
        assert actions(follow) == ([("run", "schedule")] if missed == "run_once" else [])


def test_a_coalesced_drift_starts_the_cooldown_and_its_follow_up_run_restarts_it():
    """Drift that keeps alerting during a run is one follow-up run, not one coalesce per K windows."""
    policy, w = TriggerPolicy(drift_cfg(k=1, cooldown=100)), Windows()
    assert actions(policy.evaluate(Observation(now=T0, running=True, windows=alert(w)))) == [("coalesce", "drift")]
    assert policy.state.last_drift_run_at == T0
    assert actions(policy.evaluate(Observation(now=T0 + 10, running=True, windows=alert(w)))) == [("skip", "drift")]
    assert actions(policy.evaluate(Observation(now=T0 + 500))) == [("run", "drift")]
    assert actions(policy.evaluate(Observation(now=T0 + 550, windows=alert(w)))) == [("skip", "drift")]
    assert actions(policy.evaluate(Observation(now=T0 + 600, windows=alert(w)))) == [("run", "drift")]


def test_data_waits_for_the_source_to_settle():
    c = cfg(data={"enabled": True, "settle_s": 10})
    policy, fp = TriggerPolicy(c), Fingerprint("d1")
    assert policy.evaluate(Observation(now=T0, source_key="k1", fingerprint=fp, champion_fingerprint="d0")) == []
    assert policy.evaluate(Observation(now=T0 + 5, source_key="k2", fingerprint=fp)) == []  # still being written
    assert policy.evaluate(Observation(now=T0 + 14, source_key="k2", fingerprint=fp)) == []  # 9 s quiet
    assert fp.calls == 0
    out = policy.evaluate(Observation(now=T0 + 15.5, source_key="k2", fingerprint=fp))
    assert actions(out) == [("run", "data")] and fp.calls == 1


def test_a_run_consumes_the_source_it_trains_on():
    """Drift starts a run while new data is settling: the run trains on it, so it fires nothing
    later; its fingerprint becomes the baseline. After a failed run the data is looked at again."""
    c = cfg(data={"enabled": True, "settle_s": 10}, drift={"enabled": True, "consecutive_windows": 1})
    policy, w = TriggerPolicy(c), Windows()
    policy.evaluate(Observation(now=T0, source_key="k1", fingerprint=Fingerprint("d1"), champion_fingerprint="d1"))
    fp2 = Fingerprint("d2")
    out = policy.evaluate(Observation(now=T0 + 1, source_key="k2", fingerprint=fp2, windows=alert(w)))
    assert actions(out) == [("run", "drift")]
    for t in (T0 + 20, T0 + 40):  # the run is in progress and after the settle time: no data trigger
        assert policy.evaluate(Observation(now=t, source_key="k2", fingerprint=fp2, running=True)) == []
    policy.run_finished("d2", succeeded=True)
    assert policy.state.data_baseline == "d2"
    assert policy.evaluate(Observation(now=T0 + 60, source_key="k2", fingerprint=fp2)) == [] and fp2.calls == 0
    # a failed run: the same data is examined again and fires
    fp3 = Fingerprint("d3")
    out = policy.evaluate(Observation(now=T0 + 70, source_key="k3", fingerprint=fp3, windows=alert(w)))
    policy.run_finished(None, succeeded=False)
    assert policy.evaluate(Observation(now=T0 + 71, source_key="k3", fingerprint=fp3)) == []  # settling again
    assert actions(policy.evaluate(Observation(now=T0 + 82, source_key="k3", fingerprint=fp3))) == [("run", "data")]


# ------------------------------------------------------------------------------ persistence
def roundtrip(policy: TriggerPolicy) -> TriggerPolicy:
    return TriggerPolicy(policy.cfg, PolicyState.from_dict(json.loads(json.dumps(policy.state.to_dict()))))


def test_state_round_trips_through_json_and_the_restored_policy_behaves_the_same():
    c = cfg(
        data={"enabled": True},
        code={"enabled": True},
        drift={"enabled": True, "consecutive_windows": 2, "cooldown_s": 600, "metric_floor": 0.5},
        schedule={"interval_s": 100},
    )
    policy, fp, w = TriggerPolicy(c), Fingerprint("d1"), Windows()
    policy.evaluate(Observation(now=T0, source_key="k1", fingerprint=fp, windows=alert(w)))
    policy.evaluate(Observation(now=T0 + 10, code_digest="n", champion_code_digest="o", running=True))
    restored = roundtrip(policy)
    assert restored.state == policy.state
    assert PolicyState.from_dict(restored.state.to_dict()).to_dict() == policy.state.to_dict()
    # the same next observations give the same decisions; seen windows are not counted again
    # (w.closed holds one alert window: were it counted again it would complete K = 2)
    for p in (policy, restored):
        out = p.evaluate(Observation(now=T0 + 20, source_key="k1", fingerprint=fp, windows=tuple(w.closed)))
        assert actions(out) == [("run", "code")]
        assert p.evaluate(Observation(now=T0 + 30, source_key="k1", fingerprint=fp, windows=tuple(w.closed))) == []
    assert fp.calls == 1  # the stat key was restored too: no fingerprint after the restart
    assert restored.state.to_dict() == policy.state.to_dict()
    late = [p.evaluate(Observation(now=T0 + 100, windows=alert(w))) for p in (policy, roundtrip(policy))]
    assert late[0] == late[1] and actions(late[0]) == [("run", "drift"), ("coalesce", "schedule")]


def test_state_format_is_checked():
    with pytest.raises(ValueError, match="format"):
        PolicyState.from_dict({"format": 99})
    assert PolicyState.from_dict({}) == PolicyState()


def test_window_view_from_monitor_evaluation():
    ev = {
        "model_version": 7,
        "window": {"index": 3, "start": 0.0, "end": 1.0, "rows": 900},
        "status": "alert",
        "features": [{"feature": "age", "status": "alert"}, {"feature": "x", "status": "warn"}],
    }
    assert WindowView.from_evaluation(ev) == WindowView("7", 3, "alert", ("age",))
    with pytest.raises(ValueError):
        WindowView("1", 0, "bad")
    with pytest.raises(ValueError):
        Observation(now=0, metric_direction="up")


# ------------------------------------------------------------------------------ properties
STATUSES = st.sampled_from(["ok", "warn", "alert", "insufficient"])


def disjoint_k_runs(statuses: list[str], k: int) -> int:
    """Disjoint runs of >= k consecutive alert windows (insufficient windows skipped: they break nothing)."""
    total, streak = 0, 0
    for s in statuses:
        if s == "insufficient":
            continue
        streak = streak + 1 if s == "alert" else 0
        if streak == k:
            total, streak = total + 1, 0
    return total


@settings(max_examples=150, deadline=None)
@given(
    statuses=st.lists(STATUSES, max_size=40),
    k=st.integers(1, 4),
    cooldown=st.sampled_from([0.0, 30.0, 1000.0]),
    batches=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    running=st.lists(st.booleans(), min_size=1, max_size=60),
    restart_at=st.integers(0, 60),
)
def test_property_drift_runs_never_exceed_disjoint_k_alert_runs(statuses, k, cooldown, batches, running, restart_at):
    policy = TriggerPolicy(drift_cfg(k=k, cooldown=cooldown))
    windows = [WindowView("1", i, s, ("f",) if s == "alert" else ()) for i, s in enumerate(statuses)]
    shown, tick, drift_runs = 0, 0, 0
    while shown < len(windows) or tick < len(running):
        batch = batches[tick % len(batches)]
        shown = min(len(windows), shown + (batch if tick < len(running) else max(batch, 1)))
        if tick == restart_at:
            policy = roundtrip(policy)
        out = policy.evaluate(
            Observation(now=T0 + 10 * tick, windows=tuple(windows[:shown]), running=running[tick % len(running)])
        )
        assert len(runs(out)) <= 1
        drift_runs += sum(1 for d in out if d.action == "run" and d.trigger == "drift")
        tick += 1
    assert drift_runs <= disjoint_k_runs(statuses, k)


@settings(max_examples=100, deadline=None)
@given(statuses=st.lists(STATUSES, max_size=40), k=st.integers(1, 4))
def test_property_no_cooldown_one_window_per_tick_runs_exactly_once_per_k_run(statuses, k):
    policy = TriggerPolicy(drift_cfg(k=k, cooldown=0))
    windows = [WindowView("1", i, s, ("f",) if s == "alert" else ()) for i, s in enumerate(statuses)]
    out = [d for i in range(len(windows)) for d in policy.evaluate(Observation(now=T0 + i, windows=windows[: i + 1]))]
    assert actions(out) == [("run", "drift")] * disjoint_k_runs(statuses, k)
