"""The run-time context every stage receives: workspace, snapshot store, state store, MLflow store.

Built once at each entry point (the CLI, ``jobs/*.py``, the Serve application
builder, an actor's constructor) and passed down; nothing below an entry point
reads ``MLOPS_RAY_HOME`` or MLflow's process-wide tracking URI. A context is
picklable (its MLflow client is rebuilt lazily on the other side), so a Ray task
or actor gets the context of the caller, not the environment of whoever started
the cluster. Two contexts with different workspaces work side by side in one
process.

Example::

    ctx = Context.create(cfg)                      # entry point: $MLOPS_RAY_HOME or ./.mlops
    ctx = Context.create(cfg, workspace="/tmp/ws")  # explicit
    snap = ctx.snapshots.find("quickstart@latest")
    ctx.client.search_registered_models()
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ray.data.snapshot import SnapshotStore
from mlops_ray.errors import ConfigError
from mlops_ray.registry import tracking
from mlops_ray.state import StateStore
from mlops_ray.workspace import Workspace, get_workspace

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig

DEFAULT_EXPERIMENT = "mlops-ray"


@dataclass
class Context:
    """Where state lives for one project: the workspace and the MLflow tracking/registry store."""

    workspace: Workspace
    tracking_uri: str
    experiment: str = DEFAULT_EXPERIMENT
    _client: Any = field(default=None, init=False, repr=False, compare=False)
    _experiment_id: str | None = field(default=None, init=False, repr=False, compare=False)
    _state: StateStore | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def create(
        cls, cfg: PipelineConfig | None = None, *, workspace: Workspace | str | os.PathLike | None = None
    ) -> "Context":
        """Context for a pipeline config (its ``mlflow`` section) in ``workspace``.

        ``workspace=None`` reads ``$MLOPS_RAY_HOME`` (default ``./.mlops``), and a config without
        ``mlflow.tracking_uri`` (or no config) reads ``$MLFLOW_TRACKING_URI``: call this only at an entry point.
        """
        from mlops_ray.config import TRACKING_URI_ENV, default_tracking_uri

        ws = workspace if isinstance(workspace, Workspace) else get_workspace(workspace)
        try:  # the config's mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else SQLite in a local workspace
            uri = cfg.mlflow.resolved_tracking_uri(ws) if cfg is not None else default_tracking_uri(ws)
        except ConfigError:  # a URI workspace with no tracking server: fails when MLflow is used, not before
            if os.environ.get(TRACKING_URI_ENV, "").strip():
                raise  # MLFLOW_TRACKING_URI is set but unusable: say so now
            uri = ""
        return cls(ws, uri) if cfg is None else cls(ws, uri, cfg.mlflow.experiment)

    # ----------------------------------------------------------------- stores
    @property
    def snapshots(self) -> SnapshotStore:
        return SnapshotStore(self.workspace)

    @property
    def state(self) -> StateStore:
        """Shared state (locks, step cache, histories, checkpoints, service records) of this workspace."""
        if self._state is None:
            self._state = self.workspace.state_store()
        return self._state

    @property
    def client(self):
        """An ``MlflowClient`` bound to this context's store (the experiment is created on first use)."""
        if self._client is None:
            if not self.tracking_uri:
                self.workspace.mlflow_tracking_uri  # noqa: B018 - raises the ConfigError saying what to set
            self._client, self._experiment_id = tracking.connect(
                self.tracking_uri, self.experiment, self.workspace.artifacts
            )
        return self._client

    @property
    def experiment_id(self) -> str:
        self.client  # noqa: B018 - connects on first use
        return self._experiment_id

    def run_dir(self, *parts: str) -> Path:
        return self.workspace.ensure(*parts)

    # ----------------------------------------------------------------- pickling
    def __getstate__(self) -> dict:
        return {"workspace": self.workspace, "tracking_uri": self.tracking_uri, "experiment": self.experiment}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)
