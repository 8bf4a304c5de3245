"""Replica-local Prometheus metrics of the endpoint (GET /metrics)."""

from __future__ import annotations

from typing import Any


class Metrics:
    """Own registry per replica: several replicas may share a process."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry: Any = CollectorRegistry()
        self.requests = Counter(
            "ml_serve_requests", "HTTP requests to /predict", ["status"], registry=self.registry
        )
        self.predictions = Counter(
            "ml_serve_predictions", "inputs classified", ["label"], registry=self.registry
        )
        self.latency = Histogram(
            "ml_serve_request_latency_seconds",
            "time from request arrival to response",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ml_serve_batch_size",
            "inputs per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
