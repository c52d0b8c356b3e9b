"""Model kinds: one registered object per kind of model, found by name.

A :class:`ModelKind` says everything the system needs about one kind of estimator: how it is
saved, loaded and scored (what the pyfunc, the service and batch inference need), which tasks it
supports and how its ``model.params`` are validated (what the config needs), and how it is fitted
locally or distributed, cross-validated and tuned (what the train layer needs). ``model.type`` in
the config and the MLflow ``flavor`` tag are its :attr:`~ModelKind.name`.

The registry follows MLflow's ``ArtifactRepositoryRegistry``: :func:`register_kind` adds a kind,
:func:`get_kind` finds one and, when the name is unknown, says which kinds *are* registered.
A kind is found, in this order:

1. registered in this process with :func:`register_kind`;
2. a built-in, listed in :data:`BUILTIN_KINDS` (one line per kind, below);
3. a third-party package's entry point in the ``mlops_ray.model_kinds`` group, e.g. in its
   ``pyproject.toml``: ``[project.entry-points."mlops_ray.model_kinds"] lightgbm = "my_pkg.kinds:LightGBMKind"``;
4. the reference a logged model recorded (``meta.json``'s ``kind_ref``, ``"module:Class"``),
   so a Serve replica or a batch-inference actor loads a model of a kind registered only in the
   driver, as long as that module is importable there (installed, or under the driver's working
   directory, which Ray puts on its workers' ``sys.path``).

Why built-ins are module *names* here: this module is in the ``model`` layer, which the pyfunc
loads in every replica, and must import neither the train layer nor Ray. A kind's implementation
(``mlops_ray/kinds/<name>.py``) lives in the ``kinds`` layer, above ``train``, so it may call
training code; the registry imports it lazily by name, the way entry points are loaded, so nothing
here imports upward. Training-only imports (Ray Train, Tune, XGBoost's training API) stay inside
the kind's methods, so scoring a model imports only what scoring needs.

Example::

    kind = get_kind("xgboost")
    est = kind.load("model.ubj")
    scores = kind.scores(est, x, "binary")

Adding a kind: write one module with a ``ModelKind`` subclass and add one line to
:data:`BUILTIN_KINDS` (or one entry point, or one ``register_kind(MyKind())`` call).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # training-side types, never imported at run time by this layer
    from pathlib import Path

    from mlops_ray.config import ModelConfig
    from mlops_ray.train.kinds import Fitted, TrialSpec

ENTRY_POINT_GROUP = "mlops_ray.model_kinds"
ALL_TASKS = ("binary", "multiclass", "regression")


class ModelKind:
    """One kind of model. Subclass it, set the class attributes and implement the methods.

    Model side (:meth:`load`, :meth:`save`, :meth:`raw_scores`) must be implemented; the train
    side (:meth:`fit`, :meth:`fit_fold`, :meth:`tune_trial`, :meth:`best_fitted`) raises
    ``NotImplementedError`` until a kind implements it. A kind that has no multi-worker mode says
    so with ``distributed = False`` (it then trains as one Ray task whatever ``model.execution``
    says).
    """

    name: ClassVar[str]  # config model.type, the MLflow "flavor" tag
    model_file: ClassVar[str]  # file name of the saved estimator inside a run / pyfunc
    packages: ClassVar[tuple[str, ...]] = ()  # pip packages the pyfunc needs for this kind
    tasks: ClassVar[tuple[str, ...]] = ALL_TASKS
    distributed: ClassVar[bool] = False  # has a multi-worker (Ray Train) mode

    # ------------------------------------------------------------ model side (pyfunc, serve, batch)
    def load(self, path: str) -> Any:
        raise NotImplementedError(f"model kind {self.name!r} does not implement load")

    def save(self, estimator: Any, path: str) -> None:
        raise NotImplementedError(f"model kind {self.name!r} does not implement save")

    def raw_scores(self, estimator: Any, x: np.ndarray, task: str) -> np.ndarray:
        raise NotImplementedError(f"model kind {self.name!r} does not implement raw_scores")

    def scores(self, estimator: Any, x: np.ndarray, task: str) -> np.ndarray:
        """Scores for a preprocessed float32 matrix: P(1) (binary), (n, k) probabilities, or values."""
        return self.raw_scores(estimator, x, task)

    def requirements(self) -> list[str]:
        """``package==installed_version`` for each of :attr:`packages` (the pyfunc's pip requirements)."""
        return [f"{p}=={md.version(p)}" for p in self.packages]

    @property
    def ref(self) -> str:
        """``"module:Class"``: where a process that has not registered this kind finds it."""
        cls = type(self)
        return f"{cls.__module__}:{cls.__qualname__}"

    # ------------------------------------------------------------ config
    def param_problems(self, params: dict[str, Any]) -> list[str]:
        """One line per problem with ``model.params`` (reported under that key); empty: fine."""
        return []

    def config_problems(self, model_cfg: ModelConfig) -> list[str]:
        """One line per problem with the whole ``model`` section (e.g. a missing key); empty: fine."""
        return []

    # ------------------------------------------------------------ train side (called by the train layer)
    def fit(
        self,
        model: ModelConfig,
        snapshot,
        plan,
        out_dir: Path,
        *,
        run_name: str,
        storage: Path,
        overrides: dict | None = None,
    ) -> Fitted:
        """Fit on the snapshot's train split under ``plan`` (local or distributed); save into ``out_dir``.

        ``model`` is the config's ``model`` section (the kind's settings); the task and the features
        come from ``snapshot.spec``.
        """
        raise NotImplementedError(f"model kind {self.name!r} cannot be trained")

    def fit_fold(
        self, model: ModelConfig, snapshot, pre, train, test, nthread: int, overrides: dict | None = None
    ) -> np.ndarray:
        """Fit one cross-validation fold on ``train`` (in this process); return the scores on ``test``."""
        raise NotImplementedError(f"model kind {self.name!r} cannot be cross-validated")

    def tune_trial(
        self, model: ModelConfig, snapshot, pre, cpus_per_trial: int, out_dir: Path, metric: str
    ) -> TrialSpec:
        """The Tune trial function for this kind, its fixed arguments and its number of reports."""
        raise NotImplementedError(f"model kind {self.name!r} cannot be tuned")

    def best_fitted(
        self, checkpoint_dir: Path, out_dir: Path, model: ModelConfig, spec: TrialSpec, best_config: dict
    ) -> Fitted:
        """The best trial's checkpoint as the run's fitted model (its file copied into ``out_dir``)."""
        raise NotImplementedError(f"model kind {self.name!r} cannot be tuned")

    def __repr__(self) -> str:
        return f"<ModelKind {self.name!r} ({self.ref})>"


class SklearnApiKind(ModelKind):
    """The model side of any estimator with the scikit-learn API: saved with joblib (``model.joblib``),
    scored with ``predict_proba`` (classification: P(1) for binary, every class for multiclass) or
    ``predict`` (regression). A kind for such an estimator subclasses this and adds its train side."""

    model_file: ClassVar[str] = "model.joblib"
    packages: ClassVar[tuple[str, ...]] = ("scikit-learn", "joblib")

    def load(self, path: str) -> Any:
        import joblib

        return joblib.load(path)

    def save(self, estimator: Any, path: str) -> None:
        import joblib

        joblib.dump(estimator, path)

    def raw_scores(self, estimator: Any, x: np.ndarray, task: str) -> np.ndarray:
        if task == "regression":
            return np.asarray(estimator.predict(x), dtype=np.float64)
        prob = np.asarray(estimator.predict_proba(x))
        return prob[:, 1] if task == "binary" else prob


# ------------------------------------------------------------------ registry
# Built-in kinds, one line each: name -> "module:attribute" (a ModelKind subclass or instance).
BUILTIN_KINDS: dict[str, str] = {
    "xgboost": "mlops_ray.kinds.xgboost:XGBoostKind",
    "sklearn": "mlops_ray.kinds.sklearn:SklearnKind",
}

_registry: dict[str, ModelKind] = {}
_lock = threading.RLock()


class UnknownModelKindError(ValueError):
    """No kind of that name is registered, built in or offered by an entry point."""


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in md.entry_points(group=ENTRY_POINT_GROUP)}


def load_ref(ref: str) -> ModelKind:
    """The kind at ``"module:attribute"`` (a class is instantiated with no arguments)."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError(f"model kind reference {ref!r}: expected 'module:attribute'")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return _as_kind(obj() if isinstance(obj, type) else obj, ref)


def _as_kind(obj: Any, origin: str) -> ModelKind:
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, ModelKind):
        raise TypeError(f"{origin} is {type(obj).__name__}, not a mlops_ray.model.kinds.ModelKind")
    return obj


def register_kind(kind: ModelKind, *, replace: bool = False) -> ModelKind:
    """Register ``kind`` under ``kind.name``; returns it.

    Registering the same object again is a no-op. Another kind under a taken name is refused
    (``ValueError``) unless ``replace=True``: two packages silently fighting over ``"xgboost"``
    would make which model a replica scores depend on import order.
    """
    kind = _as_kind(kind, repr(kind))
    with _lock:
        current = _registry.get(kind.name)
        if current is not None and current is not kind and not replace:
            raise ValueError(
                f"model kind {kind.name!r} is already registered ({current.ref}); "
                f"pass replace=True to replace it with {kind.ref}"
            )
        _registry[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Forget ``name`` in this process (tests; a built-in comes back on the next lookup)."""
    with _lock:
        _registry.pop(name, None)


def registered_kinds() -> list[str]:
    """Every kind name this process can find: registered, built in, or offered by an entry point."""
    with _lock:
        names = set(_registry)
    return sorted(names | set(BUILTIN_KINDS) | set(_entry_points()))


def get_kind(name: str, *, ref: str | None = None) -> ModelKind:
    """The kind called ``name`` (see the module docstring for where it is looked for).

    Args:
        ref: ``"module:Class"`` to fall back on (a logged model's ``kind_ref``).

    Raises:
        UnknownModelKindError: naming the registered kinds.
    """
    with _lock:
        if name in _registry:
            return _registry[name]
        if name in BUILTIN_KINDS:
            origin = BUILTIN_KINDS[name]
            kind = load_ref(origin)
        else:
            eps = _entry_points()
            if name in eps:
                origin = f"entry point {ENTRY_POINT_GROUP}:{name} ({eps[name].value})"
                kind = _as_kind(eps[name].load(), origin)
            elif ref:
                origin = ref
                kind = load_ref(ref)
            else:
                raise UnknownModelKindError(
                    f"unknown model kind {name!r}; registered: {registered_kinds()} (add one with "
                    f"register_kind() or the {ENTRY_POINT_GROUP!r} entry-point group)"
                )
        if kind.name != name:
            raise ValueError(f"{origin} is model kind {kind.name!r}, not {name!r}")
        return register_kind(kind)
