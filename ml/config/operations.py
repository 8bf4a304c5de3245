"""The sections for where and how the pipeline runs: MLflow, Ray, serving, monitoring."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ml.config.base import Section


class MlflowSettings(Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "tag-classifier"
    registered_model: str = "tag-classifier"
    # Which trust tier this process acts for (ml/access.py). It picks behaviour (the pr tier
    # logs to pr_experiment and registers nothing); the MLflow credentials are what enforce it.
    tier: Literal["pr", "trusted", "production"] = "trusted"
    pr_experiment: str = Field("", description="the pr tier's experiment; empty: <experiment>-pr")


class RaySettings(Section):
    address: str | None = None
    storage_path: str = "ray_results"
    dashboard: bool = False  # the private local Ray's, during `ml train` (params.yaml)


class ServeSettings(Section):
    """Ray Serve endpoint: model, HTTP, batching/scaling, input limits, auth, prediction log."""

    model_uri: str | None = Field(
        None, description="MLflow model URI or local model dir; default models:/NAME@champion"
    )
    app_name: str = "tag-classifier"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = "/"
    num_replicas: int = Field(1, ge=1, description="fixed replica count (without autoscaling)")
    autoscaling: dict[str, Any] | None = Field(
        None, description="Serve autoscaling_config (min_replicas, max_replicas, ...); wins"
    )
    num_cpus_per_replica: float = Field(1, gt=0)
    num_gpus_per_replica: float = Field(0, ge=0)
    torch_threads: int = Field(0, ge=0, description="0: the replica's CPU count")
    max_ongoing_requests: int = Field(64, ge=1)
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    inference_batch_size: int = Field(32, ge=1, description="length-sorted sub-batch size")
    quantize: bool = Field(False, description="int8 dynamic quantization of Linear layers (CPU)")
    runtime: Literal["torch", "onnxruntime"] = Field(
        "onnxruntime",
        description="what runs the model on CPU: eager torch, or ONNX Runtime on a graph exported "
        "from the same weights (on a GPU, torch always)",
    )
    ingress: Literal["proxy", "direct"] = Field(
        "proxy",
        description="proxy: Serve's HTTP proxy routes to any number of replicas; direct: one "
        "replica per node serves HTTP itself on `port` (Serve's throughput profile)",
    )
    max_text_chars: int = Field(10000, ge=1)
    max_batch_items: int = Field(256, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1)
    log_text: bool = True
    log_inputs: bool = Field(
        False, description="image task: keep the pixels in the prediction log (else hash + stats)"
    )
    prediction_log_dir: str = "logs/predictions"
    auth: bool = Field(
        True,
        description="require a bearer token; on, deploying without one in auth_token_env fails",
    )
    auth_token_env: str = Field(
        "ML_SERVE_TOKEN", description="env var holding the bearer token (read at deploy time)"
    )

    @field_validator("route_prefix")
    @classmethod
    def _route_starts_with_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {value!r}")
        return value


class DriftThresholds(Section):
    """Drift score above which a signal counts as drifted (calibrated by benchmarks/drift.py)."""

    embedding: float = Field(0.006, gt=0, description="MMD^2 (RBF, median bandwidth)")
    text_length: float = Field(0.3, gt=0, description="Wasserstein distance / reference std")
    oov_rate: float = Field(0.25, gt=0, description="Wasserstein distance / reference std")
    label: float = Field(0.12, gt=0, le=1, description="Jensen-Shannon distance")
    confidence: float = Field(0.35, gt=0, description="Wasserstein distance / reference std")
    # Image task (image statistics of each logged prediction).
    mean_intensity: float = Field(0.2, gt=0, description="Wasserstein distance / reference std")
    contrast: float = Field(0.2, gt=0, description="Wasserstein distance / reference std")
    blank_share: float = Field(0.1, gt=0, le=1, description="Jensen-Shannon distance")


class MonitorSettings(Section):
    """`ml monitor drift` (prediction log vs reference) and `ml retrain` (continuous training)."""

    window_last_n: int | None = Field(1000, ge=1, description="newest N records of the log")
    window_since: str | None = Field(
        None, description="only records at/after this: ISO time or a duration ('24h', '7d')"
    )
    min_window: int = Field(200, ge=1, description="fewer valid records: 'not enough data'")
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    embedding_model: str = "all-minilm-l6-v2"
    embedding_sample: int = Field(200, ge=10, description="window rows embedded (seeded sample)")
    embedding_max_length: int = Field(64, ge=8, le=512)
    embedding_reference_sample: int | None = Field(
        None, ge=10, description="reference rows in the MMD (seeded sample; empty: all)"
    )
    seed: int = 0
    # Split names (train, val, test: that split of the task, e.g. train.npz) or file names.
    reference_splits: list[str] = Field(default_factory=lambda: ["train", "val"], min_length=1)
    prediction_reference_split: str = Field(
        "val", description="split the model did not fit: reference predicted labels/confidence"
    )
    model_dir: str | None = Field(None, description="model for reference predictions; model.dir")
    report_dir: str = "reports/drift"
    cache_dir: str = "data/monitor"
    labelled_source: str | None = Field(
        None, description="folder/URL of newly labelled CSV rows appended before validation"
    )
    auto_promote: bool = False
    pr_body: str = "reports/retrain_pr.md"
