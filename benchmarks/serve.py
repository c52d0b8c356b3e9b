"""Serving benchmark: mlops-ray on Ray Serve vs `mlflow models serve` vs bare FastAPI + uvicorn.

    .venv/bin/python benchmarks/serve.py [--duration 5] [--concurrency 1 8 32 64 256]
    .venv/bin/python benchmarks/serve.py --drift both --servers ours --concurrency 1 32 256 --rounds 2

Same registered model, same payloads, same load generator (`wrk`, a C client, installed by
this script via apt-get when missing) against 127.0.0.1 only; every run is bounded by
--duration. Servers run one at a time, each on a free port. Prints a table, writes JSON and a PNG plot.

``--drift both`` measures the drift monitor's overhead: mlops-ray with drift monitoring on and off
in the same run, alternating (on, off, off, on, ... over ``--rounds``) so that a machine getting
slower or faster during the run does not favour one side; ratios use the mean of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("WRK_BODY"), "r")
wrk.body = f:read("*a")
f:close()
"""

BARE_APP = """
import json, os, mlflow, pandas as pd
from fastapi import FastAPI, Request
mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
model = mlflow.pyfunc.load_model(os.environ["MODEL_URI"])
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    out = model.predict(pd.DataFrame(body["records"]))
    return {"predictions": out["prediction"].tolist(), "probabilities": out["probability"].tolist()}
"""


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk")


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def run_wrk(wrk: str, url: str, body: Path, lua: Path, conc: int, duration: int) -> dict:
    threads = 1 if conc < 64 else 2
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{conc}", f"-d{duration}s", "--latency", "--timeout", "10s", "-s", str(lua), url],
        env=dict(os.environ, WRK_BODY=str(body)),
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    res = {"concurrency": conc, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for q in ("50", "99"):
        m = re.search(rf"\s{q}(?:\.000)?%\s+([\d.]+\w+)", out)
        res[f"p{q}_ms"] = _ms(m.group(1)) if m else None
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return res


def wait_up(url: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64, 256])
    ap.add_argument("--out", default=None, help="JSON result (default benchmarks/results/serve[-drift].json)")
    ap.add_argument("--drift", choices=["on", "off", "both"], default="on", help="drift monitoring in mlops-ray")
    ap.add_argument("--servers", choices=["all", "ours"], default="all", help="ours: only mlops-ray")
    ap.add_argument("--rounds", type=int, default=2, help="with --drift both: on/off pairs")
    args = ap.parse_args(argv)
    if args.out is None:
        name = "serve-drift.json" if args.drift == "both" else "serve.json"
        args.out = str(ROOT / "benchmarks" / "results" / name)
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-serve-"))
    os.environ.update(MLOPS_RAY_HOME=str(work / "home"), MLOPS_RAY_PROGRESS="0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    (work / "post.lua").write_text(LUA)

    import yaml

    from mlops_ray.config import TrainingSpec, config_from_dict
    from mlops_ray.context import Context
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.data.splits import load_split
    from mlops_ray.pipeline.stages import ensure_sample_data
    from mlops_ray.ray_runtime import free_ports
    from mlops_ray.registry.promotion import promote
    from mlops_ray.serve.runner import start_service, stop_service
    from mlops_ray.train.run import train_model

    ours_port, mlflow_port, bare_port = free_ports(3)
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw.setdefault("serve", {})["port"] = ours_port
    cfg = config_from_dict(raw, base_dir=ROOT / "examples")
    ctx = Context.create(cfg)  # this script is an entry point: $MLOPS_RAY_HOME set above
    ensure_sample_data(ctx, cfg)
    snap = prepare_snapshot(cfg.data, ctx.workspace, source=cfg.source(ctx.workspace.root), engine="local").snapshot
    promote(ctx, cfg.registry, cfg.serve.model_alias, train_model(ctx, TrainingSpec.from_config(cfg), snap).version)
    spec = snap.manifest["spec"]
    frame = load_split(snap, "test", snap.preprocessor(), keep_frame=True).frame
    recs = json.loads(
        frame[spec["numeric_features"] + spec["categorical_features"]].head(100).to_json(orient="records")
    )
    bodies = {}
    for n in (1, 100):
        bodies[("records", n)] = work / f"records{n}.json"
        bodies[("records", n)].write_text(json.dumps({"records": recs[:n]}))
        bodies[("mlflow", n)] = work / f"mlflow{n}.json"
        bodies[("mlflow", n)].write_text(json.dumps({"dataframe_records": recs[:n]}))
    tracking = ctx.tracking_uri
    model_uri = f"models:/{cfg.registry.model_name}@champion"
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking, MODEL_URI=model_uri, PATH=f"{BIN}:{os.environ['PATH']}")
    (work / "bare_app.py").write_text(BARE_APP)

    ours_url = f"http://127.0.0.1:{cfg.serve.port}/predict"
    ours_name = "mlops-ray (Ray Serve, HAProxy ingress)"
    servers = [
        (ours_name, "records", ours_url),
        ("mlflow models serve", "mlflow", f"http://127.0.0.1:{mlflow_port}/invocations"),
        ("bare FastAPI + uvicorn", "records", f"http://127.0.0.1:{bare_port}/predict"),
    ]
    if args.drift == "both":
        order = []
        for i in range(args.rounds):
            order += ["on", "off"] if i % 2 == 0 else ["off", "on"]
        runs = [(f"{ours_name} drift {d}", "records", ours_url, d == "on") for d in order]
    else:
        runs = [(ours_name, "records", ours_url, args.drift == "on")]
    if args.servers == "all":
        runs += [(n, f, u, False) for n, f, u in servers[1:]]
    results = []
    for name, fmt, url, drift_on in runs:
        proc = None
        if name.startswith("mlops-ray"):
            cfg.drift.enabled = drift_on
            cfg.serve.port = free_ports(1)[0]  # the previous run's HAProxy may still hold its port briefly
            url = f"http://127.0.0.1:{cfg.serve.port}/predict"
            start_service(ctx, cfg)
        elif name.startswith("mlflow"):
            proc = subprocess.Popen(
                [
                    str(BIN / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    model_uri,
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(mlflow_port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_up(f"http://127.0.0.1:{mlflow_port}/ping")
        else:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bare_app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(bare_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=work,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_up(f"http://127.0.0.1:{bare_port}/docs")
        try:
            run_wrk(wrk, url, bodies[(fmt, 1)], work / "post.lua", 8, 5 if args.drift == "both" else 2)  # warm-up
            for c in args.concurrency:
                r = run_wrk(wrk, url, bodies[(fmt, 1)], work / "post.lua", c, args.duration)
                results.append({"server": name, "records_per_request": 1, **r, "rows_per_s": r["rps"]})
                print(
                    f"{name:<40} c={c:<4} {r['rps']:8.1f} rps  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
                    f"  errors {r['errors']}",
                    flush=True,
                )
            r = run_wrk(wrk, url, bodies[(fmt, 100)], work / "post.lua", 8, args.duration)
            results.append({"server": name, "records_per_request": 100, **r, "rows_per_s": r["rps"] * 100})
            print(f"{name:<40} 100-record c=8 {r['rps'] * 100:9.0f} rows/s", flush=True)
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
            else:
                stop_service()
                import ray

                ray.shutdown()

    def cell(server, c, n=1):
        return next(
            (r for r in results if r["server"] == server and r["concurrency"] == c and r["records_per_request"] == n),
            None,
        )

    if args.drift == "both":
        return _drift_summary(args, results, ours_name)
    ours, mlf, bare = (s[0] for s in servers)
    print(f"\n{'server':<40} {'conc':>5} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in results:
        if r["records_per_request"] == 1:
            print(
                f"{r['server']:<40} {r['concurrency']:>5} {r['rps']:>9.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                f"{r['errors']:>7}"
            )
    for s in (ours, mlf, bare):
        print(f"{s:<40} 100-record requests, c=8: {cell(s, 8, 100)['rows_per_s']:,.0f} rows/s")
    checks = []
    if cell(ours, 32):
        o, b, m = cell(ours, 32), cell(bare, 32), cell(mlf, 32)
        checks += [
            ("c=32 throughput >= 1.0x bare FastAPI", o["rps"] >= b["rps"], o["rps"] / b["rps"]),
            ("c=32 throughput >= 4x MLflow server", o["rps"] >= 4 * m["rps"], o["rps"] / m["rps"]),
            ("c=32 p99 <= bare FastAPI p99", o["p99_ms"] <= b["p99_ms"], o["p99_ms"] / b["p99_ms"]),
        ]
    if cell(ours, 1):
        checks.append(
            (
                "c=1 p50 <= 2x bare FastAPI p50",
                cell(ours, 1)["p50_ms"] <= 2 * cell(bare, 1)["p50_ms"],
                cell(ours, 1)["p50_ms"] / cell(bare, 1)["p50_ms"],
            )
        )
    o100 = cell(ours, 8, 100)["rows_per_s"]
    checks.append(
        (
            "100-record rows/s above both",
            o100 > max(cell(mlf, 8, 100)["rows_per_s"], cell(bare, 8, 100)["rows_per_s"]),
            o100 / max(cell(mlf, 8, 100)["rows_per_s"], cell(bare, 8, 100)["rows_per_s"]),
        )
    )
    ours_rows = [r for r in results if r["server"] == ours and r["records_per_request"] == 1]
    peak = max(r["rps"] for r in ours_rows)
    last = max(ours_rows, key=lambda r: r["concurrency"])
    checks.append(
        (
            f"no errors 1..{last['concurrency']} connections",
            all(r["errors"] == 0 for r in ours_rows),
            sum(r["errors"] for r in ours_rows),
        )
    )
    checks.append(
        (f"throughput at {last['concurrency']} >= 80% of peak", last["rps"] >= 0.8 * peak, last["rps"] / peak)
    )
    for n, ok, v in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {n} (measured {v:.2f})")
    import importlib.metadata as md

    out = {
        "command": " ".join([sys.executable, *sys.argv]),
        "duration_s": args.duration,
        "results": results,
        "checks": [{"check": n, "pass": bool(ok), "value": v} for n, ok, v in checks],
        "machine": {"cpus": os.cpu_count(), **{p: md.version(p) for p in ("ray", "mlflow", "fastapi", "uvicorn")}},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for s in (ours, mlf, bare):
            rows = [r for r in results if r["server"] == s and r["records_per_request"] == 1]
            axes[0].plot([r["concurrency"] for r in rows], [r["rps"] for r in rows], marker="o", label=s)
            axes[1].plot([r["concurrency"] for r in rows], [r["p99_ms"] for r in rows], marker="o", label=s)
        for ax, t in zip(axes, ("throughput (req/s), 1-record requests", "p99 latency (ms)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent connections")
            ax.set_title(t)
            ax.grid(alpha=0.3)
        axes[1].set_yscale("log")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(Path(args.out).with_suffix(".png"), dpi=110)
    except Exception as err:  # the numbers matter more than the picture
        print(f"plot skipped: {err}")
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _drift_summary(args, results: list[dict], ours_name: str) -> int:
    """Drift monitoring on vs off: mean over rounds per concurrency, ratios and the issue's targets."""
    import importlib.metadata as md
    import platform
    import statistics

    def mean(side, c, key, n=1):
        vals = [
            r[key]
            for r in results
            if r["server"] == f"{ours_name} drift {side}" and r["concurrency"] == c and r["records_per_request"] == n
        ]
        return statistics.mean(vals) if vals else None

    print(f"\n{'conc':>5} {'rps off':>9} {'rps on':>9} {'ratio':>6} {'p99 off':>8} {'p99 on':>8} {'ratio':>6}")
    checks = []
    for c in args.concurrency:
        ro, rn, po, pn = mean("off", c, "rps"), mean("on", c, "rps"), mean("off", c, "p99_ms"), mean("on", c, "p99_ms")
        print(f"{c:>5} {ro:>9.1f} {rn:>9.1f} {rn / ro:>6.3f} {po:>8.1f} {pn:>8.1f} {pn / po:>6.3f}")
        checks.append((f"c={c} throughput on >= 0.95x off", rn >= 0.95 * ro, rn / ro))
        checks.append((f"c={c} p99 on <= 1.10x off", pn <= 1.10 * po, pn / po))
    ro, rn = mean("off", 8, "rows_per_s", 100), mean("on", 8, "rows_per_s", 100)
    print(f"100-record requests, c=8: {ro:,.0f} rows/s off, {rn:,.0f} on ({rn / ro:.3f})")
    checks.append(("100-record rows/s on >= 0.95x off", rn >= 0.95 * ro, rn / ro))
    for n, ok, v in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {n} (measured {v:.3f})")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    out = {
        "command": " ".join([sys.executable, *sys.argv]),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "results": results,
        "checks": [{"check": n, "pass": bool(ok), "value": v} for n, ok, v in checks],
        "commit": commit.strip(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "ray": md.version("ray")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
