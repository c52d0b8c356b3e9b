"""MLflow 3.17.x internals mlops-ray depends on (verified against mlflow 3.17.2).

MLflow's fluent API (``start_run``, ``log_model``, ``pyfunc.load_model``) reads one process-wide
tracking URI and registry URI. To put back exactly what was there after a block, including
"nothing was set" (restoring the resolved default would pin it and hide a later
``MLFLOW_TRACKING_URI``), the explicitly set values are read from their private module globals:
``mlflow.get_tracking_uri()`` only returns the resolved value, and MLflow 3.17 has no public,
thread-local or context-scoped URI.
"""

from __future__ import annotations

from mlops_ray.errors import PatchError

SUPPORTED = "3.17.x"


def _modules():
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for module, attr in ((tracking_utils, "_tracking_uri"), (registry_utils, "_registry_uri")):
        if not hasattr(module, attr):
            raise PatchError(f"patch 'mlflow-uris': {module.__name__} has no {attr}")
    return tracking_utils, registry_utils


def fluent_uris() -> tuple[str | None, str | None]:
    """The tracking and registry URIs set in this process (None: not set, MLflow resolves env/default)."""
    tracking_utils, registry_utils = _modules()
    return tracking_utils._tracking_uri, registry_utils._registry_uri


def set_fluent_uris(tracking: str | None, registry: str | None) -> None:
    """Set both URIs exactly through MLflow's public setters (None unsets: in 3.17 ``set_tracking_uri(None)``
    also unsets ``MLFLOW_TRACKING_URI``, ``set_registry_uri(None)`` leaves ``MLFLOW_REGISTRY_URI`` alone)."""
    import mlflow

    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
