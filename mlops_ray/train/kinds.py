"""What a model kind's training side returns: a fitted model, and the recipe for a Tune trial.

The kinds themselves are :class:`mlops_ray.model.kinds.ModelKind` objects, found with
:func:`~mlops_ray.model.kinds.get_kind`; the train layer calls their ``fit``, ``fit_fold``,
``tune_trial`` and ``best_fitted`` and never branches on a kind's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Fitted:
    """A trained estimator and what to log about it."""

    estimator: Any
    model_path: Path  # the saved estimator (logged into the pyfunc)
    params: dict[str, Any]  # hyperparameters to log
    history: dict | None = None  # per-round metrics {split: {metric: [...]}}
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialSpec:
    """One kind's Tune trial: ``fn(config, **kwargs)`` runs a trial in a Tune worker.

    ``fn`` reports through :func:`mlops_ray.train.tune.report_trial`: ``valid-<metric>`` every few
    rounds (what ASHA stops on, ``final: 0``) and once at the end with the checkpoint (``final: 1``).
    ``max_t`` is the number of periodic reports a full trial makes (1: no early stopping); ``state``
    is whatever :meth:`~mlops_ray.model.kinds.ModelKind.best_fitted` needs back from the driver side.
    """

    fn: Callable[..., None]
    kwargs: dict[str, Any]
    max_t: int = 1
    state: Any = None
