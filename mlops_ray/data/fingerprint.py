"""Content fingerprint of a table: order- and layout-independent, sensitive to any cell.

Algorithm (version ``fp1``), pure NumPy/Arrow:

1. Columns are sorted by name; types are normalised (all ints -> int64, floats -> float64,
   string/large_string/dictionary -> string, timestamps -> ns since epoch as UTC).
2. Each cell becomes a 64-bit value hash (XXH64 of UTF-8 for strings, SplitMix64 of the
   bit pattern for numbers with -0.0 == 0.0 and one canonical NaN, a fixed tag for null).
3. A row hash chains the cell hashes of the row in column order (so swapping two cells
   between columns changes it).
4. The table digest is SHA-256 over (algorithm, schema, row count, sum of row hashes mod 2^64,
   sum of re-mixed row hashes mod 2^64). Sums commute, so row order, sharding and block
   count do not matter, while duplicated rows still count.

Partials from separate batches merge by adding, so Ray Data tasks compute them in
parallel and the driver combines them (see :class:`FingerprintPartial`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_ray.data.xxh64 import xxh64_arrow

ALGORITHM = "fp1"
_MASK = (1 << 64) - 1
_NULL_TAG = np.uint64(0x6E756C6C5F746167)  # "null_tag"
_ROW_SEED = np.uint64(0x9E3779B97F4A7C15)
_REMIX = np.uint64(0xD6E8FEB86659FD93)
_CANON_NAN = np.float64(np.nan).view(np.uint64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser over a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def normalized_type(t: pa.DataType) -> str:
    """Logical type name used in the fingerprint schema."""
    if pa.types.is_dictionary(t):
        return normalized_type(t.value_type)
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float64"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_null(t):
        return "null"
    return f"other:{t}"


def _column_hash(col: pa.Array) -> np.ndarray:
    """uint64 value hash per cell of one column, shape (n,)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
        t = col.type
    kind = normalized_type(t)
    n = len(col)
    if kind == "null":
        return np.full(n, _NULL_TAG, dtype=np.uint64)
    valid = None if col.null_count == 0 else np.asarray(col.is_valid())
    if kind in ("string", "binary") or kind.startswith("other:"):
        if kind != "string":
            col = (
                pc.cast(col, pa.string())
                if kind.startswith("other:")
                else col.view(pa.binary()).cast(pa.string(), safe=False)
            )
        if pa.types.is_string_view(col.type):
            col = col.cast(pa.string())
        filled = pc.fill_null(col, "") if valid is not None else col
        h = xxh64_arrow(filled, seed=0)
    else:
        if kind == "timestamp":
            if pa.types.is_date(t):
                col = pc.cast(col, pa.timestamp("s"))
            col = pc.cast(col, pa.timestamp("ns", tz=col.type.tz), safe=False)
            bits = pc.cast(col, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).view(np.uint64)
        elif kind == "float64":
            vals = pc.cast(col, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
            vals = np.where(vals == 0.0, 0.0, vals)  # -0.0 == 0.0
            bits = np.ascontiguousarray(vals).view(np.uint64).copy()
            bits[np.isnan(vals)] = _CANON_NAN
        else:  # int64 / bool
            bits = pc.cast(col, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
        h = _splitmix64(bits)
    if valid is not None:
        h = np.where(valid, h, _NULL_TAG)
    return h.astype(np.uint64, copy=False)


def table_schema(table: pa.Table) -> tuple[tuple[str, str], ...]:
    """Sorted ``(column, normalized type)`` pairs."""
    return tuple(sorted((f.name, normalized_type(f.type)) for f in table.schema))


@dataclass(frozen=True)
class FingerprintPartial:
    """Mergeable fingerprint state for a set of rows."""

    schema: tuple[tuple[str, str], ...]
    rows: int = 0
    sum1: int = 0
    sum2: int = 0

    def merge(self, other: "FingerprintPartial") -> "FingerprintPartial":
        if self.rows and other.rows and self.schema != other.schema:
            raise ValueError(f"cannot merge fingerprints of different schemas: {self.schema} vs {other.schema}")
        schema = self.schema if self.rows or not other.rows else other.schema
        return FingerprintPartial(
            schema, self.rows + other.rows, (self.sum1 + other.sum1) & _MASK, (self.sum2 + other.sum2) & _MASK
        )

    def hexdigest(self) -> str:
        """SHA-256 hex digest of the logical content."""
        payload = json.dumps(
            {"alg": ALGORITHM, "schema": self.schema, "rows": self.rows, "s1": self.sum1, "s2": self.sum2},
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {"schema": [list(p) for p in self.schema], "rows": self.rows, "sum1": self.sum1, "sum2": self.sum2}

    @classmethod
    def from_dict(cls, d: dict) -> "FingerprintPartial":
        return cls(tuple(tuple(p) for p in d["schema"]), int(d["rows"]), int(d["sum1"]), int(d["sum2"]))


def row_hashes(table: pa.Table) -> np.ndarray:
    """uint64 hash per row over all columns (sorted by name), shape (n,)."""
    h = np.full(table.num_rows, _ROW_SEED, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in sorted(table.column_names):
            col = table.column(name)
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            name_h = xxh64_arrow(pa.array([name]), seed=1)[0]
            h = _splitmix64(h * np.uint64(0x100000001B3) ^ _column_hash(col) ^ name_h)
    return h


def fingerprint_partial(table: pa.Table) -> FingerprintPartial:
    """Fingerprint state of one table/batch."""
    h = row_hashes(table)
    with np.errstate(over="ignore"):
        s1 = int(np.sum(h, dtype=np.uint64)) if len(h) else 0
        s2 = int(np.sum(_splitmix64(h ^ _REMIX), dtype=np.uint64)) if len(h) else 0
    return FingerprintPartial(table_schema(table), table.num_rows, s1, s2)


def fingerprint_table(table: pa.Table) -> str:
    """Digest of one in-memory table (convenience for tests and small data)."""
    return fingerprint_partial(table).hexdigest()
