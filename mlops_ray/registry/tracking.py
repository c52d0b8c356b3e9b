"""MLflow glue: the only module that talks to MLflow tracking and the model registry.

Everything MLflow-specific (URIs, runs, params/metrics/artifacts, model logging,
registered versions, aliases and their history) lives here so the rest of the code
deals in plain dicts and numbers.

Registry lock. Promotions, rollbacks and alias moves of a model run under a mutex kept
in the registry itself, so that it works for a SQLite store and a tracking server alike:
the registered model ``<model>.lock`` exists while someone holds the lock (creating a
registered model is atomic: names are unique in every MLflow store), its tag records the
holder (host, pid, purpose, token) and the lease's expiry. Waiters poll until it is gone
(at most ``LOCK_WAIT_S`` = 300 s, then :class:`RegistryLockedError`). A lock whose holder
was killed is broken at once when the holder ran on this host, else when its lease
(``LOCK_LEASE_S`` = 600 s, far longer than a promotion) has expired; breaking is itself
serialized by a second registered model, ``<model>.lock.break``.

Runs. Every run mlops-ray starts is tagged with its process (``mlops_ray.host``,
``mlops_ray.pid``, ``mlops_ray.owner``); starting a new top-level run marks RUNNING runs of
the experiment whose process on this host is gone as FAILED (a killed ``train``/``tune``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from mlops_ray.config import tracking_uri_problem
from mlops_ray.data.owner import ProcessOwner
from mlops_ray.errors import ConfigError, MlopsRayError, RegistryLockedError, TrackingError

if TYPE_CHECKING:
    from mlops_ray.context import Context

log = logging.getLogger(__name__)
ALIAS_EVENT_PREFIX = "mlops_ray.alias_event."
LOCK_SUFFIX = ".lock"
LOCK_TAG = "mlops_ray.lock"
LOCK_LEASE_S = 600.0  # a holder killed on another host blocks the model for at most this long
LOCK_WAIT_S = 300.0  # how long a promotion / rollback / alias move waits for the lock
BREAK_LEASE_S = 60.0  # lease of the <model>.lock.break marker itself
RUN_OWNER_TAG = "mlops_ray.owner"
_PKG_DIR = Path(__file__).resolve().parents[1]
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def check_uri(uri: str) -> None:
    """Refuse tracking URIs MLflow 3 cannot use, and unreachable servers, with a clear message."""
    problem = tracking_uri_problem(uri)
    if problem:
        raise ConfigError(f"mlflow.tracking_uri: {problem}")
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    elif uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=3).raise_for_status()
        except Exception as err:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({type(err).__name__}: {err}); "
                f"check mlflow.tracking_uri or start the server"
            ) from None


def connect(uri: str, experiment: str, artifact_root: Path | None = None):
    """An ``MlflowClient`` for ``uri`` and the id of ``experiment`` (created on first use).

    Touches no module-level MLflow state: two clients for two stores coexist in one process.

    Args:
        artifact_root: where a new experiment keeps artifacts when the store is SQLite (the workspace).
    """
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    check_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            return client, exp.experiment_id
        location = artifact_root.as_uri() if artifact_root is not None and uri.startswith("sqlite:///") else None
        if artifact_root is not None and location:
            artifact_root.mkdir(parents=True, exist_ok=True)
        return client, client.create_experiment(experiment, artifact_location=location)
    except MlopsRayError:
        raise
    except Exception as err:
        raise TrackingError(f"cannot use MLflow at {uri}: {type(err).__name__}: {err}") from None


class _FluentScopes:
    """Who points MLflow's one process-wide URI where, so that threads never see another's store.

    Blocks for the URI already in place share it (any thread); a block for another URI waits until
    the others have left, except in a thread that holds every open block (nesting, as before). The
    first block of a URI saves what was there (URIs and their environment variables) and the last
    one to leave puts it back.
    """

    def __init__(self, wait_s: float = LOCK_WAIT_S):
        self.wait_s = wait_s
        self._cond = threading.Condition()
        self._frames: list[dict] = []  # {"uri", "holders": {thread id: count}, "saved": (uris, env)}

    def _holders(self) -> set[int]:
        return {t for f in self._frames for t, n in f["holders"].items() if n}

    def enter(self, uri: str) -> dict:
        from mlops_ray import compat

        me = threading.get_ident()
        with self._cond:
            ok = self._cond.wait_for(
                lambda: not self._frames or self._frames[-1]["uri"] == uri or self._holders() <= {me},
                timeout=self.wait_s,
            )
            if not ok:
                raise TrackingError(
                    f"MLflow's fluent API stayed pointed at {self._frames[-1]['uri']} by another thread for "
                    f"{self.wait_s:.0f} s; cannot point it at {uri}"
                )
            if not self._frames or self._frames[-1]["uri"] != uri:
                saved = (compat.fluent_uris(), {k: os.environ.get(k) for k in _URI_ENV})
                self._frames.append({"uri": uri, "holders": {}, "saved": saved})
                compat.set_fluent_uris(uri, uri)
            frame = self._frames[-1]
            frame["holders"][me] = frame["holders"].get(me, 0) + 1
            return frame

    def leave(self, frame: dict) -> None:
        from mlops_ray import compat

        me = threading.get_ident()
        with self._cond:
            frame["holders"][me] -= 1
            while self._frames and not any(self._frames[-1]["holders"].values()):
                (tracking, registry), env = self._frames.pop()["saved"]
                compat.set_fluent_uris(tracking, registry)
                for k, v in env.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            self._cond.notify_all()


_scopes = _FluentScopes()


@contextmanager
def scope(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (runs, ``log_model``, ``load_model``) at ``uri`` for a block, then restore.

    MLflow's fluent functions read one process-wide URI; this is the only place that sets
    it, and it always puts back what was there (URI and environment variables), so a
    context's store never leaks into code that runs after it. Thread-safe: a block for another
    store waits while other threads work in theirs (:class:`_FluentScopes`).
    """
    frame = _scopes.enter(uri)
    try:
        yield
    finally:
        _scopes.leave(frame)


def load_pyfunc(uri: str, model_uri: str):
    """``mlflow.pyfunc.load_model(model_uri)`` against the store at ``uri``."""
    import mlflow

    with scope(uri):
        return mlflow.pyfunc.load_model(model_uri)


def download_artifact(uri: str, run_id: str, artifact_path: str, dst_path: str) -> str:
    """``mlflow.artifacts.download_artifacts`` of one run artifact from the store at ``uri``; the local path."""
    import mlflow

    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=dst_path, tracking_uri=uri
    )


def is_not_found(err: Exception) -> bool:
    """True when an MLflow error means "no such entity" (not a backend failure)."""
    code = getattr(err, "error_code", "")
    return (
        code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE") or "not found" in str(err).lower()
    )


def code_version() -> dict[str, str]:
    """Git commit + dirty flag of the code in use, and a digest of the package source."""
    h = hashlib.sha256()
    for p in sorted(_PKG_DIR.rglob("*.py")):
        h.update(p.relative_to(_PKG_DIR).as_posix().encode())
        h.update(p.read_bytes())
    out = {"code_digest": h.hexdigest()[:16], "git_commit": "unknown", "git_dirty": "unknown"}
    try:
        root = _PKG_DIR.parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            st = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
            )
            out["git_dirty"] = "true" if st.stdout.strip() else "false"
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def owner_tags() -> dict[str, str]:
    """Tags naming this process, set on every run mlops-ray starts."""
    me = ProcessOwner.current()
    return {"mlops_ray.host": me.host, "mlops_ray.pid": str(me.pid), RUN_OWNER_TAG: json.dumps(me.to_dict())}


def fail_dead_runs(client, experiment_id: str) -> list[str]:
    """Mark RUNNING runs whose process (on this host) is gone as FAILED; one line per run, also logged.

    Runs of live processes, of other hosts, or without an owner tag (not started by mlops-ray,
    or by an older version) are left alone.
    """
    try:
        runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    except Exception as err:  # housekeeping must never stop a run from starting
        log.warning("could not look for runs left RUNNING by killed processes: %s: %s", type(err).__name__, err)
        return []
    notes = []
    for r in runs:
        try:
            owner = ProcessOwner.from_dict(json.loads(r.data.tags.get(RUN_OWNER_TAG) or "null") or {})
        except ValueError:
            continue
        if owner is None or owner.is_gone() is not True:
            continue
        why = f"its process ({owner.describe()}) is gone"
        try:
            client.set_tag(r.info.run_id, "mlops_ray.failed_reason", f"marked FAILED by a later run: {why}")
            client.set_terminated(r.info.run_id, status="FAILED")
        except Exception as err:
            log.warning("could not mark run %s FAILED: %s: %s", r.info.run_id, type(err).__name__, err)
            continue
        notes.append(f"marked run {r.info.run_id} ({r.info.run_name}) FAILED: it was RUNNING but {why}")
    for n in notes:
        log.warning(n)
    return notes


@contextmanager
def run(ctx: Context, run_name: str, *, nested: bool = False, tags: dict | None = None) -> Iterator[Any]:
    """An MLflow run in ``ctx``'s store and experiment; the fluent log functions below write to it.

    The run is tagged with this process (host, pid); a top-level run first marks runs left
    RUNNING by killed processes on this host as FAILED (:func:`fail_dead_runs`).
    """
    import mlflow

    if not nested:
        fail_dead_runs(ctx.client, ctx.experiment_id)
    all_tags = {**owner_tags(), **(tags or {})}
    with scope(ctx.tracking_uri):
        with mlflow.start_run(run_name=run_name, nested=nested, tags=all_tags, experiment_id=ctx.experiment_id) as r:
            yield r


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    flat = {k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in flatten(params).items()}
    items = list(flat.items())
    for i in range(0, len(items), 90):
        mlflow.log_params(dict(items[i : i + 90]))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import math

    import mlflow

    clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_history(history: dict[str, dict[str, list[float]]], run_id: str | None = None) -> None:
    """Per-iteration metrics ``{split: {metric: [v0, v1, ...]}}`` as ``<split>_<metric>`` at step i."""
    import mlflow
    from mlflow.entities import Metric

    run_id = run_id or mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    batch = [
        Metric(f"iter_{split}_{m}", float(v), now, i)
        for split, ms in history.items()
        for m, vals in ms.items()
        for i, v in enumerate(vals)
    ]
    client = mlflow.MlflowClient()
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i : i + 1000], synchronous=True)


def log_dict(obj: Any, name: str) -> None:
    import mlflow

    mlflow.log_dict(obj, name)


def log_text(text: str, name: str) -> None:
    import mlflow

    mlflow.log_text(text, name)


def set_tags(tags: dict[str, Any]) -> None:
    import mlflow

    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_snapshot_input(snapshot, context: str = "training") -> None:
    """Log the snapshot as a run input whose digest is the snapshot id (not MLflow's 10k-row digest)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    m = snapshot.manifest
    ds = MetaDataset(resolve_dataset_source(str(snapshot.path)), name=f"{m['name']}", digest=m["snapshot_id"])
    mlflow.log_input(
        ds, context=context, tags={"fingerprint": m["fingerprint"][:64], "source": str(m["source"]["uri"])[:500]}
    )


def log_pyfunc_model(
    *, kind, model_path: str, preprocessor, reference_stats: dict, meta: dict, input_example, output_example
) -> str:
    """Log the self-contained pyfunc (preprocessing + model + this package's code); returns its URI.

    Args:
        kind: the :class:`~mlops_ray.model.kinds.ModelKind` of the estimator at ``model_path``.
    """
    import importlib.metadata as md

    import mlflow
    from mlflow.models import infer_signature

    from mlops_ray.model.tabular import (
        ARTIFACT_META,
        ARTIFACT_MODEL,
        ARTIFACT_PREPROCESSOR,
        ARTIFACT_REFERENCE,
        TabularModel,
    )

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        preprocessor.save(t / "preprocessor.json")
        (t / "reference_stats.json").write_text(json.dumps(reference_stats))
        (t / "meta.json").write_text(json.dumps(dict(meta, flavor=kind.name)))
        artifacts = {
            ARTIFACT_MODEL: model_path,
            ARTIFACT_PREPROCESSOR: str(t / "preprocessor.json"),
            ARTIFACT_META: str(t / "meta.json"),
            ARTIFACT_REFERENCE: str(t / "reference_stats.json"),
        }
        reqs = [f"{p}=={md.version(p)}" for p in ("mlflow", "numpy", "pandas", "pyarrow", "scikit-learn")]
        reqs += [r for r in kind.requirements() if r not in reqs]
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TabularModel(),
            artifacts=artifacts,
            code_paths=[str(_PKG_DIR)],
            signature=infer_signature(input_example, output_example),
            input_example=input_example,
            pip_requirements=reqs,
        )
    return info.model_uri


# ------------------------------------------------------------------- registry
def register_version(client, name: str, model_uri: str, run_id: str, tags: dict[str, Any]):
    """New registered-model version (the registered model is created on first use)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Managed by mlops-ray")
    # A logged model's URI (models:/m-...) names its model id: pass it, as mlflow.register_model does. A
    # tracking server refuses such a source without it (it checks the source against the run's artifacts
    # instead); a local SQL store accepted it.
    logged = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
    # The SQL registry resolves a models:/m-... source through MLflow's default client: scope it.
    with scope(client.tracking_uri):
        mv = client.create_model_version(
            name,
            model_uri,
            run_id=run_id,
            tags={k: str(v) for k, v in tags.items()},
            model_id=logged.group(1) if logged else None,
        )
    for _ in range(50):  # local stores are READY at once; remote ones may take a moment
        mv = client.get_model_version(name, mv.version)
        if mv.status == "READY":
            break
        time.sleep(0.2)
    return mv


def alias_version(client, name: str, alias: str):
    """The model version behind ``name@alias`` or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def alias_history(client, name: str) -> list[dict[str, Any]]:
    """Alias moves, oldest first, from registered-model tags (MLflow keeps no alias history itself)."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException:
        return []
    events = [json.loads(v) for k, v in rm.tags.items() if k.startswith(ALIAS_EVENT_PREFIX)]
    return sorted(events, key=lambda e: e["seq"])


def move_alias(client, name: str, alias: str, version: str | int, *, action: str, reason: str) -> dict:
    """Point ``alias`` at ``version`` and append a history event (who/what/when/why, from->to).

    Runs under the model's registry lock (re-entrant: callers that gate first hold it already),
    so the event's sequence number is allocated exactly once and ``from_version`` is the
    version the alias really pointed at when it moved.
    """
    with registry_lock(client, name, purpose=f"move alias {alias!r} to v{version} ({action})"):
        return _move_alias_locked(client, name, alias, version, action=action, reason=reason)


def _move_alias_locked(client, name: str, alias: str, version: str | int, *, action: str, reason: str) -> dict:
    import getpass

    prev = alias_version(client, name, alias)
    seq = max((int(e["seq"]) for e in alias_history(client, name)), default=0) + 1
    event = {
        "seq": seq,
        "alias": alias,
        "from_version": str(prev.version) if prev else None,
        "to_version": str(version),
        "action": action,
        "reason": reason[:1500],
        "who": os.environ.get("MLOPS_RAY_USER") or getpass.getuser(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    client.set_registered_model_alias(name, alias, str(version))
    client.set_registered_model_tag(name, f"{ALIAS_EVENT_PREFIX}{seq:06d}", json.dumps(event))
    return event


def aliases_by_version(client, name: str) -> dict[str, list[str]]:
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException:
        return {}
    out: dict[str, list[str]] = {}
    for alias, version in (rm.aliases or {}).items():
        out.setdefault(str(version), []).append(alias)
    return out


def list_versions(client, name: str) -> list:
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


# ------------------------------------------------------------------- registry lock
_held = threading.local()  # (registry uri, model) -> depth, per thread: the lock is re-entrant


def lock_name(name: str) -> str:
    """The registered model whose existence means "``name``'s registry lock is held"."""
    return f"{name}{LOCK_SUFFIX}"


@dataclass(frozen=True)
class LockRecord:
    """Who holds a registry lock (read back from the lock model's tag)."""

    token: str | None
    purpose: str
    owner: ProcessOwner | None
    acquired: float
    expires: float

    @classmethod
    def new(cls, purpose: str, lease_s: float) -> "LockRecord":
        now = time.time()
        return cls(uuid.uuid4().hex, purpose, ProcessOwner.current(), now, now + lease_s)

    def to_tag(self) -> str:
        return json.dumps(
            {
                "token": self.token,
                "purpose": self.purpose,
                "owner": self.owner.to_dict() if self.owner else None,
                "acquired": self.acquired,
                "expires": self.expires,
            }
        )

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "LockRecord":
        try:
            d = json.loads(tags[LOCK_TAG])
            return cls(
                str(d["token"]),
                str(d.get("purpose", "?")),
                ProcessOwner.from_dict(d.get("owner") or {}),
                float(d["acquired"]),
                float(d["expires"]),
            )
        except (KeyError, TypeError, ValueError):  # not written by mlops-ray: never broken automatically
            return cls(None, "unknown (no mlops-ray lock record)", None, 0.0, float("inf"))

    def breakable(self, now: float) -> str | None:
        """Why this lock may be taken from its holder now, or None."""
        if self.token is None:
            return None
        if self.owner is not None and self.owner.is_gone() is True:
            return f"its holder ({self.owner.describe()}, {self.purpose}) is gone"
        if now > self.expires:
            who = self.owner.describe() if self.owner else "unknown"
            return f"its lease expired at {_iso(self.expires)} (holder {who}, {self.purpose})"
        return None

    def describe(self) -> str:
        who = self.owner.describe() if self.owner else "an unknown process"
        if self.token is None:
            return f"a registered model that is not an mlops-ray lock record ({who})"
        return f"{self.purpose} by {who} since {_iso(self.acquired)} (lease until {_iso(self.expires)})"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t != float("inf") else "never"


def _read_lock(client, lname: str) -> LockRecord | None:
    from mlflow.exceptions import MlflowException

    try:
        return LockRecord.from_tags(client.get_registered_model(lname).tags or {})
    except MlflowException as err:
        if is_not_found(err):
            return None
        raise


def _delete_model(client, lname: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(lname)
    except MlflowException as err:
        if not is_not_found(err):
            raise


def _transient(err: Exception) -> bool:
    """A store error worth retrying (SQLite busy with a concurrent writer)."""
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text


def _try_create(client, lname: str, record: LockRecord, description: str) -> bool:
    """Create the lock model: True = created (lock held), False = it exists already (or the store was busy)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(lname, tags={LOCK_TAG: record.to_tag()}, description=description)
        return True
    except MlflowException as err:
        # RESOURCE_DOES_NOT_EXIST: it existed, and was deleted while the store built the "exists" error.
        if getattr(err, "error_code", "") in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST") or _transient(err):
            return False
        raise TrackingError(f"cannot take registry lock {lname!r}: {type(err).__name__}: {err}") from None
    except Exception as err:
        if _transient(err):
            return False
        raise TrackingError(f"cannot take registry lock {lname!r}: {type(err).__name__}: {err}") from None


def _break_lock(client, lname: str, stale: LockRecord, why: str) -> None:
    """Delete ``lname`` if it still holds ``stale``; breakers are serialized by ``<lname>.break``."""
    breaker = f"{lname}.break"
    if not _try_create(client, breaker, LockRecord.new(f"breaking {lname}", BREAK_LEASE_S), "mlops-ray lock breaker"):
        other = _read_lock(client, breaker)
        if other is not None and other.breakable(time.time()):  # a breaker died mid-break
            _delete_model(client, breaker)
        return
    try:
        current = _read_lock(client, lname)
        if current is not None and current.token == stale.token:
            _delete_model(client, lname)
            log.warning("broke registry lock %r: %s", lname, why)
    finally:
        _delete_model(client, breaker)


@contextmanager
def registry_lock(
    client,
    name: str,
    *,
    purpose: str,
    lease_s: float = LOCK_LEASE_S,
    wait_s: float = LOCK_WAIT_S,
) -> Iterator[None]:
    """Hold model ``name``'s registry lock for a block (see the module docstring); re-entrant per thread.

    Raises:
        RegistryLockedError: another holder kept it for ``wait_s`` seconds (names the holder).
        TrackingError: the store refused the lock operations.
    """
    # connect() and the service make clients whose registry URI is their tracking URI
    key = (str(getattr(client, "tracking_uri", id(client))), name)
    depth: dict = _held.__dict__.setdefault("depth", {})
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    token = _acquire(client, name, purpose, lease_s, wait_s)
    depth[key] = 1
    try:
        yield
    finally:
        depth.pop(key, None)
        _release(client, lock_name(name), token)


def _acquire(client, name: str, purpose: str, lease_s: float, wait_s: float) -> str:
    lname = lock_name(name)
    description = (
        f"mlops-ray registry lock of model {name!r}: exists only while a promotion, rollback or alias move "
        f"runs. Delete it only if its holder (tag {LOCK_TAG}) is gone."
    )
    start, delay = time.monotonic(), 0.02
    while True:
        record = LockRecord.new(purpose, lease_s)
        if _try_create(client, lname, record, description):
            return record.token
        try:
            holder = _read_lock(client, lname)
        except Exception as err:
            if not _transient(err):
                raise TrackingError(f"cannot read registry lock {lname!r}: {type(err).__name__}: {err}") from None
            holder = None
        if holder is not None:
            why = holder.breakable(time.time())
            if why:
                _break_lock(client, lname, holder, why)
                continue
        waited = time.monotonic() - start
        if waited >= wait_s:
            held = holder.describe() if holder is not None else "another process"
            raise RegistryLockedError(
                f"model {name!r} is busy: could not take its registry lock for {purpose} within {wait_s:.0f} s; "
                f"held by {held}. Try again later; if that process is gone, the lock is released when its lease "
                f"ends, or delete the registered model {lname!r} (MLflow UI or API) to release it now"
            )
        time.sleep(min(delay, wait_s - waited) * random.uniform(0.5, 1.0))
        delay = min(delay * 2, 0.5)


def _release(client, lname: str, token: str) -> None:
    for attempt in range(20):
        try:
            holder = _read_lock(client, lname)
            if holder is None or holder.token != token:
                log.warning(
                    "registry lock %r was taken from this process while held (lease of %s s exceeded?)",
                    lname,
                    LOCK_LEASE_S,
                )
                return
            _delete_model(client, lname)
            return
        except Exception as err:  # never mask the block's own outcome; the lease frees the lock later
            if not _transient(err) or attempt == 19:
                log.warning("could not release registry lock %r: %s: %s", lname, type(err).__name__, err)
                return
            time.sleep(0.05 * (attempt + 1))
