"""What a deployment of the app is made of, from params.yaml `serve`: the deployment options,
the `user_config` live replicas reload in place, and the constructor argument (what changes
only with new replicas)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.config import Settings

# Keys of user_config: changing any of them is a lightweight, in-place update of live replicas.
USER_CONFIG_KEYS = (
    "model_uri",
    "quantize",
    "runtime",
    "log_text",
    "log_inputs",
    "max_batch_size",
    "batch_wait_timeout_s",
    "inference_batch_size",
)


def serve_options(settings: Settings) -> dict[str, Any]:
    """Deployment options (replicas/autoscaling, resources, concurrency) from params.yaml."""
    s = settings.serve
    options: dict[str, Any] = {
        "max_ongoing_requests": s.max_ongoing_requests,
        "ray_actor_options": {
            "num_cpus": s.num_cpus_per_replica,
            "num_gpus": s.num_gpus_per_replica,
            # Replicas never reach a hub; MLflow telemetry stays off.
            "runtime_env": {
                "env_vars": {"HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
            },
        },
        "graceful_shutdown_timeout_s": 30,
        "health_check_period_s": 10,
    }
    if s.autoscaling:
        options["autoscaling_config"] = dict(s.autoscaling)
    else:
        options["num_replicas"] = s.num_replicas
    return options


def user_config(settings: Settings) -> dict[str, Any]:
    from ml.serve.loader import default_model_uri

    s = settings.serve
    return {
        "model_uri": default_model_uri(settings),
        "quantize": s.quantize,
        "runtime": s.runtime,
        "log_text": s.log_text,
        "log_inputs": s.log_inputs,
        "max_batch_size": s.max_batch_size,
        "batch_wait_timeout_s": s.batch_wait_timeout_s,
        "inference_batch_size": s.inference_batch_size,
    }


def replica_config(settings: Settings) -> dict[str, Any]:
    """The constructor argument: what does not change without restarting replicas."""
    from ml.registry import tracking_uri
    from ml.serve.auth import deploy_token_digest
    from ml.serve.prediction_log import resolve_log_dir

    s = settings.serve
    log_dir = resolve_log_dir(settings.path(s.prediction_log_dir))
    return {
        "tracking_uri": tracking_uri(settings),
        "prediction_log_dir": str(Path(log_dir).resolve()),
        # The token's digest, not the token (ml/serve/auth.py); raises when auth is on and the
        # token variable is unset or empty, so nothing deploys that would serve everyone.
        "auth": s.auth,
        "auth_token_sha256": deploy_token_digest(settings),
        # 0: the replica's own CPU reservation; device None: cuda when Ray assigned a GPU (Ray
        # hides the GPUs of other actors), so a `num_gpus` override in a Serve config suffices.
        "torch_threads": s.torch_threads,
        "device": None,
        # The task's request parsing reads its limits and conversions (serve.*, image.*) here;
        # plain JSON, so a replica on any node rebuilds the same Settings.
        "settings": settings.model_dump(mode="json", by_alias=True, exclude={"root", "provenance"}),
    }


def replica_settings(config: dict[str, Any]) -> Settings:
    """The Settings a replica was built with (defaults where a config predates the key)."""
    from ml.config import Settings

    values = config.get("settings")
    if values is None:  # a replica config written by hand: the text defaults
        values = {"data": {"source": "."}}
    return Settings.model_validate(values)
