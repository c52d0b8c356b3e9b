"""The drift monitor's Prometheus endpoint (real HTTP on 127.0.0.1, no Ray): series names and
labels, values from the last closed window, a taken port."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
from _drift_data import LIMITS, make_stats, sample

from mlops_ray.drift.exporter import MetricsExporter
from mlops_ray.drift.reference import DriftReference
from mlops_ray.drift.windows import WindowStore


@pytest.fixture
def exporter():
    ex = MetricsExporter("churn", "127.0.0.1", 0)
    yield ex
    ex.close()


def scrape(address: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of every sample line."""
    text = urllib.request.urlopen(address, timeout=5).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}


def test_gauges_show_the_last_closed_window_per_version(exporter):
    rng = np.random.default_rng(1)
    store = WindowStore("churn", window_rows=1000, window_s=60.0, keep_windows=3, limits=LIMITS)
    stats = make_stats()
    ref = DriftReference.from_stats(stats)
    store.register("3", stats, 0.0)
    closed = store.add("3", ref.count(sample(rng, 1000, shift=10)), 1000, 1.0)
    store.add("3", ref.count(sample(rng, 200)), 200, 2.0)
    exporter.windows_closed(closed)
    exporter.update(store)
    (ev,) = closed
    psi_x = next(f["psi"] for f in ev["features"] if f["feature"] == "x")
    got = scrape(exporter.address)
    base = 'model="churn",model_version="3"'
    assert got[f'mlops_drift_psi{{feature="x",{base}}}'] == pytest.approx(psi_x)
    assert f'mlops_drift_chance_threshold{{feature="c",{base}}}' in got
    assert got[f"mlops_drift_status{{{base}}}"] == 2  # alert
    assert got[f"mlops_drift_window_rows{{{base}}}"] == 200  # the window in progress
    assert got['mlops_drift_windows_total{model_version="3"}'] == 1
    assert got['mlops_drift_alert_windows_total{model_version="3"}'] == 1
    assert exporter.address.startswith("http://127.0.0.1:")


def test_a_taken_port_leaves_drift_working_without_an_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        ex = MetricsExporter("m", "127.0.0.1", s.getsockname()[1])
    assert ex.address is None
    ex.windows_closed([{"model_version": "1", "status": "ok"}])  # still counts
    ex.close()
