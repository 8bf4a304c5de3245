"""Serving: Ray Serve endpoint for the champion model, batch inference, and the prediction log.

Submodules import their heavy dependencies (ray, torch, mlflow) inside functions where they can,
so importing `ml.serve.prediction_log` (what drift monitoring reads) stays light.
"""

from __future__ import annotations

from typing import Any


def init_ray(address: str | None, **kwargs: Any) -> None:
    """Connect to the configured cluster, or start a private local Ray instance (without a
    dashboard), by the one `init_ray` that training uses too (ml/train/cluster.py). No-op if
    Ray is already initialised (tests, a driver that set it up itself)."""
    from ml.train.cluster import init_ray as connect

    connect(address, dashboard=False, **kwargs)
