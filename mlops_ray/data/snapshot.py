"""Immutable, content-addressed dataset snapshots in the workspace.

Layout::

    <workspace>/datasets/<name>/<snapshot-id>/
        manifest.json          source, fingerprint, hash spec, fractions, rows per split, schema, versions
        preprocessor.json      fitted on train (see mlops_ray.data.preprocess)
        reference_stats.json   frozen drift reference bins
        splits/<split>/part-*.parquet
    <workspace>/datasets/<name>/<snapshot-id>.usage.jsonl   runs / model versions that used it (append-only)

The snapshot id is a digest of the source fingerprint together with the split and
preprocessing spec, so the same data split with another salt is another snapshot.
A snapshot directory appears only by an atomic rename of a complete staging
directory; it is never modified afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_ray.errors import SnapshotNotFoundError
from mlops_ray.workspace import Workspace

MANIFEST = "manifest.json"
PREPROCESSOR = "preprocessor.json"
REFERENCE = "reference_stats.json"
SPLITS = "splits"
ID_LENGTH = 16


def snapshot_id(fingerprint: str, spec: dict[str, Any]) -> str:
    """Content address: SHA-256 over the source fingerprint and the canonical JSON spec (16 hex chars)."""
    payload = json.dumps({"fingerprint": fingerprint, "spec": spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:ID_LENGTH]


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=str))
    os.replace(tmp, path)


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
    """A prepared snapshot on disk."""

    path: Path
    manifest: dict[str, Any]

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

    def split_dir(self, split: str) -> Path:
        if split not in self.manifest["rows_per_split"]:
            raise SnapshotNotFoundError(f"snapshot {self.id} has no split {split!r}; it has {self.split_names}")
        return self.path / SPLITS / split

    def split_files(self, split: str) -> list[str]:
        """The split's Parquet files; raises SnapshotNotFoundError if the directory has vanished."""
        d = self.split_dir(split)
        if not d.is_dir():
            raise SnapshotNotFoundError(
                f"snapshot {self.id}: split directory {d} is missing; the snapshot was "
                "damaged or deleted (re-run 'mlops-ray data prepare')"
            )
        return sorted(str(p) for p in d.glob("*.parquet"))

    def preprocessor(self):
        from mlops_ray.data.preprocess import Preprocessor

        return Preprocessor.load(self.path / PREPROCESSOR)

    def reference_stats(self) -> dict[str, Any]:
        return json.loads((self.path / REFERENCE).read_text())

    def record_usage(self, **entry: Any) -> None:
        """Append who used this snapshot (run id, model version, ...) to its usage log."""
        entry.setdefault("at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with open(self.path.with_name(f"{self.id}.usage.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=str) + "\n")

    def usage(self) -> list[dict[str, Any]]:
        p = self.path.with_name(f"{self.id}.usage.jsonl")
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class SnapshotStore:
    """Finds, lists and commits snapshots under ``<workspace>/datasets``."""

    def __init__(self, workspace: Workspace):
        self.ws = workspace

    @property
    def root(self) -> Path:
        return self.ws.datasets

    def path_for(self, name: str, sid: str) -> Path:
        return self.root / name / sid

    def get(self, name: str, sid: str) -> Snapshot | None:
        p = self.path_for(name, sid)
        m = p / MANIFEST
        return Snapshot(p, json.loads(m.read_text())) if m.is_file() else None

    def new_staging(self, name: str) -> Path:
        staging = self.root / name / f".staging-{uuid.uuid4().hex[:12]}"
        staging.mkdir(parents=True)
        return staging

    def commit(self, staging: Path, name: str, sid: str) -> tuple[Snapshot, bool]:
        """Atomically publish ``staging`` as snapshot ``sid``.

        Returns:
            (snapshot, created): ``created`` is False when an identical snapshot already
            existed (staging is then discarded and the existing one returned).
        """
        final = self.path_for(name, sid)
        existing = self.get(name, sid)
        if existing is not None:
            shutil.rmtree(staging, ignore_errors=True)
            return existing, False
        try:
            os.replace(staging, final)
        except OSError:  # lost a race with a concurrent identical prepare
            shutil.rmtree(staging, ignore_errors=True)
            existing = self.get(name, sid)
            if existing is None:
                raise
            return existing, False
        return self.get(name, sid), True

    def list(self) -> list[Snapshot]:
        """All snapshots, newest first."""
        out = []
        if not self.root.is_dir():
            return out
        for m in self.root.glob(f"*/*/{MANIFEST}"):
            if m.parent.name.startswith("."):
                continue
            out.append(Snapshot(m.parent, json.loads(m.read_text())))
        out.sort(key=lambda s: s.manifest.get("created_at", ""), reverse=True)
        return out

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
