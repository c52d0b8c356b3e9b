"""Shared state of mlops-ray behind one seam: :class:`StateStore`, and its local implementation.

Everything mlops-ray keeps between processes outside MLflow (the pipeline's run lock, step cache
and history, the watcher's state, drift checkpoints, the service record) goes through a
:class:`StateStore`. Keys are relative ``/``-separated paths (``pipeline/churn/history.jsonl``);
:class:`LocalStateStore` keeps key ``k`` in the file ``<root>/k``, so the workspace layout is the
same as before the seam existed.

The contract (what every implementation keeps, checked by the shared contract tests in
``tests/unit/state/contract.py``, which a new backend subclasses the way fsspec's backends
subclass ``fsspec/tests/abstract``):

- **Atomic replace**: a reader of a key sees the old or the new value, never a mix or a prefix.
- **Compare-and-set**: :meth:`StateStore.compare_and_set` replaces a value only if it still is
  ``expected`` (``None``: only if absent), atomically with respect to every other writer of the
  key (plain writes, other compare-and-sets, appends, deletes), in any process or host.
- **No lost appends**: :meth:`StateStore.append_record` from many processes at once keeps every
  record, each on its own line, never interleaved.
- **Lock released on holder death**: :meth:`StateStore.lock` is exclusive across processes; the
  loser gets :class:`~mlops_ray.errors.LockBusyError` at once, naming the holder; a holder that
  dies (even by SIGKILL) frees the lock, or, where the backend cannot see death, the lock
  expires after ``lease_s``.

How each backend keeps it:

- Local files (:class:`LocalStateStore`): temp file + ``fsync`` + ``os.replace``; every mutation
  of a key runs under ``fcntl.flock`` on a sidecar lock file of its directory (``.state.lock``),
  so a compare-and-set reads and replaces with no other writer in between; appends are one
  ``write`` on an ``O_APPEND`` descriptor under that lock; :meth:`~StateStore.lock` is
  ``flock`` on the key's own file, which the kernel releases when the process dies (``lease_s``
  is accepted and ignored). Safe for processes on one host, or on a shared filesystem whose
  ``flock`` is honoured across hosts (not NFS in general).
- S3 and S3-compatible servers (:class:`~mlops_ray.state.s3.S3StateStore`, ``state/s3.py``):
  conditional writes, ``PUT`` with ``If-Match: <etag>`` (``If-None-Match: *`` for an absent key)
  for compare-and-set, appends as a compare-and-set retry loop, and a lock object holding
  ``{holder, expires_at, token}`` taken by a conditional create and renewed every ``lease_s / 3``
  (a dead holder stops renewing, so the lock expires ``lease_s`` after its last renewal). GCS
  (``ifGenerationMatch``) and Azure Blob (``If-Match`` plus blob leases) have the same primitives.
- PostgreSQL would keep values in a table keyed by ``key`` (``UPDATE ... WHERE key = $1 AND
  value = $2`` for compare-and-set, ``INSERT`` rows for appends) and ``lock()`` as a session-level
  ``pg_try_advisory_lock`` (or a ``SELECT ... FOR UPDATE NOWAIT`` row lock), which the server
  releases when the holder's connection dies.

Example::

    store = LocalStateStore(ctx.workspace.root)       # or ctx.state
    store.write_json("run/serve-8000.json", {"pid": 123})
    with store.lock("pipeline/churn/run.lock", holder="pid 123 since 12:00:00"):
        store.append_record("pipeline/churn/history.jsonl", {"status": "ok"})
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_ray.errors import LockBusyError

_DIR_LOCK = ".state.lock"
_TMP_RE = re.compile(r"^\..+\.tmp\.\d+\.[0-9a-f]+$")


def check_key(key: str) -> str:
    """``key`` if it is a relative ``/``-separated path with no empty, ``.`` or ``..`` part; else ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"state key must be a non-empty string, got {key!r}")
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"state key must be a relative '/'-separated path without '.', '..' or '//': {key!r}")
    return key


def _read_holder(fd: int, wait_s: float = 0.2) -> str:
    """The holder written in a lock file held by another process (which writes it just after taking
    the ``flock``: an empty file is read again for up to ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    while True:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if text or time.monotonic() >= deadline:
            return text or "another process"
        time.sleep(0.005)


class StateStore(abc.ABC):
    """Shared state of mlops-ray: keys are relative '/'-separated paths, e.g. 'pipeline/churn/history.jsonl'.

    Guarantees every implementation keeps: atomic replace (a reader sees the old or the new value, never a
    mix), compare-and-set, appends never lost or interleaved under concurrent writers in different
    processes, and an exclusive lock that is released when its holder dies (or whose lease expires).
    See the module docstring for how each backend keeps them.
    """

    uri: str  # e.g. 'file:///abs/root'

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes | None:
        """The value of ``key``; None when missing."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Replace the value of ``key`` atomically (readers see the old or the new value)."""

    def read_json(self, key: str, default: Any = None) -> Any:
        """The JSON value of ``key``; ``default`` when missing or not valid JSON."""
        data = self.read_bytes(key)
        if data is None:
            return default
        try:
            return json.loads(data)
        except ValueError:
            return default

    def write_json(self, key: str, obj: Any) -> None:
        """Replace ``key`` atomically with ``json.dumps(obj, default=str)``."""
        self.write_bytes(key, json.dumps(obj, default=str).encode())

    @abc.abstractmethod
    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        """Set ``key`` to ``new`` only if its value is ``expected`` (None: only if absent); True if set."""

    @abc.abstractmethod
    def append_record(self, key: str, record: dict) -> None:
        """Append ``record`` as one JSON line; no record lost or interleaved under concurrent processes."""

    def read_records(self, key: str) -> list[dict]:
        """The records appended to ``key``, oldest first; lines that are not a JSON object are skipped."""
        data = self.read_bytes(key)
        out: list[dict] = []
        for line in (data or b"").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` has a value."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error when missing."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix`` (a plain string prefix, as on an object store:
        ``'drift/'`` lists all keys below ``drift``), sorted; ``''`` lists all keys."""

    @abc.abstractmethod
    def lock(self, key: str, *, holder: str, lease_s: float | None = None) -> contextlib.AbstractContextManager:
        """Context manager holding the exclusive lock ``key``.

        Raises :class:`~mlops_ray.errors.LockBusyError` (``.holder``: the current holder's
        description) at once when another holder has it, including another ``lock()`` in the same
        process. Released on exit and when the holding process dies; ``lease_s`` bounds how long a
        backend that cannot see a holder die keeps the lock (a local store ignores it).
        """

    def local_path(self, key: str) -> Path | None:
        """The file backing ``key`` for local stores; None for others."""
        return None


class LocalStateStore(StateStore):
    """A :class:`StateStore` in local files: key ``k`` is the file ``root/k`` (the workspace layout)."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.uri = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStateStore({str(self.root)!r})"

    def __reduce__(self):
        return (type(self), (self.root,))

    # ------------------------------------------------------------------ helpers
    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _mutating(self, path: Path) -> Iterator[None]:
        """Hold the directory's sidecar lock: every mutation of a key in it runs under this lock."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent / _DIR_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    @staticmethod
    def _replace(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ values
    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._mutating(path):
            self._replace(path, bytes(data))

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        path = self._path(key)
        with self._mutating(path):
            if self.read_bytes(key) != (None if expected is None else bytes(expected)):
                return False
            self._replace(path, bytes(new))
            return True

    def append_record(self, key: str, record: dict) -> None:
        line = (json.dumps(record, default=str) + "\n").encode()
        path = self._path(key)
        with self._mutating(path):
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a torn last line (a writer died mid-append) stays apart
                view = memoryview(line)
                while view:  # one write() in practice; the loop only covers a short write
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        if not path.parent.is_dir():
            return
        with self._mutating(path):
            path.unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        folder = prefix.rpartition("/")[0]
        base = self.root / check_key(folder) if folder else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name == _DIR_LOCK or _TMP_RE.match(name):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    # ------------------------------------------------------------------ locks
    @contextlib.contextmanager
    def lock(self, key: str, *, holder: str, lease_s: float | None = None) -> Iterator[None]:
        if lease_s is not None and lease_s <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockBusyError(key, _read_holder(fd)) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)  # an empty file is a free lock: a loser never reads a past holder
        finally:
            os.close(fd)  # releases the flock; the kernel does the same when the process dies

    def local_path(self, key: str) -> Path | None:
        return self._path(key)
