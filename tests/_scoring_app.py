"""A stand-in scoring app: ``/predict`` and ``/invocations`` routed through ``handle_scoring`` as the
Ray Serve replica routes them, with a stand-in model (a real fitted-style Preprocessor, a trivial
scorer). Shared by ``tests/unit/test_serve_requests.py`` and the fuzzing test of the integration tier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request

from mlops_ray.data.generate import FEATURE_SPEC
from mlops_ray.data.preprocess import CategoricalParams, NumericParams, Preprocessor
from mlops_ray.serve.errorlog import ErrorLogLimiter
from mlops_ray.serve.http_api import V2_INFER, handle_scoring, v2_error_from
from mlops_ray.serve.schema import (
    INVOCATIONS_REQUEST_SCHEMA,
    PREDICT_REQUEST_SCHEMA,
    V2_INFER_REQUEST_SCHEMA,
    FeatureSchema,
    openapi_json_body,
)
from mlops_ray.serve.v2 import infer_response

LIMIT = 100_000
NUMERIC = tuple(FEATURE_SPEC["numeric"])
CATEGORICAL = tuple(FEATURE_SPEC["categorical"])
GOOD = {**{f: 1.5 for f in NUMERIC}, **{f: "a" for f in CATEGORICAL}}
BOOM = 666.0  # an `age` the stand-in scorer fails on (a bug in scoring -> 500)


@dataclass
class StandInModel:
    schema: FeatureSchema
    preprocessor: Preprocessor

    @property
    def feature_names(self) -> list[str]:
        return self.preprocessor.feature_names

    def transform(self, table):
        return self.preprocessor.transform(table)


def _model() -> StandInModel:
    pre = Preprocessor(
        [NumericParams(f, fill=0.0, center=0.0, scale=1.0) for f in NUMERIC],
        [CategoricalParams(f, ["a", "b"]) for f in CATEGORICAL],
    )
    return StandInModel(FeatureSchema(NUMERIC, CATEGORICAL, ("customer_id",)), pre)


def make_app(model="stand-in", limit: int = LIMIT) -> FastAPI:
    """``/predict``, ``/invocations`` and V2 infer as the replica routes them (scores: row sums); ``model=None``:
    none loaded."""
    app = FastAPI()
    state = {"model": _model() if model == "stand-in" else model, "limiter": ErrorLogLimiter()}
    log = logging.getLogger("mlops_ray.serve")

    async def score(model, x):
        if (x[:, 0] == BOOM).any():
            raise ZeroDivisionError("scoring bug")
        return x.sum(axis=1)

    async def run(route: str, request: Request):
        out = await handle_scoring(
            request, route, state["model"], limit=limit, score=score, limiter=state["limiter"], logger=log
        )
        if out.response is not None:
            return out.response
        return {"scores": np.asarray(out.scores).tolist(), "request_id": out.request_id}

    @app.post("/predict", openapi_extra=openapi_json_body(PREDICT_REQUEST_SCHEMA))
    async def predict(request: Request):
        return await run("/predict", request)

    @app.post("/invocations", openapi_extra=openapi_json_body(INVOCATIONS_REQUEST_SCHEMA))
    async def invocations(request: Request):
        return await run("/invocations", request)

    @app.post("/v2/models/stand-in/infer", openapi_extra=openapi_json_body(V2_INFER_REQUEST_SCHEMA))
    async def v2_infer(request: Request):  # as the replica answers it (mlops_ray/serve/app.py)
        out = await handle_scoring(
            request, V2_INFER, state["model"], limit=limit, score=score, limiter=state["limiter"], logger=log
        )
        if out.response is not None:
            return v2_error_from(out.response)
        rid, outputs = out.extra
        return infer_response("stand-in", "1", rid, np.asarray(out.scores), None, outputs)

    return app
