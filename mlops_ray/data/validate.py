"""Validation of source data against the declared contract (pure Arrow/NumPy).

Two levels:

* :func:`resolve_spec` checks the *schema* once, before any data is read:
  required columns present, feature types plausible; it also infers feature
  lists that the config leaves out.
* :func:`validate_batch` checks *values* batch by batch (streaming): ids not null,
  declared types castable, label valid for the task, no infinities. It returns a
  cleaned, cast table plus a mergeable :class:`ValidationReport` with examples of
  bad rows. Duplicate ids are a global property, checked by the caller from the
  id hashes every batch returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_ray.errors import DataValidationError

MAX_EXAMPLES = 5
_NUMBER_RE = r"^\s*[-+]?((\d+(\.\d*)?)|(\.\d+))([eE][-+]?\d+)?\s*$|^\s*([-+]?(inf|infinity)|nan)\s*$"


@dataclass(frozen=True)
class DataSpec:
    """Resolved column roles; small and picklable so Ray tasks can carry it."""

    id_column: str
    label_column: str
    task: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    timestamp_column: str | None = None

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def columns(self) -> tuple[str, ...]:
        extra = (self.timestamp_column,) if self.timestamp_column else ()
        return (self.id_column,) + extra + self.features + (self.label_column,)


def _is_numeric_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)


def _is_string_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def column_type_problems(schema: pa.Schema, numeric, categorical, id_column: str) -> list[str]:
    """One line per column whose Arrow type cannot serve its role (numeric feature, categorical
    feature, id); shared by ``data prepare`` and batch inference's input check."""
    problems = []
    for c in numeric:
        t = schema.field(c).type
        if not (_is_numeric_type(t) or _is_string_type(t) or pa.types.is_null(t)):
            problems.append(f"numeric feature {c!r} has type {t}, which cannot be cast to float64")
    for c in categorical:
        t = schema.field(c).type
        if not (_is_string_type(t) or pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_null(t)):
            problems.append(f"categorical feature {c!r} has type {t}; expected string or integer")
    idt = schema.field(id_column).type
    if not (_is_string_type(idt) or pa.types.is_integer(idt)):
        problems.append(f"id column {id_column!r} has type {idt}; expected string or integer")
    return problems


def resolve_spec(schema: pa.Schema, data_cfg) -> DataSpec:
    """Check the source schema against ``data_cfg`` (a DataConfig) and infer feature lists.

    Raises:
        DataValidationError: listing every missing column and impossible type.
    """
    names = set(schema.names)
    problems = []
    special = [data_cfg.id_column, data_cfg.label_column] + (
        [data_cfg.timestamp_column] if data_cfg.timestamp_column else []
    )
    declared = list(data_cfg.numeric_features or []) + list(data_cfg.categorical_features or [])
    missing = [c for c in special + declared if c not in names]
    for c in missing:
        role = {data_cfg.id_column: "id_column", data_cfg.label_column: "label_column"}.get(c, "feature")
        if c == data_cfg.timestamp_column:
            role = "timestamp_column"
        problems.append(f"column {c!r} ({role}) is missing from the source; available: {sorted(names)}")
    if problems:
        raise DataValidationError(problems)

    taken = set(special)
    if data_cfg.numeric_features is not None:
        numeric = list(data_cfg.numeric_features)
    else:
        numeric = [
            f.name
            for f in schema
            if f.name not in taken and _is_numeric_type(f.type) and f.name not in (data_cfg.categorical_features or [])
        ]
    if data_cfg.categorical_features is not None:
        categorical = list(data_cfg.categorical_features)
    else:
        categorical = [
            f.name for f in schema if f.name not in taken and f.name not in numeric and _is_string_type(f.type)
        ]
    problems += column_type_problems(schema, numeric, categorical, data_cfg.id_column)
    if not numeric and not categorical:
        problems.append("no feature columns: declare data.numeric_features / data.categorical_features")
    if problems:
        raise DataValidationError(problems)
    return DataSpec(
        id_column=data_cfg.id_column,
        label_column=data_cfg.label_column,
        task=data_cfg.task,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        timestamp_column=data_cfg.timestamp_column,
    )


NUMERIC_TEXT_SHARE = 0.95  # inferred-categorical columns with at least this share of numbers get a warning


def inferred_text_categoricals(schema: pa.Schema, spec: DataSpec, data_cfg) -> list[str]:
    """Categorical features that inference chose because they hold text (none when the config lists them)."""
    if data_cfg.categorical_features is not None:
        return []
    return [c for c in spec.categorical if _is_string_type(schema.field(c).type)]


def _numbers_mask(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(non-null, parses as a number) masks of a string column."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    present = np.asarray(pc.is_valid(col))
    number = np.asarray(pc.fill_null(pc.match_substring_regex(col, _NUMBER_RE, ignore_case=True), False))
    return present, number & present


def numeric_text_warnings(
    batches, columns: list[str], *, sample_rows: int = 10_000, scan_rows: int = 1_000_000, min_values: int = 20
) -> list[str]:
    """Warnings for text columns inferred as categorical whose values are mostly numbers.

    A numeric column holding one stray string (``"abc"``, ``"n/a"``) is read as text and would
    silently become a categorical feature. Checks the first ``sample_rows`` rows of ``batches``
    (Arrow tables with ``columns``); a column with at least ``min_values`` non-null values of which
    a share of :data:`NUMERIC_TEXT_SHARE` or more parse as numbers is flagged, with an example of a
    value that is not a number (looked for in up to ``scan_rows`` rows when the sample has none).
    """
    stats = {c: [0, 0, None] for c in columns}  # non-null, numbers, example non-number
    seen = 0
    flagged: list[str] | None = None
    for t in batches:
        if flagged is None:  # sampling
            t = t.slice(0, sample_rows - seen)
        for c in columns if flagged is None else flagged:
            if c not in t.column_names:
                continue
            col = t.column(c).combine_chunks()
            present, number = _numbers_mask(col)
            odd = present & ~number
            st = stats[c]
            if flagged is None:
                st[0] += int(present.sum())
                st[1] += int(number.sum())
            if st[2] is None and odd.any():
                st[2] = col[int(np.flatnonzero(odd)[0])].as_py()
        seen += t.num_rows
        if flagged is None and seen >= sample_rows:
            flagged = [c for c, (n, k, _) in stats.items() if n >= min_values and k >= NUMERIC_TEXT_SHARE * n]
        if flagged is not None and (seen >= scan_rows or all(stats[c][2] is not None for c in flagged)):
            break
    if flagged is None:
        flagged = [c for c, (n, k, _) in stats.items() if n >= min_values and k >= NUMERIC_TEXT_SHARE * n]
    out = []
    for c in flagged:
        n, k, example = stats[c]
        why = (
            f"e.g. {example!r} is not a number"
            if example is not None
            else f"no value that is not a number in the first {min(seen, scan_rows):,} rows"
        )
        out.append(
            f"column {c!r} holds text and was inferred as categorical, but {k / n:.1%} of {n:,} sampled values "
            f"are numbers ({why}): list it in data.numeric_features to treat it as numeric (values that are "
            "not numbers are then reported with their rows), or in data.categorical_features to keep it "
            "categorical and silence this warning"
        )
    return out


@dataclass
class ValidationReport:
    """Mergeable per-problem counts with a few example rows each."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.counts

    def add(self, problem: str, n: int, examples: list[str]) -> None:
        if n <= 0:
            return
        self.counts[problem] = self.counts.get(problem, 0) + int(n)
        ex = self.examples.setdefault(problem, [])
        ex.extend(examples[: MAX_EXAMPLES - len(ex)])

    def merge(self, other: "ValidationReport") -> "ValidationReport":
        for p, n in other.counts.items():
            self.add(p, n, other.examples.get(p, []))
        return self

    def lines(self) -> list[str]:
        return [f"{p}: {n} row(s); e.g. " + "; ".join(self.examples.get(p, [])) for p, n in sorted(self.counts.items())]

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise DataValidationError(self.lines())


def _examples(table: pa.Table, mask: np.ndarray, spec: DataSpec, focus: str) -> list[str]:
    """Render up to MAX_EXAMPLES bad rows as ``id=..., col=...``."""
    idx = np.flatnonzero(mask)[:MAX_EXAMPLES]
    if not len(idx):
        return []
    rows = table.take(pa.array(idx))
    ids = rows.column(spec.id_column).to_pylist()
    vals = rows.column(focus).to_pylist()
    return [f"{spec.id_column}={i!r} {focus}={v!r}" for i, v in zip(ids, vals)]


def _cast_numeric(col: pa.Array, name: str, table: pa.Table, spec: DataSpec, report: ValidationReport) -> pa.Array:
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
        t = col.type
    if _is_string_type(t):
        ok = pc.fill_null(pc.match_substring_regex(col, _NUMBER_RE, ignore_case=True), True)
        bad = ~np.asarray(ok)
        if bad.any():
            report.add(
                f"column {name!r}: values not castable to float64", int(bad.sum()), _examples(table, bad, spec, name)
            )
            col = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), col)
        col = pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
    elif pa.types.is_null(t):
        col = pa.nulls(len(col), pa.float64())
    else:
        col = pc.cast(col, pa.float64())
    vals = col.to_numpy(zero_copy_only=False)
    inf = np.isinf(vals)
    if inf.any():
        report.add(
            f"column {name!r}: infinite values (use null for missing)",
            int(inf.sum()),
            _examples(table, inf, spec, name),
        )
    return col


def _check_label(col: pa.Array, table: pa.Table, spec: DataSpec, report: ValidationReport) -> pa.Array:
    name = spec.label_column
    nulls = np.asarray(col.is_null())
    if nulls.any():
        report.add(f"label {name!r}: null labels", int(nulls.sum()), _examples(table, nulls, spec, name))
    t = col.type
    if spec.task == "regression":
        if not _is_numeric_type(t):
            report.add(f"label {name!r}: regression needs a numeric label, got {t}", len(col), [])
            return pa.nulls(len(col), pa.float64())
        col = pc.cast(col, pa.float64())
        v = col.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(v) & ~nulls
        if bad.any():
            report.add(f"label {name!r}: non-finite values", int(bad.sum()), _examples(table, bad, spec, name))
        return col
    if not _is_numeric_type(t):
        report.add(
            f"label {name!r}: {spec.task} needs integer class labels, got {t}",
            len(col),
            _examples(table, np.ones(len(col), bool), spec, name),
        )
        return pa.nulls(len(col), pa.int64())
    v = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        if spec.task == "binary":
            bad = ~np.isin(v, (0.0, 1.0)) & ~nulls
            what = "binary labels must be 0 or 1"
        else:
            bad = ((v < 0) | (v != np.floor(v)) | ~np.isfinite(v)) & ~nulls
            what = "multiclass labels must be integers >= 0"
    if bad.any():
        report.add(f"label {name!r}: {what}", int(bad.sum()), _examples(table, bad, spec, name))
    return pc.cast(
        pc.if_else(pa.array(bad | nulls), pa.scalar(None, pa.float64()), pc.cast(col, pa.float64())), pa.int64()
    )


def validate_batch(table: pa.Table, spec: DataSpec) -> tuple[pa.Table, ValidationReport]:
    """Validate one batch and return it cast to the canonical types.

    Canonical types: id as string, numeric features float64, categorical string,
    label int64 (float64 for regression), timestamp unchanged. Columns not in the
    spec are kept as they are.
    """
    report = ValidationReport()
    ids = table.column(spec.id_column)
    id_null = np.asarray(ids.is_null())
    if id_null.any():
        report.add(
            f"id {spec.id_column!r}: null ids", int(id_null.sum()), _examples(table, id_null, spec, spec.id_column)
        )
    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if name == spec.id_column:
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            col = (
                col
                if _is_string_type(col.type) and not pa.types.is_string_view(col.type)
                else pc.cast(col, pa.string())
            )
            if pa.types.is_large_string(col.type):
                col = pc.cast(col, pa.string())
        elif name in spec.numeric:
            col = _cast_numeric(col, name, table, spec, report)
        elif name in spec.categorical:
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            if not pa.types.is_string(col.type):
                col = pc.cast(col, pa.string())
        elif name == spec.label_column:
            col = _check_label(col, table, spec, report)
        out[name] = col
    return pa.table(out), report
