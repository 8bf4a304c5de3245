"""Serving: Ray Serve endpoint for the champion model, batch inference, and the prediction log.

Submodules import their heavy dependencies (ray, torch, mlflow) inside functions where they can,
so importing `ml.serve.prediction_log` (what drift monitoring reads) stays light.
"""

from __future__ import annotations

from typing import Any


def init_ray(address: str | None, **kwargs: Any) -> None:
    """Connect to the configured cluster, or start a private local Ray instance.

    `address="local"` matters: with no address, ray.init joins whatever cluster was started last
    on this machine (/tmp/ray/ray_current_cluster), which on a shared machine may be someone
    else's. No-op if Ray is already initialised (tests, a driver that set it up itself).
    """
    import ray

    if ray.is_initialized():
        return
    ray.init(address=address or "local", include_dashboard=False, **kwargs)
