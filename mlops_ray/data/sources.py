"""Locating and reading sharded Parquet/CSV sources, local or on an object store.

Paths go through ``pyarrow.fs`` so ``s3://``/``gs://`` URIs work wherever the
matching credentials are configured. No Ray here: the Ray Data reader lives in
:mod:`mlops_ray.data.ray_io`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from mlops_ray.errors import DataValidationError

_EXT = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".csv.gz": "csv"}


@dataclass(frozen=True)
class SourceFiles:
    """Resolved files of one source (sorted, so listing order is stable)."""

    uri: str
    format: str
    files: tuple[str, ...]
    sizes: tuple[int, ...]
    mtimes_ns: tuple[int, ...]
    filesystem: pafs.FileSystem

    def stat_key(self) -> str:
        """Digest of (path, size, mtime) of every file: cheap change detection."""
        payload = json.dumps([self.uri, self.format, list(zip(self.files, self.sizes, self.mtimes_ns))])
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


def _format_of(path: str) -> str | None:
    low = path.lower()
    for ext, fmt in _EXT.items():
        if low.endswith(ext):
            return fmt
    return None


def list_source(uri: str, fmt: str = "auto") -> SourceFiles:
    """List the data files behind ``uri`` (a file, a directory searched recursively, or a glob).

    Raises:
        DataValidationError: the path does not exist, holds no data files, or mixes formats.
    """
    pattern = None
    base = uri
    if any(ch in uri.rsplit("/", 1)[-1] for ch in "*?["):
        base, pattern = uri.rsplit("/", 1)
    try:
        fs, path = pafs.FileSystem.from_uri(base) if "://" in base else (pafs.LocalFileSystem(), base)
        info = fs.get_file_info(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataValidationError([f"cannot access source {uri!r}: {err}"]) from None
    if info.type == pafs.FileType.NotFound:
        raise DataValidationError([f"source {uri!r} does not exist"])
    if info.type == pafs.FileType.File:
        infos = [info]
    else:
        infos = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File]
        infos = [i for i in infos if not i.base_name.startswith((".", "_"))]
        if pattern:
            infos = [i for i in infos if fnmatch.fnmatch(i.base_name, pattern)]
    infos.sort(key=lambda i: i.path)
    found = {}
    for i in infos:
        f = _format_of(i.path)
        if f:
            found.setdefault(f, []).append(i)
    if fmt != "auto":
        chosen = found.get(fmt, [])
    elif len(found) > 1:
        raise DataValidationError([f"source {uri!r} mixes formats {sorted(found)}; set data.format"])
    else:
        fmt, chosen = next(iter(found.items()), ("parquet", []))
    if not chosen:
        raise DataValidationError([f"source {uri!r} contains no {fmt if fmt != 'auto' else 'Parquet/CSV'} files"])
    return SourceFiles(
        uri=uri,
        format=fmt,
        files=tuple(i.path for i in chosen),
        sizes=tuple(int(i.size or 0) for i in chosen),
        mtimes_ns=tuple(int(i.mtime_ns or 0) for i in chosen),
        filesystem=fs,
    )


def csv_convert_options(id_column: str | None) -> pacsv.ConvertOptions:
    """Read the id column as text so '007' stays '007' (str(id) is what gets hashed)."""
    types = {id_column: pa.string()} if id_column else {}
    return pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)


def arrow_dataset(src: SourceFiles, id_column: str | None = None) -> pads.Dataset:
    """A pyarrow Dataset over the files (single process, streaming)."""
    if src.format == "csv":
        fmt = pads.CsvFileFormat(convert_options=csv_convert_options(id_column))
    else:
        fmt = pads.ParquetFileFormat()
    return pads.dataset(list(src.files), format=fmt, filesystem=src.filesystem)


def read_schema(src: SourceFiles, id_column: str | None = None) -> pa.Schema:
    """Unified schema of the source (all files must agree)."""
    try:
        return arrow_dataset(src, id_column).schema
    except (pa.ArrowInvalid, OSError) as err:
        raise DataValidationError([f"cannot read schema of {src.uri!r}: {err}"]) from None


def iter_batches(
    src: SourceFiles, id_column: str | None = None, batch_size: int = 131_072, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """Stream the source as Arrow tables of at most ``batch_size`` rows."""
    ds = arrow_dataset(src, id_column)
    for rb in ds.to_batches(columns=columns, batch_size=batch_size):
        if rb.num_rows:
            yield pa.Table.from_batches([rb])
