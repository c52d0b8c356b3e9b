"""Typed errors, all of them. Each carries what the user needs to fix the input.

The CLI turns any :class:`MlopsRayError` into a one-paragraph message and exit
code 2 (never a traceback); the HTTP layer maps them to 4xx responses.
"""

from __future__ import annotations


class MlopsRayError(Exception):
    """Base class for errors caused by user input or state, not by a bug."""


class ConfigError(MlopsRayError):
    """The pipeline config (YAML) or a CLI option is invalid."""


class DataValidationError(MlopsRayError):
    """Source data does not satisfy the declared schema/contract.

    Attributes:
        problems: one human-readable line per problem (column, what is wrong, example rows).
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("data validation failed:\n  - " + "\n  - ".join(self.problems))


class SourceNotFoundError(MlopsRayError):
    """A data source (file, directory, glob) does not exist or holds no data files."""


class SnapshotNotFoundError(MlopsRayError):
    """A dataset snapshot id/name (or one of its split files) does not exist in the workspace."""


class SnapshotCorruptError(MlopsRayError):
    """A snapshot's files differ from the sizes and SHA-256 digests its manifest recorded at prepare time."""


class SchemaError(MlopsRayError):
    """Input rows do not match a model's feature schema."""


class TrackingError(MlopsRayError):
    """The tracking/registry backend is unreachable or refused an operation."""


class TrackingServerError(MlopsRayError):
    """The tracking server's PostgreSQL or MLflow process cannot be found, installed, started or stopped."""


class RegistryError(MlopsRayError):
    """A registry operation cannot be carried out (no such version, no history, leak...)."""


class RegistryLockedError(RegistryError):
    """The registry lock of a model (promotions, rollbacks, alias moves) was not acquired in time."""


class ModelVersionNotFoundError(RegistryError):
    """A registered model, version or alias does not exist."""


class TrainingError(MlopsRayError):
    """Training or tuning ran but produced no usable model (e.g. every trial failed)."""


class ReproduceError(MlopsRayError):
    """A run cannot be reproduced as logged."""


class ServiceError(MlopsRayError):
    """The model service cannot start, be found or be reached (port in use, no recorded cluster...)."""


class PipelineBusyError(MlopsRayError):
    """Another pipeline run for the same model is in progress."""


class LockBusyError(MlopsRayError):
    """A state-store lock (:meth:`mlops_ray.state.StateStore.lock`) is held by someone else.

    Attributes:
        key: the lock's state key.
        holder: the current holder's description, as it wrote it (e.g. ``"pid 123 since ..."``).
    """

    def __init__(self, key: str, holder: str):
        self.key = key
        self.holder = holder
        super().__init__(f"{key} is held by {holder}")


class PipelineStepError(MlopsRayError):
    """A pipeline step failed; earlier steps' results are kept (the next run resumes)."""


class UnsupportedVersionError(MlopsRayError):
    """The installed Ray or MLflow is not a version whose internals :mod:`mlops_ray.compat` was verified
    against (the message names the installed and the supported versions, and the override)."""


class PatchError(UnsupportedVersionError):
    """A patch of a Ray / MLflow internal found nothing to patch (a missing module or attribute, a
    template rewrite that matched nothing): the installed library is not the one it was written for."""


class RequestError(Exception):
    """Invalid HTTP request body (answered with 422); ``errors`` is a list of ``{"loc": [...], "msg": str}``.

    Not an :class:`MlopsRayError`: it never reaches the CLI, only the HTTP layer.
    """

    MAX_ERRORS = 50

    def __init__(self, errors: list[dict]):
        self.errors = errors[: self.MAX_ERRORS]
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in self.errors))


class RequestBodyError(Exception):
    """An HTTP request body that cannot be read as JSON at all: ``status`` is 400 (not JSON, not
    UTF-8), 413 (over the size limit) or 415 (a Content-Type other than JSON); ``detail`` says why.

    Like :class:`RequestError`, it never reaches the CLI, only the HTTP layer.
    """

    def __init__(self, status: int, detail: str):
        self.status = status
        self.detail = detail
        super().__init__(f"{status}: {detail}")
