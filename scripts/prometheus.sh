#!/usr/bin/env bash
# Print the path of a Prometheus server binary for the drift-metrics test, fetching Debian's
# `prometheus` package into .cache/prometheus when none is on PATH. Extracted, not installed: no
# system service starts, nothing listens until the test starts it on 127.0.0.1. Prints nothing
# (exit 0) when neither works (the test then skips, or fails under MLOPS_RAY_REQUIRE_PROMETHEUS=1).
set -uo pipefail
cd "$(dirname "$0")/.."
if command -v prometheus >/dev/null 2>&1; then command -v prometheus; exit 0; fi
local_bin=.cache/prometheus/usr/bin/prometheus
if [ ! -x "$local_bin" ] && command -v apt-get >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; }) \
    && mkdir -p .cache/prometheus && dpkg-deb -x "$tmp"/prometheus_*.deb .cache/prometheus
  rm -rf "$tmp"
fi
[ -x "$local_bin" ] && echo "$PWD/$local_bin"
exit 0
