"""MLflow glue: the only module that talks to MLflow tracking and the model registry.

Everything MLflow-specific (URIs, runs, params/metrics/artifacts, model logging,
registered versions, aliases and their history) lives here so the rest of the code
deals in plain dicts and numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mlops_ray.errors import ConfigError, MlopsRayError, TrackingError

ALIAS_EVENT_PREFIX = "mlops_ray.alias_event."
_PKG_DIR = Path(__file__).resolve().parents[1]
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def check_uri(uri: str) -> None:
    """Refuse tracking URIs MLflow 3 cannot use, and unreachable servers, with a clear message."""
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
    elif uri.startswith("file:") or "://" not in uri:
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
            raise ConfigError(
                f"mlflow.tracking_uri {uri!r}: MLflow 3 rejects file stores; use sqlite:///PATH "
                "(the default) or a server URI"
            )


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


@contextmanager
def scope(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (runs, ``log_model``, ``load_model``) at ``uri`` for a block, then restore.

    MLflow's fluent functions read one process-wide URI; this is the only place that sets
    it, and it always puts back what was there (URI and environment variables), so a
    context's store never leaks into code that runs after it.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as reg_utils
    from mlflow.tracking._tracking_service import utils as trk_utils

    old_tracking, old_registry = trk_utils._tracking_uri, reg_utils._registry_uri
    old_env = {k: os.environ.get(k) for k in _URI_ENV}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_tracking)
        reg_utils._registry_uri = old_registry
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


@contextmanager
def run(ctx, run_name: str, *, nested: bool = False, tags: dict | None = None) -> Iterator[Any]:
    """An MLflow run in ``ctx``'s store and experiment; the fluent log functions below write to it."""
    import mlflow

    with scope(ctx.tracking_uri):
        with mlflow.start_run(run_name=run_name, nested=nested, tags=tags or {}, experiment_id=ctx.experiment_id) as r:
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
    # The SQL registry resolves a models:/m-... source through MLflow's default client: scope it.
    with scope(client._tracking_client.tracking_uri):
        mv = client.create_model_version(name, model_uri, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
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
    """Point ``alias`` at ``version`` and append a history event (who/what/when/why, from->to)."""
    import getpass

    prev = alias_version(client, name, alias)
    seq = len(alias_history(client, name)) + 1
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
