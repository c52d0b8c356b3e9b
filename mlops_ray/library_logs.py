"""Library chatter to a log file in the workspace, not the console (the CLI without ``--verbose``).

Ray, Ray Data, Tune, Serve and MLflow write progress lines, INFO records, hints and warnings
that a user of ``mlops-ray`` cannot act on (the quickstart printed ~100 such lines to stderr).
While a :class:`LibraryLog` is active (:func:`activate`), they go to
``<workspace>/logs/mlops-ray-<command>-<time>-<pid>.log`` instead; the file (and ``logs/``) is created
only when something is written, and the CLI names it once at the end ("library logs: PATH").

What is routed, and how (all undone by :func:`deactivate` except the Ray hook):

* **logging**: every library logger that writes to the console does so through a
  ``logging.StreamHandler`` bound to stderr/stdout (Ray's ``PlainRayHandler`` on ``ray`` and
  ``ray.data``, Serve's, MLflow's, and ``logging.lastResort``). Their ``emit`` sends records of any
  logger outside ``mlops_ray`` to the file while a log is active, whenever the library configured
  its logging (at import, at ``ray.init``, at ``serve.run``). The root logger gets a handler too,
  so records that propagate there (from libraries without handlers of their own) land in the file;
  ``mlops_ray``'s own warnings still print, as before.
* **warnings** (``logging.captureWarnings``) go to the file as ``py.warnings`` records; a few known
  ones that say nothing to a user are dropped (:data:`IGNORED_WARNINGS`), by a filter and again where
  warnings are shown (MLflow emits its type-hint warning inside its own ``simplefilter("once")``).
* **Tune's console reporter** (trial tables, "View detailed results here", the TensorBoard hint)
  is the legacy one at verbosity 0 (``RAY_AIR_NEW_OUTPUT=0``), which prints nothing; the new one
  prints its header and hints even at ``verbose=0`` (ray/tune/experimental/output.py).
* **Ray worker output and Ray's messages to the driver** (``(pid=...)`` lines of tasks and actors:
  HAProxy's INFO lines, Serve controller logs, warnings printed in workers;
  ``(raylet) Task ... failed ... killed by ray.kill``): Ray prints both through one private
  driver-side printer; :func:`before_ray_init`, called by :func:`mlops_ray.ray_runtime.ensure_ray`
  right before ``ray.init``, replaces it (:func:`mlops_ray.compat.route_driver_output`) to send them
  to the file.

Not routed: our own messages (``click.echo``), progress bars (ours and Ray Data's: stderr, on
purpose), and output that bypasses Python (C++ logs written straight to file descriptor 2).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path

from mlops_ray import compat

LOGS_DIRNAME = "logs"

# (message regex, category): warnings that carry nothing a user can act on.
IGNORED_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # MLflow, for every PythonModel whose predict() has no type hints (ours takes any frame-like input).
    (r".*Add type hints to the `predict` method", UserWarning),
    # MLflow, when a local snapshot path matches both of its local artifact dataset sources.
    (r"The specified dataset source can be interpreted in multiple ways", UserWarning),
    # Ray Serve: validated against the field's default metrics_interval_s (10 s); mlops-ray pushes
    # autoscaling metrics every 1 s through RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S.
    (r"`look_back_period_s` .* must be greater than `metrics_interval_s`", FutureWarning),
)

# Environment for the libraries while a log is active (restored by deactivate()).
QUIET_ENV = {
    # "RAY_AIR_NEW_OUTPUT": Tune's legacy reporter, silent at verbose=0 (see module docstring)
    compat.TUNE_NEW_OUTPUT_ENV: "0",
}

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OURS = "mlops_ray"
_CONSOLE_PROXY_PACKAGES = {"mlflow", "ray"}


class LibraryLog:
    """An append-only text file created on first write (``<logs_dir>/mlops-ray-<command>-<time>-<pid>.log``)."""

    def __init__(self, logs_dir: str | os.PathLike, command: str = "command", started: float | None = None):
        self.logs_dir = Path(logs_dir)
        self.command = command
        self.started = time.time() if started is None else started
        self._file = None
        self._path: Path | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """Where the log is (or will be, once something is written)."""
        if self._path is not None:
            return self._path
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.command).strip("-") or "command"
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.started))
        return self.logs_dir / f"mlops-ray-{name}-{stamp}-{os.getpid()}.log"

    @property
    def written(self) -> bool:
        """True once anything was written (the file exists)."""
        return self._file is not None

    def name_command(self, command: str) -> None:
        """Set the command the file is named after (no effect once the file exists)."""
        if self._file is None:
            self.command = command

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            try:
                if self._file is None:
                    self._path = self.path
                    self._path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self._path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
                self._file.write(text if text.endswith("\n") else text + "\n")
                self._file.flush()
            except (OSError, ValueError):
                pass  # a full or read-only disk must not turn library chatter into a failure of ours

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass


class _FileHandler(logging.Handler):
    """Writes records to a :class:`LibraryLog` (formatted with time, level and logger name)."""

    def __init__(self, log: LibraryLog):
        super().__init__(logging.NOTSET)
        self.log = log
        self.setFormatter(logging.Formatter(_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise into library code
            self.handleError(record)


class _RootHandler(_FileHandler):
    """Root logger: library records to the file; ``mlops_ray``'s own warnings to stderr as before
    (with no handler anywhere, Python's ``lastResort`` printed them, message only)."""

    def emit(self, record: logging.LogRecord) -> None:
        if _is_ours(record):
            if record.levelno >= logging.WARNING:
                try:
                    sys.stderr.write(record.getMessage() + "\n")
                except Exception:  # noqa: BLE001
                    self.handleError(record)
            return
        super().emit(record)


def _is_ours(record: logging.LogRecord) -> bool:
    return record.name == _OURS or record.name.startswith(_OURS + ".")


def _is_console(stream) -> bool:
    """stdout/stderr, or a library's proxy for them (MLflow's handler writes to ``MlflowLoggingStream``,
    which forwards to whatever ``sys.stderr`` is)."""
    if stream is None:
        return False
    if any(stream is s for s in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)):
        return True
    if type(stream).__module__.split(".")[0] in _CONSOLE_PROXY_PACKAGES:
        return True
    try:
        return stream.fileno() in (1, 2)
    except (AttributeError, OSError, ValueError):
        return False


_ACTIVE: LibraryLog | None = None
_STATE: dict = {}
_original_emit = logging.StreamHandler.emit


def _routed_emit(self: logging.StreamHandler, record: logging.LogRecord) -> None:
    log = _ACTIVE
    if log is not None and not _is_ours(record) and _is_console(getattr(self, "stream", None)):
        handler = _STATE.get("file_handler")
        if handler is not None:
            handler.emit(record)
            return
    _original_emit(self, record)


_IGNORED = [(re.compile(m, re.I), c) for m, c in IGNORED_WARNINGS]


def _dropping_ignored(show):
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if any(issubclass(category, c) and rx.match(str(message)) for rx, c in _IGNORED):
            return
        show(message, category, filename, lineno, file, line)

    return showwarning


def active() -> LibraryLog | None:
    """The log library output goes to now, or None (``--verbose``, or not the CLI)."""
    return _ACTIVE


def activate(log: LibraryLog) -> LibraryLog:
    """Send library output to ``log`` until :func:`deactivate` (one active log per process)."""
    global _ACTIVE
    if _ACTIVE is not None:
        deactivate()
    file_handler = _FileHandler(log)
    root_handler = _RootHandler(log)
    _STATE.update(
        file_handler=file_handler,
        root_handler=root_handler,
        env={k: os.environ.get(k) for k in QUIET_ENV},
        filters=list(warnings.filters),
        showwarning=warnings.showwarning,
    )
    for k, v in QUIET_ENV.items():
        os.environ[k] = v
    for message, category in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    logging.captureWarnings(True)
    # and again where they are shown: MLflow emits some inside its own `simplefilter("once")` block
    warnings.showwarning = _dropping_ignored(warnings.showwarning)
    logging.getLogger().addHandler(root_handler)
    logging.StreamHandler.emit = _routed_emit
    _ACTIVE = log
    return log


def deactivate() -> LibraryLog | None:
    """Stop routing (library output prints again); returns the log that was active."""
    global _ACTIVE
    log, _ACTIVE = _ACTIVE, None
    if log is None:
        return None
    logging.StreamHandler.emit = _original_emit
    logging.getLogger().removeHandler(_STATE.pop("root_handler"))
    _STATE.pop("file_handler", None)
    logging.captureWarnings(False)
    warnings.filters[:] = _STATE.pop("filters")
    warnings.showwarning = _STATE.pop("showwarning")
    getattr(warnings, "_filters_mutated", lambda: None)()  # forget "already shown" marks made under our filters
    for k, v in _STATE.pop("env").items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return log


def for_workspace(workspace_root: str | os.PathLike, command: str = "command") -> LibraryLog:
    """The log of one CLI command in ``<workspace_root>/logs`` (nothing is created yet)."""
    return LibraryLog(Path(workspace_root) / LOGS_DIRNAME, command)


# ---------------------------------------------------------------- Ray's driver printer
def _worker_lines(data: dict) -> list[str]:
    pid = data.get("pid")
    name = data.get("actor_name") or data.get("task_name") or ""
    prefix = f"({name + ' ' if name else ''}pid={pid})" if pid not in ("raylet", "autoscaler") else f"({pid})"
    stream = "stderr" if data.get("is_err") else "stdout"
    return [f"{prefix} [{stream}] {line}" for line in data.get("lines", []) if "__ray_tqdm_magic_token__" not in line]


def before_ray_init() -> None:
    """Called by :func:`mlops_ray.ray_runtime.ensure_ray` right before ``ray.init``.

    While a log is active, Ray's driver-side printer of worker output and of the error messages
    Ray pushes to the driver writes to that log instead of the console. The hook stays for the
    rest of the process (messages arrive until Ray shuts down at exit) and falls back to Ray's own
    printer when no log was active at ``ray.init``.
    """
    log = _ACTIVE
    if log is None:
        return

    def write(data: dict) -> None:
        target = _ACTIVE or log
        target.write("\n".join(_worker_lines(data)))

    compat.route_driver_output(write)
