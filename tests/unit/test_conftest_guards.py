"""The guards in tests/conftest.py hold: a unit test that starts Ray fails; integration tests keep Ray.

Runs a throwaway test file under a copy of the real conftest in a separate pytest process (the
guard of this very test would otherwise answer instead of the copy's). No Ray is started: if the
guard under test let ``ray.init`` through, the throwaway's own fixture stops Ray before any process.
"""

from __future__ import annotations

from pathlib import Path

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

THROWAWAY = '''
import pytest
import ray
import ray._private.node


@pytest.fixture(autouse=True)
def never_really_start(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("the guard let ray.init through")

    monkeypatch.setattr(ray._private.node.Node, "__init__", refuse)


@pytest.fixture
def workspace():
    """Overrides the copy's workspace: no MLflow store is needed here."""


def test_unit_calls_ray_init():
    ray.init(num_cpus=1)


def test_unit_swallows_the_failure():
    try:
        ray.init(num_cpus=1)
    except Exception:
        pass


def test_unit_leaves_ray_running(monkeypatch):
    # as if Ray had been started some other way than ray.init
    shut = []
    monkeypatch.setattr(ray, "is_initialized", lambda: not shut)
    monkeypatch.setattr(ray, "shutdown", lambda: shut.append(1))


@pytest.mark.integration
def test_integration_keeps_the_real_ray_init():
    assert ray.init.__module__ == "ray._private.worker"
'''


def test_unit_test_starting_ray_fails_and_integration_test_is_untouched(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\naddopts = --strict-markers\nmarkers =\n    integration: x\n    e2e: x\n")
    pytester.makepyfile(test_throwaway=THROWAWAY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:timeout", "-ra", timeout=120)
    result.assert_outcomes(passed=2, failed=2, errors=1)
    out = result.stdout.str()
    assert "the guard let ray.init through" not in out
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_unit_leaves_ray_running*",
            "Ray was left running*",
            "*_ test_unit_calls_ray_init _*",
            "unit tests must not start Ray*",
            "*_ test_unit_swallows_the_failure _*",
            "unit tests must not start Ray*",
            "ERROR test_throwaway.py::test_unit_leaves_ray_running *",
            "FAILED test_throwaway.py::test_unit_calls_ray_init *",
            "FAILED test_throwaway.py::test_unit_swallows_the_failure *",
        ]
    )
