"""The sections that decide what is trained: the data and its checks, the split, the model
(text encoder or image CNN), training and tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ml.config.base import Section


class DataSettings(Section):
    source: str = Field(description="Base URL or local folder holding the data files")
    mirror: str | None = Field(None, description="Local folder used instead of source (offline)")
    # Several models offline: one root holds each model's copy in its own subfolder. `mirror`
    # (ML_DATA_MIRROR) names one folder exactly, so it wins over the root.
    mirror_root: str | None = Field(
        None, description="Folder of every model's copy (ML_DATA_MIRROR_ROOT); mirror wins"
    )
    mirror_subdir: str | None = Field(
        None, description="This model's subfolder of mirror_root (empty: the root is not used)"
    )
    train_file: str = "dataset.csv"
    holdout_file: str = "holdout.csv"
    # Tasks whose labels live in their own files (image-classification's IDX label files).
    train_labels_file: str | None = None
    holdout_labels_file: str | None = None
    sha256: dict[str, str] = Field(default_factory=dict)
    id_column: str = "id"
    text_columns: list[str] = Field(default_factory=lambda: ["title", "description"], min_length=1)
    label_column: str = "tag"
    labels: list[str] = Field(default_factory=list)
    raw_dir: str = "data/raw"
    splits_dir: str = "data/splits"

    @field_validator("sha256", "labels", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any, info: ValidationInfo) -> Any:
        # A YAML key with nothing under it reads as None: treat it as "none declared".
        if value is None:
            return {} if info.field_name == "sha256" else []
        return value

    @field_validator("mirror_subdir")
    @classmethod
    def _subdir_stays_under_the_root(cls, value: str | None) -> str | None:
        parts = Path(value).parts if value else ()
        if value and (Path(value).is_absolute() or ".." in parts):
            raise ValueError(
                f"{value!r} must be a folder name under the mirror root, e.g. 'madewithml'"
            )
        return value or None

    @model_validator(mode="after")
    def _columns_distinct(self) -> DataSettings:
        columns = [self.id_column, self.label_column, *self.text_columns]
        if len(set(columns)) != len(columns):
            raise ValueError(f"id, label and text columns must be distinct, got {columns}")
        return self


class ValidateSettings(Section):
    min_examples_per_class: int = Field(10, ge=1)
    min_text_chars: int = Field(10, ge=1)
    max_text_chars: int = Field(20000, ge=1)
    # Image task: the share of a file's images that may repeat an earlier one (by content hash),
    # and of the holdout's images that may also be in train; above it validation fails.
    max_duplicate_share: float = Field(0.0, ge=0, le=1)
    max_leakage_share: float = Field(0.0, ge=0, le=1)
    report: str = "reports/data_validation.json"


class SplitSettings(Section):
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    # A seeded, stratified subset of each file (tests, quick looks); empty: every row.
    max_train_rows: int | None = Field(None, ge=2)
    max_holdout_rows: int | None = Field(None, ge=1)


class ImageSettings(Section):
    """The image-classification task: the image shape, what serving may convert, the CNN."""

    height: int = Field(28, ge=1)
    width: int = Field(28, ge=1)
    conv_channels: list[int] = Field(
        default_factory=lambda: [32, 64], min_length=1, description="CNN width per conv block"
    )
    hidden: int = Field(128, ge=1, description="units of the dense layer before the classes")
    convs_per_block: int = Field(1, ge=1, le=4, description="conv layers before each pooling")
    # Pixel statistics of the training images on a 0-1 scale (Fashion-MNIST's), which the
    # model uses to normalise its input.
    pixel_mean: float = Field(0.2860, ge=0, le=1)
    pixel_std: float = Field(0.3530, gt=0, le=1)
    augment: bool = Field(True, description="random shifts and flips while training")
    max_shift: int = Field(2, ge=0, description="largest random shift in pixels (augment)")
    allow_resize: bool = Field(False, description="serving resizes other sizes instead of 4xx")
    allow_colour: bool = Field(False, description="serving converts colour to greyscale")
    max_image_bytes: int = Field(1_000_000, ge=1, description="largest encoded image accepted")


class ModelSettings(Section):
    """What is trained: the base encoder, its head, and where the trained model dir goes."""

    base: str = Field(
        "all-minilm-l6-v2",
        description="'all-minilm-l6-v2' (packaged, offline), a Hugging Face id, or a local folder",
    )
    dropout: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(64, ge=8, le=512)
    dir: str = "models/model"


class TrainSettings(Section):
    """How it is trained: optimisation, early stopping, and the Ray Train scaling/fault config."""

    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1, description="global batch, split across workers")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_fraction: float = Field(0.1, gt=0, lt=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    seed: int = 42
    early_stopping_patience: int = Field(3, ge=0, description="0 disables early stopping")
    early_stopping_min_delta: float = Field(0.0, ge=0)
    metric: str = Field("val_loss", description="validation metric: early stopping, best model")
    metric_mode: Literal["max", "min"] = Field("min", description="max for scores, min for losses")
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="CPUs per worker; auto: the most that num_workers workers can each get on "
        "the cluster's nodes (capped), resolved when training starts",
    )
    cluster_wait_s: float = Field(
        10.0, ge=0, description="how long to wait for nodes that fit the workers (autoscaling)"
    )
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(default_factory=dict)
    data_sharding: Literal["interleave", "streaming_split"] = Field(
        "interleave",
        description="interleave: every worker reads the (materialized) splits into memory once, "
        "shuffles them in one order shared by all and takes every world-th batch; "
        "streaming_split: Ray Data splits the stream between workers every epoch (for data "
        "larger than the object store or a worker's memory)",
    )
    max_failures: int = Field(2, ge=-1)
    checkpoints_to_keep: int = Field(2, ge=1)
    report: str = "reports/train.json"


class TuneSettings(Section):
    """Ray Tune search (ASHA) over the model/train params; the best one is written to output."""

    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(1, ge=1)
    num_workers: int = Field(1, ge=1, description="Ray Train workers per trial")
    grace_period: int = Field(1, ge=1)
    reduction_factor: int = Field(2, ge=2)
    lr: list[float] = Field(default_factory=lambda: [5e-5, 5e-4], min_length=2, max_length=2)
    batch_size: list[int] = Field(default_factory=lambda: [16, 32], min_length=1)
    epochs: list[int] = Field(default_factory=lambda: [4, 8], min_length=1)
    dropout: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2], min_length=1)
    max_length: list[int] = Field(default_factory=lambda: [48, 64], min_length=1)
    hidden: list[int] = Field(
        default_factory=lambda: [64, 128, 256], min_length=1, description="image.hidden values"
    )
    output: str = "reports/tune/best_params.yaml"
