"""An MLflow tracking server for clusters: PostgreSQL as the backend store, artifacts proxied by the server.

Nothing here needs a shared disk: run data and the model registry live in PostgreSQL, and the server
proxies artifact uploads and downloads (``--serve-artifacts``) to ``--artifacts-destination`` (an
object store such as ``s3://BUCKET/PREFIX``, or a local path on the server's machine). Clients,
Ray workers and Serve replicas only need ``mlflow.tracking_uri: http://HOST:PORT``.

* :func:`start_postgres` runs the machine's own PostgreSQL server binaries (Debian's ``postgresql``
  package; ``pg_config --bindir``, else ``/usr/lib/postgresql/*/bin``) on a data directory of ours
  and an ephemeral port. PostgreSQL refuses to run as root: as root, the data directory belongs to
  the ``postgres`` system user and ``initdb`` / ``pg_ctl`` run through ``runuser -u postgres``.
  Authentication: the unix socket (in the data directory, mode 0700, so only its owner and root
  reach it) trusts, and is how the database and role are set up; TCP accepts only role ``mlflow``
  to database ``mlflow`` from this machine's own addresses (``samehost``) with a password (SCRAM)
  generated at every start, handed to MLflow as ``PGPASSWORD`` in its environment (never on a
  command line, never in a file).
* :func:`start_mlflow_server` runs ``mlflow server`` (uvicorn, one worker by default) on a free port
  and waits for ``GET /health``.

Both listen on the host given (default ``127.0.0.1``), never on all interfaces. ``mlops-ray
tracking-server start`` (``mlops_ray/cli.py``) starts both and stays in the foreground.

No Ray and no MLflow import here: MLflow runs as its own process.
"""

from __future__ import annotations

import grp
import importlib.util
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mlops_ray import ports
from mlops_ray.errors import ConfigError, TrackingServerError

PG_USER = "postgres"  # the system user PostgreSQL runs as when we are root (Debian creates it)
DB_NAME = "mlflow"
DB_ROLE = "mlflow"
WILDCARD_HOSTS = ("0.0.0.0", "::", "", "*")
_INSTALL_HINT = (
    "install PostgreSQL's server binaries (Debian/Ubuntu: 'apt-get install postgresql'; they provide "
    "initdb, pg_ctl and postgres, found through 'pg_config --bindir' or /usr/lib/postgresql/*/bin)"
)
_ADDRESS_IN_USE = re.compile(r"address already in use|could not bind|errno 98", re.I)
# unix socket paths are limited to 108 bytes ("<dir>/.s.PGSQL.<port>")
_MAX_SOCKET_DIR = 90


# ------------------------------------------------------------------------------------------ helpers
def check_host(host: str) -> str:
    """``host`` if a server may bind it: one address or name, never all interfaces."""
    if host.strip() in WILDCARD_HOSTS:
        raise ConfigError(
            f"--host {host!r} would listen on every interface; give the one address clients use "
            "(127.0.0.1 on one machine, the node's private address on a cluster)"
        )
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as err:
        raise ConfigError(f"--host {host!r}: not an address of this machine or a name it resolves ({err})") from None
    return host


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, outside Ray's worker and the kernel's ephemeral port ranges
    where possible (:func:`mlops_ray.ports.free_ports`).

    The server binds it a moment later in another process; callers retry on a lost race.
    """
    try:
        return ports.free_ports(1, host)[0]
    except OSError:
        raise TrackingServerError(f"cannot bind a TCP port on {host}: is it an address of this machine?") from None


def _tail(path: Path | None, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace") if path is not None else ""
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _as_root() -> bool:
    return os.geteuid() == 0


def _pg_ids() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(PG_USER)
    except KeyError:
        raise TrackingServerError(
            f"PostgreSQL refuses to run as root and there is no {PG_USER!r} system user to run it as; "
            f"{_INSTALL_HINT} (the package creates the user), or run this command as another user"
        ) from None
    return pw.pw_uid, pw.pw_gid


# ------------------------------------------------------------------------------------------ PostgreSQL
def _bindir_ok(d: Path) -> bool:
    return all((d / exe).is_file() and os.access(d / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres", "psql"))


def _version_key(d: Path) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in d.parent.name.split("."))


def find_postgres_bindir() -> Path | None:
    """The directory with ``initdb``, ``pg_ctl``, ``postgres`` and ``psql``: ``pg_config --bindir``, else the
    newest ``/usr/lib/postgresql/*/bin``; None when the machine has no PostgreSQL server."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    return next((d for d in candidates if _bindir_ok(d)), None)


def install_postgres() -> Path:
    """Install Debian's ``postgresql`` with apt-get (root only) and return its bindir.

    Debian's package would create and start a cluster of its own on the fixed port 5432; a
    ``createcluster.d`` drop-in (``create_main_cluster = false``) written first keeps it from doing so.
    """
    apt = shutil.which("apt-get")
    if not _as_root() or apt is None:
        why = "not running as root" if apt is not None else "apt-get is not available"
        raise TrackingServerError(f"no PostgreSQL server binaries on this machine ({why}); {_INSTALL_HINT}")
    dropin = Path("/etc/postgresql-common/createcluster.d/mlops-ray.conf")
    if not dropin.exists():
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text("# written by mlops-ray: no default cluster on port 5432\ncreate_main_cluster = false\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    out = subprocess.run(install, capture_output=True, text=True, env=env)
    if out.returncode != 0:  # a machine that never listed packages: list them once, then try again
        subprocess.run([apt, "update", "-q"], capture_output=True, text=True, env=env)
        out = subprocess.run(install, capture_output=True, text=True, env=env)
    bindir = find_postgres_bindir()
    if out.returncode != 0 or bindir is None:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-10:])
        raise TrackingServerError(
            f"'apt-get install postgresql' failed (exit {out.returncode}); {_INSTALL_HINT}\n{tail}"
        )
    return bindir


def _run(cmd: list[str], *, as_pg: bool, what: str, input: str | None = None, timeout: float = 120) -> str:
    """Run a PostgreSQL tool (as the ``postgres`` user when ``as_pg``); its output, or a clear error."""
    full = ["runuser", "-u", PG_USER, "--", *cmd] if as_pg else cmd
    try:
        out = subprocess.run(full, capture_output=True, text=True, input=input, timeout=timeout, cwd="/")
    except subprocess.TimeoutExpired:
        raise TrackingServerError(f"{what} did not finish in {timeout:.0f} s: {' '.join(cmd)}") from None
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise TrackingServerError(f"{what} failed (exit {out.returncode}): {' '.join(cmd)}\n{tail}")
    return out.stdout


def _first_unreachable(path: Path) -> Path | None:
    """The first ancestor of ``path`` the ``postgres`` user cannot traverse (mode bits; None: all can)."""
    uid, gid = _pg_ids()
    groups = {gid} | {g.gr_gid for g in grp.getgrall() if PG_USER in g.gr_mem}
    for d in [*reversed(path.parents)]:
        st = d.stat()
        if st.st_uid == uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return d
    return None


def _write(path: Path, text: str, owner: tuple[int, int] | None) -> None:
    path.write_text(text)
    path.chmod(0o600)
    if owner is not None:
        os.chown(path, *owner)


_HBA = """\
# Written by mlops-ray (mlops_ray/tracking_server.py) at every start.
# The unix socket lives in the data directory (mode 0700): only its owner and root reach it.
local   all       all                    trust
# TCP: role mlflow to database mlflow, from this machine's own addresses, with its password.
host    {db:<9} {role:<9} samehost     scram-sha-256
"""


@dataclass
class Postgres:
    """A running PostgreSQL server holding the ``mlflow`` database (see :func:`start_postgres`).

    ``uri`` carries no password: give the process that connects ``env`` (``PGPASSWORD``), as
    :func:`start_mlflow_server` does with ``env=pg.env``.
    """

    data_dir: Path
    host: str
    port: int
    bindir: Path
    socket_dir: Path
    password: str = field(repr=False)
    pid: int | None = None
    as_pg: bool = False
    database: str = DB_NAME
    user: str = DB_ROLE
    _own_socket_dir: bool = field(default=False, repr=False)

    @property
    def uri(self) -> str:
        """SQLAlchemy URI for MLflow's ``--backend-store-uri`` (psycopg 3; the password comes from ``env``)."""
        return f"postgresql+psycopg://{self.user}@{url_host(self.host)}:{self.port}/{self.database}"

    @property
    def env(self) -> dict[str, str]:
        """Environment a client process needs besides ``uri`` (libpq reads ``PGPASSWORD``)."""
        return {"PGPASSWORD": self.password}

    def connect_kwargs(self) -> dict:
        """Keyword arguments for ``psycopg.connect`` to the ``mlflow`` database."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.database,
            "password": self.password,
        }

    @property
    def version(self) -> str:
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError:
            return "?"

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (sessions are disconnected, data is kept); quiet when already stopped."""
        stop_postgres(self.data_dir, self.bindir, as_pg=self.as_pg)
        if self._own_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def postgres_pid(data_dir: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid`` if that process is alive, else None."""
    try:
        pid = int((Path(data_dir) / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def stop_postgres(data_dir: str | os.PathLike, bindir: Path | None = None, *, as_pg: bool | None = None) -> bool:
    """Stop the server running on ``data_dir`` (``pg_ctl stop -m fast``); False when none was running."""
    data_dir = Path(data_dir)
    if postgres_pid(data_dir) is None:
        return False
    bindir = bindir or find_postgres_bindir()
    if bindir is None:
        raise TrackingServerError(f"cannot stop PostgreSQL on {data_dir}: pg_ctl not found; {_INSTALL_HINT}")
    as_pg = _as_root() if as_pg is None else as_pg
    _run(
        [str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "60", "stop"],
        as_pg=as_pg,
        what="pg_ctl stop",
    )
    return True


def start_postgres(data_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0) -> Postgres:
    """Start PostgreSQL on ``data_dir`` (created with ``initdb`` when empty or missing; reused otherwise).

    Listens on ``host``:``port`` (0: a free port) and a unix socket in ``data_dir``; makes sure role
    and database ``mlflow`` exist, with a new password for this run. As root, ``data_dir`` belongs to
    the ``postgres`` user and every directory above it must be searchable by that user.

    Raises:
        TrackingServerError: no server binaries (and no way to install them), initdb or start failed.
        ConfigError: ``host`` is a wildcard or unknown; ``data_dir`` is not a PostgreSQL directory.
    """
    check_host(host)
    data_dir = Path(data_dir).absolute()
    bindir = find_postgres_bindir() or install_postgres()
    as_pg = _as_root()
    owner = _pg_ids() if as_pg else None
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"{data_dir} is a file; PostgreSQL needs a directory there")
    fresh = not (data_dir / "PG_VERSION").exists()
    if fresh and data_dir.exists() and any(data_dir.iterdir()):
        raise ConfigError(f"{data_dir} is neither empty nor a PostgreSQL data directory (no PG_VERSION)")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)
    if owner is not None:
        os.chown(data_dir, *owner)
        blocked = _first_unreachable(data_dir)
        if blocked is not None:
            raise TrackingServerError(
                f"PostgreSQL refuses to run as root, so it runs as the {PG_USER!r} user, who cannot reach "
                f"{data_dir}: {blocked} is not searchable by others (mode {blocked.stat().st_mode & 0o777:o}); "
                f"choose a data directory under one that {PG_USER!r} can traverse, or 'chmod o+x {blocked}'"
            )
    if fresh:
        _run(
            [str(bindir / "initdb"), "-D", str(data_dir), "-U", PG_USER, "-E", "UTF8", "--no-locale"]
            + ["--auth-local=trust", "--auth-host=scram-sha-256"],
            as_pg=as_pg,
            what="initdb",
        )
        conf = data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write("\n# mlops-ray: address, port and socket of this start\ninclude_if_exists 'mlops-ray.conf'\n")
    _write(data_dir / "pg_hba.conf", _HBA.format(db=DB_NAME, role=DB_ROLE), owner)

    own_socket_dir = len(str(data_dir)) > _MAX_SOCKET_DIR
    socket_dir = Path(tempfile.mkdtemp(prefix="mlops-pg-")) if own_socket_dir else data_dir
    if own_socket_dir and owner is not None:
        os.chown(socket_dir, *owner)
    chosen = port == 0
    tries = 3 if chosen else 1
    for attempt in range(tries):
        p = free_port(host) if chosen else port
        quoted = {k: str(v).replace("'", "''") for k, v in {"host": host, "sock": socket_dir}.items()}
        _write(
            data_dir / "mlops-ray.conf",
            f"listen_addresses = '{quoted['host']}'\nport = {p}\nunix_socket_directories = '{quoted['sock']}'\n",
            owner,
        )
        log = data_dir / "postgres.log"
        try:
            _run(
                [str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-w", "-t", "60", "start"],
                as_pg=as_pg,
                what="pg_ctl start",
            )
            break
        except TrackingServerError as err:
            if attempt + 1 < tries and _ADDRESS_IN_USE.search(_tail(log, 10)):
                continue  # lost the port between choosing and binding it
            if own_socket_dir:
                shutil.rmtree(socket_dir, ignore_errors=True)
            raise TrackingServerError(f"{err}\n--- {log} (last lines):\n{_tail(log)}") from None
    password = secrets.token_urlsafe(24)
    pg = Postgres(
        data_dir, host, p, bindir, socket_dir, password, postgres_pid(data_dir), as_pg, _own_socket_dir=own_socket_dir
    )
    setup = (
        f"SELECT 'CREATE ROLE {DB_ROLE} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_ROLE}')"
        "\\gexec\n"
        f"ALTER ROLE {DB_ROLE} WITH LOGIN PASSWORD '{pg.password}';\n"
        f"SELECT 'CREATE DATABASE {DB_NAME} OWNER {DB_ROLE}' "
        f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DB_NAME}')\\gexec\n"
    )
    try:
        _run(
            [str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(socket_dir), "-p", str(p)]
            + ["-U", PG_USER, "-d", "postgres"],
            as_pg=as_pg,
            what="creating the mlflow role and database",
            input=setup,
        )
    except BaseException:
        pg.stop()
        raise
    return pg


# ------------------------------------------------------------------------------------------ MLflow
@dataclass
class MlflowServer:
    """A running ``mlflow server`` (its own process group; see :func:`start_mlflow_server`)."""

    host: str
    port: int
    process: subprocess.Popen = field(repr=False)
    log_path: Path
    artifacts_destination: str
    backend_uri: str

    @property
    def url(self) -> str:
        """The tracking URI clients use: ``mlflow.tracking_uri`` / ``MLFLOW_TRACKING_URI``."""
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's process group (the ``mlflow`` CLI and its uvicorn), SIGKILL after ``timeout``."""
        stop_process_group(self.process.pid, timeout)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_process_group(pgid: int, timeout: float = 15.0) -> bool:
    """SIGTERM the process group ``pgid``, then SIGKILL what is left after ``timeout``; False if it was gone."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        try:  # reap our own child, or the group never empties
            os.waitpid(pgid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _artifacts_destination(dest: str | os.PathLike) -> str:
    text = str(dest)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        if text.startswith("file://"):
            Path(text[len("file://") :]).mkdir(parents=True, exist_ok=True)
        return text
    path = Path(text).absolute()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _allowed_hosts(host: str, port: int, extra: list[str] | None) -> list[str] | None:
    """``--allowed-hosts`` for MLflow's Host-header check: None (MLflow's default: localhost and private
    addresses) for a loopback server, else the server's own address and ``extra``."""
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback and not extra:
        return None
    h = url_host(host)
    return [h, f"{h}:{port}", "localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", *(extra or [])]


def _mlflow_command() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "mlflow"]


def _get(url: str, timeout: float) -> int:
    req = urllib.request.Request(url, headers={"Connection": "close"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - our own server
        return r.status


def start_mlflow_server(
    backend_uri: str,
    artifacts_destination: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int = 1,
    env: dict[str, str] | None = None,
    *,
    log_path: str | os.PathLike | None = None,
    allowed_hosts: list[str] | None = None,
    timeout_s: float = 180.0,
) -> MlflowServer:
    """Run ``mlflow server --backend-store-uri BACKEND --serve-artifacts --artifacts-destination DEST`` on
    ``host``:``port`` (0: a free port) and wait until ``GET /health`` answers.

    Args:
        artifacts_destination: ``s3://BUCKET/PREFIX`` (endpoint from ``MLFLOW_S3_ENDPOINT_URL`` in
            ``env``, credentials from the usual AWS variables) or a local path (created).
        env: added to this process's environment for the server (e.g. ``Postgres.env``, S3 settings).
            MLflow's job runner (GenAI evaluation jobs, not used by mlops-ray) is off unless ``env``
            sets ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION``.
        log_path: the server's stdout and stderr (default: a file in the temp directory).
        allowed_hosts: Host headers to accept besides the server's own address (e.g. a DNS name).

    Raises:
        TrackingServerError: the server exited or did not answer in ``timeout_s`` (with its log's tail).
    """
    check_host(host)
    if backend_uri.startswith("postgresql") and importlib.util.find_spec("psycopg") is None:
        raise TrackingServerError("MLflow's PostgreSQL store needs psycopg: pip install 'mlops-ray[cluster]'")
    dest = _artifacts_destination(artifacts_destination)
    if dest.startswith("s3://") and importlib.util.find_spec("boto3") is None:
        raise TrackingServerError(
            "artifacts on S3 need boto3 in the server's environment: pip install 'mlops-ray[cluster]'"
        )
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="mlops-ray-mlflow-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch(mode=0o600)
    child_env = dict(os.environ)
    child_env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    child_env.update(env or {})
    chosen = port == 0
    tries = 3 if chosen else 1
    for attempt in range(tries):
        p = free_port(host) if chosen else port
        cmd = [*_mlflow_command(), "server", "--backend-store-uri", backend_uri, "--serve-artifacts"]
        cmd += ["--artifacts-destination", dest, "--host", host, "--port", str(p), "--workers", str(workers)]
        hosts = _allowed_hosts(host, p, allowed_hosts)
        if hosts:
            cmd += ["--allowed-hosts", ",".join(hosts)]
        with open(log_path, "ab") as log:
            log.write(f"--- mlops-ray: starting {' '.join(cmd)}\n".encode())
            log.flush()
            start = log.tell()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,
                cwd="/",
            )
        server = MlflowServer(host, p, proc, log_path, dest, backend_uri)
        try:
            if _wait_healthy(server, start, timeout_s, retry=attempt + 1 < tries):
                return server
        except BaseException:  # a failure, or a signal while waiting: nothing is left running
            stop_process_group(proc.pid, 5)
            raise
    raise TrackingServerError(f"mlflow server could not bind a port on {host} in {tries} tries; see {log_path}")


def _wait_healthy(server: MlflowServer, log_start: int, timeout_s: float, retry: bool) -> bool:
    """True once ``/health`` answers 200; False when the server lost its port and ``retry`` allows another."""
    proc, log_path = server.process, server.log_path
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            new = log_path.read_bytes()[log_start:].decode(errors="replace")
            stop_process_group(proc.pid, 5)
            if retry and _ADDRESS_IN_USE.search(new):
                return False  # lost the port between choosing and binding it
            raise TrackingServerError(
                f"mlflow server exited with code {proc.returncode} before answering /health\n"
                f"--- {log_path} (last lines):\n{_tail(log_path)}"
            )
        try:
            if _get(f"{server.url}/health", timeout=2) == 200:
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TrackingServerError(
                f"mlflow server did not answer {server.url}/health in {timeout_s:.0f} s\n"
                f"--- {log_path} (last lines):\n{_tail(log_path)}"
            )
        time.sleep(0.25)


# ------------------------------------------------------------------------------------------ the CLI's record
RECORD = "server.json"


def _started(pid: int) -> float | None:
    """When process ``pid`` started (psutil's create_time: tells a pid from its reuse); None: gone, or a zombie."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except psutil.Error:
        return None


def process_entry(pid: int | None) -> dict:
    return {"pid": pid, "started": _started(pid) if pid else None}


def entry_alive(entry: dict | None) -> bool:
    """True when the process an entry of the record names still runs (same pid, same start time)."""
    if not entry or not entry.get("pid"):
        return False
    now = _started(entry["pid"])
    return now is not None and (entry.get("started") is None or abs(now - entry["started"]) < 0.01)


def write_record(data_dir: Path, record: dict) -> Path:
    """``<data_dir>/server.json`` (mode 0600), written whole (a reader never sees half of it)."""
    import json

    path = Path(data_dir) / RECORD
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def read_record(data_dir: Path) -> dict | None:
    """The record a ``tracking-server start`` left in ``data_dir``, or None."""
    import json

    path = Path(data_dir) / RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} cannot be read ({err}); remove it if no tracking server runs there") from None


def stop_recorded(data_dir: Path, record: dict, timeout: float = 60.0) -> list[str]:
    """Stop what ``record`` names: ask the foreground ``start`` process (SIGTERM: it stops both servers
    and removes the record), else stop the MLflow process group and PostgreSQL directly. Returns what
    was stopped, one line each (empty: nothing was running)."""
    done = []
    owner = record.get("process")
    if entry_alive(owner):
        os.kill(owner["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while entry_alive(owner) and time.monotonic() < deadline:
            time.sleep(0.1)
        if entry_alive(owner):
            os.kill(owner["pid"], signal.SIGKILL)
        done.append(f"tracking-server start (pid {owner['pid']})")
    mlflow = record.get("mlflow") or {}
    if entry_alive(mlflow):
        stop_process_group(mlflow["pid"])
        done.append(f"mlflow server (pid {mlflow['pid']})")
    pg = record.get("postgres") or {}
    if pg.get("data_dir") and stop_postgres(pg["data_dir"], Path(pg["bindir"]) if pg.get("bindir") else None):
        done.append(f"PostgreSQL (pid {pg.get('pid')})")
    (Path(data_dir) / RECORD).unlink(missing_ok=True)
    return done
