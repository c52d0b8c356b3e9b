"""What ``mlops-ray drift compare`` and ``drift report`` do (registry + HTTP glue, no Ray).

* :func:`compare_data`: a batch of new data against the reference of a model (by default the
  version behind ``serve.model_alias``; its prediction histogram too) or of a snapshot.
* :func:`fetch_report`: ``GET /drift`` of the running service, and :func:`pick_evaluation` to
  choose the window a person reads (the served version's last closed window, else the one in
  progress).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_ray.drift.offline import compare
from mlops_ray.drift.reference import DriftReference, limits_of
from mlops_ray.errors import ConfigError, MlopsRayError

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context


def model_reference(ctx: Context, cfg: PipelineConfig, model_uri: str | None = None):
    """(DriftReference, TabularModel, context) of a registered model version."""
    from mlops_ray.registry import tracking
    from mlops_ray.registry.promotion import resolve_model_uri

    name, version, _ = resolve_model_uri(ctx.client, cfg.registry.model_name, cfg.serve.model_alias, model_uri)
    model = tracking.load_pyfunc(ctx.tracking_uri, f"models:/{name}/{version}").unwrap_python_model()
    stats = getattr(model, "reference_stats", None)
    if not stats:
        raise ConfigError(f"model {name} v{version} has no drift reference (logged before mlops-ray shipped one)")
    ref = DriftReference.from_stats(stats, model.task)
    return ref, model, {"model": name, "model_version": version, "reference_snapshot": model.meta.get("snapshot_id")}


def snapshot_reference(ctx: Context, cfg: PipelineConfig, snapshot_ref: str):
    """(DriftReference, context) of a data snapshot (id, prefix or NAME@latest)."""
    snap = ctx.snapshots.find(snapshot_ref)
    return DriftReference.from_stats(snap.reference_stats(), cfg.data.task), {"reference_snapshot": snap.id}


def compare_data(
    ctx: Context, cfg: PipelineConfig, current: str, *, snapshot: str | None = None, model_uri: str | None = None
) -> dict[str, Any]:
    """The drift evaluation of the data at ``current`` (streamed) against a model's or a snapshot's reference."""
    if snapshot and model_uri:
        raise ConfigError("give --reference or --model, not both")
    if snapshot:
        ref, context = snapshot_reference(ctx, cfg, snapshot)
        return compare(ref, current, limits_of(cfg.drift), **context)
    ref, model, context = model_reference(ctx, cfg, model_uri)

    def score(table):
        return model.score_frame(table.to_pandas())

    return compare(ref, current, limits_of(cfg.drift), score=score if ref.prediction else None, **context)


def service_url(cfg: PipelineConfig, url: str | None = None) -> str:
    return url.rstrip("/") if url else cfg.serve.url


def fetch_report(cfg: PipelineConfig, url: str | None = None, timeout: float = 15.0) -> dict[str, Any]:
    """``GET /drift`` of the running service.

    Raises:
        MlopsRayError: the service is not reachable or answered an error.
    """
    import httpx

    base = service_url(cfg, url)
    try:
        r = httpx.get(f"{base}/drift", timeout=timeout)
    except httpx.HTTPError as err:
        raise MlopsRayError(
            f"no model service at {base} ({type(err).__name__}); start it with mlops-ray serve"
        ) from None
    if r.status_code != 200:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text[:200]
        raise MlopsRayError(f"{base}/drift answered {r.status_code}: {detail}")
    return r.json()


def pick_evaluation(report: dict[str, Any], version: str | None = None, which: str = "latest") -> dict[str, Any]:
    """One evaluation of a monitor report: ``which`` = latest (last closed window, else the one in
    progress) | current (the window in progress)."""
    versions = report.get("versions") or {}
    v = version or report.get("serving_version")
    if v not in versions:
        if not versions:
            raise MlopsRayError("the drift monitor has seen no traffic yet")
        v = max(versions, key=lambda k: int(k) if k.isdigit() else -1)
    rep = versions[v]
    if which == "current" or not rep["windows"]:
        return rep["current"]
    return rep["windows"][-1]


__all__ = ["compare_data", "fetch_report", "model_reference", "pick_evaluation", "service_url", "snapshot_reference"]
