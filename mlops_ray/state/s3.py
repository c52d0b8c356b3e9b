"""A :class:`~mlops_ray.state.store.StateStore` on S3 (or any S3-compatible server), for clusters of several nodes.

Key ``k`` is the object ``s3://<bucket>/<prefix>/k``. Every guarantee of the contract rests on one
S3 feature, conditional writes (``PUT`` with ``If-Match: <etag>`` or ``If-None-Match: *``, in S3
since August/November 2024; ``DELETE`` with ``If-Match`` since 2025), and on a single ``PUT``
being atomic (a reader gets the old or the new object, never a mix):

- **Atomic replace**: :meth:`S3StateStore.write_bytes` is one ``PUT``.
- **Compare-and-set**: ``GET`` the value and its ETag; if the value is ``expected``, ``PUT`` the new
  one with ``If-Match: <that etag>`` (``If-None-Match: *`` when ``expected`` is None). S3 refuses
  the write (412) if any writer replaced the object in between, so the check and the write are one
  atomic step on the server; no read-then-write race is left to the client.
- **Appends**: a compare-and-set retry loop on the key's one object (read, add the line, conditional
  ``PUT``; on 412 read again, with jittered back-off). The key stays one JSONL object, so
  :meth:`read_bytes`, :meth:`read_records` and :meth:`list` see it like any other value, and a read
  is one ``GET``. The cost is on the write side: each append moves the whole object both ways
  (O(size) per append), and ``n`` writers appending at once retry up to ``n`` times. That suits the
  histories mlops-ray keeps (a line per pipeline run); a high-rate log would want one object per
  record under ``<key>/`` instead, whose read is a ``LIST`` plus a ``GET`` per record.
- **Locks as leases**: :meth:`S3StateStore.lock` keeps the object ``{holder, expires_at, token}``.
  It is taken by a ``PUT`` with ``If-None-Match: *``, or, when the object holds a released or
  expired lease, by a ``PUT`` with ``If-Match: <its etag>`` (so of two processes taking over the
  same stale lease only one wins). A background thread renews it every ``lease_s / 3`` with
  ``If-Match`` on the holder's own last ETag; release overwrites it with a free record, again
  conditionally, so a holder that lost its lease never frees someone else's. A live lease makes
  ``lock()`` raise :class:`~mlops_ray.errors.LockBusyError` at once, naming the holder.

**Failure mode when the holder dies.** S3 cannot see a process die. A holder killed (SIGKILL, a
lost node, a network partition) stops renewing, and its lock stays held until ``expires_at``: at
most ``lease_s`` (default :data:`DEFAULT_LEASE_S`, 60 s) after its last renewal. Every other
``lock()`` in that window raises ``LockBusyError`` naming the dead holder; after it, the first
caller takes the lock over. A shorter lease frees the lock of a dead holder sooner, at the cost of
a renewal ``PUT`` every ``lease_s / 3``. Expiry compares ``expires_at`` (written from the holder's
clock) with the reader's clock: nodes' clocks must agree to well within ``lease_s`` (NTP).
A holder whose renewals fail (it was paused past its lease, or cut off from S3) may find the lock
taken over while its ``with`` body still runs: the renewal thread logs an error and the release
leaves the new holder's lease alone. A lease bounds how long a dead holder blocks others; it is not
fencing (use ``compare_and_set`` on the data itself where a stale holder's write must be refused).

**An ambiguous write.** botocore retries a request whose connection failed. If S3 had applied a
conditional ``PUT`` before the connection broke, the retry gets 412, and the store reads that as a
lost race: a :meth:`~S3StateStore.compare_and_set` may return False though its value was set, and an
append may be written twice (the lock recognises its own token and is not affected). Network errors
that botocore gives up on are raised, never reported as success.

boto3 is imported when the first client is made (install ``mlops-ray[s3]``). The store pickles to
its constructor arguments (a Ray task gets a store that makes its own client); ``client_kwargs``
(e.g. ``region_name``, credentials) travel with it, so prefer credentials from the environment or
an instance role over keys in ``client_kwargs``.

Example::

    store = S3StateStore("my-bucket", "mlops/prod", endpoint_url="http://127.0.0.1:9000")
    with store.lock("pipeline/churn/run.lock", holder="node-3 pid 123", lease_s=30):
        store.append_record("pipeline/churn/history.jsonl", {"status": "ok"})
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

from mlops_ray.errors import LockBusyError
from mlops_ray.state.store import StateStore, check_key

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0
"""Lease of a lock when neither ``lock(lease_s=...)`` nor ``S3StateStore(lease_s=...)`` sets one."""

_APPEND_ATTEMPTS = 200  # conditional PUTs one append may try before giving up (contention or a broken server)
_TAKE_ATTEMPTS = 5  # reads of a lock object that changes under us before lock() calls it busy


def _error_code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(err: Exception) -> int:
    response = getattr(err, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _condition_failed(err: Exception) -> bool:
    """A conditional write refused: 412 (the ETag moved or the key exists), 409 (S3's
    ConditionalRequestConflict: a concurrent conditional write of the key), or 404 (If-Match on a
    key deleted meanwhile)."""
    return _status(err) in (409, 412) or _error_code(err) in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
        "NoSuchKey",
    )


class S3StateStore(StateStore):
    """A :class:`StateStore` in ``s3://bucket/prefix``: key ``k`` is the object ``prefix/k``.

    Args:
        bucket: the bucket (must exist).
        prefix: the folder of the store in the bucket ('' for the bucket's root).
        endpoint_url: an S3-compatible server (MinIO, moto, Ceph, ...); None for AWS (or boto3's
            own ``AWS_ENDPOINT_URL*`` environment variables).
        lease_s: the default lease of :meth:`lock` (see the module docstring).
        **client_kwargs: passed to ``boto3.client("s3", ...)`` (``region_name``, ``config``, ...).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        **client_kwargs: Any,
    ):
        if not bucket or "/" in bucket:
            raise ValueError(f"bucket must be a bucket name, got {bucket!r}")
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.endpoint_url = endpoint_url
        self.lease_s = float(lease_s)
        self.client_kwargs = dict(client_kwargs)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client_lock = threading.Lock()
        self._client_obj: Any = None
        self._client_pid = -1

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3StateStore({self.bucket!r}, {self.prefix!r}{endpoint})"

    def __reduce__(self):
        return (_rebuild, (self.bucket, self.prefix, self.endpoint_url, self.lease_s, self.client_kwargs))

    # ------------------------------------------------------------------ helpers
    @property
    def _client(self) -> Any:
        """One boto3 client per process (clients are thread-safe; a forked child makes its own)."""
        with self._client_lock:
            if self._client_obj is None or self._client_pid != os.getpid():
                try:
                    import boto3
                except ImportError as err:  # pragma: no cover - depends on the installation
                    raise ImportError("S3StateStore needs boto3: pip install 'mlops-ray[s3]'") from err
                self._client_obj = boto3.client("s3", endpoint_url=self.endpoint_url, **self.client_kwargs)
                self._client_pid = os.getpid()
            return self._client_obj

    def _obj(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """The value of ``key`` and its ETag; None when missing."""
        client = self._client
        try:
            resp = client.get_object(Bucket=self.bucket, Key=self._obj(key))
        except client.exceptions.NoSuchKey:
            return None
        with contextlib.closing(resp["Body"]):
            return resp["Body"].read(), resp["ETag"]

    def _put(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str | None:
        """PUT ``data``; with a condition, None when the server refused it. The new ETag otherwise."""
        kwargs: dict[str, Any] = {}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        elif if_absent:
            kwargs["IfNoneMatch"] = "*"
        try:
            resp = self._client.put_object(Bucket=self.bucket, Key=self._obj(key), Body=bytes(data), **kwargs)
        except Exception as err:
            if kwargs and _condition_failed(err):
                return None
            raise
        return resp["ETag"]

    # ------------------------------------------------------------------ values
    def read_bytes(self, key: str) -> bytes | None:
        got = self._get(key)
        return None if got is None else got[0]

    def write_bytes(self, key: str, data: bytes) -> None:
        self._put(key, bytes(data))

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        if expected is None:
            return self._put(key, new, if_absent=True) is not None
        got = self._get(key)
        if got is None or got[0] != bytes(expected):
            return False
        return self._put(key, new, if_match=got[1]) is not None

    def append_record(self, key: str, record: dict) -> None:
        line = (json.dumps(record, default=str) + "\n").encode()
        for attempt in range(_APPEND_ATTEMPTS):
            got = self._get(key)
            if got is None:
                done = self._put(key, line, if_absent=True)
            else:
                old, etag = got
                sep = b"\n" if old and not old.endswith(b"\n") else b""  # a torn last line stays apart
                done = self._put(key, old + sep + line, if_match=etag)
            if done is not None:
                return
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))  # jittered back-off
        raise RuntimeError(f"append to {self.uri}/{key} lost {_APPEND_ATTEMPTS} conditional writes in a row")

    def exists(self, key: str) -> bool:
        client = self._client
        try:
            client.head_object(Bucket=self.bucket, Key=self._obj(key))
        except Exception as err:
            if _status(err) == 404 or _error_code(err) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._obj(key))  # S3: no error when missing

    def list(self, prefix: str) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            keys.extend(obj["Key"][len(base) :] for obj in page.get("Contents", []))
        return sorted(keys)

    # ------------------------------------------------------------------ locks
    @contextlib.contextmanager
    def lock(self, key: str, *, holder: str, lease_s: float | None = None) -> Iterator[None]:
        lease = self.lease_s if lease_s is None else float(lease_s)
        if lease <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        token = secrets.token_hex(16)
        etag = self._take(key, holder, token, lease)
        lease_holder = _Lease(self, key, holder, token, lease, etag)
        lease_holder.start()
        try:
            yield
        finally:
            lease_holder.release()

    def _lease_record(self, holder: str, token: str, lease_s: float) -> bytes:
        return json.dumps({"holder": holder, "expires_at": time.time() + lease_s, "token": token}).encode()

    def _take(self, key: str, holder: str, token: str, lease_s: float) -> str:
        """Take the lease ``key`` (a conditional PUT) and return its ETag; LockBusyError if it is live."""
        etag = self._put(key, self._lease_record(holder, token, lease_s), if_absent=True)
        if etag is not None:
            return etag
        for _ in range(_TAKE_ATTEMPTS):
            got = self._get(key)
            if got is None:  # deleted meanwhile
                etag = self._put(key, self._lease_record(holder, token, lease_s), if_absent=True)
            else:
                current = _parse_lease(got[0])
                if current.get("token") == token:  # our own PUT, applied, then retried by botocore (412)
                    return got[1]
                if current.get("token") and float(current.get("expires_at") or 0) > time.time():
                    raise LockBusyError(key, str(current.get("holder") or "another process"))
                # free (released) or expired: take it over, only if nobody did since our read
                etag = self._put(key, self._lease_record(holder, token, lease_s), if_match=got[1])
            if etag is not None:
                return etag
        raise LockBusyError(key, "another process")


def _parse_lease(data: bytes) -> dict:
    try:
        rec = json.loads(data)
    except ValueError:
        return {}
    return rec if isinstance(rec, dict) else {}


_FREE = json.dumps({"holder": None, "expires_at": 0, "token": None}).encode()


class _Lease:
    """A held lease: a daemon thread renews it every lease/3; :meth:`release` stops it and frees the lock."""

    def __init__(self, store: S3StateStore, key: str, holder: str, token: str, lease_s: float, etag: str):
        self.store, self.key, self.holder, self.token, self.lease_s = store, key, holder, token, lease_s
        self.etag: str | None = etag
        self._stop = threading.Event()
        self._mutex = threading.Lock()  # renewal and release never write at once
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{key}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = self.lease_s / 3
        while not self._stop.wait(interval):
            with self._mutex:
                if self._stop.is_set() or self.etag is None:
                    return
                try:
                    etag = self.store._put(
                        self.key, self.store._lease_record(self.holder, self.token, self.lease_s), if_match=self.etag
                    )
                except Exception as err:  # the network: try again sooner, while the lease still runs
                    log.warning("renewing lock %s/%s failed (%s); retrying", self.store.uri, self.key, err)
                    interval = max(0.05, self.lease_s / 10)
                    continue
                interval = self.lease_s / 3
                if etag is None:
                    log.error(
                        "lock %s/%s was taken over by another holder (this holder's lease of %.1fs ran out "
                        "before a renewal); the code holding it is no longer protected",
                        self.store.uri,
                        self.key,
                        self.lease_s,
                    )
                    self.etag = None
                    return
                self.etag = etag

    def release(self) -> None:
        self._stop.set()
        with self._mutex:
            etag, self.etag = self.etag, None
        self._thread.join()
        if etag is None:  # only our own lease is freed; a takeover's is left alone
            return
        try:
            self.store._put(self.key, _FREE, if_match=etag)
        except Exception as err:  # never hide the with-body's own error; the lease runs out by itself
            log.warning(
                "releasing lock %s/%s failed (%s); it expires within %.1fs", self.store.uri, self.key, err, self.lease_s
            )


def _rebuild(bucket: str, prefix: str, endpoint_url: str | None, lease_s: float, client_kwargs: dict) -> S3StateStore:
    return S3StateStore(bucket, prefix, endpoint_url=endpoint_url, lease_s=lease_s, **client_kwargs)
