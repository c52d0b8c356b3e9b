"""``mlops-ray`` command line: parse, call one function, print.

Any :class:`~mlops_ray.errors.MlopsRayError` becomes a short message on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from mlops_ray.errors import ConfigError, MlopsRayError


def _friendly(fn):
    """Turn typed errors (also when raised inside Ray tasks) into clean CLI errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MlopsRayError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except Exception as err:  # Ray wraps task exceptions; unwrap ours
            cause = getattr(err, "cause", None) or err.__cause__
            if isinstance(cause, MlopsRayError):
                click.echo(f"error: {cause}", err=True)
                sys.exit(2)
            raise

    return wrapper


def _parse_fractions(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise ConfigError(f"--fractions: expected name=fraction pairs like train=0.8,valid=0.1,test=0.1; got {part!r}")
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
def main():
    """mlops-ray: raw tabular data to a monitored model service on Ray."""


# ----------------------------------------------------------------------------- data
@main.group()
def data():
    """Generate, split, fingerprint and prepare datasets."""


@data.command("generate")
@click.option("--rows", type=click.IntRange(min=1), required=True, help="Total rows to write.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shards", type=click.IntRange(min=1), default=4, show_default=True, help="Number of Parquet files.")
@click.option("--drift", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="0 = none, 1 = strong covariate/concept drift and unseen categories.")
@_friendly
def data_generate(rows, out, seed, shards, drift):
    """Write a synthetic customer dataset as sharded Parquet."""
    from tqdm import tqdm

    from mlops_ray.data.generate import generate_dataset

    out_p = Path(out)
    if out_p.exists() and any(out_p.glob("*.parquet")):
        raise ConfigError(f"--out {out} already contains Parquet files; choose an empty directory")
    if shards > rows:
        raise ConfigError(f"--shards ({shards}) must not exceed --rows ({rows})")
    with tqdm(total=rows, unit="row", unit_scale=True, desc="generate") as bar:
        try:
            paths = generate_dataset(out_p, rows, shards=shards, seed=seed, drift=drift, progress=bar.update)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    click.echo(f"wrote {rows} rows in {len(paths)} shard(s) to {out_p.resolve()}")


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
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local streams in this process; ray runs batches as Ray Data tasks.")
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
    click.echo(f"  features:    {len(m['spec']['numeric_features'])} numeric, "
               f"{len(m['spec']['categorical_features'])} categorical -> {len(m['feature_names'])} model inputs")


@data.command("prepare")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Pipeline YAML.")
@click.option("--engine", type=click.Choice(["ray", "local"]), default="ray", show_default=True)
@_friendly
def data_prepare(config_path, engine):
    """Validate, split, fingerprint and snapshot the configured source."""
    from mlops_ray.config import load_config
    from mlops_ray.data.prepare import prepare_snapshot

    cfg = load_config(config_path)
    _print_snapshot_summary(prepare_snapshot(cfg, engine=engine, progress=True))


@data.command("list")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def data_list(as_json):
    """List every snapshot in the workspace."""
    from mlops_ray.data.snapshot import SnapshotStore

    snaps = SnapshotStore().list()
    if as_json:
        click.echo(json.dumps([dict(s.manifest, usage=s.usage()) for s in snaps], indent=1))
        return
    if not snaps:
        click.echo("no snapshots yet; run 'mlops-ray data prepare --config FILE'")
        return
    click.echo(f"{'NAME':<16} {'SNAPSHOT':<17} {'FINGERPRINT':<13} {'ROWS PER SPLIT':<34} {'CREATED':<21} {'USED BY':<8} SOURCE")
    for s in snaps:
        m = s.manifest
        rows = ",".join(f"{k}={v}" for k, v in m["rows_per_split"].items())
        click.echo(f"{m['name']:<16} {m['snapshot_id']:<17} {m['fingerprint'][:12]:<13} {rows:<34} "
                   f"{m['created_at']:<21} {len(s.usage()):<8} {m['source']['uri']}")


@data.command("show")
@click.argument("snapshot_ref", metavar="SNAPSHOT_ID")
@_friendly
def data_show(snapshot_ref):
    """Print a snapshot's manifest (ID, ID prefix, NAME/ID or NAME@latest)."""
    from mlops_ray.data.snapshot import SnapshotStore

    s = SnapshotStore().find(snapshot_ref)
    click.echo(json.dumps(dict(s.manifest, path=str(s.path), usage=s.usage()), indent=1))


# ------------------------------------------------------------------------ quickstart
@main.command("quickstart")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Pipeline YAML (default: the bundled examples/quickstart.yaml).")
@_friendly
def quickstart(config_path):
    """Run the whole pipeline on bundled sample data (local Ray, MLflow in the workspace)."""
    from mlops_ray.pipeline.quickstart import run_quickstart

    run_quickstart(config_path, echo=click.echo)


if __name__ == "__main__":
    main()
