"""Typed errors. Each carries what the user needs to fix the input.

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


class SnapshotNotFoundError(MlopsRayError):
    """A dataset snapshot id/name does not exist in the workspace."""


class SchemaError(MlopsRayError):
    """Input rows do not match a model's feature schema."""
