"""Preprocessing fitted on the train split only; the same object runs at serving time.

Pure NumPy/Arrow and JSON-serialisable (no pickle), so a model artifact can carry
it and any process can rebuild it exactly.

* numeric: impute (median/mean/constant) then scale (standard/minmax/none);
  optional missing-indicator columns.
* categorical: the ``max_categories`` most frequent train values with at least
  ``min_frequency`` rows are kept; everything else (rare or unseen at training
  time) goes to an explicit ``__other__`` bucket, nulls to ``__missing__``.
  ``onehot`` emits one 0/1 column per kept value plus both buckets; ``ordinal``
  emits one column of codes (kept values 0..K-1, other K, missing NaN).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_ray.data.bins import MISSING, OTHER
from mlops_ray.data.stats import TrainStats

FORMAT_VERSION = 1


@dataclass
class NumericParams:
    name: str
    fill: float
    center: float
    scale: float  # divide by; 1.0 means no scaling


@dataclass
class CategoricalParams:
    name: str
    categories: list[str]


@dataclass
class Preprocessor:
    """Fitted transform from raw feature columns to a float32 matrix."""

    numeric: list[NumericParams]
    categorical: list[CategoricalParams]
    encoding: str = "onehot"
    add_missing_indicator: bool = False
    version: int = FORMAT_VERSION
    _lookup: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, stats: TrainStats, categorical: tuple[str, ...], numeric_cfg, categorical_cfg) -> "Preprocessor":
        """Fit from merged train statistics.

        Args:
            stats: merged :class:`TrainStats` of the train split.
            numeric_cfg / categorical_cfg: ``NumericPreprocessing`` / ``CategoricalPreprocessing`` configs.
        """
        nums = []
        for name in stats.numeric_names:
            m = stats.numeric[name]
            if numeric_cfg.impute == "mean":
                fill = m.mean
            elif numeric_cfg.impute == "median":
                sample = stats.sample_column(name)
                fill = float(np.median(sample)) if sample.size else float("nan")
            else:
                fill = float(numeric_cfg.fill_value)
            if not np.isfinite(fill):  # feature entirely missing in train
                fill = float(numeric_cfg.fill_value)
            center, scale = 0.0, 1.0
            if numeric_cfg.scale == "standard" and m.count:
                center, scale = m.mean, (m.std or 1.0)
            elif numeric_cfg.scale == "minmax" and m.count:
                center, scale = m.min, ((m.max - m.min) or 1.0)
            nums.append(NumericParams(name, float(fill), float(center), float(scale)))
        cats = []
        for name in categorical:
            counts = {k: v for k, v in stats.categories.get(name, {}).items() if k != MISSING}
            kept = sorted(
                (kv for kv in counts.items() if kv[1] >= categorical_cfg.min_frequency),
                key=lambda kv: (-kv[1], kv[0]),
            )[: categorical_cfg.max_categories]
            cats.append(CategoricalParams(name, [k for k, _ in kept]))
        return cls(nums, cats, categorical_cfg.encoding, numeric_cfg.add_missing_indicator)

    # --------------------------------------------------------------- transform
    @property
    def input_columns(self) -> list[str]:
        return [p.name for p in self.numeric] + [p.name for p in self.categorical]

    @property
    def feature_names(self) -> list[str]:
        names = [p.name for p in self.numeric]
        if self.add_missing_indicator:
            names += [f"{p.name}__is_missing" for p in self.numeric]
        for p in self.categorical:
            if self.encoding == "onehot":
                names += [f"{p.name}={c}" for c in p.categories] + [f"{p.name}={OTHER}", f"{p.name}={MISSING}"]
            else:
                names.append(p.name)
        return names

    def _codes(self, p: CategoricalParams, col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Category index per row (-1 = other) and missing mask."""
        if not pa.types.is_string(col.type):
            col = pc.cast(col.dictionary_decode() if pa.types.is_dictionary(col.type) else col, pa.string())
        vs = self._lookup.get(p.name)
        if vs is None:
            vs = self._lookup[p.name] = pa.array(p.categories, type=pa.string())
        idx = pc.index_in(col, value_set=vs)
        missing = np.asarray(col.is_null())
        codes = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        return codes, missing

    def transform(self, data: pa.Table | pd.DataFrame) -> np.ndarray:
        """Raw rows -> float32 matrix, shape (n, len(feature_names)).

        Accepts an Arrow table or a pandas DataFrame with at least ``input_columns``
        (extra columns are ignored). Numeric columns may be any numeric dtype; categorical
        values are compared as strings.
        """
        if isinstance(data, pd.DataFrame):
            table = pa.Table.from_pandas(data[self.input_columns], preserve_index=False)
        else:
            table = data
        n = table.num_rows
        blocks = []
        nmiss = []
        for p in self.numeric:
            col = table.column(p.name)
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            if not pa.types.is_floating(col.type):
                col = pc.cast(col, pa.float64())
            v = col.to_numpy(zero_copy_only=False).astype(np.float64)
            miss = np.isnan(v)
            v = np.where(miss, p.fill, v)
            blocks.append(((v - p.center) / p.scale).astype(np.float32))
            nmiss.append(miss.astype(np.float32))
        cols = blocks + (nmiss if self.add_missing_indicator else [])
        out_num = np.column_stack(cols) if cols else np.empty((n, 0), np.float32)
        cat_blocks = []
        for p in self.categorical:
            col = table.column(p.name)
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            codes, missing = self._codes(p, col)
            k = len(p.categories)
            if self.encoding == "onehot":
                pos = np.where(missing, k + 1, np.where(codes < 0, k, codes))
                block = np.zeros((n, k + 2), dtype=np.float32)
                block[np.arange(n), pos] = 1.0
            else:
                block = np.where(missing, np.nan, np.where(codes < 0, k, codes)).astype(np.float32)[:, None]
            cat_blocks.append(block)
        return np.hstack([out_num, *cat_blocks]) if cat_blocks else out_num

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_lookup", None)
        d["feature_names"] = self.feature_names
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessor":
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported preprocessor format version {d.get('version')!r}")
        return cls(
            numeric=[NumericParams(**p) for p in d["numeric"]],
            categorical=[CategoricalParams(**p) for p in d["categorical"]],
            encoding=d["encoding"],
            add_missing_indicator=d["add_missing_indicator"],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Preprocessor":
        return cls.from_dict(json.loads(Path(path).read_text()))
