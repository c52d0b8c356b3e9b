"""The hash-split contract (pure NumPy/Arrow, no Ray).

A row goes to a split by a stable hash of its id, never by a random draw::

    key    = salt + ":" + str(id)                 (UTF-8)
    h      = XXH64(key, seed=42) as signed int64
    bucket = h mod 10000, non-negative            (Python's %)
    split k takes buckets [B(k-1), B(k)), B(k) = round(10000 * (f1 + ... + fk))

This equals Spark SQL ``pmod(xxhash64(concat(salt, ':', id)), 10000)``, so a
split can be reproduced outside Python. The same id lands in the same split in
every process, machine, block count and shard layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_ray.data.xxh64 import xxh64_arrow

NUM_BUCKETS = 10_000
HASH_SEED = 42
FRACTION_TOLERANCE = 1e-9


def split_boundaries(fractions: Mapping[str, float]) -> list[tuple[str, int, int]]:
    """Bucket ranges per split, in the configured order.

    Args:
        fractions: ordered ``{split_name: fraction}``; each > 0, summing to 1 within 1e-9.

    Returns:
        ``[(name, lo, hi), ...]`` with half-open bucket ranges ``[lo, hi)`` covering 0..10000.

    Raises:
        ValueError: naming the offending split or the bad sum.
    """
    if not fractions:
        raise ValueError("at least one split fraction is required")
    total = 0.0
    for name, f in fractions.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"split names must be non-empty strings, got {name!r}")
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not math.isfinite(f) or f <= 0:
            raise ValueError(f"split fraction for {name!r} must be a positive number, got {f!r}")
        total += f
    if abs(total - 1.0) > FRACTION_TOLERANCE:
        raise ValueError(f"split fractions must sum to 1 (within 1e-9), got {total!r}")
    bounds, cum, lo = [], 0.0, 0
    for i, (name, f) in enumerate(fractions.items()):
        cum += f
        hi = NUM_BUCKETS if i == len(fractions) - 1 else int(round(NUM_BUCKETS * cum))
        if hi <= lo:
            raise ValueError(f"split {name!r} is too small to own any of the {NUM_BUCKETS} buckets")
        bounds.append((name, lo, hi))
        lo = hi
    return bounds


def ids_to_strings(ids: pa.Array | pa.ChunkedArray | Sequence) -> pa.Array:
    """Canonical string form of an id column (``str(id)`` semantics for ints and strings).

    Raises:
        ValueError: for nulls or unsupported id types (floats, timestamps, ...).
    """
    if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = pa.array(ids)
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if ids.null_count:
        raise ValueError(f"id column has {ids.null_count} null value(s)")
    t = ids.type
    if pa.types.is_dictionary(t):
        ids = ids.dictionary_decode()
        t = ids.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return ids
    if pa.types.is_integer(t):
        return pc.cast(ids, pa.string())  # decimal, like Python str() and Spark's cast
    raise ValueError(f"id column must be string or integer typed, got {t}; cast it explicitly (floats are ambiguous)")


def hash_ids(ids, salt: str) -> np.ndarray:
    """Signed int64 ``XXH64(salt + ':' + str(id), seed=42)`` per id, shape (n,)."""
    strings = ids_to_strings(ids)
    return xxh64_arrow(strings, prefix=(salt + ":").encode("utf-8"), seed=HASH_SEED).view(np.int64)


def hash_buckets(ids, salt: str) -> np.ndarray:
    """Bucket in [0, 10000) per id (int64, shape (n,)); equals Spark ``pmod(xxhash64(...), 10000)``."""
    return np.mod(hash_ids(ids, salt), NUM_BUCKETS)  # np.mod follows the divisor's sign, like Python %


def assign_splits(ids, salt: str, fractions: Mapping[str, float]) -> np.ndarray:
    """Split code per id: index into ``list(fractions)`` (int8, shape (n,))."""
    bounds = split_boundaries(fractions)
    # upper edges: code = number of edges <= bucket
    edges = np.array([hi for _, _, hi in bounds[:-1]], dtype=np.int64)
    return np.searchsorted(edges, hash_buckets(ids, salt), side="right").astype(np.int8)


def assign_split_names(ids, salt: str, fractions: Mapping[str, float]) -> np.ndarray:
    """Split name per id (object array), for humans and tests."""
    names = np.array(list(fractions), dtype=object)
    return names[assign_splits(ids, salt, fractions)]
