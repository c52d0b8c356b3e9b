"""Ground truth for the served model (pure): the recent scored rows ``POST /feedback`` labels are
joined with, and the rolling metric and permutation importance on the labelled rows.

The reservoir keeps the last ``feedback_rows`` scored rows keyed by request id (whole requests,
oldest dropped first); labels join a kept request's record and land, per model version, in bounded
deques of the last ``feedback_rows`` labelled rows. The metrics (permutation importance included:
a few model calls over every labelled row) change only when labels arrive, so they are computed
once per new label count and served from a cache to ``GET /drift`` and the pipeline's watcher,
which poll every few seconds.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from mlops_ray.model.metrics import compute_metrics, permutation_importance
from mlops_ray.model.tasks import DEFAULT_METRIC

LABELLED = ("y", "scores", "rows")


class FeedbackStore:
    """Scored rows awaiting labels, and the labelled rows per model version."""

    def __init__(self, keep_rows: int, min_rows: int):
        """``keep_rows``: scored (and labelled) rows kept (``drift.feedback_rows``, 0: off);
        ``min_rows``: labelled rows before metrics are computed (``drift.feedback_min_rows``)."""
        self.keep_rows, self.min_rows = keep_rows, min_rows
        self.reservoir: OrderedDict[str, dict] = OrderedDict()  # request id -> scored rows
        self.reservoir_rows = 0
        self.labelled: dict[str, dict[str, deque]] = {}  # version -> {"y", "scores", "rows"}
        self._received: dict[str, int] = {}  # version -> labels joined so far
        self._cache: dict[str, tuple[int, dict]] = {}  # version -> (labels received, metrics)

    def keep_scored(self, version: str, scored: dict) -> None:
        """Keep a push's scored rows: ``{"table", "scores", "request_ids", "lengths"}`` (rows of
        consecutive requests, ``lengths[i]`` rows for ``request_ids[i]``)."""
        if not self.keep_rows:
            return
        table: pa.Table = scored["table"]
        scores = np.asarray(scored["scores"])
        start = 0
        for rid, n in zip(scored["request_ids"], scored["lengths"]):
            self.reservoir[rid] = {
                "version": version,
                "table": table.slice(start, n),
                "scores": scores[start : start + n],
            }
            self.reservoir.move_to_end(rid)
            self.reservoir_rows += n
            start += n
        while self.reservoir_rows > self.keep_rows and self.reservoir:
            _, old = self.reservoir.popitem(last=False)
            self.reservoir_rows -= old["table"].num_rows

    def join(self, items: list[dict]) -> dict[str, Any]:
        """Labels for earlier predictions, ``[{"request_id", "record" (default 0), "label"}]``;
        returns ``{"accepted": joined, "unknown": [indexes of items no longer (or never) kept]}``."""
        joined, unknown = 0, []
        for i, item in enumerate(items):
            entry = self.reservoir.get(item["request_id"])
            rec = int(item.get("record", 0))
            if entry is None or not 0 <= rec < entry["table"].num_rows:
                unknown.append(i)
                continue
            version = entry["version"]
            lab = self.labelled.setdefault(version, {k: deque(maxlen=self.keep_rows) for k in LABELLED})
            lab["y"].append(item["label"])
            lab["scores"].append(entry["scores"][rec])
            lab["rows"].append(entry["table"].slice(rec, 1))
            self._received[version] = self._received.get(version, 0) + 1
            joined += 1
        return {"accepted": joined, "unknown": unknown}

    async def summary(self, version: str, load_model: Callable[[str], Any]) -> dict[str, Any]:
        """``GET /drift``'s ``feedback`` of ``version``: counts, and from ``min_rows`` labelled rows on
        the metrics of :func:`feedback_metrics` (computed in a worker thread when labels arrived since
        the last time; ``{"error": ...}`` when that failed). ``load_model``: version -> model."""
        lab = self.labelled.get(version)
        n = len(lab["y"]) if lab else 0
        out: dict[str, Any] = {"labelled_rows": n, "min_rows": self.min_rows, "kept_rows": self.reservoir_rows}
        if n < self.min_rows:
            return out
        received = self._received.get(version, 0)
        cached = self._cache.get(version)
        if cached is None or cached[0] != received:
            snapshot = {k: list(v) for k, v in lab.items()}  # labels may arrive while the thread reads
            try:
                metrics = await asyncio.to_thread(lambda: feedback_metrics(load_model(version), snapshot))
            except Exception as err:
                metrics = {"error": f"{type(err).__name__}: {err}"}
            cached = self._cache[version] = (received, metrics)
        out.update(cached[1])
        return out


def feedback_metrics(model, labelled: dict[str, list]) -> dict[str, Any]:
    """The rolling metrics of ``model`` on labelled rows against its test metric, and permutation
    importance on them against the one measured at training.

    Args:
        model: the served model (``task``, ``score_frame``, ``preprocessor.input_columns``, ``meta``).
        labelled: ``{"y": labels, "scores": the scores served, "rows": one-row Arrow tables}``.
    """
    task = model.task
    y = np.asarray(labelled["y"])
    if task != "regression":
        y = y.astype(np.int64)
    metric = DEFAULT_METRIC[task]
    rolling = compute_metrics(task, y, np.asarray(labelled["scores"]))
    frame = pa.concat_tables(labelled["rows"]).to_pandas()
    features = model.preprocessor.input_columns
    importance = permutation_importance(model.score_frame, frame, y, task, features, repeats=2, seed=0)
    return {
        "metric": metric,
        "rolling": rolling.get(metric),
        "test": model.meta.get("metrics", {}).get(f"test_{metric}"),
        "rolling_metrics": rolling,
        "permutation_importance": {k: v["mean"] for k, v in importance.items()},
        "training_importance": {k: v["mean"] for k, v in model.meta.get("permutation_importance", {}).items()},
    }


__all__ = ["FeedbackStore", "feedback_metrics"]
