"""POST /feedback bodies: every bad field is a 422 naming it (pure; no Ray)."""

from __future__ import annotations

import pytest

from mlops_ray.errors import RequestError
from mlops_ray.serve.http_api import parse_feedback


def locs(body, task="binary"):
    with pytest.raises(RequestError) as e:
        parse_feedback(body, task)
    return [tuple(x["loc"]) for x in e.value.errors]


def test_good_labels_pass_with_defaults():
    out = parse_feedback(
        {"labels": [{"request_id": "a-1", "label": 1}, {"request_id": "b", "record": 3, "label": 0}]}, "binary"
    )
    assert out == [{"request_id": "a-1", "record": 0, "label": 1}, {"request_id": "b", "record": 3, "label": 0}]
    assert parse_feedback({"labels": [{"request_id": "x", "label": 2.5}]}, "regression")[0]["label"] == 2.5
    assert parse_feedback({"labels": [{"request_id": "x", "label": 4}]}, "multiclass")[0]["label"] == 4


@pytest.mark.parametrize(
    "body,task,loc",
    [
        ({}, "binary", ("labels",)),
        ([], "binary", ("labels",)),
        ({"labels": []}, "binary", ("labels",)),
        ({"labels": "x"}, "binary", ("labels",)),
        ({"labels": [{"request_id": "a", "label": 2}]}, "binary", ("labels", 0, "label")),
        ({"labels": [{"request_id": "a", "label": 0.5}]}, "binary", ("labels", 0, "label")),
        ({"labels": [{"request_id": "a", "label": True}]}, "binary", ("labels", 0, "label")),
        ({"labels": [{"request_id": "a", "label": -1}]}, "multiclass", ("labels", 0, "label")),
        ({"labels": [{"request_id": "a", "label": 10**400}]}, "regression", ("labels", 0, "label")),
        ({"labels": [{"request_id": "a", "label": "1"}]}, "regression", ("labels", 0, "label")),
        ({"labels": [{"request_id": "a", "label": None}]}, "regression", ("labels", 0, "label")),
        ({"labels": [{"label": 1}]}, "binary", ("labels", 0, "request_id")),
        ({"labels": [{"request_id": "a b", "label": 1}]}, "binary", ("labels", 0, "request_id")),
        ({"labels": [{"request_id": "a", "record": -1, "label": 1}]}, "binary", ("labels", 0, "record")),
        ({"labels": [{"request_id": "a", "record": 2**40, "label": 1}]}, "binary", ("labels", 0, "record")),
        ({"labels": [{"request_id": "a", "label": 1, "extra": 1}]}, "binary", ("labels", 0, "extra")),
        ({"labels": [7]}, "binary", ("labels", 0)),
        ({"labels": [{"request_id": "a", "label": 1}], "more": 1}, "binary", ("more",)),
    ],
)
def test_bad_bodies_name_the_field(body, task, loc):
    assert loc in locs(body, task)


def test_too_many_items():
    from mlops_ray.serve.schema import MAX_FEEDBACK_ITEMS

    assert locs({"labels": [{"request_id": "a", "label": 1}] * (MAX_FEEDBACK_ITEMS + 1)}) == [("labels",)]
