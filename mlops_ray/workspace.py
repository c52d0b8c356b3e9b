"""Where local state lives. Nothing is created on import; directories appear on first use.

Layout under the workspace root (``$MLOPS_RAY_HOME``, default ``./.mlops``)::

    datasets/<name>/<snapshot-id>/   immutable prepared snapshots
    raw/<name>/                      generated sample data (quickstart)
    mlflow.db                        SQLite MLflow tracking + registry
    artifacts/                       MLflow artifact root
    ray/                             Ray Train/Tune storage
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "MLOPS_RAY_HOME"
DEFAULT_DIRNAME = ".mlops"


@dataclass(frozen=True)
class Workspace:
    """Resolved workspace paths. Construct with :func:`get_workspace`."""

    root: Path

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def ray_storage(self) -> Path:
        return self.root / "ray"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    def ensure(self, *subdirs: str) -> Path:
        """Create (if needed) and return ``root/subdirs...``."""
        path = self.root.joinpath(*subdirs)
        path.mkdir(parents=True, exist_ok=True)
        return path


def get_workspace(root: str | os.PathLike | None = None) -> Workspace:
    """Workspace at ``root``, else ``$MLOPS_RAY_HOME``, else ``./.mlops`` (absolute).

    Reading the environment is for entry points only (the CLI, jobs, the Serve builder);
    everything below them receives a :class:`Workspace` through its
    :class:`~mlops_ray.context.Context`.
    """
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_DIRNAME
    return Workspace(Path(root).expanduser().resolve())
