"""Prometheus metrics of the HTTP process: request counts by status, latency, triage, served versions.

Each server has its own registry (several servers can live in one process, e.g. in tests).
Worker state and model versions are read from the :class:`~serving.status.StatusBoard` at
scrape time, so they are right even though the workers are other processes.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from serving.status import StatusBoard

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROUTES = ("/v1/predict", "/v1/model", "/livez", "/readyz", "/metrics", "/health", "/openapi.json")


class _ServedModels:
    """Gauges built from the workers' published statuses when Prometheus scrapes."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board

    def collect(self):
        workers = self.board.workers()
        info = GaugeMetricFamily("tomosight_model_info", "Model version served by inference workers (value: workers).",
                                 labels=["model", "alias", "version"])  # fmt: skip
        for (model, alias, version), n in sorted(Tally((w.model_name, w.alias, w.version) for w in workers if w.version).items()):
            info.add_metric([model, alias, version], n)
        yield info
        states = GaugeMetricFamily("tomosight_workers", "Inference workers by state.", labels=["state"])
        for state, n in sorted(Tally(w.state for w in workers).items()):
            states.add_metric([state], n)
        yield states


class ServerMetrics:
    """The metrics one server exposes on ``/metrics``."""

    def __init__(self, board: StatusBoard) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tomosight_requests", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("tomosight_request_duration_seconds", "HTTP request latency by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.decisions = Counter("tomosight_triage_decisions", "Predictions by triage decision.", ["decision"],
                                 registry=self.registry)  # fmt: skip
        self.registry.register(_ServedModels(board))

    def observe(self, path: str, method: str, status: int, seconds: float, decision: str | None = None) -> None:
        """Count one finished request (unknown paths share one label, to bound cardinality)."""
        route = path if path in ROUTES else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if decision:
            self.decisions.labels(decision).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
