"""Ray Serve application: a FastAPI ingress serving ``models:/NAME@champion`` with batching.

Routes: ``POST /predict``, ``POST /invocations`` (MLflow scoring-server formats), the Open Inference
Protocol V2 (``/v2/...``: health, metadata, ``POST /v2/models/{name}[/versions/{v}]/infer``; see
:mod:`mlops_ray.serve.v2`), ``GET /health``, ``GET /model``, ``POST /reload``; OpenAPI at ``/docs``.

Each replica loads the version behind the alias, polls the registry every
``poll_interval_s`` (or on ``reconfigure``/``/reload``) and swaps in a new version
only after it is fully loaded, so no request fails during a promotion or rollback and
every response names the version that produced it. Requests are validated before
they reach the model (:mod:`mlops_ray.serve.http_api`: 400 not JSON or not UTF-8, 413 too
large, counted while the body streams, 415 not JSON, 422 with every bad field; no input
gives a 500), preprocessed per request, and scored in micro-batches (``@serve.batch``) with
one ``inplace_predict`` on the stacked matrix. A 500 logs one line with its request id
(rate-limited; a traceback once per exception type). ``/health`` says "degraded" while the
registry cannot be read and the replica keeps serving the model it has.
"""

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from ray import serve
from starlette.requests import ClientDisconnect

from mlops_ray.config import ServeSettings
from mlops_ray.errors import ModelVersionNotFoundError, RequestBodyError, RequestError
from mlops_ray.serve import health as health_mod
from mlops_ray.serve.body import read_json_body
from mlops_ray.serve.drift_recorder import DriftRecorder
from mlops_ray.serve.errorlog import ErrorLogLimiter
from mlops_ray.serve.http_api import (
    V2_INFER,
    Scored,
    client_error_response,
    error_response,
    handle_scoring,
    parse_feedback,
    request_id,
    v2_error,
    v2_error_from,
)
from mlops_ray.serve.model_store import LoadedModel, load_version, resolve_version
from mlops_ray.serve.schema import (
    FEEDBACK_REQUEST_SCHEMA,
    INVOCATIONS_REQUEST_SCHEMA,
    PREDICT_REQUEST_SCHEMA,
    V2_INFER_REQUEST_SCHEMA,
    openapi_json_body,
)
from mlops_ray.serve.serve_config import DEPLOYMENT, deployment_options
from mlops_ray.serve.v2 import infer_response, model_metadata
from mlops_ray.state import store_for

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context

log = logging.getLogger("mlops_ray.serve")

api = FastAPI(
    title="mlops-ray model service",
    description="Predictions from the registered model behind an alias (default `champion`). "
    '`POST /predict` takes `{"records": [{feature: value, ...}]}`; `POST /invocations` takes '
    "MLflow scoring-server payloads. Missing values: send null.",
    version="1",
)


@serve.deployment(
    name=DEPLOYMENT,
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=64,
    logging_config={"enable_access_log": False},
    # A hung replica is replaced within ~10 s; a stopping one drains for at most 5 s (a killed one
    # is noticed at once through its actor's death, and HAProxy re-dispatches new connections).
    health_check_period_s=2,
    health_check_timeout_s=8,
    graceful_shutdown_wait_loop_s=0.5,
    graceful_shutdown_timeout_s=5,
)
@serve.ingress(api)
class ModelServer:
    def __init__(self, settings: ServeSettings):
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.settings = ServeSettings.model_validate(settings)
        self.client = MlflowClient(self.settings.tracking_uri, self.settings.tracking_uri)
        self.current: LoadedModel | None = None
        self._reload_lock = asyncio.Lock()
        self._last_error: str | None = None
        self._registry = health_mod.RegistryWatch()  # the latest registry check, for /health
        self._errlog = ErrorLogLimiter()  # 5xx: one line per second at most, a traceback once per type
        self._init_metrics()
        self._apply_batching(settings)
        try:
            self.current = self._load_now()
            self._registry.ok(time.time())
        except Exception as err:  # serve /health as 503 and keep trying instead of crash-looping
            self._last_error = f"{type(err).__name__}: {err}"
            self._registry.failed(health_mod.UNREACHABLE, self._last_error, time.time())
            log.warning("no model loaded yet: %s", self._last_error)
        self._poller = asyncio.get_event_loop().create_task(self._poll())
        self.drift: DriftRecorder | None = None
        self._drift_task = None
        if self.settings.drift.enabled:
            s = self.settings
            state = store_for(s.workspace) if s.workspace is not None else None
            self.drift = DriftRecorder(s.model_name, s.drift, state, s.tracking_uri)
            try:
                self.drift.start()  # start it now (and see it answer) rather than at the first push
            except Exception as err:
                log.warning("drift monitor not started yet: %s: %s", type(err).__name__, err)
            self._drift_task = asyncio.get_event_loop().create_task(self.drift.run())

    # ----------------------------------------------------------------- lifecycle
    def _init_metrics(self) -> None:
        from ray.serve import metrics

        self.m_requests = metrics.Counter(
            "mlops_requests_total",
            "Requests by route, status and model version",
            tag_keys=("route", "status", "model_version"),
        )
        self.m_latency = metrics.Histogram(
            "mlops_request_latency_ms",
            "Request latency (ms)",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
            tag_keys=("route", "model_version"),
        )
        self.m_batch = metrics.Histogram(
            "mlops_batch_size",
            "Rows per scored micro-batch",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256, 1024],
            tag_keys=("model_version",),
        )
        self.m_rows = metrics.Counter("mlops_rows_scored_total", "Rows scored", tag_keys=("model_version",))

    def _apply_batching(self, s: ServeSettings) -> None:
        self._score_batch.set_max_batch_size(s.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(s.batch_wait_timeout_s)

    def _load_now(self) -> LoadedModel:
        s = self.settings
        version = resolve_version(self.client, s.model_name, s.alias, s.version)
        return load_version(self.client, s.tracking_uri, s.model_name, version, s.alias)

    async def _check_for_new_version(self) -> bool:
        """Load and swap in the version behind the alias if it moved; True if swapped."""
        async with self._reload_lock:
            s = self.settings
            try:
                version = await asyncio.to_thread(resolve_version, self.client, s.model_name, s.alias, s.version)
            except Exception as err:
                kind = health_mod.NOT_FOUND if isinstance(err, ModelVersionNotFoundError) else health_mod.UNREACHABLE
                self._check_failed(kind, err)
                return False
            if self.current is not None and version == self.current.version:
                self._check_ok()
                return False
            try:
                loaded = await asyncio.to_thread(
                    load_version, self.client, s.tracking_uri, s.model_name, version, s.alias
                )
            except Exception as err:
                self._check_failed(health_mod.LOAD_FAILED, err)
                return False
            previous = self.current.version if self.current else None
            self.current = loaded  # atomic swap; in-flight requests keep their own reference
            self._check_ok()
            log.info("serving %s v%s (was v%s)", s.model_name, loaded.version, previous)
            return True

    def _check_ok(self) -> None:
        if self._registry.error is not None:
            log.info("registry check succeeded again (was %s)", self._registry.error)
        self._registry.ok(time.time())
        self._last_error = None

    def _check_failed(self, kind: str, err: Exception) -> None:
        self._last_error = f"{type(err).__name__}: {err}"
        previous = self._registry.error
        self._registry.failed(kind, self._last_error, time.time())
        if self._registry.error != previous:  # log changes, not every poll of an outage
            log.warning(
                "registry check failed (keeping %s): %s",
                self.current.version if self.current else "none",
                self._registry.error,
            )

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            await self._check_for_new_version()

    async def reconfigure(self, user_config: dict) -> None:
        """Serve calls this on ``user_config`` changes (``mlops-ray serve reload``, config edits)."""
        update = {k: v for k, v in (user_config or {}).items() if k != "reload_token"}
        self.settings = ServeSettings.model_validate({**self.settings.model_dump(), **update})
        self._apply_batching(self.settings)
        if getattr(self, "_poller", None) is not None:  # not during __init__: it loads the model itself
            await self._check_for_new_version()

    # ------------------------------------------------------------------ scoring
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.001)
    async def _score_batch(self, items: list[tuple[LoadedModel, np.ndarray]]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(items)
        by_model: dict[int, list[int]] = {}
        for i, (model, _) in enumerate(items):
            by_model.setdefault(id(model), []).append(i)
        for idxs in by_model.values():  # a batch can straddle a version swap
            model = items[idxs[0]][0]
            xs = [items[i][1] for i in idxs]
            scores = model.scores(np.vstack(xs) if len(xs) > 1 else xs[0])
            self.m_batch.observe(sum(len(x) for x in xs), tags={"model_version": model.version})
            start = 0
            for i, x in zip(idxs, xs):
                out[i] = scores[start : start + len(x)]
                start += len(x)
        return out

    async def _run(self, route: str, request: Request) -> Scored:
        """Read, validate and score one request (:func:`~mlops_ray.serve.http_api.handle_scoring`), with metrics."""
        t0 = time.perf_counter()
        model = self.current
        version = model.version if model else "none"
        status = 500
        try:
            out = await handle_scoring(
                request,
                route,
                model,
                limit=self.settings.max_body_bytes,
                score=lambda m, x: self._score_batch((m, x)),
                limiter=self._errlog,
                logger=log,
                unavailable=f"no model loaded: {self._last_error}",
                observe=self.drift.observe if self.drift is not None else None,
            )
            status = out.status
            if out.response is None:
                self.m_rows.inc(out.rows, tags={"model_version": version})
            return out
        finally:
            self.m_requests.inc(tags={"route": route, "status": str(status), "model_version": version})
            self.m_latency.observe((time.perf_counter() - t0) * 1000, tags={"route": route, "model_version": version})

    # ------------------------------------------------------------------- routes
    @api.post(
        "/predict",
        summary="Score records",
        response_description="predictions, probabilities, model",
        openapi_extra=openapi_json_body(PREDICT_REQUEST_SCHEMA),
    )
    async def predict(self, request: Request):
        """Body: `{"records": [{feature: value, ...}, ...]}` (Content-Type application/json, UTF-8). Unknown
        categories and nulls are handled as in training. Errors: 400 not JSON or not UTF-8, 413 body too large,
        415 not application/json, 422 with each bad field and record index."""
        out = await self._run("/predict", request)
        if out.response is not None:
            return out.response
        model = out.model
        return {
            **model.prediction(out.scores).to_json(),
            "model": {"name": model.name, "version": model.version, "run_id": model.run_id},
            "request_id": out.request_id,
        }

    @api.post(
        "/invocations",
        summary="MLflow scoring-server compatible",
        openapi_extra=openapi_json_body(INVOCATIONS_REQUEST_SCHEMA),
    )
    async def invocations(self, request: Request):
        """Accepts `dataframe_split`, `dataframe_records`, `instances` or `inputs`; answers
        `{"predictions": [{"prediction": ..., "probability": ...}, ...]}` like `mlflow models serve`."""
        out = await self._run("/invocations", request)
        if out.response is not None:
            return out.response
        model, scores = out.model, out.scores
        return JSONResponse(
            {"predictions": model.prediction(scores).records()}, headers={"x-model-version": model.version}
        )

    @api.get("/health", summary="Ready when a model is loaded; degraded while the registry cannot be read")
    async def health(self):
        """200 `{"status": "ok"}` or `{"status": "degraded", "registry": "unreachable: ..."}` (still serving the
        loaded version) once a model is loaded; 503 before."""
        status, body = health_mod.health(
            self.current.version if self.current else None, self._last_error, self._registry, time.time()
        )
        return JSONResponse(status_code=status, content=body)

    @api.get("/model", summary="The model being served")
    async def model_info(self):
        if self.current is None:
            return error_response(503, f"no model loaded: {self._last_error}")
        return self.current.info()

    @api.get("/drift", summary="Data and prediction drift of the served model (from the drift monitor)")
    async def drift_report(self, version: str | None = None):
        """Per monitored model version: the window in progress and the last closed windows, each with
        PSI, chance threshold and status per feature and for the prediction histogram; ground-truth
        feedback metrics when labels were sent. 503 while the monitor is unavailable; 404 with
        monitoring off."""
        if self.drift is None:
            return error_response(404, "drift monitoring is off (drift.enabled: false)")
        try:
            self.drift.flush()
            report = await asyncio.wait_for(self.drift.monitor().report.remote(version), timeout=10)
        except Exception as err:
            self.drift.forget()
            return error_response(503, f"drift monitor unavailable: {type(err).__name__}: {err}")
        report["serving_version"] = self.current.version if self.current else None
        return report

    @api.post(
        "/feedback",
        summary="Ground-truth labels for earlier predictions",
        openapi_extra=openapi_json_body(FEEDBACK_REQUEST_SCHEMA),
    )
    async def feedback(self, request: Request):
        """Body: `{"labels": [{"request_id": "...", "record": 0, "label": 1}, ...]}`: the label of record
        `record` (default 0) of the request whose response carried `request_id`. Labels join the recent
        scored rows the monitor keeps (`drift.feedback_rows`); `unknown` lists the items it no longer has."""
        rid, given = request_id(request)
        if self.drift is None:
            return error_response(404, "drift monitoring is off (drift.enabled: false)", request_id=rid)
        try:
            body = await read_json_body(
                request.stream(),
                limit=self.settings.max_body_bytes,
                content_type=request.headers.get("content-type"),
                content_length=request.headers.get("content-length"),
            )
            items = parse_feedback(body, self.current.task if self.current else None)
        except (RequestBodyError, RequestError) as err:
            return client_error_response(err, rid, echo_id=not given)
        except ClientDisconnect:
            return Response(status_code=499)
        try:
            self.drift.flush()
            out = await asyncio.wait_for(self.drift.monitor().feedback.remote(items), timeout=10)
        except Exception as err:
            self.drift.forget()
            return error_response(503, f"drift monitor unavailable: {type(err).__name__}: {err}", request_id=rid)
        return {**out, "request_id": rid}

    # ------------------------------------------------- Open Inference Protocol V2 (mlops_ray/serve/v2.py)
    def _v2_model(self, name: str, version: str | None) -> "LoadedModel | JSONResponse":
        """The loaded model when ``name`` (and ``version``, if given) is what this service serves."""
        if name != self.settings.model_name:
            return v2_error(404, f"unknown model {name!r}; this service serves {self.settings.model_name!r}")
        if self.current is None:
            return v2_error(503, f"no model loaded: {self._last_error}")
        if version is not None and version != self.current.version:
            return v2_error(404, f"model {name!r} version {version!r} is not served (serving {self.current.version})")
        return self.current

    @api.get("/v2", summary="Open Inference Protocol V2: server metadata")
    async def v2_server(self):
        from mlops_ray import __version__

        return {"name": "mlops-ray", "version": __version__, "extensions": []}

    @api.get("/v2/health/live", summary="Open Inference Protocol V2: liveness")
    async def v2_live(self):
        return {"live": True}

    @api.get("/v2/health/ready", summary="Open Inference Protocol V2: readiness (a model is loaded)")
    async def v2_ready(self):
        if self.current is None:
            return JSONResponse(status_code=503, content={"ready": False})
        return {"ready": True}

    @api.get("/v2/models/{name}", summary="Open Inference Protocol V2: model metadata")
    @api.get("/v2/models/{name}/versions/{version}", summary="Open Inference Protocol V2: model version metadata")
    async def v2_metadata(self, name: str, version: str | None = None):
        model = self._v2_model(name, version)
        if isinstance(model, JSONResponse):
            return model
        return model_metadata(model.name, model.version, model.task, model.schema, None)

    @api.get("/v2/models/{name}/ready", summary="Open Inference Protocol V2: model readiness")
    @api.get("/v2/models/{name}/versions/{version}/ready", summary="Open Inference Protocol V2: version readiness")
    async def v2_model_ready(self, name: str, version: str | None = None):
        model = self._v2_model(name, version)
        if isinstance(model, JSONResponse):
            return model
        return {"name": model.name, "ready": True}

    @api.post(
        "/v2/models/{name}/infer",
        summary="Open Inference Protocol V2: inference",
        openapi_extra=openapi_json_body(V2_INFER_REQUEST_SCHEMA),
    )
    @api.post(
        "/v2/models/{name}/versions/{version}/infer",
        summary="Open Inference Protocol V2: inference on a version (the one served)",
        openapi_extra=openapi_json_body(V2_INFER_REQUEST_SCHEMA),
    )
    async def v2_infer(self, name: str, request: Request, version: str | None = None):
        """Body: one tensor per feature, `{"inputs": [{"name": "age", "shape": [N], "datatype": "FP64",
        "data": [...]}, ...]}` (categorical features `BYTES`; null for a missing value). Answers `predict`
        and, for classification, `probability`. Errors: `{"error": "..."}` naming the tensor and element."""
        model = self._v2_model(name, version)
        if isinstance(model, JSONResponse):
            return model
        out = await self._run(V2_INFER, request)
        if out.response is not None:
            return v2_error_from(out.response)
        model = out.model
        if version is not None and version != model.version:  # swapped to another version meanwhile
            return v2_error(404, f"model {name!r} version {version!r} is not served (serving {model.version})")
        rid, outputs = out.extra
        pred = model.prediction(out.scores)
        return JSONResponse(
            infer_response(model.name, model.version, rid, pred.labels, pred.probabilities, outputs),
            headers={"x-model-version": model.version},
        )

    @api.post("/reload", summary="Check the registry now (this replica)")
    async def reload(self):
        swapped = await self._check_for_new_version()
        return {"swapped": swapped, "model_version": self.current.version if self.current else None}


def build_from_config(ctx: "Context", cfg: "PipelineConfig", **user_config):
    """The Serve application for a pipeline config in ``ctx``'s registry."""
    settings = ServeSettings.from_config(cfg, ctx.tracking_uri, ctx.workspace.location)
    return ModelServer.options(**deployment_options(cfg), user_config=user_config or None).bind(settings)


class AppArgs(BaseModel):
    """Arguments of :func:`build_app` (``args:`` in a Serve config file); Serve validates them."""

    model_config = ConfigDict(extra="forbid")

    config: str = "examples/quickstart.yaml"  # pipeline YAML; relative to $MLOPS_RAY_PROJECT_DIR or the cwd
    workspace: str | None = None  # default $MLOPS_RAY_HOME, else ./.mlops
    model_alias: str | None = None
    version: str | None = None
    poll_interval_s: float | None = None
    max_body_bytes: int | None = None
    max_batch_size: int | None = None
    batch_wait_timeout_s: float | None = None


def build_app(args: AppArgs):
    """Typed application builder for ``serve run`` / ``serve deploy`` (``import_path: mlops_ray.serve.app:build_app``).

    An entry point: builds the :class:`~mlops_ray.context.Context` from ``args.workspace`` (or
    ``$MLOPS_RAY_HOME``); options under ``deployments`` in the Serve config override replica settings.
    """
    from pathlib import Path

    from mlops_ray.config import load_config
    from mlops_ray.context import Context

    if isinstance(args, dict):  # called directly with a dict
        args = AppArgs.model_validate(args)
    path = Path(args.config)
    if not path.is_absolute():
        path = Path(os.environ.get("MLOPS_RAY_PROJECT_DIR", os.getcwd())) / path
    cfg = load_config(path)
    ctx = Context.create(cfg, workspace=args.workspace)
    settings = ServeSettings.from_config(cfg, ctx.tracking_uri, ctx.workspace.location)
    overrides = {k: v for k, v in args.model_dump().items() if v is not None and k not in ("config", "workspace")}
    if "model_alias" in overrides:
        overrides["alias"] = overrides.pop("model_alias")
    settings = ServeSettings.model_validate({**settings.model_dump(), **overrides})
    return ModelServer.bind(settings)
