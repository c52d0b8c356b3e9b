"""Where state lives. Nothing is created on import; directories appear on first use.

Layout under the workspace (``$MLOPS_RAY_HOME``, default ``./.mlops``)::

    datasets/<name>/<snapshot-id>/   immutable prepared snapshots                       (shared)
    pipeline/, drift/, run/, cache/  the state store: locks, step cache, history, ...   (shared)
    ray/                             Ray Train/Tune storage                             (shared)
    raw/<name>/                      generated sample data (quickstart)
    mlflow.db                        SQLite MLflow tracking + registry (local workspaces only)
    artifacts/                       MLflow artifact root of the SQLite store
    logs/, runs/, reports/           this machine's logs, training scratch, rendered reports

The workspace may be a URI (``MLOPS_RAY_HOME=s3://bucket/prefix``, ``gs://...``, or
``file:///shared/mount``) for a cluster whose nodes share no disk: the *shared* part (snapshots,
the state store, Ray storage) then lives there, read and written by every node through
``pyarrow.fs`` (snapshots) and :func:`mlops_ray.state.store_for` (state), and this machine's local
part (logs, scratch, reports) goes to ``$MLOPS_RAY_LOCAL_DIR`` (default
``~/.cache/mlops-ray/<digest of the URI>``). MLflow then needs a server: set
``mlflow.tracking_uri`` (or ``MLFLOW_TRACKING_URI``), since a SQLite file on one node is not shared.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mlops_ray.errors import ConfigError
from mlops_ray.storage import Location, is_uri, join

ENV_VAR = "MLOPS_RAY_HOME"
LOCAL_ENV_VAR = "MLOPS_RAY_LOCAL_DIR"
DEFAULT_DIRNAME = ".mlops"


@dataclass(frozen=True)
class Workspace:
    """Resolved workspace. Construct with :func:`get_workspace`.

    ``root`` is a local directory (this machine's logs, scratch and, for a local workspace,
    everything); ``uri`` is set when the shared part lives elsewhere (``s3://bucket/prefix``).
    """

    root: Path
    uri: str | None = None

    @property
    def is_shared_uri(self) -> bool:
        """Whether the shared part is a URI (object store or ``file://`` mount), not ``root``."""
        return self.uri is not None

    @property
    def location(self) -> str:
        """Where the shared part lives: the URI, else the root directory (as a string)."""
        return self.uri if self.uri is not None else str(self.root)

    @property
    def shared(self) -> Location:
        """The shared part as a :class:`~mlops_ray.storage.Location`."""
        return Location.of(self.location)

    def shared_uri(self, *parts: str) -> str:
        """``location`` joined with ``parts`` (a URI or a local path string)."""
        return join(self.location, *parts)

    def state_store(self):
        """The state store of this workspace (:func:`mlops_ray.state.store_for` of ``location``)."""
        from mlops_ray.state import store_for

        return store_for(self.location)

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
    def ray_storage(self) -> str:
        """Ray Train/Tune storage: shared by every node (a URI for a URI workspace)."""
        return self.shared_uri("ray")

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        """The embedded default store: SQLite in a local workspace (a URI workspace has none)."""
        if self.uri is not None:
            raise ConfigError(
                f"the workspace {self.uri} is shared by a cluster, and a SQLite file on one node is not: set "
                "mlflow.tracking_uri in the config (an MLflow server: see 'mlops-ray tracking-server start') "
                "or MLFLOW_TRACKING_URI"
            )
        return f"sqlite:///{self.mlflow_db}"

    def ensure(self, *subdirs: str) -> Path:
        """Create (if needed) and return ``root/subdirs...``."""
        path = self.root.joinpath(*subdirs)
        path.mkdir(parents=True, exist_ok=True)
        return path


def local_dir_for(uri: str) -> Path:
    """This machine's local directory for a URI workspace: ``$MLOPS_RAY_LOCAL_DIR`` or a cache dir."""
    env = os.environ.get(LOCAL_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return (Path.home() / ".cache" / "mlops-ray" / digest).resolve()


def get_workspace(root: str | os.PathLike | None = None) -> Workspace:
    """Workspace at ``root``, else ``$MLOPS_RAY_HOME``, else ``./.mlops`` (absolute).

    ``root`` may be a URI (``s3://bucket/prefix``, ``gs://...``, ``file:///mount``): see the module
    docstring for what then lives where.

    Reading the environment is for entry points only (the CLI, jobs, the Serve builder);
    everything below them receives a :class:`Workspace` through its
    :class:`~mlops_ray.context.Context`.
    """
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_DIRNAME
    text = str(root)
    if is_uri(text):
        if text.lower().startswith("file://"):
            return Workspace(Path(Location.of(text).path))  # a shared mount is a local path on each node
        uri = text.rstrip("/")
        try:
            Location.of(uri)
        except Exception as err:  # pyarrow: unknown scheme, missing bucket name, ...
            raise ConfigError(f"{ENV_VAR}={text!r}: not a usable workspace URI ({err})") from None
        return Workspace(local_dir_for(uri), uri)
    return Workspace(Path(root).expanduser().resolve())
