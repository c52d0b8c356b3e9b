"""A tracking server for tests: PostgreSQL + ``mlflow server`` with artifacts proxied to a bucket on moto.

What clusters run (README "Tracking server on PostgreSQL"), started in a temp directory: a real
PostgreSQL (the machine's, as the ``postgres`` user when the tests run as root) on an ephemeral
port, and ``mlflow server --serve-artifacts`` whose artifacts go to ``s3://BUCKET/PREFIX`` on the
tests' moto server (``tests/_s3.py``). ``host`` is where both listen: loopback by default, or a
private address that Ray nodes in a network namespace reach (then the S3 server must listen where the
MLflow server reaches it too).

    stack = start_tracking_stack(s3_server)   # ~10 s: initdb, MLflow's migrations
    mlflow.MlflowClient(stack.url) ...
    stack.stop()
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlops_ray.tracking_server import MlflowServer, Postgres, start_mlflow_server, start_postgres
from tests._s3 import ACCESS, S3Server

BUCKET = "mlflow-artifacts"
PREFIX = "mlflow"


def s3_env(s3: S3Server) -> dict[str, str]:
    """What the MLflow server (or any client writing artifacts directly) needs to reach ``s3``."""
    return {
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": ACCESS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": ACCESS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": ACCESS["region_name"],
    }


@dataclass
class TrackingStack:
    root: Path
    pg: Postgres
    server: MlflowServer
    s3: S3Server
    bucket: str
    prefix: str
    start_seconds: float  # PostgreSQL's initdb and start + MLflow's start and schema migrations
    timings: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def objects(self) -> list[str]:
        """Every key under the stack's prefix in the bucket."""
        keys, token = [], None
        client = self.s3.client()
        while True:
            kw = {"Bucket": self.bucket, "Prefix": self.prefix + "/"}
            if token:
                kw["ContinuationToken"] = token
            page = client.list_objects_v2(**kw)
            keys += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return keys

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            try:
                self.pg.stop()
            finally:
                shutil.rmtree(self.root, ignore_errors=True)


def start_tracking_stack(
    s3: S3Server, host: str = "127.0.0.1", bucket: str = BUCKET, prefix: str = PREFIX
) -> TrackingStack:
    """PostgreSQL + MLflow server on ``host``, artifacts in ``s3://bucket/prefix`` on ``s3`` (bucket created)."""
    client = s3.client()
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
    # Under /tmp, not pytest's tmp_path: PostgreSQL runs as 'postgres' when we are root, and pytest's
    # base directory (/tmp/pytest-of-root, mode 0700) is not searchable by that user.
    root = Path(tempfile.mkdtemp(prefix="mlops-ray-tracking-"))
    os.chmod(root, 0o711)
    t0 = time.perf_counter()
    pg = start_postgres(root / "postgres", host=host)
    t1 = time.perf_counter()
    try:
        server = start_mlflow_server(
            pg.uri,
            f"s3://{bucket}/{prefix}",
            host=host,
            env={**pg.env, **s3_env(s3)},
            log_path=root / "mlflow.log",
        )
    except BaseException:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    t2 = time.perf_counter()
    return TrackingStack(root, pg, server, s3, bucket, prefix, t2 - t0, {"postgres_s": t1 - t0, "mlflow_s": t2 - t1})
