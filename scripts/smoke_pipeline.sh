#!/usr/bin/env bash
# Smoke pipeline on sample data: generate -> pipeline run -> identical rerun (every step cached) ->
# history. Run by CI on every push (.github/workflows/ci.yml) and by the test suite
# (tests/e2e/test_pipeline_cli.py, so .ci/run runs it too). Uses a throw-away workspace unless
# MLOPS_RAY_HOME is set.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${MLOPS_RAY_BIN:-.venv/bin/mlops-ray}"
export MLOPS_RAY_HOME="${MLOPS_RAY_HOME:-$(mktemp -d)}"
CFG=examples/smoke.yaml
"$BIN" data generate --rows 4000 --shards 2 --seed 0 --out "$MLOPS_RAY_HOME/raw/smoke"
"$BIN" pipeline run --config "$CFG" --engine local --reason "smoke pipeline"
out=$("$BIN" pipeline run --config "$CFG" --engine local --reason "smoke pipeline, identical rerun")
echo "$out"
echo "$out" | grep -q "6 step(s) cached" || { echo "smoke: the identical rerun was not fully cached" >&2; exit 1; }
"$BIN" pipeline history --config "$CFG"
echo "smoke pipeline ok ($MLOPS_RAY_HOME)"
