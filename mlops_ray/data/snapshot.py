"""Immutable, content-addressed dataset snapshots in the workspace.

Layout::

    <workspace>/datasets/<name>/<snapshot-id>/
        manifest.json          source, fingerprint, hash spec, fractions, rows per split, schema, versions,
                               and "files": {relative path: {"bytes", "sha256"}} of every other file
        preprocessor.json      fitted on train (see mlops_ray.data.preprocess)
        reference_stats.json   frozen drift reference bins
        splits/<split>/part-*.parquet
    <workspace>/datasets/<name>/<snapshot-id>.usage.jsonl   runs / model versions that used it (append-only)

The snapshot id is a digest of the source fingerprint together with the split and
preprocessing spec, so the same data split with another salt is another snapshot.
A snapshot directory appears only by an atomic rename of a complete staging
directory; it is never modified afterwards. :meth:`Snapshot.verify` checks that:
every file the manifest lists has its recorded size and SHA-256, and no other file
is there. Training, tuning, reproduction and snapshot reuse verify first.

A staging directory holds an owner record (host, pid) while it is written, so the next
prepare can remove staging directories whose writer was killed.

The datasets directory is a :class:`~mlops_ray.storage.Location`: local, or on an object store when
the workspace is a URI (``s3://bucket/prefix``). There a snapshot is published by copying the
staging files server-side and writing the manifest **last**; a snapshot directory without a
manifest is invisible to readers (see :meth:`~mlops_ray.storage.Location.publish_dir`). Split
files are then ``s3://...`` URIs that ``pyarrow`` and Ray Data read from any node.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_ray.data.owner import ProcessOwner
from mlops_ray.errors import SnapshotCorruptError, SnapshotNotFoundError
from mlops_ray.storage import Location
from mlops_ray.workspace import Workspace

MANIFEST = "manifest.json"
PREPROCESSOR = "preprocessor.json"
REFERENCE = "reference_stats.json"
SPLITS = "splits"
ID_LENGTH = 16
FILES = "files"  # manifest key: {relative posix path: {"bytes": int, "sha256": hex}}
STAGING_PREFIX = ".staging-"
STAGING_OWNER = ".owner.json"  # in a staging directory only; removed before it is published
# A staging directory without an owner record (made before owner records existed) is removed
# once it is this old: a live prepare writes its record right after creating the directory.
LEGACY_STAGING_AGE_S = 3600.0
_CHUNK = 1 << 20


def _content_files(root: Path | Location) -> list[str]:
    """Relative posix paths of every file under ``root`` except the manifest and a staging owner record."""
    return [r for r in Location.of(root).files() if r not in (MANIFEST, STAGING_OWNER)]


def _digests(root: Path | Location, rels: list[str]) -> list[tuple[int, str]]:
    """File digests, several files at once (hashlib releases the GIL on large buffers; object-store
    reads overlap)."""
    loc = Location.of(root)
    if len(rels) < 4:
        return [(loc / r).digest() for r in rels]
    workers = min(8, os.cpu_count() or 1) if loc.is_local else 8
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda r: (loc / r).digest(), rels))


def record_files(root: Path | Location) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` entry for a complete (staging) snapshot directory."""
    rels = _content_files(root)
    return {r: {"bytes": n, "sha256": h} for r, (n, h) in zip(rels, _digests(root, rels))}


@dataclass(frozen=True)
class Verification:
    """Outcome of :meth:`Snapshot.verify`: how many files matched, or why nothing was checked."""

    files: int
    bytes: int
    note: str | None = None  # set when the manifest records no checksums (snapshot from an older version)

    def describe(self) -> str:
        return self.note or f"verified {self.files} files ({self.bytes} bytes, sha256)"


def snapshot_id(fingerprint: str, spec: dict[str, Any]) -> str:
    """Content address: SHA-256 over the source fingerprint and the canonical JSON spec (16 hex chars)."""
    payload = json.dumps({"fingerprint": fingerprint, "spec": spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:ID_LENGTH]


def write_json(path: Path | Location, obj: Any) -> None:
    """Write JSON atomically (temp file + rename locally; one PUT on an object store)."""
    Location.of(path).write_text(json.dumps(obj, indent=1, sort_keys=False, default=str))


@dataclass(frozen=True)
class SplitSpec:
    """How rows were assigned to splits: the hash rule's salt, split fractions and id column.

    The gate reads it from two model versions' registry tags to decide whether scoring
    one on the other's test rows would leak (:func:`mlops_ray.registry.gate.leakage_problem`).
    """

    salt: str
    fractions: tuple[tuple[str, float], ...]
    id_column: str

    def to_tags(self) -> dict[str, str]:
        return {
            "salt": self.salt,
            "fractions": json.dumps([[k, v] for k, v in self.fractions]),
            "id_column": self.id_column,
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "SplitSpec":
        """Raises KeyError naming the missing tag."""
        return cls(tags["salt"], tuple((k, float(v)) for k, v in json.loads(tags["fractions"])), tags["id_column"])


@dataclass(frozen=True)
class SnapshotSpec:
    """The typed view of a manifest's ``spec``: columns, task and split rule of a snapshot."""

    task: str
    id_column: str
    label_column: str
    timestamp_column: str | None
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    split: SplitSpec

    @property
    def features(self) -> list[str]:
        return [*self.numeric_features, *self.categorical_features]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "SnapshotSpec":
        s = manifest["spec"]
        return cls(
            s["task"],
            s["id_column"],
            s["label_column"],
            s.get("timestamp_column"),
            tuple(s["numeric_features"]),
            tuple(s["categorical_features"]),
            SplitSpec(s["salt"], tuple((k, float(v)) for k, v in s["fractions"]), s["id_column"]),
        )


@dataclass(frozen=True)
class Snapshot:
    """A prepared snapshot: its directory (local or on an object store) and manifest."""

    path: Path | Location  # a Path when local; str() is the path or URI either way
    manifest: dict[str, Any]

    @classmethod
    def at(cls, where: str | Path | Location, manifest: dict[str, Any]) -> "Snapshot":
        """The snapshot at a path or URI (as recorded in a run, a model, a task's arguments)."""
        return cls(_native(Location.of(where)), manifest)

    @property
    def location(self) -> Location:
        return Location.of(self.path)

    @property
    def id(self) -> str:
        return self.manifest["snapshot_id"]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def spec(self) -> SnapshotSpec:
        return SnapshotSpec.from_manifest(self.manifest)

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def rows(self, split: str) -> int:
        return int(self.manifest["rows_per_split"].get(split, 0))

    @property
    def split_names(self) -> list[str]:
        return list(self.manifest["rows_per_split"])

    def split_dir(self, split: str) -> Location:
        if split not in self.manifest["rows_per_split"]:
            raise SnapshotNotFoundError(f"snapshot {self.id} has no split {split!r}; it has {self.split_names}")
        return self.location / SPLITS / split

    def split_files(self, split: str) -> list[str]:
        """The split's Parquet files (paths, or URIs on an object store); raises SnapshotNotFoundError
        if the directory has vanished."""
        d = self.split_dir(split)
        files = [r for r in d.files() if "/" not in r and r.endswith(".parquet")]
        if not files and not (d.is_local and d.is_dir()) and self.rows(split):
            raise SnapshotNotFoundError(
                f"snapshot {self.id}: split directory {d} is missing; the snapshot was "
                "damaged or deleted (re-run 'mlops-ray data prepare')"
            )
        return [str(d / r) for r in sorted(files)]

    def verify(self) -> Verification:
        """Check every recorded file's presence, size and SHA-256, and that no other file is there.

        Snapshots prepared before checksums were recorded return a note instead (nothing to check).

        Raises:
            SnapshotCorruptError: naming the first bad file, what is wrong and how to recover.
        """
        recorded = self.manifest.get(FILES)
        if recorded is None:
            return Verification(
                0,
                0,
                f"snapshot {self.name}/{self.id}: no checksums recorded (prepared before mlops-ray recorded "
                "them); nothing verified. Delete it and prepare again to get checksums",
            )
        present = {}
        try:  # one listing: sizes of every file (one request per 1,000 keys on an object store)
            import pyarrow.fs as pafs

            loc = self.location
            sel = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
            base = loc.path.rstrip("/") + "/"
            for info in loc.fs.get_file_info(sel):
                if info.type == pafs.FileType.File and info.path.startswith(base):
                    present[info.path[len(base) :]] = int(info.size or 0)
        except OSError:
            present = {}
        if not present:
            raise self._corrupt(f"its directory {self.path} is missing")
        # Cheap checks first (presence, size, extra files), then the hashes.
        for rel in sorted(recorded):
            if rel not in present:
                raise self._corrupt(f"file {rel} is missing")
            size = present[rel]
            if size != recorded[rel]["bytes"]:
                raise self._corrupt(f"file {rel} has {size} bytes, the manifest recorded {recorded[rel]['bytes']}")
        extra = [r for r in sorted(present) if r not in recorded and r not in (MANIFEST, STAGING_OWNER)]
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise self._corrupt(f"unexpected extra file {extra[0]}{more}, not recorded in the manifest")
        rels = sorted(recorded)
        for rel, (_, digest) in zip(rels, _digests(self.location, rels)):
            if digest != recorded[rel]["sha256"]:
                raise self._corrupt(
                    f"file {rel} content differs from the manifest (sha256 {digest[:16]}..., "
                    f"recorded {recorded[rel]['sha256'][:16]}...)"
                )
        return Verification(len(recorded), sum(int(v["bytes"]) for v in recorded.values()))

    def _corrupt(self, what: str) -> SnapshotCorruptError:
        return SnapshotCorruptError(
            f"snapshot {self.name}/{self.id} is corrupt: {what} (in {self.path}). Snapshots never change after "
            f"prepare; delete the directory {self.path} and run 'mlops-ray data prepare' again"
        )

    def preprocessor(self):
        from mlops_ray.data.preprocess import Preprocessor

        return Preprocessor.from_dict(json.loads((self.location / PREPROCESSOR).read_text()))

    def reference_stats(self) -> dict[str, Any]:
        return json.loads((self.location / REFERENCE).read_text())

    def _usage_store(self):
        """The state store of the dataset's directory: the usage log ``<id>.usage.jsonl`` sits beside
        the snapshot, appended without loss by any process on any node."""
        from mlops_ray.state import store_for

        return store_for(self.location.parent.uri)

    def record_usage(self, **entry: Any) -> None:
        """Append who used this snapshot (run id, model version, ...) to its usage log."""
        entry.setdefault("at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._usage_store().append_record(f"{self.id}.usage.jsonl", entry)

    def usage(self) -> list[dict[str, Any]]:
        return self._usage_store().read_records(f"{self.id}.usage.jsonl")


class SnapshotStore:
    """Finds, lists and commits snapshots under ``<workspace>/datasets``."""

    def __init__(self, workspace: Workspace):
        self.ws = workspace

    @property
    def root(self) -> Location:
        return self.ws.shared / "datasets"

    def path_for(self, name: str, sid: str) -> Location:
        return self.root / name / sid

    def get(self, name: str, sid: str) -> Snapshot | None:
        p = self.path_for(name, sid)
        m = p / MANIFEST
        return Snapshot(_native(p), _read_manifest(m)) if m.is_file() else None

    def new_staging(self, name: str) -> Location:
        """A new staging directory holding this process's owner record (see :meth:`remove_stale_staging`)."""
        staging = (self.root / name / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}").mkdir()
        (staging / STAGING_OWNER).write_text(json.dumps(ProcessOwner.current().to_dict()))
        return staging

    def remove_stale_staging(self) -> list[str]:
        """Delete staging directories whose writer is gone (a killed ``data prepare``); one note per removal.

        A directory is removed only when its owner record names a process on this host that has
        exited, or (no record: made by an older version) it is older than ``LEGACY_STAGING_AGE_S``.
        Staging directories of live processes, or of processes on other hosts, are left alone.
        """
        notes: list[str] = []
        stagings = [d for ds in self.root.children() for d in ds.children() if d.name.startswith(STAGING_PREFIX)]
        for d in stagings:
            try:
                owner = ProcessOwner.from_dict(json.loads((d / STAGING_OWNER).read_text()))
                why = f"its writer ({owner.describe()}) is gone" if owner and owner.is_gone() else None
            except FileNotFoundError:
                mtime = d.mtime()
                if mtime is None:
                    continue  # removed meanwhile (its prepare finished), or an object-store prefix
                age = time.time() - mtime
                why = f"it has no owner record and is {age / 3600:.1f} h old" if age > LEGACY_STAGING_AGE_S else None
            except (OSError, ValueError):
                continue  # unreadable or half-written record: leave it
            if why:
                d.rmtree()
                notes.append(f"removed stale staging directory {d} ({why})")
        return notes

    def commit(self, staging: Location, name: str, sid: str) -> tuple[Snapshot, bool]:
        """Atomically publish ``staging`` as snapshot ``sid``.

        Returns:
            (snapshot, created): ``created`` is False when an identical snapshot already
            existed (staging is then discarded and the existing one returned).
        """
        final = self.path_for(name, sid)
        existing = self.get(name, sid)
        if existing is not None:
            staging.rmtree()
            return existing, False
        (staging / STAGING_OWNER).unlink()
        if not staging.publish_dir(final, last=MANIFEST):  # lost a race with a concurrent identical prepare
            staging.rmtree()
            existing = self.get(name, sid)
            if existing is None:
                raise OSError(f"cannot publish snapshot {name}/{sid} at {final}")
            return existing, False
        return self.get(name, sid), True

    def list(self) -> list[Snapshot]:
        """All snapshots, newest first."""
        out = []
        if self.root.is_local:
            root = Path(self.root.path)
            found = [self.root / m.relative_to(root).parent.as_posix() for m in root.glob(f"*/*/{MANIFEST}")]
        else:  # one recursive listing instead of a request per directory
            rels = [r for r in self.root.files() if r.count("/") == 2 and r.endswith(f"/{MANIFEST}")]
            found = [self.root / r[: -len(MANIFEST) - 1] for r in rels]
        for d in found:
            if d.name.startswith("."):  # staging directories
                continue
            out.append(Snapshot(_native(d), _read_manifest(d / MANIFEST)))
        out.sort(key=lambda s: s.manifest.get("created_at", ""), reverse=True)
        return out

    def find_for(self, snapshot_id: str, dataset: str | None = None) -> Snapshot:
        """The snapshot a run or model version names by id (and dataset name, when it recorded one:
        identical content prepared under two dataset names has the same id)."""
        return self.find(f"{dataset}/{snapshot_id}" if dataset else snapshot_id)

    def find(self, ref: str) -> Snapshot:
        """Resolve ``ID``, a unique ID prefix (>= 4 chars), ``NAME/ID`` or ``NAME@latest``.

        Raises:
            SnapshotNotFoundError: naming what was searched and what exists.
        """
        snaps = self.list()
        if "@" in ref:
            name, tag = ref.split("@", 1)
            if tag != "latest":
                raise SnapshotNotFoundError(f"unknown snapshot tag {tag!r} (only '@latest' is supported)")
            match = [s for s in snaps if s.name == name][:1]
        elif "/" in ref:
            name, sid = ref.split("/", 1)
            match = [s for s in snaps if s.name == name and s.id.startswith(sid)]
        else:
            if len(ref) < 4:
                raise SnapshotNotFoundError(f"snapshot id prefix {ref!r} is too short (need >= 4 chars)")
            match = [s for s in snaps if s.id.startswith(ref)]
        if len(match) == 1:
            return match[0]
        if not match:
            known = ", ".join(f"{s.name}/{s.id}" for s in snaps[:10]) or "none"
            raise SnapshotNotFoundError(
                f"no snapshot matches {ref!r} in {self.root} (known: {known}); run 'mlops-ray data prepare'"
            )
        raise SnapshotNotFoundError(f"{ref!r} is ambiguous: {[s.id for s in match]}")


def _native(loc: Location) -> Path | Location:
    """A local location as a ``Path`` (what local callers and tests handle), else the location."""
    return Path(loc.path) if loc.is_local else loc


def _read_manifest(path: Location) -> dict:
    """A snapshot's manifest; a damaged one is a :class:`SnapshotCorruptError` naming it, not a traceback."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SnapshotCorruptError(
            f"snapshot manifest {path} cannot be read ({err}); delete {path.parent} and run "
            "'mlops-ray data prepare' again"
        ) from None
    if not isinstance(manifest, dict):
        raise SnapshotCorruptError(
            f"snapshot manifest {path} is not a JSON object; delete {path.parent} and prepare again"
        )
    return manifest
