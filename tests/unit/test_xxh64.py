"""Vectorized XXH64 (mlops_ray.data.xxh64) vs the reference xxhash package. No Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from mlops_ray.data.xxh64 import xxh64_arrow, xxh64_bytes_list

SEEDS = [0, 1, 42, 2**32 + 7, 2**63 + 12345, 2**64 - 1]
UNICODE_SAMPLES = [
    "",
    "a",
    "é",
    "naïve café",
    "Ünïcödé ßtring",
    "日本語のテキスト",
    "中文字符串测试一二三四五六七八九十",
    "😀",
    "👩‍👩‍👧‍👦 family",
    "🚀🚀🚀🚀🚀🚀🚀🚀🚀",  # 36 bytes: one stripe + tail
    "mixed ascii + ελληνικά + кириллица + 😀 + 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


def _ref(values, prefix: bytes = b"", seed: int = 42) -> np.ndarray:
    """Reference: one xxhash call per element."""
    out = []
    for v in values:
        b = v.encode("utf-8") if isinstance(v, str) else bytes(v)
        out.append(xxhash.xxh64_intdigest(prefix + b, seed))
    return np.array(out, dtype=np.uint64)


def _random_ascii(rng: np.random.Generator, n: int) -> str:
    return rng.integers(32, 127, size=n, dtype=np.uint8).tobytes().decode("ascii")


def _random_unicode(rng: np.random.Generator, n: int) -> str:
    # Mix of 1-, 2-, 3- and 4-byte UTF-8 code points (no surrogates).
    pools = [(0x20, 0x7F), (0xA0, 0x800), (0x800, 0xD800), (0x10000, 0x1FAFF)]
    chars = []
    for _ in range(n):
        lo, hi = pools[int(rng.integers(len(pools)))]
        chars.append(chr(int(rng.integers(lo, hi))))
    return "".join(chars)


@pytest.fixture(params=[0, 1, 12345])
def seed(request) -> int:
    """RNG seed: every randomized test must hold for any value."""
    return request.param


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- #
# Known answers
# --------------------------------------------------------------------------- #
def test_published_vector_empty_seed0():
    assert int(xxh64_bytes_list([b""], seed=0)[0]) == 0xEF46DB3751D8E999
    assert int(xxh64_arrow(pa.array([""]), seed=0)[0]) == 0xEF46DB3751D8E999


@pytest.mark.parametrize("hash_seed", SEEDS)
def test_empty_string(hash_seed):
    got = xxh64_arrow(pa.array(["", ""]), seed=hash_seed)
    assert got.dtype == np.uint64 and got.shape == (2,)
    assert (got == _ref(["", ""], seed=hash_seed)).all()


def test_empty_array():
    got = xxh64_arrow(pa.array([], type=pa.string()), prefix=b"p:")
    assert got.dtype == np.uint64 and got.shape == (0,)
    assert xxh64_bytes_list([]).shape == (0,)
    assert xxh64_arrow(pa.chunked_array([], type=pa.string())).shape == (0,)


def test_seed_taken_modulo_2_64_like_xxhash():
    vals = [b"abc", b"x" * 40]
    assert (xxh64_bytes_list(vals, seed=2**64) == xxh64_bytes_list(vals, seed=0)).all()
    assert (xxh64_bytes_list(vals, seed=-1) == _ref(vals, seed=-1)).all()


def test_default_seed_is_42():
    vals = ["a", "bc", "s0-0000001234"]
    assert (xxh64_arrow(pa.array(vals)) == _ref(vals, seed=42)).all()
    assert (xxh64_bytes_list([v.encode() for v in vals]) == _ref(vals, seed=42)).all()


# --------------------------------------------------------------------------- #
# Every length, random content
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("hash_seed", [0, 42, 2**64 - 1])
def test_every_length_random_bytes(rng, hash_seed):
    vals = [rng.integers(0, 256, size=n, dtype=np.uint8).tobytes() for n in range(101)]
    got = xxh64_bytes_list(vals, seed=hash_seed)
    assert (got == _ref(vals, seed=hash_seed)).all()


@pytest.mark.parametrize("hash_seed", [0, 42])
def test_every_length_random_ascii(rng, hash_seed):
    # Several rows per length so each group has n > 1.
    vals = [_random_ascii(rng, n) for n in range(101) for _ in range(3)]
    got = xxh64_arrow(pa.array(vals), seed=hash_seed)
    assert (got == _ref(vals, seed=hash_seed)).all()


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 95, 96, 97, 128, 1000])
@pytest.mark.parametrize("prefix", [b"", b"v1:", b"x" * 32, b"\x00\xff" * 9])
def test_stripe_boundaries(rng, length, prefix):
    # Total length (prefix + value) crosses the 4/8/32-byte boundaries.
    vals = [rng.integers(0, 256, size=length, dtype=np.uint8).tobytes() for _ in range(5)]
    arr = pa.array(vals, type=pa.binary())
    assert (xxh64_arrow(arr, prefix=prefix, seed=7) == _ref(vals, prefix, 7)).all()


# --------------------------------------------------------------------------- #
# Unicode
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("hash_seed", [0, 42])
def test_unicode_samples(hash_seed):
    got = xxh64_arrow(pa.array(UNICODE_SAMPLES), prefix=b"u:", seed=hash_seed)
    assert (got == _ref(UNICODE_SAMPLES, b"u:", hash_seed)).all()


def test_random_unicode(rng):
    vals = [_random_unicode(rng, int(n)) for n in rng.integers(0, 40, size=500)]
    assert any(len(v.encode()) != len(v) for v in vals)  # multi-byte present
    got = xxh64_arrow(pa.array(vals), prefix="ключ:".encode(), seed=42)
    assert (got == _ref(vals, "ключ:".encode(), 42)).all()


# --------------------------------------------------------------------------- #
# Prefixes and seeds
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("hash_seed", SEEDS)
def test_random_prefixes(rng, hash_seed):
    vals = [_random_ascii(rng, int(n)) for n in rng.integers(0, 70, size=200)]
    arr = pa.array(vals)
    for _ in range(5):
        prefix = rng.integers(0, 256, size=int(rng.integers(0, 50)), dtype=np.uint8).tobytes()
        got = xxh64_arrow(arr, prefix=prefix, seed=hash_seed)
        assert (got == _ref(vals, prefix, hash_seed)).all(), prefix


def test_prefix_matters():
    arr = pa.array(["s0-0000001234"])
    assert xxh64_arrow(arr, prefix=b"v1:")[0] != xxh64_arrow(arr, prefix=b"v2:")[0]


# --------------------------------------------------------------------------- #
# Arrow layouts
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("typ", [pa.string(), pa.large_string()])
def test_sliced_array(rng, typ):
    vals = [_random_ascii(rng, int(n)) for n in rng.integers(0, 60, size=20)]
    arr = pa.array(vals, type=typ)
    sl = arr.slice(3, 10)
    assert sl.offset == 3
    got = xxh64_arrow(sl, prefix=b"v1:", seed=42)
    assert got.shape == (10,)
    assert (got == _ref(vals[3:13], b"v1:", 42)).all()
    # Slice of a slice, and a slice at the very end.
    assert (xxh64_arrow(sl.slice(2, 5), b"v1:") == _ref(vals[5:10], b"v1:")).all()
    assert (xxh64_arrow(arr.slice(17), b"v1:") == _ref(vals[17:], b"v1:")).all()


@pytest.mark.parametrize("typ", [pa.string(), pa.large_string()])
def test_chunked_array(rng, typ):
    chunks = [[_random_ascii(rng, int(n)) for n in rng.integers(0, 80, size=int(k))] for k in (0, 1, 17, 250, 3)]
    carr = pa.chunked_array([pa.array(c, type=typ) for c in chunks], type=typ)
    flat = [v for c in chunks for v in c]
    got = xxh64_arrow(carr, prefix=b"v1:", seed=0)
    assert got.shape == (len(flat),)
    assert (got == _ref(flat, b"v1:", 0)).all()
    # A sliced chunked array (slices inside chunks).
    sl = carr.slice(5, 200)
    assert (xxh64_arrow(sl, b"v1:", 0) == _ref(flat[5:205], b"v1:", 0)).all()


def test_large_string_matches_string(rng):
    vals = [_random_unicode(rng, int(n)) for n in rng.integers(0, 50, size=300)]
    a = xxh64_arrow(pa.array(vals, type=pa.string()), b"p", 3)
    b = xxh64_arrow(pa.array(vals, type=pa.large_string()), b"p", 3)
    assert (a == b).all()
    assert (a == _ref(vals, b"p", 3)).all()


def test_all_empty_strings_array():
    arr = pa.array([""] * 5)
    assert (xxh64_arrow(arr, prefix=b"v1:") == _ref([""] * 5, b"v1:")).all()


def test_arrow_matches_bytes_list(rng):
    vals = [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in rng.integers(0, 90, size=300)]
    assert (xxh64_bytes_list(vals, seed=9) == xxh64_arrow(pa.array(vals, type=pa.binary()), seed=9)).all()


def test_ten_thousand_mixed_lengths(rng):
    lengths = rng.integers(0, 200, size=10_000)
    vals = [_random_ascii(rng, int(n)) if i % 3 else _random_unicode(rng, int(n) // 4) for i, n in enumerate(lengths)]
    got = xxh64_arrow(pa.array(vals), prefix=b"v1:", seed=42)
    assert got.shape == (10_000,)
    assert (got == _ref(vals, b"v1:", 42)).all()


def test_many_rows_same_length_spans_blocks():
    # More rows than one processing block, single length (the fast path).
    n = 100_003
    vals = [f"s0-{i:010d}" for i in range(n)]
    got = xxh64_arrow(pa.array(vals), prefix=b"v1:", seed=42)
    idx = np.r_[0:50, n - 50 : n, 32760:32780, 65530:65545]
    assert (got[idx] == _ref([vals[i] for i in idx], b"v1:", 42)).all()
    assert len(np.unique(got)) == n


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
def test_nulls_raise():
    with pytest.raises(ValueError):
        xxh64_arrow(pa.array(["a", None, "c"]))
    with pytest.raises(ValueError):
        xxh64_arrow(pa.chunked_array([["a"], [None]], type=pa.large_string()))


def test_null_outside_slice_is_fine():
    arr = pa.array([None, "a", "b"]).slice(1)
    assert (xxh64_arrow(arr) == _ref(["a", "b"])).all()


def test_wrong_type_raises():
    with pytest.raises(TypeError):
        xxh64_arrow(pa.array([1, 2, 3]))
