"""Property-based API fuzzing from the service's own OpenAPI schema (schemathesis), shared by the
unit test (a small FastAPI app, no Ray) and the e2e test (the real service).

The check is schemathesis' ``not_a_server_error``: no generated request, valid or not, gets a 5xx.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def with_model_features(raw: dict[str, Any], numeric: Iterable[str], categorical: Iterable[str]) -> dict[str, Any]:
    """``raw`` (an OpenAPI dict) with the records of ``/predict`` narrowed to a model's features.

    The service's schema cannot name the features (they belong to whichever model is loaded), so
    bodies generated from it are rejected before scoring; these reach the model.
    """
    numeric, categorical = list(numeric), list(categorical)
    record = {
        "type": "object",
        "additionalProperties": False,
        "required": numeric + categorical,
        "properties": {
            **{f: {"type": ["number", "null"]} for f in numeric},
            **{f: {"type": ["string", "null"]} for f in categorical},
        },
    }
    out = copy.deepcopy(raw)
    body = out["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body["properties"]["records"]["items"] = record
    return out


def fuzz(
    schema: schemathesis.BaseSchema,
    call: Callable[[Any], Any],
    *,
    max_examples: int,
    modes: Iterable[GenerationMode] = MODES,
    paths: Iterable[str] | None = None,
) -> Counter:
    """Generate up to ``max_examples`` cases per operation and mode, send each with ``call(case)``
    and fail on any 5xx. Returns the count of responses per (operation, status)."""
    sent: Counter = Counter()
    wanted = set(paths) if paths is not None else None
    for result in schema.get_all_operations():
        op = result.ok()
        if wanted is not None and op.path not in wanted:
            continue
        has_input = any(len(part) for part in (op.body, op.query, op.path_parameters, op.headers, op.cookies))
        for mode in modes:
            if mode is GenerationMode.NEGATIVE and not has_input:
                continue  # GET /health has no input that could be invalid (hypothesis: Unsatisfiable)

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            def run(case):
                response = call(case)
                sent[(op.label, response.status_code)] += 1
                case.validate_response(response, checks=[not_a_server_error])

            try:
                run()
            except Unsatisfiable:
                if mode is not GenerationMode.NEGATIVE:
                    raise
                # no invalid input can be expressed (e.g. only a free-form string path parameter,
                # such as the V2 model name): nothing negative to send for this operation
    return sent
