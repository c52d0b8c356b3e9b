"""Every Ray job entrypoint in ``jobs/`` is the CLI command its docstring names, arguments passed on
(run as ``ray job submit`` runs it: ``python jobs/X.py ARGS`` from the working directory; no Ray).
The pipeline job runs for real through ``ray job submit --working-dir .`` and the watch job through Ray's
job API on two nodes in tests/integration/test_multinode.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = {
    "prepare.py": ["data", "prepare"],
    "train.py": ["train"],
    "tune.py": ["tune"],
    "pipeline.py": ["pipeline", "run"],
    "watch.py": ["pipeline", "watch"],
    "quickstart.py": ["quickstart"],
}


def test_every_job_file_is_listed():
    assert sorted(p.name for p in (ROOT / "jobs").glob("*.py")) == sorted(JOBS)


@pytest.mark.parametrize("job", sorted(JOBS))
def test_job_runs_its_cli_command_with_the_arguments_given(job):
    from click.testing import CliRunner

    from mlops_ray.cli import main

    as_job = subprocess.run(
        [sys.executable, f"jobs/{job}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    as_cli = CliRunner().invoke(main, [*JOBS[job], "--help"])
    assert as_job.returncode == 0 and as_cli.exit_code == 0, as_job.stderr[-2000:]
    # the first line names the program, the rest must match (wrapped to each one's terminal width)
    usage = " ".join(as_cli.output.split("\n", 1)[1].split())
    assert " ".join(as_job.stdout.split("\n", 1)[1].split()) == usage and "--config" in usage


def test_a_bad_argument_to_a_job_is_a_usage_error_not_a_traceback():
    bad = subprocess.run(
        [sys.executable, "jobs/pipeline.py", "--no-such-option"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "no-such-option" in bad.stderr and "Traceback" not in bad.stderr
