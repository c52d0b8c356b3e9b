"""Schema fuzzing of the scoring request path (schemathesis over the stand-in app's OpenAPI, no Ray).

Slow (hundreds of generated requests), so it runs in the integration tier; the e2e tier runs the same
against the real service. The fast checks of the same path are in ``tests/unit/test_serve_requests.py``.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from _fuzz import fuzz, with_model_features
from _scoring_app import CATEGORICAL, NUMERIC, make_app
from fastapi.testclient import TestClient


@pytest.mark.integration  # slow (subprocesses), no Ray: kept out of the fast tier
def test_schema_fuzzing_finds_no_5xx():
    """schemathesis from the app's own OpenAPI (and narrowed to the model's features, so bodies reach the
    model): positive and negative cases, no 5xx. The e2e tier runs the same against the real service."""
    app = make_app()
    with TestClient(app) as c:
        raw = c.get("/openapi.json").json()
    sent: Counter = Counter()
    for spec in (raw, with_model_features(raw, NUMERIC, CATEGORICAL)):
        schema = schemathesis.openapi.from_dict(spec)
        schema.app = app  # case.call() goes through the ASGI app
        sent += fuzz(schema, lambda case: case.call(), max_examples=25)
    print(f"schemathesis sent {sum(sent.values())} requests: {dict(sent)}")
    assert sent[("POST /predict", 200)] > 0  # the narrowed schema reached the model
    assert not any(status >= 500 for _, status in sent)
