"""Typed pipeline config loaded from one YAML file per project.

No side effects on import. :func:`load_config` parses and validates the whole
file before any work starts; every problem is reported as ``dotted.key: what is
wrong`` in one :class:`~mlops_ray.errors.ConfigError`.

Example::

    cfg = load_config("examples/quickstart.yaml")
    cfg.data.split.fractions   # {'train': 0.8, 'valid': 0.1, 'test': 0.1}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from mlops_ray.errors import ConfigError
from mlops_ray.model.kinds import UnknownModelKindError, get_kind
from mlops_ray.model.tasks import DEFAULT_METRIC, check_metric, direction

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data
class SplitConfig(_Strict):
    """Hash split: row -> split by XXH64(salt + ':' + id) mod 10000 (see README)."""

    salt: str = "v1"
    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "valid": 0.1, "test": 0.1})

    @field_validator("fractions")
    @classmethod
    def _check_fractions(cls, v: dict[str, float]) -> dict[str, float]:
        from mlops_ray.data.hashing import split_boundaries  # pure; validates

        split_boundaries(v)
        if "train" not in v:
            raise ValueError("a split named 'train' is required (preprocessing is fitted on it)")
        return v


class NumericPreprocessing(_Strict):
    impute: Literal["median", "mean", "constant"] = "median"
    fill_value: float = 0.0
    scale: Literal["standard", "minmax", "none"] = "standard"
    add_missing_indicator: bool = False


class CategoricalPreprocessing(_Strict):
    encoding: Literal["onehot", "ordinal"] = "onehot"
    max_categories: int = Field(32, ge=1, le=10_000)
    min_frequency: int = Field(1, ge=1)


class PreprocessingConfig(_Strict):
    numeric: NumericPreprocessing = Field(default_factory=NumericPreprocessing)
    categorical: CategoricalPreprocessing = Field(default_factory=CategoricalPreprocessing)


class GenerateConfig(_Strict):
    """Synthetic source used by ``quickstart`` when the source does not exist yet."""

    rows: int = Field(20_000, ge=10)
    shards: int = Field(4, ge=1)
    seed: int = 0
    drift: float = Field(0.0, ge=0.0, le=1.0)


class DataConfig(_Strict):
    name: str
    source: str
    format: Literal["auto", "parquet", "csv"] = "auto"
    id_column: str
    label_column: str
    timestamp_column: str | None = None
    task: Literal["binary", "multiclass", "regression"] = "binary"
    numeric_features: list[str] | None = None
    categorical_features: list[str] | None = None
    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    reference_bins: int = Field(10, ge=2, le=100)
    quantile_sample_rows: int = Field(200_000, ge=1_000)
    batch_size: int = Field(131_072, ge=1_024)
    generate: GenerateConfig | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be 1-64 chars of letters, digits, '_', '-', '.'")
        return v

    @model_validator(mode="after")
    def _check_columns(self) -> "DataConfig":
        special = {self.id_column, self.label_column} | ({self.timestamp_column} if self.timestamp_column else set())
        num = self.numeric_features or []
        cat = self.categorical_features or []
        for name, cols in (("numeric_features", num), ("categorical_features", cat)):
            if len(set(cols)) != len(cols):
                raise ValueError(f"{name} lists a column twice")
            clash = special.intersection(cols)
            if clash:
                raise ValueError(f"{name} must not contain id/label/timestamp columns: {sorted(clash)}")
        both = set(num) & set(cat)
        if both:
            raise ValueError(f"columns declared both numeric and categorical: {sorted(both)}")
        return self

    def resolved_source(self, workspace_root: Path, base_dir: Path | None = None) -> str:
        """Source with ``{workspace}`` expanded; relative paths resolved against ``base_dir``."""
        return resolve_path(self.source, workspace_root, base_dir)


# --------------------------------------------------------------- later stages
class ModelConfig(_Strict):
    # A registered model kind (mlops_ray.model.kinds): built in "xgboost" | "sklearn", or a third-party one.
    type: str = "xgboost"
    estimator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    num_boost_round: int = Field(200, ge=1)
    early_stopping_rounds: int | None = Field(20, ge=1)
    seed: int = 42
    execution: Literal["auto", "local", "distributed"] = "auto"
    num_workers: int | None = Field(None, ge=1)
    cpus_per_worker: float | None = Field(None, gt=0)
    # XGBoost on GPUs: auto = cuda when the nodes training would use have GPUs (one per worker), else cpu
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cv_folds: int | None = Field(None, ge=2, le=20)
    log_train_metrics: bool = False  # per-round metrics on the train split too (costs a pass per round)

    @field_validator("type")
    @classmethod
    def _check_type(cls, v: str) -> str:
        try:
            get_kind(v)
        except UnknownModelKindError as err:
            raise ValueError(str(err)) from None
        return v

    @field_validator("params")
    @classmethod
    def _check_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "type" in info.data:  # absent when the type itself was invalid (reported there)
            problems = get_kind(info.data["type"]).param_problems(v)
            if problems:
                raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _check_kind(self) -> "ModelConfig":
        problems = get_kind(self.type).config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TuneConfig(_Strict):
    enabled: bool = False
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    search_alg: Literal["random", "grid"] = "random"
    scheduler: Literal["asha", "none"] = "asha"
    # Validation metric that ranks trials (and that ASHA stops on); default: the task's default
    # metric (auc / logloss / rmse). Must be one the task computes (README "Metrics").
    metric: str | None = None
    search_space: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def metric_for(self, task: str) -> str:
        return self.metric or DEFAULT_METRIC[task]


_URI_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# MLflow stores mlops-ray can use: SQLAlchemy databases, a tracking server, Databricks.
_SQL_SCHEMES = ("postgresql", "mysql", "mssql")
_DATABRICKS_SCHEMES = ("databricks", "databricks-uc")


def tracking_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be an MLflow tracking/registry store for mlops-ray, or None.

    Allowed: ``sqlite:///PATH``, ``http(s)://...``, ``postgresql://``, ``mysql://``, ``mssql://``
    (also ``dialect+driver://``), ``databricks[-uc][://PROFILE]``, and ``file:`` URIs or plain
    paths only with ``MLFLOW_ALLOW_FILE_STORE=true`` (MLflow 3 refuses file stores otherwise).
    """
    supported = (
        "use sqlite:///PATH (the default), http(s)://HOST[:PORT] (a tracking server), postgresql://, mysql://, "
        "mssql://, or databricks"
    )
    if uri.lower() in _DATABRICKS_SCHEMES:
        return None
    m = _URI_SCHEME_RE.match(uri)
    scheme = m.group(1).lower() if m and not re.match(r"^[A-Za-z]:[\\/]", uri) else None  # C:\ is a path
    if scheme is None or scheme == "file":
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
            return f"{uri!r}: MLflow 3 rejects file stores; {supported} (or set MLFLOW_ALLOW_FILE_STORE=true)"
        return None
    if scheme == "sqlite":
        return None if uri.startswith("sqlite:///") else f"{uri!r}: a SQLite store is sqlite:///PATH (three slashes)"
    if scheme in ("http", "https") or scheme in _DATABRICKS_SCHEMES or scheme.split("+", 1)[0] in _SQL_SCHEMES:
        return None
    return f"unsupported scheme {scheme!r} in {uri!r}; {supported}"


# MLflow's own variable: the tracking URI when the config sets none (a cluster's nodes set it, README "Run on
# a cluster"). Read at entry points only, through MlflowConfig.resolved_tracking_uri / default_tracking_uri.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def default_tracking_uri(workspace) -> str:
    """The tracking URI when the config names none: ``$MLFLOW_TRACKING_URI``, else SQLite in ``workspace``.

    Raises:
        ConfigError: ``$MLFLOW_TRACKING_URI`` is not a store mlops-ray can use.
    """
    uri = os.environ.get(TRACKING_URI_ENV, "").strip()
    if not uri:
        return workspace.mlflow_tracking_uri
    problem = tracking_uri_problem(uri)
    if problem:
        raise ConfigError(f"{TRACKING_URI_ENV}: {problem}")
    return uri.replace("{workspace}", str(workspace.root))


class MlflowConfig(_Strict):
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite in the workspace
    experiment: str = "mlops-ray"

    @field_validator("tracking_uri")
    @classmethod
    def _check_tracking_uri(cls, v: str | None) -> str | None:
        problem = tracking_uri_problem(v) if v else None
        if problem:
            raise ValueError(problem)
        return v

    def resolved_tracking_uri(self, workspace) -> str:
        """The tracking/registry URI for ``workspace`` (a :class:`~mlops_ray.workspace.Workspace`): this
        section's ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in the workspace.

        Reads the environment: call it where the context is built (an entry point), as ``Context.create`` does.
        """
        if self.tracking_uri:
            return self.tracking_uri.replace("{workspace}", str(workspace.root))
        return default_tracking_uri(workspace)


class GateConfig(_Strict):
    # Default: the task's default metric (binary auc, multiclass logloss, regression rmse) and
    # that metric's direction.
    metric: str | None = None
    direction: Literal["maximize", "minimize"] | None = None
    min_improvement_abs: float = Field(0.0, ge=0.0)
    min_improvement_rel: float = Field(0.0, ge=0.0)

    def metric_for(self, task: str) -> str:
        return self.metric or DEFAULT_METRIC[task]

    def direction_for(self, task: str) -> str:
        return self.direction or direction(self.metric_for(task))


class RegistryConfig(_Strict):
    model_name: str = "mlops-ray-model"
    gate: GateConfig = Field(default_factory=GateConfig)


class ServeConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # The deploy alias: what the gate and rollback move and what serving and batch inference read.
    model_alias: str = Field("champion", pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
    # Two replicas by default: losing one (crash, node loss) then costs only its in-flight requests
    # instead of an outage until a new replica starts (README "Serving: resilience").
    min_replicas: int = Field(2, ge=0)
    max_replicas: int = Field(3, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)
    max_ongoing_requests: int = Field(64, ge=1)
    upscale_delay_s: float = Field(2.0, ge=0)
    downscale_delay_s: float = Field(10.0, ge=0)
    num_cpus_per_replica: float = Field(0.5, gt=0)
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.001, ge=0)
    poll_interval_s: float = Field(5.0, gt=0)
    max_body_bytes: int = Field(1_048_576, ge=1024)

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the service (a wildcard host means loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @model_validator(mode="after")
    def _check_replicas(self) -> "ServeConfig":
        if self.max_replicas < self.min_replicas:
            raise ValueError("serve.max_replicas must be >= serve.min_replicas")
        return self


class DriftConfig(_Strict):
    """Data/prediction drift monitoring (README "Drift monitoring")."""

    enabled: bool = True  # the service counts reference bins of the rows it scores
    psi_warn: float = Field(0.1, gt=0)
    psi_alert: float = Field(0.25, gt=0)
    # Chance threshold: the PSI that sampling noise alone exceeds with probability alpha (per window,
    # Bonferroni-corrected over the features); a feature warns/alerts only above it and the fixed band.
    alpha: float = Field(0.01, gt=0, lt=1)
    min_rows: int = Field(500, ge=1)  # nothing is judged below this many rows
    window_rows: int = Field(1000, ge=1)  # a window closes at this many rows...
    window_s: float = Field(60.0, gt=0)  # ...or this many seconds after its first row
    keep_windows: int = Field(24, ge=1)  # closed windows kept per model version
    # A replica pushes its counts at this many rows... (one push costs ~1 ms of replica CPU: at 256 rows,
    # 100-record traffic spent ~10% of the throughput on pushes; windows hold window_rows to
    # window_rows + push_every_rows rows per replica at high traffic)
    push_every_rows: int = Field(1024, ge=1)
    push_interval_s: float = Field(5.0, gt=0)  # ...or this often (each push briefly holds the replica: ~1 ms)
    # Above this many rows a second, a replica counts a uniform random sample of its requests at this
    # rate (0: every row). PSI needs windows, not every row: at 50,000 rows/s counting every row cost
    # a third of the 100-record throughput on 2 cores (README "Drift monitoring: overhead").
    sample_rows_per_s: float = Field(2000.0, ge=0)
    checkpoint_interval_s: float = Field(1.0, gt=0)  # the monitor's state to <workspace>/drift/
    metrics_host: str = "127.0.0.1"  # the monitor's Prometheus endpoint
    metrics_port: int = Field(0, ge=0, le=65535)  # 0: an ephemeral port (reported by GET /drift)
    feedback_rows: int = Field(10_000, ge=0)  # recent scored rows kept to join POST /feedback labels; 0: off
    feedback_min_rows: int = Field(200, ge=1)  # labelled rows before a rolling metric / importance
    retrain_on_alert: bool = True

    @model_validator(mode="after")
    def _check_order(self) -> "DriftConfig":
        if self.psi_alert < self.psi_warn:
            raise ValueError("drift.psi_alert must be >= drift.psi_warn")
        if self.min_rows > self.window_rows:
            raise ValueError("drift.min_rows must be <= drift.window_rows (no window could be judged)")
        return self


class ServeSettings(_Strict):
    """What one model-server replica needs, built from a config by :meth:`from_config`.

    Every default lives in :class:`ServeConfig`; this type only carries resolved values
    through Serve's typed application builder and ``user_config``.
    """

    tracking_uri: str
    model_name: str
    alias: str | None
    version: str | None = None
    poll_interval_s: float = Field(gt=0)
    max_body_bytes: int = Field(ge=1024)
    max_batch_size: int = Field(ge=1)
    batch_wait_timeout_s: float = Field(ge=0)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    workspace: str | None = None  # where the drift monitor checkpoints (None: no checkpoints)

    @classmethod
    def from_config(cls, cfg: "PipelineConfig", tracking_uri: str, workspace=None) -> "ServeSettings":
        s = cfg.serve
        return cls(
            tracking_uri=tracking_uri,
            drift=cfg.drift,
            workspace=str(workspace) if workspace is not None else None,
            model_name=cfg.registry.model_name,
            alias=s.model_alias,
            poll_interval_s=s.poll_interval_s,
            max_body_bytes=s.max_body_bytes,
            max_batch_size=s.max_batch_size,
            batch_wait_timeout_s=s.batch_wait_timeout_s,
        )


class DataTrigger(_Strict):
    enabled: bool = True  # a changed source (cheap stat check, then the full fingerprint) starts a run
    # A change counts once the source's file list, sizes and mtimes have stayed the same this long
    # (a landing still being written is not trained on half-copied).
    settle_s: float = Field(10.0, ge=0)


class ScheduleTrigger(_Strict):
    interval_s: float | None = Field(None, gt=0)  # every this many seconds...
    cron: str | None = None  # ...or at the times of this cron expression (UTC), e.g. "0 3 * * *"
    # Slots missed while the watcher was down or a run was in progress: one catch-up run, or none.
    missed: Literal["run_once", "skip"] = "run_once"

    @model_validator(mode="after")
    def _check(self) -> "ScheduleTrigger":
        if self.interval_s is not None and self.cron is not None:
            raise ValueError("pipeline.schedule: give interval_s or cron, not both")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"pipeline.schedule.cron: {self.cron!r} is not a valid cron expression")
        return self


class DriftTrigger(_Strict):
    enabled: bool = True
    consecutive_windows: int = Field(2, ge=1)  # a feature in alert for this many closed windows in a row
    cooldown_s: float = Field(600.0, ge=0)  # no second drift run within this time of the last
    # The rolling metric from POST /feedback labels (the task's default metric) past this floor
    # (below it for a metric to maximize, above it for one to minimize) also triggers.
    metric_floor: float | None = None


class CodeTrigger(_Strict):
    enabled: bool = True  # the package's code digest differs from the champion's


class AutomationConfig(_Strict):
    """The ``pipeline:`` section: what ``pipeline watch`` reacts to (``pipeline run`` trains, or tunes
    when ``tune.enabled``)."""

    poll_interval_s: float = Field(2.0, gt=0)  # how often the watcher evaluates its triggers
    data: DataTrigger = Field(default_factory=DataTrigger)
    schedule: ScheduleTrigger = Field(default_factory=ScheduleTrigger)
    drift: DriftTrigger = Field(default_factory=DriftTrigger)
    code: CodeTrigger = Field(default_factory=CodeTrigger)
    # settings of trigger kinds registered besides the built-ins (mlops_ray.pipeline.triggers.register_trigger),
    # by kind name; a kind listed here is on unless its settings say enabled: false
    triggers: dict[str, dict[str, Any]] = Field(default_factory=dict)


class PipelineConfig(_Strict):
    """The whole project config. Only ``data`` is required."""

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    pipeline: AutomationConfig = Field(default_factory=AutomationConfig)

    # Directory of the YAML file; relative paths in the config resolve against it.
    base_dir: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _check_metrics(self) -> "PipelineConfig":
        task = self.data.task
        kind = get_kind(self.model.type)
        if task not in kind.tasks:
            raise ValueError(
                f"model.type {kind.name!r} does not support data.task {task!r}; it supports {list(kind.tasks)}"
            )
        for where, metric in (("registry.gate.metric", self.registry.gate.metric), ("tune.metric", self.tune.metric)):
            problem = check_metric(task, metric, where) if metric else None
            if problem:
                raise ValueError(problem)
        if self.registry.gate.metric is None and self.registry.gate.direction is not None:
            want = direction(DEFAULT_METRIC[task])
            if self.registry.gate.direction != want:
                raise ValueError(
                    f"registry.gate.direction {self.registry.gate.direction!r} contradicts the default "
                    f"metric {DEFAULT_METRIC[task]!r} ({want}); set registry.gate.metric too"
                )
        return self

    def source(self, workspace_root: Path) -> str:
        """The data source path/URI, ``{workspace}`` expanded against ``workspace_root``."""
        return self.data.resolved_source(workspace_root, self.base_dir)


# ------------------------------------------------------------ what training reads
@dataclass(frozen=True)
class TrainingSpec:
    """The parts of the config a training or tuning run reads (built at the pipeline/CLI boundary).

    ``model`` and ``tune`` are the sections of those names; ``model_name`` is ``registry.model_name``
    (what a candidate is registered as); ``config_yaml`` is the whole config as YAML, which the run
    logs as its ``config.yaml`` artifact (``reproduce`` re-trains from it), so it is carried as the
    document it is, not as a config to read from.
    """

    model: ModelConfig
    tune: TuneConfig
    model_name: str
    config_yaml: str

    @classmethod
    def from_config(cls, cfg: PipelineConfig) -> TrainingSpec:
        return cls(cfg.model, cfg.tune, cfg.registry.model_name, config_to_yaml(cfg))


# ------------------------------------------------------------------- loading
def resolve_path(path: str, workspace_root: Path, base_dir: Path | None = None) -> str:
    """Expand ``{workspace}``, ``~`` and env vars; resolve relative local paths against ``base_dir``.

    URIs with a scheme (``s3://``, ``gs://``, ``file://``) are returned unchanged.
    """
    expanded = os.path.expandvars(path.replace("{workspace}", str(workspace_root)))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", expanded):
        return expanded
    p = Path(expanded).expanduser()
    if not p.is_absolute():
        p = (base_dir or Path.cwd()) / p
    return str(p.resolve())


def _format_validation_error(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see README config reference)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{loc}: {msg}")
    return lines


def config_from_dict(raw: Any, *, base_dir: Path | None = None, origin: str = "<config>") -> PipelineConfig:
    """Validate a parsed mapping into a :class:`PipelineConfig` or raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: top level must be a mapping with at least a 'data' section")
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as err:
        problems = _format_validation_error(err)
        raise ConfigError(f"invalid config {origin}:\n  " + "\n  ".join(problems)) from None
    cfg.base_dir = base_dir
    return cfg


def load_config(path: str | os.PathLike) -> PipelineConfig:
    """Read and validate a YAML pipeline config. Raises ConfigError naming the key at fault."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config {p} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {p} is not valid YAML: {err}") from None
    return config_from_dict(raw, base_dir=p.resolve().parent, origin=str(p))


def config_to_yaml(cfg: PipelineConfig) -> str:
    """Round-trippable YAML of the resolved config (logged with runs)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
