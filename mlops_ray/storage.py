"""A directory on a local disk or an object store, through ``pyarrow.fs``: :class:`Location`.

The workspace's shared part (snapshots, Ray Train/Tune storage) lives at a :class:`Location`:
a local directory by default, or ``s3://bucket/prefix`` / ``gs://bucket/prefix`` /
``file:///shared/mount`` when the workspace is a URI (``MLOPS_RAY_HOME=s3://...``). Credentials
and endpoints come from the environment the way ``pyarrow.fs`` reads them (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for an S3-compatible server, ...): every Ray node
needs them, set where the node starts.

What differs between the two kinds, and how callers stay correct on both:

- **Publication.** A local directory is published by one atomic ``os.replace`` of a staging
  directory (:meth:`Location.publish_dir`); an object store has no directory rename, so the files
  are copied server-side and the caller's marker file (a snapshot's manifest) is written **last**:
  readers treat a directory without its marker as absent.
- **Atomic replace** of one file: temp file + rename locally; one ``PUT`` on an object store.
- **Directories** do not exist on object stores: :meth:`Location.mkdir` is a no-op there and
  :meth:`Location.is_dir` is true when anything lies under the prefix.

No Ray, no MLflow: pure pyarrow.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CHUNK = 1 << 20


def is_uri(text: str | os.PathLike) -> bool:
    """Whether ``text`` names a URI with a scheme (``s3://``, ``gs://``, ``file://``) rather than a path."""
    return bool(_SCHEME.match(str(text)))


def uri_scheme(text: str) -> str:
    m = _SCHEME.match(text)
    return m.group(1).lower() if m else ""


@dataclass(frozen=True)
class Location:
    """A directory or file ``path`` on ``fs``; ``uri`` is what users see and what round-trips.

    Picklable (pyarrow's filesystems are), so Ray tasks on any node get the same location.
    """

    uri: str
    fs: pafs.FileSystem = field(repr=False, compare=False)
    path: str = field(repr=False)

    @classmethod
    def of(cls, where: str | os.PathLike | Location) -> Location:
        """A location from a local path, a ``file://`` URI or an object-store URI."""
        if isinstance(where, Location):
            return where
        text = str(where)
        if not is_uri(text):
            p = str(Path(text).expanduser().resolve())
            return cls(p, pafs.LocalFileSystem(), p)
        fs, path = pafs.FileSystem.from_uri(text)
        if isinstance(fs, pafs.LocalFileSystem):
            return cls(path, fs, path)
        return cls(text.rstrip("/"), fs, path.rstrip("/"))

    # ------------------------------------------------------------- naming
    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def local_path(self) -> Path | None:
        """The local path, or None on an object store."""
        return Path(self.path) if self.is_local else None

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        head = self.path.rstrip("/").rsplit("/", 1)[0]
        uri_head = self.uri.rstrip("/").rsplit("/", 1)[0]
        return Location(uri_head, self.fs, head)

    def __truediv__(self, part: str) -> Location:
        part = str(part).strip("/")
        return Location(f"{self.uri}/{part}", self.fs, f"{self.path}/{part}")

    def with_name(self, name: str) -> Location:
        return self.parent / name

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:
        if not self.is_local:
            raise TypeError(f"{self.uri} is on an object store, not a local path")
        return self.path

    def relative(self, other: Location) -> str:
        """``other``'s path relative to this directory ('/'-separated)."""
        return other.path[len(self.path.rstrip("/")) + 1 :]

    # ------------------------------------------------------------- queries
    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        if self.is_local:
            return self._info().type == pafs.FileType.Directory
        info = self._info()
        if info.type == pafs.FileType.Directory:
            return True
        return info.type == pafs.FileType.NotFound and bool(self.files(limit=1))

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def size(self) -> int:
        info = self._info()
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(self.uri)
        return int(info.size or 0)

    def mtime(self) -> float | None:
        info = self._info()
        return info.mtime.timestamp() if info.mtime is not None else None

    def files(self, limit: int | None = None) -> list[str]:
        """Relative '/'-paths of every file under this directory (recursive, sorted); [] if absent."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        base = self.path.rstrip("/") + "/"
        out = sorted(i.path[len(base) :] for i in infos if i.type == pafs.FileType.File and i.path.startswith(base))
        return out[:limit] if limit is not None else out

    def children(self) -> list[Location]:
        """Entries directly under this directory (files and sub-directories), sorted by name."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted((self / i.base_name for i in infos), key=lambda loc: loc.name)

    # ------------------------------------------------------------- contents
    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Replace the file atomically: temp file + rename locally, one PUT on an object store."""
        if self.is_local:
            p = Path(self.path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def digest(self) -> tuple[int, str]:
        """(size in bytes, SHA-256 hex), streamed in 1 MiB chunks."""
        h = hashlib.sha256()
        n = 0
        with self.fs.open_input_stream(self.path) as f:
            while chunk := f.read(_CHUNK):
                n += len(chunk)
                h.update(chunk)
        return n, h.hexdigest()

    # ------------------------------------------------------------- changes
    def mkdir(self) -> Location:
        """Create the directory (and parents) where directories exist; a no-op on object stores."""
        if self.is_local:
            Path(self.path).mkdir(parents=True, exist_ok=True)
        return self

    def unlink(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass

    def rmtree(self) -> None:
        """Delete the directory and everything under it; nothing to delete is not an error."""
        if self.is_local:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            self.fs.delete_dir(self.path)
        except (FileNotFoundError, OSError):
            for rel in self.files():
                (self / rel).unlink()

    def publish_dir(self, final: Location, *, last: str | None = None) -> bool:
        """Move this (staging) directory to ``final``, which must not exist.

        Locally one ``os.replace`` (atomic; False when ``final`` appeared meanwhile). On an object
        store every file is copied server-side, ``last`` (the marker readers look for) after all
        others, then the staging files are deleted; a partial ``final`` left by a crash has no
        marker, so readers ignore it and the next publication replaces it.
        """
        if self.is_local:
            try:
                os.replace(self.path, final.path)
            except OSError:
                return False
            return True
        if last is not None and (final / last).is_file():
            return False
        final.rmtree()  # a crashed publication's leftovers (no marker)
        rels = self.files()
        for rel in sorted(rels, key=lambda r: r == last):
            self.fs.copy_file((self / rel).path, (final / rel).path)
        self.rmtree()
        return True


def join(base: str, *parts: str) -> str:
    """``base`` (a path or URI) with '/'-joined ``parts``."""
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


__all__ = ["Location", "is_uri", "join", "uri_scheme"]
