"""Typed settings read from params.yaml, with environment overrides and provenance.

params.yaml is the one configuration source (DVC tracks it). Values that depend on where the
code runs (tracking server, Ray cluster, data mirror) come from the environment when set.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ml.errors import UserError

PARAMS_ENV = "ML_PARAMS"
DEFAULT_PARAMS_FILE = "params.yaml"

# Environment variable -> dotted settings key it overrides.
ENV_OVERRIDES: dict[str, str] = {
    "ML_DATA_MIRROR": "data.mirror",
    "MLFLOW_TRACKING_URI": "mlflow.tracking_uri",
    "RAY_ADDRESS": "ray.address",
    "ML_PREDICTION_LOG_DIR": "serve.prediction_log_dir",
    "ML_TIER": "mlflow.tier",
}


class ConfigError(UserError, ValueError):
    """The configuration cannot be read or is invalid; the message says what to fix."""

    exit_code = 2  # bad config or usage, as the CLI's usage errors


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSettings(_Section):
    source: str = Field(description="Base URL or local folder holding the data files")
    mirror: str | None = Field(None, description="Local folder used instead of source (offline)")
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

    @model_validator(mode="after")
    def _columns_distinct(self) -> DataSettings:
        columns = [self.id_column, self.label_column, *self.text_columns]
        if len(set(columns)) != len(columns):
            raise ValueError(f"id, label and text columns must be distinct, got {columns}")
        return self


class ValidateSettings(_Section):
    min_examples_per_class: int = Field(10, ge=1)
    min_text_chars: int = Field(10, ge=1)
    max_text_chars: int = Field(20000, ge=1)
    # Image task: the share of a file's images that may repeat an earlier one (by content hash),
    # and of the holdout's images that may also be in train; above it validation fails.
    max_duplicate_share: float = Field(0.0, ge=0, le=1)
    max_leakage_share: float = Field(0.0, ge=0, le=1)
    report: str = "reports/data_validation.json"


class SplitSettings(_Section):
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    # A seeded, stratified subset of each file (tests, quick looks); empty: every row.
    max_train_rows: int | None = Field(None, ge=2)
    max_holdout_rows: int | None = Field(None, ge=1)


class ImageSettings(_Section):
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


class MlflowSettings(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "tag-classifier"
    registered_model: str = "tag-classifier"
    # Which trust tier this process acts for (ml/access.py). It picks behaviour (the pr tier
    # logs to pr_experiment and registers nothing); the MLflow credentials are what enforce it.
    tier: Literal["pr", "trusted", "production"] = "trusted"
    pr_experiment: str = Field("", description="the pr tier's experiment; empty: <experiment>-pr")


class RaySettings(_Section):
    address: str | None = None
    storage_path: str = "ray_results"
    dashboard: bool = False  # the private local Ray's, during `ml train` (params.yaml)


class ModelSettings(_Section):
    """What is trained: the base encoder, its head, and where the trained model dir goes."""

    base: str = Field(
        "all-minilm-l6-v2",
        description="'all-minilm-l6-v2' (packaged, offline), a Hugging Face id, or a local folder",
    )
    dropout: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(64, ge=8, le=512)
    dir: str = "models/model"


class TrainSettings(_Section):
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


class TuneSettings(_Section):
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


# Each slicing function's arguments (which task offers which: ml/tasks/*/evaluation.py).
SLICE_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "short_text": ("words",),
    "long_text": ("words",),
    "keywords": ("keywords",),
    "brightness": ("min_intensity", "max_intensity"),
    "classes": ("classes",),
}


class SliceSettings(_Section):
    """One slice of the holdout, chosen by a named slicing function of the configured task."""

    name: str = Field(min_length=1)
    function: Literal["short_text", "long_text", "keywords", "brightness", "classes"]
    words: int | None = Field(None, ge=1, description="word-count threshold (short/long_text)")
    keywords: list[str] = Field(default_factory=list, description="any of these (keywords)")
    # Mean pixel intensity on the 0-1 scale of the image statistics (drift, prediction log).
    min_intensity: float | None = Field(
        None, ge=0, le=1, description="mean pixel intensity at least this (brightness)"
    )
    max_intensity: float | None = Field(
        None, ge=0, le=1, description="mean pixel intensity at most this (brightness)"
    )
    classes: list[str] = Field(default_factory=list, description="true class among (classes)")

    @model_validator(mode="after")
    def _arguments_present(self) -> SliceSettings:
        arguments = {a for names in SLICE_ARGUMENTS.values() for a in names}
        given = sorted(a for a in arguments if getattr(self, a) not in (None, []))
        takes = SLICE_ARGUMENTS[self.function]
        stray = [a for a in given if a not in takes]
        if stray:
            raise ValueError(
                f"slice {self.name!r}: {self.function} takes {' / '.join(takes)}, not {stray}"
            )
        if self.function in ("short_text", "long_text") and self.words is None:
            raise ValueError(f"slice {self.name!r}: {self.function} needs `words`")
        if self.function == "keywords" and not self.keywords:
            raise ValueError(f"slice {self.name!r}: keywords needs a non-empty `keywords` list")
        if self.function == "classes" and not self.classes:
            raise ValueError(f"slice {self.name!r}: classes needs a non-empty `classes` list")
        if self.function == "brightness":
            low, high = self.min_intensity, self.max_intensity
            if low is None and high is None:
                raise ValueError(
                    f"slice {self.name!r}: brightness needs `min_intensity` and/or "
                    "`max_intensity` (mean pixel intensity, 0-1)"
                )
            if low is not None and high is not None and low > high:
                raise ValueError(f"slice {self.name!r}: min_intensity {low} > max_intensity {high}")
        return self

    @property
    def description(self) -> str:
        """How the PR report names the slice's rule."""
        if self.function == "short_text":
            return f"≤ {self.words} words"
        if self.function == "long_text":
            return f"≥ {self.words} words"
        if self.function == "keywords":
            return "mentions " + ", ".join(self.keywords)
        if self.function == "classes":
            return "classes " + ", ".join(self.classes)
        low, high = self.min_intensity, self.max_intensity
        if low is None:
            return f"mean intensity ≤ {high:g}"
        if high is None:
            return f"mean intensity ≥ {low:g}"
        return f"mean intensity {low:g} to {high:g}"


class EvaluateSettings(_Section):
    metrics: str = "reports/metrics.json"
    detail_dir: str = "reports/eval"
    ece_bins: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    behavioural_file: str = "ml/evaluate/behavioural.yaml"
    slices: list[SliceSettings] = Field(default_factory=list)


class GateSettings(_Section):
    f1_tolerance: float = Field(0.01, ge=0, le=1)
    max_class_f1_drop: float = Field(0.05, ge=0, le=1)
    min_behavioural_pass_rate: float = Field(1.0, ge=0, le=1)
    floors: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 0.8, "f1_weighted": 0.8, "f1_macro": 0.7}
    )
    report: str = "reports/gate.json"

    @model_validator(mode="after")
    def _floors_are_known_metrics(self) -> GateSettings:
        known = {f"{m}_{a}" for m in ("f1", "precision", "recall") for a in ("weighted", "macro")}
        unknown = sorted(set(self.floors) - known - {"accuracy"})
        if unknown:
            raise ValueError(f"gate.floors: unknown metric(s) {unknown}; use {sorted(known)}")
        return self


class ReportSettings(_Section):
    pr_comment: str = "reports/pr_comment.md"
    base_rev: str = "main"


class ServeSettings(_Section):
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


class DriftThresholds(_Section):
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


class MonitorSettings(_Section):
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


class Settings(BaseModel):
    """Everything the pipeline reads; an unknown top-level key is an error (a misspelt section
    would otherwise be ignored and its defaults used)."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["text-classification", "image-classification"] = Field(
        "text-classification", description="the ML task (ml/tasks/): what the data and model are"
    )
    data: DataSettings
    validate_: ValidateSettings = Field(default_factory=ValidateSettings, alias="validate")
    split: SplitSettings = Field(default_factory=SplitSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    image: ImageSettings = Field(default_factory=ImageSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)

    root: Path = Field(default=Path("."), exclude=True)
    provenance: dict[str, str] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="after")
    def _slices_fit_the_task(self) -> Settings:
        from ml.tasks import get_task

        offered = get_task(self.task).slice_functions()
        for spec in self.evaluate.slices:
            if spec.function not in offered:
                raise ValueError(
                    f"evaluate.slices: slice {spec.name!r} uses {spec.function}, which the "
                    f"{self.task} task does not offer; use one of {offered}"
                )
            unknown = sorted(set(spec.classes) - set(self.data.labels)) if self.data.labels else []
            if unknown:
                raise ValueError(
                    f"evaluate.slices: slice {spec.name!r} names classes {unknown} that are not "
                    f"in data.labels {self.data.labels}"
                )
        return self

    def path(self, relative: str | Path) -> Path:
        """A project path (from params) resolved against the project root (the working folder)."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude={"root", "provenance"})


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "sha256":
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if tree.get(part) is None:  # absent, or a YAML key with nothing under it
            tree[part] = {}
        tree = tree[part]
        if not isinstance(tree, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
    tree[leaf] = value


def _overlay(
    tree: dict[str, Any], values: Mapping[str, Any], source: str, provenance: dict[str, str]
) -> None:
    """Lay `values` (dotted keys like "train.epochs", or nested sections) over `tree`."""
    for dotted, value in _flatten(dict(values)).items():
        _set_dotted(tree, dotted, value)
        provenance[dotted] = source


def _top_level_keys() -> list[str]:
    fields = Settings.model_fields.items()
    return sorted(f.alias or name for name, f in fields if not f.exclude)


def _validate(raw: dict[str, Any], where: str) -> Settings:
    known = _top_level_keys()
    unknown = [key for key in raw if key not in known]
    if unknown:
        named = []
        for key in map(str, unknown):
            close = difflib.get_close_matches(key, known, n=1)
            named.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"{where}: unknown top-level section{'s' if len(named) > 1 else ''} "
            f"{', '.join(named)}; the sections are {known}"
        )
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings in {where}: {problems}") from exc


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def params_path(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get(PARAMS_ENV) or DEFAULT_PARAMS_FILE)


def load_settings(
    params_file: str | Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read params.yaml (or $ML_PARAMS), apply environment overrides, and validate."""
    environ = dict(os.environ if environ is None else environ)
    path = params_path(params_file if params_file is not None else environ.get(PARAMS_ENV))
    if not path.is_file():
        raise ConfigError(
            f"params file not found: {path}. Run from the project root, or point {PARAMS_ENV} "
            "(or --params) at a params.yaml."
        )
    raw = _read_mapping(path)
    provenance = {key: str(path) for key in _flatten(raw)}
    for var, dotted in ENV_OVERRIDES.items():
        if environ.get(var):
            _overlay(raw, {dotted: environ[var]}, f"env {var}", provenance)
    from ml.access import apply_tier

    apply_tier(raw, provenance)
    settings = _validate(raw, str(path))
    # Paths resolve against the working folder (where dvc.yaml runs stages), not the params
    # file's folder, so an alternative params file under configs/ writes to the same places.
    settings.root = Path.cwd()
    for dotted in _flatten(settings.as_dict()):
        provenance.setdefault(dotted, "default")
    settings.provenance = provenance
    return settings


def override(settings: Settings, values: Mapping[str, Any], source: str) -> Settings:
    """`settings` with `values` (dotted keys like "train.epochs", or nested sections) laid over
    them and validated like params.yaml; provenance names `source` for each key given.

    The one way to change settings after loading: a params override file (`ml tune`'s best
    params), command-line options, a tune trial's sampled values."""
    raw = settings.as_dict()
    provenance = dict(settings.provenance)
    _overlay(raw, values, source, provenance)
    updated = _validate(raw, source)
    updated.root, updated.provenance = settings.root, provenance
    return updated


# What `ml tune` writes and `ml train --params-override` may change: the model's own settings.
TUNED_SECTIONS = ("model", "train", "image")


def override_from_file(
    settings: Settings, path: Path, sections: Collection[str] = TUNED_SECTIONS
) -> Settings:
    """`override` with the given sections of a params file (e.g. `ml train --params-override`)."""
    if not path.is_file():
        raise ConfigError(f"params override file not found: {path}")
    values = _read_mapping(path)
    unknown = sorted(set(values) - set(sections))
    if unknown:
        raise ConfigError(
            f"{path}: only {'/'.join(sections)} sections can be overridden, got {unknown}"
        )
    return override(settings, values, str(path))


# The keys that decide what training produces; serving, monitoring and deployment settings can
# change without making an already trained model a different one.
MODEL_SECTIONS = ("task", "data", "validate", "split", "model", "image", "train")
DEPLOYMENT_ONLY = ("data.mirror",)


def params_hash(settings: Settings, sections: Collection[str] = MODEL_SECTIONS) -> str:
    """sha256 of the effective settings in `sections` (after environment overrides, minus the
    deployment-only keys), as canonical JSON so formatting and comments do not count. The
    registry's `params_sha256` tag and the training run's `params_hash` tag are this value."""
    values = {name: value for name, value in settings.as_dict().items() if name in sections}
    for dotted in DEPLOYMENT_ONLY:
        section, key = dotted.split(".")
        if isinstance(values.get(section), dict):
            values[section].pop(key, None)
    canonical = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def effective_values(settings: Settings) -> list[tuple[str, Any, str]]:
    """(key, value, source) rows for `ml config show`."""
    flat = _flatten(settings.as_dict())
    return [(key, flat[key], settings.provenance.get(key, "default")) for key in sorted(flat)]
