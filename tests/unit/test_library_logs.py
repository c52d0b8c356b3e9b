"""Library chatter goes to <workspace>/logs/, not the console (no Ray: Ray's printer is faked)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import pytest
from _cli_process import run_cli

from mlops_ray import library_logs
from mlops_ray.library_logs import LibraryLog


@pytest.fixture
def log(tmp_path):
    lg = library_logs.activate(LibraryLog(tmp_path / "logs", "data-prepare"))
    yield lg
    library_logs.deactivate()
    lg.close()


class _MlflowLoggingStream:
    """Like mlflow.utils.logging_utils.MlflowLoggingStream: writes to whatever sys.stderr is."""

    def write(self, text):
        sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()


_MlflowLoggingStream.__module__ = "mlflow.utils.logging_utils"


def _library_logger(name: str) -> logging.Logger:
    """A logger configured the way Ray and MLflow configure theirs: own stderr handler, no propagation."""
    lg = logging.getLogger(name)
    lg.handlers = [logging.StreamHandler(sys.stderr)]
    lg.setLevel(logging.INFO)
    lg.propagate = False
    return lg


def test_nothing_is_created_until_something_is_written(tmp_path, log):
    assert not (tmp_path / "logs").exists() and not log.written
    log.write("x")
    assert log.written and log.path.parent == tmp_path / "logs"
    assert log.path.name.startswith("mlops-ray-data-prepare-") and log.path.read_text() == "x\n"


def test_library_records_and_warnings_go_to_the_file(tmp_path, log, capsys):
    ray_data = _library_logger("ray.data._test")
    mlflow_stream = _library_logger("mlflow._test_proxy")
    mlflow_stream.handlers = [logging.StreamHandler(_MlflowLoggingStream())]
    mlflow_stream.info("INFO from a handler on MLflow's stderr proxy")
    mlflow_like = logging.getLogger("mlflow._test_no_handler")  # propagates to root
    ray_data.info("✔️  Dataset dataset_0 execution finished in 1.50 seconds")
    mlflow_like.warning("Creating initial MLflow database tables...")
    warnings.warn("some library warning", UserWarning, stacklevel=1)
    logging.getLogger("mlops_ray._test").warning("our own warning stays visible")
    out, err = capsys.readouterr()
    assert out == "" and err == "our own warning stays visible\n"
    text = log.path.read_text()
    assert "INFO ray.data._test: ✔️  Dataset dataset_0 execution finished" in text
    assert "WARNING mlflow._test_no_handler: Creating initial MLflow database tables" in text
    assert "UserWarning: some library warning" in text
    assert "INFO mlflow._test_proxy: INFO from a handler on MLflow's stderr proxy" in text
    assert "our own warning" not in text


def test_known_useless_warnings_are_dropped(log, capsys):
    warnings.warn(
        "\x1b[33mAdd type hints to the `predict` method to enable data validation\x1b[0m", UserWarning, stacklevel=1
    )
    warnings.warn("The specified dataset source can be interpreted in multiple ways: A, B.", UserWarning, stacklevel=1)
    warnings.warn(
        "`look_back_period_s` (5.0) must be greater than `metrics_interval_s` (10.0).", FutureWarning, stacklevel=1
    )
    assert capsys.readouterr() == ("", "") and not log.written


def test_known_warnings_are_dropped_inside_a_librarys_own_filter_block(log, capsys):
    with warnings.catch_warnings():  # what MLflow's decorators do around the type-hint check
        warnings.simplefilter("once", UserWarning)
        warnings.warn("\x1b[33mAdd type hints to the `predict` method ...\x1b[0m", UserWarning, stacklevel=1)
    assert capsys.readouterr() == ("", "") and not log.written


def test_deactivate_restores_the_console(tmp_path, capsys):
    before = (logging.StreamHandler.emit, list(warnings.filters), os.environ.get("RAY_AIR_NEW_OUTPUT"))
    lg = library_logs.activate(LibraryLog(tmp_path / "logs", "x"))
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert library_logs.deactivate() is lg and library_logs.active() is None
    assert (logging.StreamHandler.emit, list(warnings.filters), os.environ.get("RAY_AIR_NEW_OUTPUT")) == before
    _library_logger("ray._test_after").warning("visible again")
    assert "visible again" in capsys.readouterr().err


def test_ray_worker_output_and_raylet_messages_go_to_the_file(log, monkeypatch, capsys):
    # ray_runtime.ensure_ray calls before_ray_init() just before ray.init; the seam that replaces Ray's
    # printer is faked here (tests/unit/test_compat.py patches the real one)
    printers = []
    monkeypatch.setattr(library_logs.compat, "route_driver_output", printers.append)
    library_logs.before_ray_init()
    (printer,) = printers
    printer({"pid": 123, "actor_name": "HAProxyManager", "is_err": True, "lines": ["INFO haproxy started"]})
    printer({"pid": "raylet", "is_err": False, "lines": ["Task ServeController.graceful_shutdown failed"]})
    assert capsys.readouterr() == ("", "")
    text = log.path.read_text()
    assert "(HAProxyManager pid=123) [stderr] INFO haproxy started" in text
    assert "(raylet) [stdout] Task ServeController.graceful_shutdown failed" in text


def test_before_ray_init_without_an_active_log_changes_nothing(monkeypatch):
    def refuse(write):
        raise AssertionError("Ray's printer replaced without an active log")

    monkeypatch.setattr(library_logs.compat, "route_driver_output", refuse)
    assert library_logs.active() is None
    library_logs.before_ray_init()


# ------------------------------------------------------------------ the real CLI, in a subprocess
def test_a_command_with_no_library_output_names_no_log(tmp_path):
    r = run_cli(["data", "list"], tmp_path / "home")
    assert r.returncode == 0 and r.stderr == "" and not (tmp_path / "home" / "logs").exists()
