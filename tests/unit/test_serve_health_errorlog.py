"""``GET /health``'s decision (``mlops_ray.serve.health``) and the rate-limited 5xx log
(``mlops_ray.serve.errorlog``): pure, with a fake clock."""

from __future__ import annotations

import pytest

from mlops_ray.serve.errorlog import ErrorLogLimiter, LogDecision, one_line
from mlops_ray.serve.health import LOAD_FAILED, NOT_FOUND, UNREACHABLE, RegistryWatch, health


# --------------------------------------------------------------------------- health
def test_no_model_is_503_whatever_the_registry():
    for watch in (RegistryWatch(), RegistryWatch(last_ok_at=1.0), RegistryWatch(error="unreachable: x")):
        status, body = health(None, "TrackingError: down", watch, now=10.0)
        assert status == 503
        assert body == {"status": "unavailable", "detail": "no model loaded: TrackingError: down"}


def test_model_and_registry_ok_is_ok():
    watch = RegistryWatch()
    watch.ok(now=5.0)
    assert health("3", None, watch, now=6.0) == (200, {"status": "ok", "model_version": "3", "registry": "ok"})


def test_registry_unreachable_while_serving_is_200_degraded_with_the_error_and_its_age():
    watch = RegistryWatch()
    watch.ok(now=100.0)
    watch.failed(UNREACHABLE, "TrackingError: cannot read m@champion: OperationalError: unable to open", now=130.0)
    status, body = health("3", None, watch, now=142.26)
    assert status == 200  # still serving v3: taking the replica out would make it an outage
    assert body == {
        "status": "degraded",
        "model_version": "3",
        "registry": "unreachable: TrackingError: cannot read m@champion: OperationalError: unable to open",
        "registry_last_ok_age_s": 42.3,
    }


@pytest.mark.parametrize("kind", [NOT_FOUND, LOAD_FAILED])
def test_other_failed_checks_are_degraded_and_say_which(kind):
    watch = RegistryWatch()
    watch.failed(kind, "E: x", now=1.0)
    status, body = health("2", None, watch, now=2.0)
    assert status == 200 and body["status"] == "degraded" and body["registry"] == f"{kind}: E: x"
    assert body["registry_last_ok_age_s"] is None  # never succeeded since start


def test_a_successful_check_clears_degraded():
    watch = RegistryWatch()
    watch.failed(UNREACHABLE, "down", now=1.0)
    watch.ok(now=2.0)
    assert health("2", None, watch, now=3.0)[1]["status"] == "ok"
    assert watch.error is None and watch.failed_at is None and watch.last_ok_at == 2.0


# --------------------------------------------------------------------------- rate-limited error log
class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_first_error_of_a_type_is_logged_with_traceback():
    lim = ErrorLogLimiter(clock=FakeClock())
    assert lim.decide("ValueError") == LogDecision(line=True, traceback=True, suppressed=0)


def test_at_most_one_line_per_interval_then_the_suppressed_count():
    clock = FakeClock()
    lim = ErrorLogLimiter(interval_s=1.0, clock=clock)
    lim.decide("ValueError")
    decisions = []
    for _ in range(688):  # 688 more within the same second
        clock.t += 0.001
        decisions.append(lim.decide("ValueError"))
    assert not any(d.line for d in decisions)
    clock.t += 1.0
    assert lim.decide("ValueError") == LogDecision(line=True, traceback=False, suppressed=688)
    clock.t += 0.5
    assert lim.decide("ValueError").line is False
    clock.t += 0.5
    assert lim.decide("ValueError") == LogDecision(line=True, traceback=False, suppressed=1)


def test_a_new_exception_type_is_logged_at_once_with_its_traceback_once():
    clock = FakeClock()
    lim = ErrorLogLimiter(interval_s=1.0, clock=clock)
    lim.decide("ValueError")
    lim.decide("ValueError")  # suppressed
    d = lim.decide("KeyError")  # new type, same instant: logged anyway, and carries the count
    assert d == LogDecision(line=True, traceback=True, suppressed=1)
    clock.t += 10
    assert lim.decide("KeyError") == LogDecision(line=True, traceback=False, suppressed=0)


def test_flood_over_a_minute_logs_about_one_line_a_second():
    clock = FakeClock()
    lim = ErrorLogLimiter(interval_s=1.0, clock=clock)
    lines = tracebacks = 0
    for _ in range(60 * 100):  # 100 errors/s for 60 s
        clock.t += 0.01
        d = lim.decide("RuntimeError")
        lines += d.line
        tracebacks += d.traceback
    assert 59 <= lines <= 61 and tracebacks == 1


def test_distinct_types_tracked_are_capped():
    lim = ErrorLogLimiter(clock=FakeClock(), max_types=3)
    assert [lim.decide(f"E{i}").traceback for i in range(5)] == [True, True, True, False, False]


def test_one_line_flattens_truncates_and_escapes():
    assert one_line("a\nb\r\n  c\td") == "a b c d"
    assert len(one_line("x" * 1000)) == 300 and one_line("x" * 1000).endswith("...")
    assert one_line("bad \ud800") == "bad \\ud800"
