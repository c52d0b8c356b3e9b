"""One continuous-training pipeline run: prepare -> train|tune -> evaluate -> register -> gate ->
deploy -> record, with step caching and lineage.

* **Caching.** Each step's inputs (source stat key or data fingerprint, the digest of the config
  sections it reads, the code digest, upstream outputs) hash to a key; a step whose key has a
  completed record under ``<workspace>/pipeline/<model>/cache/`` (and whose outputs still exist:
  the snapshot, the run, the version) is skipped and reported as ``cached``. ``force`` reruns all.
  A failed step records nothing, so the next run resumes from it with the earlier steps cached.
* **One run per model at a time**: a lock file in the workspace (``PipelineBusyError`` otherwise).
* **MLflow**: one parent run per pipeline run, one child run per step (the training run itself is
  a child too); the summary and the reports that triggered the run are artifacts of the parent.
* **Lineage** on every version it registers (``lineage.*`` tags): trigger and reason, pipeline
  run id, snapshot id and data fingerprint, code commit and digest, config digest, the gate
  decision, the model-drift status and the drift report that led to the run.
* **History**: one JSON line per run (and per trigger decision of the watcher) in
  ``<workspace>/pipeline/<model>/history.jsonl`` (:mod:`mlops_ray.pipeline.history`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops_ray.errors import MlopsRayError, PipelineBusyError, PipelineStepError
from mlops_ray.pipeline import history as hist
from mlops_ray.pipeline import stages
from mlops_ray.pipeline.stages import OnEvent, _quiet
from mlops_ray.registry import promotion, tracking

STEPS = ("prepare", "train", "evaluate", "register", "gate", "deploy", "record")
TRIGGERS = ("manual", "data", "schedule", "drift", "code")


def digest(obj: Any) -> str:
    """sha256 of canonical JSON (16 hex chars)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_digests(cfg) -> dict[str, str]:
    """Digests of the config sections each step reads (serving and monitoring settings excluded)."""
    d = cfg.model_dump(mode="json")
    return {
        "data": digest(d["data"]),
        "train": digest({"model": d["model"], "tune": d["tune"]}),
        "gate": digest(d["registry"]),
        "all": digest({k: d[k] for k in ("data", "model", "tune", "registry", "mlflow")}),
    }


def pipeline_dir(ctx, cfg) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in cfg.registry.model_name)
    return ctx.workspace.ensure("pipeline", safe)


# ------------------------------------------------------------------------------------ results
@dataclass
class StepResult:
    name: str
    status: str  # ran | cached | failed | not run
    seconds: float = 0.0
    key: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class PipelineResult:
    run_id: str
    model: str
    trigger: str
    reason: str
    status: str = "running"  # succeeded | failed
    started_at: float = field(default_factory=time.time)
    seconds: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    version: str | None = None
    decision: str | None = None
    mlflow_run_id: str | None = None
    error: str | None = None

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "run", **asdict(self)}

    def summary_table(self) -> str:
        lines = [f"{'step':<10} {'status':<8} {'seconds':>8}  detail"]
        for s in self.steps:
            detail = s.error or step_detail(s)
            lines.append(f"{s.name:<10} {s.status:<8} {s.seconds:>8.2f}  {detail}")
        return "\n".join(lines)


def step_detail(s: StepResult) -> str:
    o = s.outputs
    return {
        "prepare": lambda: (
            f"snapshot {o.get('snapshot_id', '')[:12]} ({o.get('rows', {}).get('train', '?')} train rows)"
        ),
        "train": lambda: (
            f"{o.get('kind', 'train')} run {o.get('run_id', '')[:12]} {_fmt_metrics(o.get('metrics', {}))}"
        ),
        "evaluate": lambda: (
            f"model drift vs v{o['champion_version']}: {o.get('model_drift_status')}"
            + (
                f" (Spearman {o['spearman']:.2f}; moved most: {', '.join(o.get('moved', []))})"
                if o.get("spearman") is not None
                else ""
            )
            if o.get("champion_version")
            else "model drift: no champion yet"
        ),
        "register": lambda: f"version {o.get('version')}",
        "gate": lambda: f"{o.get('decision')}: {'; '.join(o.get('reasons', []))[:80]}",
        "deploy": lambda: f"{o.get('alias')} -> v{o.get('version')}" if o.get("moved") else "alias not moved",
        "record": lambda: f"lineage on v{o.get('version')}" if o.get("version") else "",
    }.get(s.name, lambda: "")()


def step_printer(echo: Callable[[str], None]) -> OnEvent:
    """An ``on_event`` that prints one line per finished step (the CLI's and the quickstart's)."""

    def on_event(event: str, info: dict) -> None:
        if event == "step_done":
            s = info["step"]
            echo(f"  {s.name:<9} {s.status:<7} {s.seconds:6.1f}s  {s.error or step_detail(s)}")

    return on_event


def _fmt_metrics(m: dict) -> str:
    keys = [k for k in m if k.startswith("test_")][:2]
    return " ".join(f"{k}={m[k]:.4f}" for k in keys)


# ------------------------------------------------------------------------------------ cache
class StepCache:
    def __init__(self, root: Path):
        self.root = root

    def _path(self, step: str, key: str) -> Path:
        return self.root / f"{step}-{key}.json"

    def get(self, step: str, key: str) -> dict | None:
        p = self._path(step, key)
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def put(self, step: str, key: str, outputs: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        p = self._path(step, key)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(outputs, default=str))
        os.replace(tmp, p)


@contextlib.contextmanager
def run_lock(ctx, cfg):
    """At most one pipeline run per model (per workspace); released when the process dies."""
    path = pipeline_dir(ctx, cfg) / "run.lock"
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise PipelineBusyError(
                f"a pipeline run for model {cfg.registry.model_name!r} is in progress ({holder})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        yield
    finally:
        f.close()


# ------------------------------------------------------------------------------------ the run
class _Runner:
    def __init__(self, ctx, cfg, res: PipelineResult, force: bool, on_event: OnEvent, parent_id: str):
        self.ctx, self.cfg, self.res, self.force, self.on_event = ctx, cfg, res, force, on_event
        self.cache = StepCache(pipeline_dir(ctx, cfg) / "cache")
        self.parent_id = parent_id

    def step(self, name: str, key_parts: dict | None, fn: Callable[[], dict], valid=lambda out: True) -> dict:
        """Run ``fn`` unless an identical completed step is cached (``key_parts`` None: never cached)."""
        key = digest({"step": name, **key_parts}) if key_parts is not None else None
        self.on_event("step", {"name": name})
        t0 = time.perf_counter()
        if key is not None and not self.force:
            hit = self.cache.get(name, key)
            if hit is not None and _safe(valid, hit):
                s = StepResult(name, "cached", time.perf_counter() - t0, key, hit)
                self.res.steps.append(s)
                self._child(s)
                self.on_event("step_done", {"step": s})
                return hit
        try:
            out = fn()
        except Exception as err:
            s = StepResult(name, "failed", time.perf_counter() - t0, key, error=f"{type(err).__name__}: {err}")
            self.res.steps.append(s)
            self._child(s)
            self.on_event("step_done", {"step": s})
            raise PipelineStepError(f"step {name} failed: {type(err).__name__}: {err}") from err
        if key is not None:
            self.cache.put(name, key, out)
        s = StepResult(name, "ran", time.perf_counter() - t0, key, out)
        self.res.steps.append(s)
        self._child(s)
        self.on_event("step_done", {"step": s})
        return out

    def _child(self, s: StepResult) -> None:
        """One MLflow child run per step (its status, key, seconds and outputs)."""
        client = self.ctx.client
        try:
            r = client.create_run(
                self.ctx.experiment_id,
                run_name=f"{s.name} ({s.status})",
                tags={"mlflow.parentRunId": self.parent_id, "pipeline.step": s.name, "pipeline.status": s.status},
            )
            client.log_param(r.info.run_id, "cache_key", s.key or "-")
            client.log_metric(r.info.run_id, "seconds", s.seconds)
            client.log_dict(r.info.run_id, {"outputs": s.outputs, "error": s.error}, "step.json")
            client.set_terminated(r.info.run_id, "FAILED" if s.status == "failed" else "FINISHED")
        except Exception:  # bookkeeping must not fail the pipeline
            pass


def _safe(valid, out) -> bool:
    try:
        return bool(valid(out))
    except Exception:
        return False


def run_pipeline(
    ctx,
    cfg,
    *,
    trigger: str = "manual",
    reason: str = "manual run",
    force: bool = False,
    engine: str = "ray",
    context: dict | None = None,
    on_event: OnEvent = _quiet,
) -> PipelineResult:
    """Run the pipeline once; returns its result (status ``failed`` with the failing step on error).

    Args:
        trigger: manual | data | schedule | drift | code (recorded in lineage and history).
        context: reports that led to the run (e.g. the drift evaluation), logged with the run.

    Raises:
        PipelineBusyError: another run for this model is in progress.
    """
    if trigger not in TRIGGERS:
        raise MlopsRayError(f"unknown trigger {trigger!r}; expected one of {', '.join(TRIGGERS)}")
    res = PipelineResult(uuid.uuid4().hex[:12], cfg.registry.model_name, trigger, reason)
    t0 = time.perf_counter()
    with run_lock(ctx, cfg):
        client = ctx.client
        parent = client.create_run(
            ctx.experiment_id,
            run_name=f"pipeline-{trigger}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"pipeline.run_id": res.run_id, "pipeline.trigger": trigger, "pipeline.reason": reason[:4000]},
        )
        res.mlflow_run_id = parent.info.run_id
        if context:
            client.log_dict(parent.info.run_id, context, "trigger/context.json")
        runner = _Runner(ctx, cfg, res, force, on_event, parent.info.run_id)
        try:
            _steps(runner, ctx, cfg, engine, context or {})
            res.status = "succeeded"
        except PipelineStepError as err:
            res.status, res.error = "failed", str(err)
        except PipelineBusyError:
            raise
        except Exception as err:  # outside a step (bookkeeping): still recorded
            res.status, res.error = "failed", f"{type(err).__name__}: {err}"
        done = {s.name for s in res.steps}
        res.steps += [StepResult(n, "not run") for n in STEPS if n not in done]
        res.seconds = time.perf_counter() - t0
        _finish_parent(ctx, res)
        hist.append(pipeline_dir(ctx, cfg), res.to_dict())
    return res


def _finish_parent(ctx, res: PipelineResult) -> None:
    client = ctx.client
    rid = res.mlflow_run_id
    try:
        client.log_dict(rid, res.to_dict(), "pipeline/summary.json")
        client.log_text(rid, res.summary_table(), "pipeline/summary.txt")
        client.log_metric(rid, "seconds", res.seconds)
        client.log_metric(rid, "steps_cached", sum(s.status == "cached" for s in res.steps))
        client.set_tag(rid, "pipeline.status", res.status)
        if res.version:
            client.set_tag(rid, "pipeline.version", res.version)
        if res.decision:
            client.set_tag(rid, "pipeline.decision", res.decision)
        client.set_terminated(rid, "FINISHED" if res.status == "succeeded" else "FAILED")
    except Exception:
        pass


def _steps(runner: _Runner, ctx, cfg, engine: str, context: dict) -> None:
    res = runner.res
    code = tracking.code_version()
    digests = config_digests(cfg)
    name = cfg.registry.model_name

    # ---- prepare: keyed by the source's cheap stat key (file list, sizes, mtimes) and the data config
    from mlops_ray.data.sources import list_source

    stages.require_source(ctx, cfg)
    stat_key = list_source(ctx.source(cfg), cfg.data.format).stat_key()

    def prepare() -> dict:
        r = stages.prepare(ctx, cfg, engine=engine)
        s = r.snapshot
        return {
            "snapshot_id": s.id,
            "dataset": s.name,
            "fingerprint": s.fingerprint,
            "rows": {sp: s.rows(sp) for sp in ("train", "valid", "test")},
            "reused": r.reused,
        }

    prep = runner.step(
        "prepare",
        {"source": stat_key, "data": digests["data"], "code": code["code_digest"]},
        prepare,
        valid=lambda o: ctx.snapshots.find(f"{o['dataset']}/{o['snapshot_id']}") is not None,
    )
    snapshot = ctx.snapshots.find(f"{prep['dataset']}/{prep['snapshot_id']}")

    # ---- train (or tune): keyed by the data fingerprint, the model/tune config and the code
    def train() -> dict:
        tags = {"mlflow.parentRunId": res.mlflow_run_id, "pipeline.run_id": res.run_id}
        if cfg.tune.enabled:
            from mlops_ray.train.tune import tune_model

            cand = tune_model(ctx, cfg, snapshot, register=False)
            ctx.client.set_tag(cand.run_id, "mlflow.parentRunId", res.mlflow_run_id)
        else:
            from mlops_ray.train.run import train_model

            cand = train_model(ctx, cfg, snapshot, register=False, tags=tags)
        return {
            "run_id": cand.run_id,
            "model_uri": cand.model_uri,
            "metrics": cand.metrics,
            "snapshot_id": snapshot.id,
            "kind": "tune" if cfg.tune.enabled else "train",
        }

    trained = runner.step(
        "train",
        {
            "fingerprint": prep["fingerprint"],
            "snapshot": snapshot.id,
            "train": digests["train"],
            "code": code["code_digest"],
        },
        train,
        valid=lambda o: ctx.client.get_run(o["run_id"]).info.status == "FINISHED",
    )

    # ---- evaluate: model drift of the candidate against the deployed version (same new rows)
    def evaluate() -> dict:
        from mlops_ray.pipeline.model_drift import compare_models

        champ = tracking.alias_version(ctx.client, name, cfg.serve.model_alias)
        if champ is None:
            return {"champion_version": None, "model_drift_status": "no champion yet"}
        champion = tracking.load_pyfunc(ctx.tracking_uri, f"models:/{name}/{champ.version}").unwrap_python_model()
        candidate = tracking.load_pyfunc(ctx.tracking_uri, trained["model_uri"]).unwrap_python_model()
        report = compare_models(ctx, cfg, champion, candidate, snapshot, candidate_run_id=trained["run_id"])
        c = report["candidate_vs_training"]
        return {
            "champion_version": str(champ.version),
            "model_drift_status": report["status"],
            "spearman": c["spearman"],
            "top_k_same": c["top_k_same"],
            "moved": [m["feature"] for m in report["moved"][:3]],
        }

    evaluated = runner.step("evaluate", {"run": trained["run_id"]}, evaluate)

    # ---- register: exactly this run's model, once
    def register() -> dict:
        from mlops_ray.train.run import register_candidate

        version = register_candidate(ctx, cfg, snapshot, trained["run_id"], trained["model_uri"], trained["metrics"])
        return {"version": str(version)}

    registered = runner.step(
        "register",
        {"run": trained["run_id"], "model": name},
        register,
        valid=lambda o: promotion.get_version(ctx.client, name, o["version"]) is not None,
    )
    version = res.version = registered["version"]

    # ---- gate exactly this version, and deploy it if promoted: one registry lock around both
    with promotion.serialized(ctx, cfg, purpose=f"pipeline {res.run_id}: gate and deploy v{version}"):

        def gate() -> dict:
            r = promotion.gate(ctx, cfg, version)
            return {
                "decision": r.decision.action,
                "reasons": list(r.decision.reasons),
                "scores": r.scores,
                "champion_version": r.champion_version,
            }

        gated = runner.step("gate", {"version": version, "model": name, "gate": digests["gate"]}, gate)
        res.decision = gated["decision"]

        def deploy() -> dict:
            alias = cfg.serve.model_alias
            if gated["decision"] != "PROMOTE":
                return {"moved": False, "alias": alias, "version": version}
            stages.deploy(ctx, cfg, version, f"pipeline {res.run_id} ({res.trigger}): " + "; ".join(gated["reasons"]))
            return {"moved": True, "alias": alias, "version": version}

        runner.step("deploy", {"version": version, "model": name, "decision": gated["decision"]}, deploy)

    # ---- record: lineage on the version (always; cheap)
    def record() -> dict:
        tags = {
            "lineage.trigger": res.trigger,
            "lineage.reason": res.reason,
            "lineage.pipeline_run": res.run_id,
            "lineage.mlflow_run": res.mlflow_run_id,
            "lineage.snapshot_id": snapshot.id,
            "lineage.data_fingerprint": snapshot.fingerprint,
            "lineage.code_commit": code.get("git_commit", "unknown"),
            "lineage.code_digest": code["code_digest"],
            "lineage.config_digest": digests["all"],
            "lineage.gate": f"{gated['decision']}: " + "; ".join(gated["reasons"]),
            "lineage.model_drift": str(evaluated.get("model_drift_status")),
        }
        if context:
            tags["lineage.trigger_report"] = f"runs:/{res.mlflow_run_id}/trigger/context.json"
        existing = promotion.get_version(ctx.client, name, version).tags
        if existing.get("lineage.pipeline_run") and existing["lineage.pipeline_run"] != res.run_id:
            # a cached rerun keeps the lineage of the run that produced the version
            return {"version": version, "kept": existing["lineage.pipeline_run"]}
        for k, v in tags.items():
            ctx.client.set_model_version_tag(name, version, k, str(v)[:4000])
        return {"version": version, "tags": len(tags)}

    runner.step("record", None, record)


__all__ = [
    "STEPS",
    "TRIGGERS",
    "PipelineResult",
    "StepResult",
    "config_digests",
    "digest",
    "run_pipeline",
    "step_printer",
]
