"""The drift monitor's Prometheus endpoint: gauges and counters per model version, on loopback by
default (``drift.metrics_host`` / ``drift.metrics_port``; port 0 picks a free one).

Only the monitor exports drift series; the replicas export none (per-replica drift series would
multiply the cardinality by the replica count).
"""

from __future__ import annotations

import logging
from typing import Any

from mlops_ray.drift.psi import ALERT, SEVERITY
from mlops_ray.drift.windows import WindowStore

log = logging.getLogger("mlops_ray.drift")


class MetricsExporter:
    """``mlops_drift_*`` series of one model on their own registry and HTTP endpoint."""

    def __init__(self, model_name: str, host: str, port: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.model_name = model_name
        self.registry = CollectorRegistry()
        labels = ("model", "model_version")
        self.psi = Gauge(
            "mlops_drift_psi", "PSI per feature (last closed window)", (*labels, "feature"), registry=self.registry
        )
        self.chance = Gauge(
            "mlops_drift_chance_threshold",
            "PSI chance alone exceeds at the window's size",
            (*labels, "feature"),
            registry=self.registry,
        )
        self.status = Gauge(
            "mlops_drift_status",
            "Overall drift status: -1 insufficient, 0 ok, 1 warn, 2 alert",
            labels,
            registry=self.registry,
        )
        self.prediction_psi = Gauge(
            "mlops_drift_prediction_psi", "PSI of the prediction histogram", labels, registry=self.registry
        )
        self.window_rows = Gauge(
            "mlops_drift_window_rows", "Rows in the window in progress", labels, registry=self.registry
        )
        self.windows = Counter("mlops_drift_windows", "Windows closed", ("model_version",), registry=self.registry)
        self.alerts = Counter(
            "mlops_drift_alert_windows", "Windows closed in alert", ("model_version",), registry=self.registry
        )
        self._server = None
        self.address = self._serve(host, port)

    def _serve(self, host: str, port: int) -> str | None:
        """Start the scrape endpoint; its URL, or None when the port is taken."""
        from prometheus_client import start_http_server

        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:  # a taken port: drift still works, only the scrape endpoint is missing
            log.error("drift metrics endpoint %s:%s not started: %s", host, port, err)
            return None
        bound_host, bound_port = self._server.server_address[:2]
        return f"http://{bound_host}:{bound_port}/metrics"

    def close(self) -> None:
        """Stop the scrape endpoint (the actor's ends with its process)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def windows_closed(self, evaluations: list[dict[str, Any]]) -> None:
        """Count closed windows (and those in alert) per version."""
        for ev in evaluations:
            v = ev["model_version"]
            self.windows.labels(model_version=v).inc()
            if ev["status"] == ALERT:
                self.alerts.labels(model_version=v).inc()

    def update(self, windows: WindowStore) -> None:
        """Set the gauges from every version's last closed window (else its window in progress)."""
        for version in list(windows.versions):
            ev = windows.latest(version)
            base = {"model": self.model_name, "model_version": version}
            for f in ev["features"]:
                if f["rows"]:
                    self.psi.labels(**base, feature=f["feature"]).set(f["psi"])
                    self.chance.labels(**base, feature=f["feature"]).set(f["chance_threshold"])
            self.status.labels(**base).set(SEVERITY[ev["status"]])
            if ev.get("prediction") and ev["prediction"]["rows"]:
                self.prediction_psi.labels(**base).set(ev["prediction"]["psi"])
            self.window_rows.labels(**base).set(windows.versions[version].current.rows)


__all__ = ["MetricsExporter"]
