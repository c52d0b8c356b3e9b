"""``mlops-ray`` command line: parse, call one function, print.

Any :class:`~mlops_ray.errors.MlopsRayError` becomes a short message on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlops_ray.errors import ConfigError, MlopsRayError

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context

_FIX_STORAGE = "or set MLOPS_RAY_HOME to a workspace on a writable disk with free space, then run the command again"


def _causes(err: BaseException):
    """``err`` and every error behind it (Ray's ``cause``, ``__cause__``, ``__context__``), each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (getattr(e, "cause", None), e.__cause__, e.__context__) if isinstance(x, BaseException)]


def _storage_problem(err: BaseException) -> str | None:
    """One line for a full disk or a read-only / unwritable path anywhere in ``err``'s causes, else None."""
    for e in _causes(err):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            path = e.filename or "the workspace"
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                return f"no space left on the disk holding {path} ({e.strerror}); free space there {_FIX_STORAGE}"
            if e.errno == errno.EROFS:
                return f"cannot write {path}: the file system is read-only; remount it read-write {_FIX_STORAGE}"
            return (
                f"cannot write {path}: permission denied; make it writable (and readable) for this user {_FIX_STORAGE}"
            )
        text = str(e).lower()
        if "attempt to write a readonly database" in text:
            return f"the MLflow database is read-only; make it and its directory writable {_FIX_STORAGE}"
        if "database or disk is full" in text:
            return f"the disk holding the MLflow database is full; free space there {_FIX_STORAGE}"
    return None


def _friendly(fn):
    """Turn typed errors (also when raised inside Ray tasks), a full disk and a read-only workspace into
    clean CLI errors: one ``error:`` line, exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from mlops_ray import library_logs

        log, ctx = library_logs.active(), click.get_current_context(silent=True)
        if log is not None and ctx is not None:
            log.name_command(_command_name(ctx))
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # ours, also wrapped by Ray (tasks, actors, Ray Data UDFs)
            message = _user_error(err) or _storage_problem(err)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            sys.exit(2)

    return wrapper


# The last line of a worker traceback that ends in one of our errors, up to the blank line after it.
_WRAPPED_ERROR = re.compile(r"^mlops_ray\.errors\.\w+: (.*?)(?:\n\s*\n|\Z)", re.M | re.S)


def _user_error(err: BaseException) -> str | None:
    """The message of the :class:`MlopsRayError` behind ``err``, or None.

    Ray re-raises a task's error as ``RayTaskError(SchemaError)``, whose ``str`` is the whole
    worker traceback (the error itself is its ``cause``); Ray Data wraps a UDF's error in a
    ``UserCodeException`` and Ray pickles that without its ``__cause__``, so only the traceback
    text still names our error: its last ``mlops_ray.errors.X: message`` line is the message.
    """
    for e in _causes(err):
        if isinstance(e, MlopsRayError) and not isinstance(getattr(e, "cause", None), MlopsRayError):
            return str(e)
    if any(c.__module__.split(".")[0] == "ray" for c in type(err).__mro__):
        found = _WRAPPED_ERROR.findall(str(err))
        if found:
            return found[-1].strip()
    return None


def _parse_fractions(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise ConfigError(
                f"--fractions: expected name=fraction pairs like train=0.8,valid=0.1,test=0.1; got {part!r}"
            )
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ConfigError(f"--fractions: {v!r} (for split {k.strip()!r}) is not a number") from None
    from mlops_ray.data.hashing import split_boundaries

    try:
        split_boundaries(out)
    except ValueError as err:
        raise ConfigError(f"--fractions: {err}") from None
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlops-ray")
@click.option(
    "--verbose",
    is_flag=True,
    help="Print Ray's and MLflow's own logs, warnings and worker output on the console "
    "(default: into <workspace>/logs/, named at the end of the command).",
)
@click.pass_context
def main(ctx: click.Context, verbose):
    """mlops-ray: raw tabular data to a monitored model service on Ray."""
    try:  # a Ray / MLflow whose internals mlops-ray was not verified against: one line, before any command
        from mlops_ray import compat

        compat.check_versions()
    except MlopsRayError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    if not verbose:
        from mlops_ray import library_logs

        root = _context().workspace.root  # $MLOPS_RAY_HOME; nothing is created until a library writes
        library_logs.activate(library_logs.for_workspace(root, ctx.invoked_subcommand or "command"))
        ctx.call_on_close(_close_library_log)


def _close_library_log() -> None:
    """Stop routing library output; name the log file if anything went there."""
    from mlops_ray import library_logs

    log = library_logs.deactivate()
    if log is not None and log.written:
        click.echo(f"library logs: {log.path}", err=True)


def _command_name(ctx: click.Context) -> str:
    """``data-prepare`` for ``mlops-ray data prepare`` (names the library log file)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return "-".join(reversed(names)) or "command"


# ----------------------------------------------------------------------------- data
@main.group()
def data():
    """Generate, split, fingerprint and prepare datasets."""


@data.command("generate")
@click.option("--rows", type=click.IntRange(min=1), required=True, help="Total rows to write.")
@click.option("--out", "out", required=True, help="Output directory, or an object-store URI (s3://bucket/prefix).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shards", type=click.IntRange(min=1), default=4, show_default=True, help="Number of Parquet files.")
@click.option(
    "--drift",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="0 = none, 1 = strong covariate/concept drift and unseen categories.",
)
@_friendly
def data_generate(rows, out, seed, shards, drift):
    """Write a synthetic customer dataset as sharded Parquet."""
    from tqdm import tqdm

    from mlops_ray.data.generate import generate_dataset
    from mlops_ray.storage import Location, is_uri

    remote = is_uri(out) and not out.lower().startswith("file://")
    if remote:
        try:
            dest = Location.of(out)
            existing = [r for r in dest.files() if r.endswith(".parquet") and "/" not in r]
        except (OSError, ValueError) as err:  # pyarrow: unknown scheme, no bucket, unreachable store
            raise ConfigError(f"--out {out}: {err}") from None
        where = dest.uri
    else:
        out_p = Path(out)
        if out_p.exists() and not out_p.is_dir():
            raise ConfigError(f"--out {out} is a file; give a directory")
        existing = list(out_p.glob("*.parquet")) if out_p.is_dir() else []
        where = str(out_p.resolve())
    if existing:
        raise ConfigError(f"--out {out} already contains Parquet files; choose an empty directory")
    if shards > rows:
        raise ConfigError(f"--shards ({shards}) must not exceed --rows ({rows})")
    with tqdm(total=rows, unit="row", unit_scale=True, desc="generate") as bar:
        try:
            paths = generate_dataset(out, rows, shards=shards, seed=seed, drift=drift, progress=bar.update)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    click.echo(f"wrote {rows} rows in {len(paths)} shard(s) to {where}")


@data.command("split")
@click.argument("input_path", metavar="INPUT")
@click.option("--id-column", required=True)
@click.option("--fractions", default="train=0.8,valid=0.1,test=0.1", show_default=True)
@click.option("--salt", default="v1", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["auto", "parquet", "csv"]), default="auto", show_default=True)
@click.option("--engine", type=click.Choice(["ray", "local"]), default="ray", show_default=True)
@_friendly
def data_split(input_path, id_column, fractions, salt, out, fmt, engine):
    """Split INPUT by the stable id hash into OUT/<split>/*.parquet."""
    from mlops_ray.data.split_files import split_source

    counts = split_source(input_path, id_column, _parse_fractions(fractions), salt, out, fmt=fmt, engine=engine)
    total = sum(counts.values())
    for k, v in counts.items():
        click.echo(f"{k:>8}: {v:>10}  ({v / total:.2%})" if total else f"{k:>8}: 0")
    click.echo(f"{'total':>8}: {total:>10}  -> {Path(out).resolve()}")


@data.command("fingerprint")
@click.argument("input_path", metavar="INPUT")
@click.option("--format", "fmt", type=click.Choice(["auto", "parquet", "csv"]), default="auto", show_default=True)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local streams in this process; ray runs batches as Ray Data tasks.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def data_fingerprint(input_path, fmt, engine, as_json):
    """Digest of the logical content of INPUT (all rows, order/layout independent)."""
    from mlops_ray.data.split_files import fingerprint_source

    digest, rows = fingerprint_source(input_path, fmt=fmt, engine=engine)
    if as_json:
        click.echo(json.dumps({"fingerprint": digest, "rows": rows}))
    else:
        click.echo(f"{digest}  rows={rows}")


def _print_snapshot_summary(res) -> None:
    m = res.snapshot.manifest
    state = "reused existing" if res.reused else "created"
    click.echo(f"snapshot {m['name']}/{m['snapshot_id']} ({state}, {res.seconds:.1f}s)")
    click.echo(f"  path:        {res.snapshot.path}")
    click.echo(f"  fingerprint: {m['fingerprint']}")
    click.echo(f"  rows:        {m['rows']}")
    for k, v in m["rows_per_split"].items():
        click.echo(f"    {k:>8}: {v:>10}  ({v / max(m['rows'], 1):.2%})")
    click.echo(
        f"  features:    {len(m['spec']['numeric_features'])} numeric, "
        f"{len(m['spec']['categorical_features'])} categorical -> {len(m['feature_names'])} model inputs"
    )
    for note in res.notes:
        click.echo(f"  note: {note}")


@data.command("prepare")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Pipeline YAML.")
@click.option("--engine", type=click.Choice(["ray", "local"]), default="ray", show_default=True)
@_friendly
def data_prepare(config_path, engine):
    """Validate, split, fingerprint and snapshot the configured source."""
    from mlops_ray.pipeline import stages

    cfg = _load(config_path)
    _print_snapshot_summary(stages.prepare(_context(cfg), cfg, engine=engine, progress=True, config_label=config_path))


@data.command("list")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def data_list(as_json):
    """List every snapshot in the workspace."""
    snaps = _context().snapshots.list()
    if as_json:
        click.echo(json.dumps([dict(s.manifest, usage=s.usage()) for s in snaps], indent=1))
        return
    if not snaps:
        click.echo("no snapshots yet; run 'mlops-ray data prepare --config FILE'")
        return
    header = f"{'NAME':<16} {'SNAPSHOT':<17} {'FINGERPRINT':<13} {'ROWS PER SPLIT':<34} {'CREATED':<21}"
    click.echo(f"{header} {'USED BY':<8} SOURCE")
    for s in snaps:
        m = s.manifest
        rows = ",".join(f"{k}={v}" for k, v in m["rows_per_split"].items())
        click.echo(
            f"{m['name']:<16} {m['snapshot_id']:<17} {m['fingerprint'][:12]:<13} {rows:<34} "
            f"{m['created_at']:<21} {len(s.usage()):<8} {m['source']['uri']}"
        )


@data.command("show")
@click.argument("snapshot_ref", metavar="SNAPSHOT_ID")
@click.option(
    "--verify",
    is_flag=True,
    help="Instead of the manifest, check every file's size and SHA-256 against it (exit 2 if any differs).",
)
@_friendly
def data_show(snapshot_ref, verify):
    """Print a snapshot's manifest (ID, ID prefix, NAME/ID or NAME@latest)."""
    s = _context().snapshots.find(snapshot_ref)
    if verify:
        check = s.verify()
        click.echo(check.note if check.note else f"snapshot {s.name}/{s.id}: {check.describe()}")
        return
    click.echo(json.dumps(dict(s.manifest, path=str(s.path), usage=s.usage()), indent=1))


# ------------------------------------------------------------------- train/registry
def _load(config_path):
    from mlops_ray.config import load_config

    return load_config(config_path)


def _context(cfg: PipelineConfig | None = None):
    """The one Context of this CLI invocation (workspace from $MLOPS_RAY_HOME, MLflow from the config)."""
    from mlops_ray.context import Context

    return Context.create(cfg)


def _snapshot_for(ctx: Context, cfg: PipelineConfig, snapshot_ref: str | None, config_label: str | None = None):
    """The named snapshot, or (CLI convenience) the config's data prepared now, reused when unchanged."""
    if snapshot_ref:
        return ctx.snapshots.find(snapshot_ref)
    from mlops_ray.pipeline import stages

    res = stages.prepare(ctx, cfg, config_label=config_label)
    click.echo(
        f"prepared snapshot {res.snapshot.id} ({'reused' if res.reused else 'created'}); "
        "pass --snapshot to train on a given one"
    )
    return res.snapshot


def _print_candidate(res, kind: str) -> None:
    click.echo(f"{kind} run {res.run_id}  snapshot {res.snapshot_id}")
    if res.plan is not None:
        click.echo(
            f"  execution: {res.plan.mode} (workers={res.plan.num_workers}, threads={res.plan.nthread}) "
            f"- {res.plan.reason}"
        )
    for k in sorted(res.metrics):
        click.echo(f"  {k:<18} {res.metrics[k]:.5f}")
    check = res.extra.get("snapshot_check", "")
    if check and not check.startswith("verified"):
        click.echo(f"  note: {check}")
    if res.version:
        click.echo(f"  registered version {res.version} (alias 'challenger')  ({res.model_uri})")


config_option = click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Pipeline YAML."
)


@main.command("train")
@config_option
@click.option("--snapshot", "snapshot_ref", default=None, help="Snapshot id/prefix/NAME@latest (default: prepare).")
@click.option(
    "--execution", type=click.Choice(["auto", "local", "distributed"]), default=None, help="Override model.execution."
)
@click.option("--no-register", is_flag=True, help="Log to MLflow but do not register a version.")
@_friendly
def train_cmd(config_path, snapshot_ref, execution, no_register):
    """Train the configured model (Ray Train v2), log to MLflow, register as challenger."""
    from mlops_ray.config import TrainingSpec
    from mlops_ray.train.run import train_model

    cfg = _load(config_path)
    ctx = _context(cfg)
    snap = _snapshot_for(ctx, cfg, snapshot_ref, config_path)
    _print_candidate(
        train_model(ctx, TrainingSpec.from_config(cfg), snap, execution=execution, register=not no_register), "train"
    )


@main.command("tune")
@config_option
@click.option("--snapshot", "snapshot_ref", default=None)
@click.option("--no-register", is_flag=True)
@_friendly
def tune_cmd(config_path, snapshot_ref, no_register):
    """Ray Tune search (ASHA); each trial an MLflow child run; best becomes challenger."""
    from mlops_ray.config import TrainingSpec
    from mlops_ray.train.tune import tune_model

    cfg = _load(config_path)
    ctx = _context(cfg)
    res = tune_model(
        ctx, TrainingSpec.from_config(cfg), _snapshot_for(ctx, cfg, snapshot_ref, config_path), register=not no_register
    )
    click.echo(
        f"tuning: {res.extra['finished']}/{res.extra['trials']} trials finished in "
        f"{res.extra['tune_seconds']:.1f}s; best config {res.extra['best_config']}"
    )
    _print_candidate(res, "tune")


@main.command("promote")
@config_option
@click.option("--version", default=None, help="Version to gate (default: the one behind alias 'challenger' now).")
@click.option("--force", is_flag=True, help="Promote even if the gate says KEEP (recorded in history).")
@_friendly
def promote_cmd(config_path, version, force):
    """Gate a version against the deploy alias (serve.model_alias) on the same test rows; move it if better."""
    from mlops_ray.registry.promotion import challenger_version, promote

    cfg = _load(config_path)
    ctx = _context(cfg)
    if version is None:
        version = challenger_version(ctx, cfg.registry.model_name)
        click.echo(f"gating v{version} (the current 'challenger')")
    r = promote(ctx, cfg.registry, cfg.serve.model_alias, version, force=force)
    click.echo(
        f"{r.decision.action}: v{r.challenger_version} vs '{r.alias}' "
        f"{('v' + r.champion_version) if r.champion_version else '(none)'}"
    )
    for reason in r.decision.reasons:
        click.echo(f"  - {reason}")


@main.command("rollback")
@config_option
@click.option("--reason", default="manual rollback", show_default=True)
@_friendly
def rollback_cmd(config_path, reason):
    """Point the deploy alias (serve.model_alias) back at its previous version, one step per call."""
    from mlops_ray.registry.promotion import rollback

    cfg = _load(config_path)
    e = rollback(_context(cfg), cfg.registry.model_name, cfg.serve.model_alias, reason)
    click.echo(f"{e['alias']}: v{e['from_version']} -> v{e['to_version']} ({e['when']}, by {e['who']})")


@main.command("models")
@config_option
@click.option("--history", is_flag=True, help="Also print the alias history.")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def models_cmd(config_path, history, as_json):
    """List registered versions, aliases, key metrics and data fingerprints."""
    from mlops_ray.registry import tracking
    from mlops_ray.registry.promotion import list_models

    cfg = _load(config_path)
    ctx = _context(cfg)
    rows = list_models(ctx, cfg.registry.model_name)
    events = tracking.alias_history(ctx.client, cfg.registry.model_name) if history else []
    if as_json:
        click.echo(json.dumps({"versions": rows, "history": events}, indent=1, default=str))
        return
    if not rows:
        click.echo(f"no versions of {cfg.registry.model_name!r} yet")
    for r in rows:
        metrics = " ".join(f"{k}={v}" for k, v in sorted(r["metrics"].items()))
        click.echo(
            f"v{r['version']:<4} {','.join(r['aliases']) or '-':<22} snapshot={r['snapshot_id']} "
            f"data={r['data_fingerprint']} gate={r['gate'] or '-'} {metrics}"
        )
    for e in events:
        click.echo(
            f"  #{e['seq']} {e['when']} {e['alias']}: {e['from_version']} -> {e['to_version']} "
            f"[{e['action']}] by {e['who']}: {e['reason']}"
        )


@main.command("reproduce")
@click.argument("run_id")
@click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Pipeline YAML whose mlflow section locates the run (default: workspace MLflow).",
)
@click.option("--allow-code-change", is_flag=True, help="Compare even if the code differs from the run's.")
@_friendly
def reproduce_cmd(run_id, config_path, allow_code_change):
    """Re-run training from a logged run and compare metrics side by side."""
    from mlops_ray.train.reproduce import reproduce_run

    ctx = _context(_load(config_path) if config_path else None)
    c = reproduce_run(ctx, run_id, allow_code_change=allow_code_change)
    for n in c.notes:
        click.echo(f"note: {n}")
    click.echo(f"{'metric':<18} {'original':>12} {'reproduced':>12}  equal")
    for k, a, b in c.rows:
        click.echo(f"{k:<18} {a:>12.6f} {b:>12.6f}  {'yes' if a == b else 'NO'}")
    click.echo(f"reproduction run {c.new_run_id}: {'EXACT' if c.exact else 'DIFFERS'}")
    if not c.exact:
        sys.exit(1)


@main.command("predict")
@config_option
@click.option("--input", "input_path", required=True, help="Parquet/CSV file, directory or glob to score.")
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False), help="Empty output directory.")
@click.option("--model-uri", default=None, help="models:/NAME@ALIAS or models:/NAME/VERSION (default: serve alias).")
@_friendly
def predict_cmd(config_path, input_path, output_dir, model_uri):
    """Batch inference with Ray Data over an actor pool; same predictions as the HTTP service."""
    from mlops_ray.batch.predict import predict_files

    cfg = _load(config_path)
    m = predict_files(_context(cfg), cfg, input_path, output_dir, model_uri)
    click.echo(
        f"scored {m['rows']} rows with {m['model']['name']} v{m['model']['version']} in {m['seconds']:.1f}s "
        f"-> {output_dir}"
    )
    click.echo(f"  input fingerprint {m['input_fingerprint']}")


@main.group("serve", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Pipeline YAML.")
@click.pass_context
@_friendly
def serve_group(ctx: click.Context, config_path):
    """Run the model service in the foreground (Ray Serve) until Ctrl-C / SIGTERM."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config_path
        return
    if not config_path:
        raise ConfigError("mlops-ray serve needs --config FILE")
    from mlops_ray.serve.runner import serve_forever

    cfg = _load(config_path)
    serve_forever(_context(cfg), cfg, echo=click.echo)
    # Everything is stopped and recorded; skip interpreter teardown (Ray's and gRPC's exit hooks
    # took another 3-4 s), so a supervisor sees the process end when the service has.
    _close_library_log()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@serve_group.command("reload")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Pipeline YAML.")
@click.pass_obj
@_friendly
def serve_reload(parent_config, config_path):
    """Make every replica of the running service check the registry now."""
    from mlops_ray.serve.runner import reload_service

    path = config_path or parent_config
    if not path:
        raise ConfigError("mlops-ray serve reload needs --config FILE")
    cfg = _load(path)
    reload_service(_context(cfg), cfg)
    click.echo("reload requested: replicas switch once the new version is loaded")


# ------------------------------------------------------------------------ drift
@main.group("drift")
def drift_group():
    """Data, prediction and model drift (PSI against the reference bins frozen at training)."""


def _drift_output(ctx: Context, ev: dict, fmt: str, out: str | None, stem: str, fail_on: str | None) -> None:
    from datetime import datetime, timezone

    from mlops_ray.drift.psi import SEVERITY
    from mlops_ray.drift.render import render

    path = None
    if fmt in ("png", "html"):
        if out:
            path = Path(out)
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            path = ctx.workspace.ensure("reports") / f"{stem}-{stamp}.{fmt}"
    click.echo(render(ev, fmt, path))
    if fail_on and SEVERITY[ev["status"]] >= SEVERITY[fail_on]:
        sys.exit(1)


_format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "png", "html"]), default="table", show_default=True
)
_out_option = click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="File for png/html (default: <workspace>/reports/)."
)
_fail_option = click.option(
    "--fail-on", type=click.Choice(["warn", "alert"]), default=None, help="Exit 1 when the status is at least this."
)


@drift_group.command("compare")
@config_option
@click.option("--current", "current", required=True, help="New data: Parquet/CSV file, directory or glob.")
@click.option("--reference", "snapshot_ref", default=None, help="Snapshot id/prefix/NAME@latest as the reference.")
@click.option(
    "--model", "model_uri", default=None, help="models:/NAME@ALIAS or models:/NAME/VERSION (default: serve alias)."
)
@_format_option
@_out_option
@_fail_option
@_friendly
def drift_compare(config_path, current, snapshot_ref, model_uri, fmt, out, fail_on):
    """Compare a batch of new data with a reference (streaming, any size): PSI per feature."""
    from mlops_ray.drift.commands import compare_data

    cfg = _load(config_path)
    ctx = _context(cfg)
    ev = compare_data(ctx, cfg, current, snapshot=snapshot_ref, model_uri=model_uri)
    _drift_output(ctx, ev, fmt, out, "drift-compare", fail_on)


@drift_group.command("report")
@config_option
@click.option("--url", default=None, help="Service base URL (default: http://serve.host:serve.port).")
@click.option("--version", default=None, help="Model version (default: the one being served).")
@click.option(
    "--window",
    type=click.Choice(["latest", "current"]),
    default="latest",
    show_default=True,
    help="latest: the last closed window (else the one in progress); current: the window in progress.",
)
@_format_option
@_out_option
@_fail_option
@_friendly
def drift_report(config_path, url, version, window, fmt, out, fail_on):
    """The live drift report of the running service (its drift monitor), for a person or a script."""
    from mlops_ray.drift.commands import fetch_report, pick_evaluation

    cfg = _load(config_path)
    ctx = _context(cfg)
    report = fetch_report(cfg, url)
    if fmt == "json" and version is None and window == "latest":
        click.echo(json.dumps(report, indent=2))
        return
    _drift_output(ctx, pick_evaluation(report, version, window), fmt, out, "drift-report", fail_on)


@drift_group.command("model")
@config_option
@click.option(
    "--current", "current", required=True, help="New data (with labels): Parquet/CSV file, directory or glob."
)
@click.option("--model", "model_uri", default=None, help="Reference model (default: the serve alias).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_friendly
def drift_model(config_path, current, model_uri, fmt):
    """Model drift: train on the new data and compare what drives the model (permutation importance)."""
    from mlops_ray.drift.importance import format_model_drift
    from mlops_ray.pipeline.model_drift import model_drift_command

    cfg = _load(config_path)
    report = model_drift_command(_context(cfg), cfg, current, model_uri=model_uri)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"reference {report['model']} v{report['model_version']}; new-data model run {report['candidate_run_id']}"
    )
    click.echo(format_model_drift(report))


# ------------------------------------------------------------------------ pipeline
def _trigger_names() -> tuple[str, ...]:
    from mlops_ray.pipeline.triggers import trigger_names

    return trigger_names()


@main.group("pipeline")
def pipeline_group():
    """Continuous training: one cached pipeline run, a watcher that triggers runs, their history."""


@pipeline_group.command("run")
@config_option
@click.option(
    "--trigger",
    type=click.Choice(["manual", *_trigger_names()]),
    default="manual",
    show_default=True,
    help="What started this run (recorded in lineage and history).",
)
@click.option("--reason", default=None, help="Why (default: '<trigger> run from the CLI').")
@click.option("--force", is_flag=True, help="Rerun every step even when an identical one is cached.")
@click.option("--engine", type=click.Choice(["ray", "local"]), default="ray", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly
def pipeline_run(config_path, trigger, reason, force, engine, as_json):
    """prepare -> train|tune -> evaluate -> register -> gate -> deploy, with step caching."""
    from mlops_ray.pipeline.callbacks import summary_table
    from mlops_ray.pipeline.run import run_pipeline, step_printer
    from mlops_ray.pipeline.steps import DETAILS

    cfg = _load(config_path)
    ctx = _context(cfg)
    if not as_json:
        click.echo(f"pipeline run ({trigger}) for model {cfg.registry.model_name}")
    res = run_pipeline(
        ctx,
        cfg,
        trigger=trigger,
        reason=reason or f"{trigger} run from the CLI",
        force=force,
        engine=engine,
        callbacks=[] if as_json else [step_printer(click.echo)],
    )
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2, default=str))
    else:
        click.echo(summary_table(res, DETAILS))
        cached = sum(s.status == "cached" for s in res.steps)
        click.echo(
            f"{res.status} in {res.seconds:.1f}s ({cached} step(s) cached); run {res.run_id}, "
            f"MLflow run {res.mlflow_run_id}; version {res.version or '-'} {res.decision or ''}"
        )
    if res.status != "succeeded":
        if not as_json:
            click.echo(f"error: {res.error} (the next run resumes from this step)", err=True)
        sys.exit(1)


@pipeline_group.command("watch")
@config_option
@click.option("--url", default=None, help="Model service base URL for drift (default: http://serve.host:serve.port).")
@click.option("--max-runs", type=click.IntRange(min=1), default=None, help="Stop after this many pipeline runs.")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after this many seconds.")
@_friendly
def pipeline_watch(config_path, url, max_runs, duration):
    """Evaluate the pipeline: triggers (new data, schedule, drift, code) and run the pipeline until stopped."""
    import signal
    import threading

    from mlops_ray.pipeline.watch import Watcher

    cfg = _load(config_path)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    timer = None
    if duration is not None:
        # daemon, and cancelled: a watcher that stops after --max-runs exits then, not when --duration ends
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        Watcher(_context(cfg), cfg, echo=click.echo, service_url=url).run_forever(stop, max_runs=max_runs)
    finally:
        if timer is not None:
            timer.cancel()
    click.echo("[watch] stopped")


@pipeline_group.command("history")
@config_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--decisions/--no-decisions", default=True, show_default=True, help="Include trigger decisions.")
@click.option("--limit", type=click.IntRange(min=1), default=None)
@_friendly
def pipeline_history(config_path, as_json, decisions, limit):
    """Pipeline runs (trigger, steps ran/cached/failed, version, decision, duration) and trigger decisions."""
    from mlops_ray.pipeline import history as hist
    from mlops_ray.pipeline.run import pipeline_prefix

    cfg = _load(config_path)
    entries = hist.read(_context(cfg).state, pipeline_prefix(cfg), None if decisions else "run", limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2, default=str))
    elif not entries:
        click.echo(f"no pipeline runs yet for model {cfg.registry.model_name} (mlops-ray pipeline run --config ...)")
    else:
        click.echo(hist.format_runs(entries))


@pipeline_group.command("loop-demo")
@config_option
@click.option("--drift", "drift_level", type=click.FloatRange(0, 1), default=1.0, show_default=True)
@click.option("--new-rows", type=click.IntRange(min=500), default=6000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_friendly
def pipeline_loop_demo(config_path, drift_level, new_rows, as_json):
    """Close the loop once on a local service: drift alert -> retraining -> gate -> the service switching."""
    from mlops_ray.demo.loop import run_loop_demo
    from mlops_ray.ray_runtime import ensure_ray

    cfg = _load(config_path)
    ensure_ray(serving=True)
    res = run_loop_demo(
        _context(cfg), cfg, echo=(lambda m: None) if as_json else click.echo, drift=drift_level, new_rows=new_rows
    )
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2, default=str))


# ------------------------------------------------------------------------ deploy
@main.group("deploy")
def deploy_group():
    """Deployment files rendered from the project config (Ray Serve, KubeRay)."""


@deploy_group.command("render")
@config_option
@click.option("--target", type=click.Choice(["kuberay", "serve"]), required=True, help="What to write.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write here (default: stdout).")
@click.option("--image", default=None, help="kuberay: container image with mlops-ray installed (README).")
@click.option("--workspace", default=None, help="MLOPS_RAY_HOME of the pods: s3://BUCKET/PREFIX, gs://..., a volume.")
@click.option(
    "--tracking-uri", default=None, help="MLflow tracking server (default: the config's mlflow.tracking_uri)."
)
@_friendly
def deploy_render(config_path, target, out, image, workspace, tracking_uri):
    """Write a Ray Serve config, or KubeRay RayService + RayJob manifests, for this project config."""
    from mlops_ray.deploy.render import render

    text = render(_load(config_path), target, config_path, image=image, workspace=workspace, tracking_uri=tracking_uri)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write it ({err.strerror or err})") from None
    click.echo(f"wrote {out} ({target})", err=True)


# ------------------------------------------------------------------------ tracking server
@main.group("tracking-server")
def tracking_server_group():
    """An MLflow tracking server for clusters: PostgreSQL backend store, artifacts proxied to an object store."""


_ARTIFACT_SCHEMES = ("s3", "gs", "wasbs", "abfss", "hdfs", "file")
_data_dir_option = click.option(
    "--data-dir", required=True, help="Directory for PostgreSQL's data, the logs and server.json (created)."
)


def _tracking_data_dir(data_dir: str) -> Path:
    root = Path(data_dir).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--data-dir {data_dir} is a file; give a directory (created when missing)")
    return root


class _Stop(BaseException):
    """SIGTERM / SIGINT in ``tracking-server start``: leave the foreground and stop both servers."""


@tracking_server_group.command("start")
@_data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address both servers listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="MLflow's port (0: free).")
@click.option(
    "--db-port", type=click.IntRange(0, 65535), default=0, show_default=True, help="PostgreSQL's port (0: free)."
)
@click.option(
    "--artifacts-destination",
    default=None,
    help="Where the server stores artifacts: s3://BUCKET/PREFIX (MLFLOW_S3_ENDPOINT_URL and AWS_* from the "
    "environment) or a path (default: <data-dir>/artifacts).",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="MLflow server workers.")
@click.option("--allowed-hosts", default=None, help="Extra Host headers to accept (comma-separated), e.g. a DNS name.")
@_friendly
def tracking_server_start(data_dir, host, port, db_port, artifacts_destination, workers, allowed_hosts):
    """Start PostgreSQL and an MLflow server on it; stay in the foreground until SIGTERM / Ctrl-C, then stop both."""
    import signal
    import time
    from datetime import datetime, timezone

    from mlops_ray import tracking_server as ts

    root = _tracking_data_dir(data_dir)
    ts.check_host(host)
    dest = artifacts_destination or str(root / "artifacts")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", dest)
    if scheme and scheme.group(1).lower() not in _ARTIFACT_SCHEMES:
        raise ConfigError(
            f"--artifacts-destination {dest}: unsupported scheme {scheme.group(1)!r}; use s3://BUCKET/PREFIX, "
            "gs://, wasbs://, abfss://, hdfs://, file:// or a path"
        )
    previous = ts.read_record(root)
    if previous is not None and ts.entry_alive(previous.get("process")):
        raise ConfigError(
            f"a tracking server from {root} already runs (pid {previous['process']['pid']}, {previous.get('url')}); "
            f"stop it with 'mlops-ray tracking-server stop --data-dir {root}'"
        )
    if previous is not None:  # a start that was killed: its servers may still run
        for line in ts.stop_recorded(root, previous):
            click.echo(f"stopped a leftover {line}")
    if not root.exists():
        root.mkdir(parents=True, mode=0o700)
        if os.geteuid() == 0:
            root.chmod(0o711)  # PostgreSQL runs as 'postgres' and must reach <data-dir>/postgres

    stopping: list[int] = []

    def on_signal(signum, _frame):
        if not stopping:
            stopping.append(signum)
            raise _Stop()

    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    pg = srv = None
    t0 = time.perf_counter()
    try:
        pg = ts.start_postgres(root / "postgres", host, db_port)
        srv = ts.start_mlflow_server(
            pg.uri,
            dest,
            host,
            port,
            workers,
            env=pg.env,
            log_path=root / "mlflow.log",
            allowed_hosts=[h.strip() for h in allowed_hosts.split(",") if h.strip()] if allowed_hosts else None,
        )
        seconds = time.perf_counter() - t0
        record = ts.write_record(
            root,
            {
                "url": srv.url,
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "process": ts.process_entry(os.getpid()),
                "mlflow": {
                    **ts.process_entry(srv.pid),
                    "host": host,
                    "port": srv.port,
                    "artifacts_destination": srv.artifacts_destination,
                    "log": str(srv.log_path),
                },
                "postgres": {
                    **ts.process_entry(pg.pid),
                    "host": host,
                    "port": pg.port,
                    "uri": pg.uri,
                    "version": pg.version,
                    "data_dir": str(pg.data_dir),
                    "bindir": str(pg.bindir),
                    "log": str(pg.data_dir / "postgres.log"),
                },
            },
        )
        click.echo(f"tracking server: {srv.url}  (started in {seconds:.1f} s)")
        click.echo(f"  mlflow.tracking_uri: {srv.url}   (or MLFLOW_TRACKING_URI={srv.url})")
        click.echo(f"  backend store: PostgreSQL {pg.version} on {ts.url_host(host)}:{pg.port}, database {pg.database}")
        click.echo(f"  artifacts:     {srv.artifacts_destination} (proxied by the server)")
        click.echo(f"  record:        {record}")
        click.echo(f"  logs:          {srv.log_path}, {pg.data_dir / 'postgres.log'}")
        click.echo(f"Ctrl-C, SIGTERM or 'mlops-ray tracking-server stop --data-dir {root}' stops both")
        while srv.alive():
            time.sleep(0.5)
        raise ts.TrackingServerError(
            f"mlflow server exited with code {srv.process.returncode}; stopping PostgreSQL\n"
            f"--- {srv.log_path} (last lines):\n{ts._tail(srv.log_path)}"
        )
    except _Stop:
        click.echo(f"stopping ({signal.Signals(stopping[0]).name})")
    finally:
        for sig in handlers:  # the stop is bounded (15 s + pg_ctl's fast stop): no second signal cuts it short
            signal.signal(sig, signal.SIG_IGN)
        if srv is not None:
            srv.stop()
        if pg is not None:
            pg.stop()
        else:  # interrupted while PostgreSQL was starting
            ts.stop_postgres(root / "postgres")
        (root / ts.RECORD).unlink(missing_ok=True)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    click.echo("tracking server stopped (mlflow and PostgreSQL)")


@tracking_server_group.command("stop")
@_data_dir_option
@_friendly
def tracking_server_stop(data_dir):
    """Stop the tracking server a 'tracking-server start' recorded in DATA_DIR/server.json."""
    from mlops_ray import tracking_server as ts

    root = _tracking_data_dir(data_dir)
    record = ts.read_record(root)
    if record is None:
        raise ConfigError(
            f"no tracking server recorded in {root} (no {ts.RECORD}); start one with "
            f"'mlops-ray tracking-server start --data-dir {root}'"
        )
    stopped = ts.stop_recorded(root, record)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running; removed the stale record")


# ------------------------------------------------------------------------ quickstart
@main.command("quickstart")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Pipeline YAML (default: the bundled examples/quickstart.yaml).",
)
@_friendly
def quickstart(config_path):
    """Run the whole pipeline on bundled sample data (local Ray, MLflow in the workspace)."""
    from mlops_ray.demo.quickstart import bundled_config_path, run_quickstart
    from mlops_ray.ray_runtime import ensure_ray

    cfg = _load(config_path or bundled_config_path())
    ensure_ray(serving=True)  # one cluster for every step, ready to serve (loopback, hardened Serve)
    run_quickstart(_context(cfg), cfg, config_path or "examples/quickstart.yaml", echo=click.echo)


if __name__ == "__main__":
    main()
