"""Synthetic customer-churn / default-risk dataset, written as sharded Parquet.

The dataset is a pure function of ``(seed, drift)`` and the *global row index*:

* Rows are produced in fixed blocks of :data:`BLOCK_ROWS` rows. Block ``b`` covers
  global rows ``[b * BLOCK_ROWS, (b + 1) * BLOCK_ROWS)`` and every column group in it
  draws from its own generator ``np.random.default_rng([_SALT, seed, b, stream])``.
* ``rows`` takes a prefix of that infinite sequence, ``shards`` cuts the prefix into
  contiguous, near-equal parts (the first ``rows % shards`` shards get one row more),
  and ``chunk_rows`` only sets how many rows are held in memory / reported to
  ``progress`` at a time. Row groups are always exactly :data:`ROW_GROUP_ROWS` rows
  (counted from the start of each file), so the files are byte-identical for any
  ``chunk_rows``, and concatenating the shards gives the same table for any ``shards``.
* Random draws never depend on ``drift``: drift is applied as a deterministic
  transform after drawing. ``drift=0`` is therefore exactly the base generator, and
  the same ``seed`` at different drifts describes the same customers (same ids, same
  ``age``/``tenure_months``/``account_balance``/``num_transactions``), shifted.

What ``drift`` (0 = none, 1 = strong) changes:

* covariates: ``income`` down (x exp(-0.25 d)), ``credit_score`` down (-40 d),
  ``utilization`` up (u ** (1 / (1 + 0.8 d))), ``session_minutes`` up (x (1 + 0.5 d)),
  ``days_since_login`` up (x (1 + 0.6 d)) and missing more often (5% -> 8%), and the
  region, device and plan mix (more ``free`` plans);
* unseen categories: ``region_X``/``region_Y`` (probability 0.10 d) and
  ``mcc_new_00`` .. ``mcc_new_19`` (probability 0.15 d);
* concept: the label coefficients change (stronger utilization x tenure interaction,
  weaker credit-score slope, premium plan no longer protective, risky new merchants);
* time: ``event_time`` moves ``d * 365`` days later (d = 1: a non-overlapping year).
"""

from __future__ import annotations

import math
import numbers
import os
import pathlib
import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_ray.storage import Location, is_uri

__all__ = ["BLOCK_ROWS", "FEATURE_SPEC", "ROW_GROUP_ROWS", "generate_dataset"]

FEATURE_SPEC: dict = {
    "id_column": "customer_id",
    "timestamp_column": "event_time",
    "label_column": "label",
    "numeric": [
        "age",
        "income",
        "credit_score",
        "account_balance",
        "num_transactions",
        "days_since_login",
        "utilization",
        "tenure_months",
        "session_minutes",
    ],
    "categorical": ["region", "device", "plan", "merchant_category"],
}

#: Rows per random-number block. Part of the determinism contract: changing it changes the data.
BLOCK_ROWS = 65_536
#: Rows per Parquet row group (the last row group of a file may be smaller).
ROW_GROUP_ROWS = 131_072
#: Largest supported ``rows`` (ids have 10 zero-padded digits).
MAX_ROWS = 10**10

_SALT = 0xD1F7
_EPOCH_US = 1_704_067_200 * 1_000_000  # 2024-01-01T00:00:00Z
_YEAR_US = 365 * 86_400 * 1_000_000

# One independent random stream per column group (the last element of the seed key).
_S_LATENT, _S_DEMO, _S_ACCOUNT, _S_ACTIVITY, _S_CATEGORICAL, _S_TIME, _S_LABEL = range(7)

_REGIONS = ["north", "south", "east", "west", "central", "coastal", "mountain", "islands"]
_REGION_P0 = np.array([0.20, 0.18, 0.15, 0.14, 0.12, 0.10, 0.07, 0.04])
_REGION_P1 = np.array([0.10, 0.14, 0.12, 0.12, 0.12, 0.16, 0.12, 0.12])  # mix at drift = 1
_NEW_REGIONS = ["region_X", "region_Y"]

_DEVICES = ["android", "ios", "web", "tablet"]
_DEVICE_P0 = np.array([0.45, 0.30, 0.18, 0.07])
_DEVICE_P1 = np.array([0.30, 0.30, 0.30, 0.10])

_PLANS = ["free", "basic", "standard", "premium"]
_PLAN_CUTS = np.array([-0.5, 0.4, 1.2])  # on an N(0, 1) "affluence + noise" score

_N_MERCHANTS = 300
_MERCHANTS = [f"mcc_{k:03d}" for k in range(_N_MERCHANTS)]
_MERCHANT_P = 1.0 / np.arange(1, _N_MERCHANTS + 1) ** 1.1  # Zipf-like
_MERCHANT_P /= _MERCHANT_P.sum()
_RISKY_MERCHANT = (np.arange(_N_MERCHANTS) % 7) == 3
_NEW_MERCHANTS = [f"mcc_new_{k:02d}" for k in range(20)]

# Label logit contributions per category code (new levels included).
_REGION_EFFECT = np.array([0.0, 0.35, 0.0, 0.0, -0.1, -0.3, 0.0, 0.5] + [0.4] * len(_NEW_REGIONS))
_MERCHANT_EFFECT = np.concatenate([0.6 * _RISKY_MERCHANT, np.full(len(_NEW_MERCHANTS), 0.8)])

_F64 = pa.float64()
_SCHEMA = pa.schema(
    [pa.field("customer_id", pa.string(), nullable=False)]
    + [pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False)]
    + [pa.field(name, _F64) for name in FEATURE_SPEC["numeric"]]
    + [pa.field(name, pa.string()) for name in FEATURE_SPEC["categorical"]]
    + [pa.field("label", pa.int64(), nullable=False)]
)


# --------------------------------------------------------------------------- public API


def generate_dataset(
    out_dir: str | os.PathLike,
    rows: int,
    *,
    shards: int = 4,
    seed: int = 0,
    drift: float = 0.0,
    chunk_rows: int = 250_000,
    progress: Callable[[int], None] | None = None,
) -> list[pathlib.Path] | list[str]:
    """Write ``shards`` Parquet files ``part-00000.parquet`` ... into ``out_dir``.

    Args:
        out_dir: target directory (created if missing). Existing ``part-NNNNN.parquet``
            files this run writes are replaced; a leftover one with a higher index
            (from a run with more shards) is an error, since it would silently join
            the dataset.
        rows: total rows, ``1 <= rows <= MAX_ROWS``.
        shards: number of files, ``1 <= shards <= rows``.
        seed: non-negative integer; different seeds give disjoint ids and
            independent data.
        drift: ``0 <= drift <= 1``; see the module docstring.
        chunk_rows: rows generated and held in memory per step (does not change the
            output).
        progress: called after each chunk with the number of rows that chunk wrote
            (an increment, e.g. ``tqdm.update``); the calls sum to ``rows``.

    Returns:
        The shard paths, in order.

    Raises:
        ValueError: an argument is out of range (the message names it).
    """
    rows = _check_int("rows", rows, 1, MAX_ROWS)
    shards = _check_int("shards", shards, 1, rows, upper_name="rows")
    seed = _check_int("seed", seed, 0, None)
    chunk_rows = _check_int("chunk_rows", chunk_rows, 1, None)
    drift = _check_drift(drift)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None, got {type(progress).__name__}")

    if is_uri(str(out_dir)) and not str(out_dir).lower().startswith("file://"):
        return _generate_to_uri(str(out_dir), rows, shards, seed, drift, chunk_rows, progress)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_no_stale_shards(out, shards)

    source = _BlockSource(seed, drift)
    paths = []
    for shard, (start, stop) in enumerate(_shard_bounds(rows, shards)):
        path = out / f"part-{shard:05d}.parquet"
        _write_shard(path, source, start, stop, chunk_rows, progress)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value, low: int, high: int | None, upper_name: str | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        bound = f"{upper_name} ({high})" if upper_name else str(high)
        raise ValueError(f"{name} must be <= {bound}, got {value}")
    return value


def _check_drift(drift) -> float:
    """Return ``drift`` as a float in ``[0, 1]`` or raise ValueError."""
    if isinstance(drift, bool) or not isinstance(drift, numbers.Real):
        raise ValueError(f"drift must be a number in [0, 1], got {drift!r}")
    drift = float(drift)
    if not 0.0 <= drift <= 1.0:  # also rejects NaN
        raise ValueError(f"drift must be in [0, 1], got {drift}")
    return drift


def _generate_to_uri(uri: str, rows, shards, seed, drift, chunk_rows, progress) -> list[str]:
    """An object-store ``out_dir``: the shards are written locally, then uploaded (same files, same names)."""
    import tempfile

    import pyarrow.fs as pafs

    dest = Location.of(uri)
    _check_no_stale_shards(dest, shards)
    out = []
    with tempfile.TemporaryDirectory(prefix="mlops-ray-generate-") as tmp:
        for path in generate_dataset(
            tmp, rows, shards=shards, seed=seed, drift=drift, chunk_rows=chunk_rows, progress=progress
        ):
            target = dest / path.name
            pafs.copy_files(str(path), target.path, destination_filesystem=target.fs)
            out.append(str(target))
    return out


def _check_no_stale_shards(out: pathlib.Path | Location, shards: int) -> None:
    """Refuse to leave ``part-NNNNN.parquet`` files from an earlier, larger run in ``out``."""
    pattern = re.compile(r"part-(\d{5})\.parquet")
    names = [r for r in out.files() if "/" not in r] if isinstance(out, Location) else [p.name for p in out.iterdir()]
    stale = sorted(n for n in names if (m := pattern.fullmatch(n)) and int(m.group(1)) >= shards)
    if stale:
        raise ValueError(
            f"out_dir {str(out)!r} already contains {', '.join(stale[:3])}"
            f"{' ...' if len(stale) > 3 else ''} from an earlier run with more shards; "
            f"remove them or use an empty directory"
        )


# --------------------------------------------------------------------------- layout and writing


def _shard_bounds(rows: int, shards: int) -> list[tuple[int, int]]:
    """Global ``[start, stop)`` per shard; the first ``rows % shards`` shards get one extra row."""
    base, extra = divmod(rows, shards)
    bounds, start = [], 0
    for shard in range(shards):
        stop = start + base + (1 if shard < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _write_shard(
    path: pathlib.Path,
    source: _BlockSource,
    start: int,
    stop: int,
    chunk_rows: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Write global rows ``[start, stop)`` to ``path`` chunk by chunk, atomically (tmp + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with pq.ParquetWriter(tmp, _SCHEMA, compression="snappy") as writer:
            pending: list[pa.Table] = []
            n_pending = 0
            for lo in range(start, stop, chunk_rows):
                hi = min(lo + chunk_rows, stop)
                pending.append(source.rows(lo, hi))
                n_pending += hi - lo
                if n_pending >= ROW_GROUP_ROWS:
                    pending, n_pending = _flush_row_groups(writer, pending, final=False)
                if progress is not None:
                    progress(hi - lo)
            _flush_row_groups(writer, pending, final=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _flush_row_groups(writer: pq.ParquetWriter, pending: list[pa.Table], final: bool):
    """Write every full ROW_GROUP_ROWS row group in ``pending`` (and the rest if ``final``).

    Each row group is written from contiguous arrays, so the file bytes do not depend on
    how the rows were chunked. Returns the unwritten remainder and its row count.
    """
    if not pending:
        return [], 0
    table = pa.concat_tables(pending)
    n = table.num_rows
    written = n if final else n - n % ROW_GROUP_ROWS
    for lo in range(0, written, ROW_GROUP_ROWS):
        group = table.slice(lo, min(ROW_GROUP_ROWS, written - lo)).combine_chunks()
        writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
    rest = table.slice(written)
    return ([rest] if rest.num_rows else []), rest.num_rows


class _BlockSource:
    """Serves arbitrary global row ranges, generating whole blocks and caching the last one.

    Shards and chunks are consumed in increasing row order, so each block is generated
    exactly once even when chunk or shard boundaries fall inside it.
    """

    def __init__(self, seed: int, drift: float):
        self.seed = seed
        self.drift = drift
        self._cached: tuple[int, pa.Table] | None = None

    def block(self, index: int) -> pa.Table:
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, _block_table(self.seed, self.drift, index))
        return self._cached[1]

    def rows(self, start: int, stop: int) -> pa.Table:
        """Global rows ``[start, stop)`` as a table."""
        parts = []
        for b in range(start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS + 1):
            b0 = b * BLOCK_ROWS
            lo, hi = max(start, b0) - b0, min(stop, b0 + BLOCK_ROWS) - b0
            parts.append(self.block(b).slice(lo, hi - lo))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


# --------------------------------------------------------------------------- one block


def _rng(seed: int, block: int, stream: int) -> np.random.Generator:
    """The independent generator for one column group of one block."""
    return np.random.default_rng([_SALT, seed, block, stream])


def _block_table(seed: int, drift: float, block: int) -> pa.Table:
    """Generate global rows ``[block * BLOCK_ROWS, (block + 1) * BLOCK_ROWS)``."""
    n = BLOCK_ROWS
    latent = _latent(_rng(seed, block, _S_LATENT), n)
    demo = _demographics(_rng(seed, block, _S_DEMO), latent, drift)
    account = _account(_rng(seed, block, _S_ACCOUNT), latent, demo, drift)
    activity = _activity(_rng(seed, block, _S_ACTIVITY), latent, drift)
    cats = _categoricals(_rng(seed, block, _S_CATEGORICAL), latent, drift)
    label = _label(_rng(seed, block, _S_LABEL), {**demo, **account, **activity}, cats, drift)

    columns = {
        "customer_id": _customer_ids(seed, block * BLOCK_ROWS, n),
        "event_time": _event_time(_rng(seed, block, _S_TIME), n, drift),
    }
    values = {**demo, **account, **activity}
    for name in FEATURE_SPEC["numeric"]:
        columns[name] = pa.array(values[name], type=_F64, mask=values.get(f"{name}__missing"))
    for name in FEATURE_SPEC["categorical"]:
        levels, codes, missing = cats[name]
        columns[name] = pa.array(levels, type=pa.string()).take(pa.array(codes, mask=missing))
    columns["label"] = pa.array(label, type=pa.int64())
    return pa.table(columns, schema=_SCHEMA)


def _customer_ids(seed: int, start: int, n: int) -> pa.Array:
    """``f"c{seed}-{row:010d}"`` for global rows ``start .. start + n - 1``, built from bytes."""
    prefix = np.frombuffer(f"c{seed}-".encode(), dtype=np.uint8)
    width = prefix.size + 10
    buf = np.empty((n, width), dtype=np.uint8)
    buf[:, : prefix.size] = prefix
    rest = np.arange(start, start + n, dtype=np.int64)
    for col in range(width - 1, prefix.size - 1, -1):
        buf[:, col] = rest % 10 + ord("0")
        rest //= 10
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(buf)])


def _event_time(rng: np.random.Generator, n: int, drift: float) -> pa.Array:
    """Uniform over 2024 (365 days), moved ``drift`` years later."""
    offset = rng.integers(0, _YEAR_US, size=n, dtype=np.int64)
    us = offset + (_EPOCH_US + round(drift * _YEAR_US))
    return pa.array(us, type=pa.timestamp("us", tz="UTC"))


def _latent(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Hidden factors that correlate the observed features: affluence and engagement."""
    return {"affluence": rng.standard_normal(n), "engagement": rng.standard_normal(n)}


def _demographics(rng: np.random.Generator, latent: dict, drift: float) -> dict[str, np.ndarray]:
    """``age`` (18-95, whole years), ``income`` (lognormal, 3% missing), ``credit_score`` (300-850)."""
    z = latent["affluence"]
    n = z.size
    age = np.clip(np.rint(18.0 + rng.gamma(4.0, 6.5, size=n)), 18.0, 95.0)
    hump = 1.0 - ((age - 50.0) / 32.0) ** 2  # earnings peak in mid-life
    income = np.exp(10.55 + 0.40 * z + 0.35 * hump + 0.50 * rng.standard_normal(n))
    credit = 655.0 + 55.0 * z + 1.1 * (age - 40.0) + 50.0 * rng.standard_normal(n)
    income_missing = rng.random(n) < 0.03

    base_income = income
    income = np.round(income * math.exp(-0.25 * drift), 2)
    credit = np.clip(np.rint(credit - 40.0 * drift), 300.0, 850.0)
    return {
        "age": age,
        "income": income,
        "income__base": base_income,  # pre-drift, for columns that must not drift
        "income__missing": income_missing,
        "credit_score": credit,
    }


def _account(rng: np.random.Generator, latent: dict, demo: dict, drift: float) -> dict[str, np.ndarray]:
    """``account_balance`` (heavy-tailed, signed), ``tenure_months`` (0-240), ``utilization`` ([0, 1])."""
    z = latent["affluence"]
    n = z.size
    balance = 0.04 * demo["income__base"] + 1500.0 * z + 2500.0 * rng.standard_t(2.5, size=n)
    cap = np.minimum(240.0, 12.0 * (demo["age"] - 18.0))
    tenure = np.floor(cap * rng.beta(1.0, 2.5, size=n))
    utilization = rng.beta(2.0, 5.0, size=n) ** np.exp(0.25 * z)  # affluent -> lower

    utilization = utilization ** (1.0 / (1.0 + 0.8 * drift))
    return {"account_balance": np.round(balance, 2), "tenure_months": tenure, "utilization": utilization}


def _activity(rng: np.random.Generator, latent: dict, drift: float) -> dict[str, np.ndarray]:
    """``num_transactions`` (Poisson), ``days_since_login`` (exponential, ~5% missing),
    ``session_minutes`` (gamma)."""
    e, z = latent["engagement"], latent["affluence"]
    n = e.size
    num_tx = rng.poisson(np.exp(2.6 + 0.45 * e + 0.2 * z)).astype(np.float64)
    days = rng.exponential(1.0, size=n) * 12.0 * np.exp(-0.6 * e)
    session = rng.gamma(2.0, 1.0, size=n) * 9.0 * np.exp(0.35 * e)
    u_missing = rng.random(n)

    days = np.round(days * (1.0 + 0.6 * drift), 1)
    session = np.round(session * (1.0 + 0.5 * drift), 2)
    return {
        "num_transactions": num_tx,
        "days_since_login": days,
        "days_since_login__missing": u_missing < 0.05 + 0.03 * drift,
        "session_minutes": session,
    }


def _categoricals(rng: np.random.Generator, latent: dict, drift: float) -> dict[str, tuple]:
    """``region`` (8 levels), ``device`` (4 levels, 4% missing), ``plan`` (4 ordered levels,
    driven by affluence), ``merchant_category`` (300 Zipf-like levels).

    Each value is ``(levels, codes, missing_mask_or_None)``; drift adds unseen levels.
    """
    z = latent["affluence"]
    n = z.size
    u_region, u_region_new, u_device, u_device_missing = (rng.random(n) for _ in range(4))
    plan_score = 0.8 * z + 0.6 * rng.standard_normal(n)
    u_merchant, u_merchant_new = rng.random(n), rng.random(n)
    new_merchant_pick = rng.integers(0, len(_NEW_MERCHANTS), size=n)

    region = _inverse_cdf((1.0 - drift) * _REGION_P0 + drift * _REGION_P1, u_region)
    is_new_region = u_region_new < 0.10 * drift
    region[is_new_region] = len(_REGIONS) + (u_region_new[is_new_region] < 0.05 * drift)

    device = _inverse_cdf((1.0 - drift) * _DEVICE_P0 + drift * _DEVICE_P1, u_device)
    plan = np.searchsorted(_PLAN_CUTS + 0.3 * drift, plan_score, side="right")

    merchant = _inverse_cdf(_MERCHANT_P, u_merchant)
    is_new_merchant = u_merchant_new < 0.15 * drift
    merchant[is_new_merchant] = _N_MERCHANTS + new_merchant_pick[is_new_merchant]

    return {
        "region": (_REGIONS + _NEW_REGIONS, region, None),
        "device": (_DEVICES, device, u_device_missing < 0.04),
        "plan": (_PLANS, plan, None),
        "merchant_category": (_MERCHANTS + _NEW_MERCHANTS, merchant, None),
    }


def _inverse_cdf(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Category codes (int64) for uniforms ``u`` under probabilities ``p``."""
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    return np.searchsorted(cdf, u, side="right")


def _label(rng: np.random.Generator, num: dict, cats: dict, drift: float) -> np.ndarray:
    """Binary churn/default label from a non-linear logit plus noise (logistic link).

    Uses true values, also where the observed value is missing; missingness of
    ``days_since_login`` itself is informative. ``drift`` changes coefficients.
    """
    n = num["age"].size
    noise, u = rng.standard_normal(n), rng.random(n)

    util_high = 1.0 / (1.0 + np.exp(-15.0 * (num["utilization"] - 0.55)))
    new_customer = num["tenure_months"] < 18.0
    region, device = cats["region"][1], cats["device"][1]
    plan, merchant = cats["plan"][1], cats["merchant_category"][1]
    device_known = ~cats["device"][2]
    plan_effect = np.array([0.6, 0.2, 0.0, -0.5 + 1.0 * drift])  # premium stops protecting

    logit = (
        -2.85
        + 0.2 * drift
        + (2.0 + 1.2 * drift) * util_high * new_customer  # maxed out AND new: risky
        + 0.5 * util_high
        + 0.55 * ((num["age"] - 48.0) / 18.0) ** 2  # U-shape in age
        - 0.011 * (1.0 - 0.5 * drift) * (num["credit_score"] - 680.0)
        - 0.45 * np.log(np.maximum(num["income"], 1.0) / 50_000.0)
        + 0.7 * (num["account_balance"] < 0.0)
        + 0.9 * (num["days_since_login"] > 30.0)
        + 0.5 * num["days_since_login__missing"]
        - 0.3 * (np.log1p(num["num_transactions"]) - 2.6)
        + 0.8 * ((device == 2) & device_known & (num["session_minutes"] < 6.0))  # short web visits
        + plan_effect[plan]
        + _REGION_EFFECT[region]
        + _MERCHANT_EFFECT[merchant]
        + 0.5 * noise
    )
    return (u < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
