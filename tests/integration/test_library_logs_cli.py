"""A CLI command that uses MLflow prints no library chatter: it goes to <workspace>/logs/ (a subprocess, no Ray).

Slow (a fresh interpreter imports MLflow twice), so it runs in the integration tier; the in-process
checks of the library log are in ``tests/unit/test_library_logs.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _cli_process import run_cli


@pytest.mark.integration  # slow (subprocesses), no Ray: kept out of the fast tier
def test_a_command_that_uses_mlflow_prints_no_library_chatter(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump({"data": {"name": "d", "source": str(tmp_path), "id_column": "id", "label_column": "y"}})
    )
    quiet = run_cli(["models", "--config", str(cfg)], tmp_path / "home")
    assert quiet.returncode == 0, quiet.stderr
    assert "no versions of 'mlops-ray-model' yet" in quiet.stdout
    lines = quiet.stderr.splitlines()
    # creating the MLflow store logs INFO lines (alembic, mlflow.store.db.utils): in the file, named once
    assert len(lines) == 1 and lines[0].startswith("library logs: "), quiet.stderr
    logfile = Path(lines[0].removeprefix("library logs: "))
    assert logfile.parent == tmp_path / "home" / "logs" and logfile.name.startswith("mlops-ray-models-")
    assert "Creating initial MLflow database tables" in logfile.read_text()
    for word in ("Traceback", "WARNING", "INFO", "Warning"):
        assert word not in quiet.stderr

    verbose = run_cli(["models", "--config", str(cfg)], tmp_path / "home2", "--verbose")
    assert verbose.returncode == 0 and "Creating initial MLflow database tables" in verbose.stderr
    assert not (tmp_path / "home2" / "logs").exists()
