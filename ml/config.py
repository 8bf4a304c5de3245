"""Typed settings read from params.yaml, with environment overrides and provenance.

params.yaml is the one configuration source (DVC tracks it). Values that depend on where the
code runs (tracking server, Ray cluster, data mirror) come from the environment when set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PARAMS_ENV = "ML_PARAMS"
DEFAULT_PARAMS_FILE = "params.yaml"

# Environment variable -> dotted settings key it overrides.
ENV_OVERRIDES: dict[str, str] = {
    "ML_DATA_MIRROR": "data.mirror",
    "MLFLOW_TRACKING_URI": "mlflow.tracking_uri",
    "RAY_ADDRESS": "ray.address",
}


class ConfigError(ValueError):
    """The configuration cannot be read or is invalid; the message says what to fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSettings(_Section):
    source: str = Field(description="Base URL or local folder holding the data files")
    mirror: str | None = Field(None, description="Local folder used instead of source (offline)")
    train_file: str = "dataset.csv"
    holdout_file: str = "holdout.csv"
    sha256: dict[str, str] = Field(default_factory=dict)
    id_column: str = "id"
    text_columns: list[str] = Field(default_factory=lambda: ["title", "description"], min_length=1)
    label_column: str = "tag"
    labels: list[str] = Field(default_factory=list)
    raw_dir: str = "data/raw"
    splits_dir: str = "data/splits"

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
    report: str = "reports/data_validation.json"


class SplitSettings(_Section):
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42


class MlflowSettings(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "tag-classifier"
    registered_model: str = "tag-classifier"


class RaySettings(_Section):
    address: str | None = None
    storage_path: str = "ray_results"


class SliceSettings(_Section):
    """One slice of the holdout, chosen by a named slicing function in ml/evaluate/slices.py."""

    name: str = Field(min_length=1)
    function: Literal["short_text", "long_text", "keywords"]
    words: int | None = Field(None, ge=1, description="word-count threshold (short/long_text)")
    keywords: list[str] = Field(default_factory=list, description="any of these (keywords)")

    @model_validator(mode="after")
    def _arguments_present(self) -> SliceSettings:
        if self.function in ("short_text", "long_text") and self.words is None:
            raise ValueError(f"slice {self.name!r}: {self.function} needs `words`")
        if self.function == "keywords" and not self.keywords:
            raise ValueError(f"slice {self.name!r}: keywords needs a non-empty `keywords` list")
        return self


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


class ReportSettings(_Section):
    pr_comment: str = "reports/pr_comment.md"
    base_rev: str = "main"


class Settings(BaseModel):
    """Everything the pipeline reads. Sections added by later stages keep their own defaults."""

    model_config = ConfigDict(extra="allow")

    data: DataSettings
    validate_: ValidateSettings = Field(default_factory=ValidateSettings, alias="validate")
    split: SplitSettings = Field(default_factory=SplitSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)

    root: Path = Field(default=Path("."), exclude=True)
    provenance: dict[str, str] = Field(default_factory=dict, exclude=True)

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
        tree = tree.setdefault(part, {})
    tree[leaf] = value


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
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")

    provenance = {key: str(path) for key in _flatten(raw)}
    for var, dotted in ENV_OVERRIDES.items():
        value = environ.get(var)
        if value:
            _set_dotted(raw, dotted, value)
            provenance[dotted] = f"env {var}"
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings in {path}: {problems}") from exc
    # Paths resolve against the working folder (where dvc.yaml runs stages), not the params
    # file's folder, so an alternative params file under configs/ writes to the same places.
    settings.root = Path.cwd()
    for dotted in _flatten(settings.as_dict()):
        provenance.setdefault(dotted, "default")
    settings.provenance = provenance
    return settings


def effective_values(settings: Settings) -> list[tuple[str, Any, str]]:
    """(key, value, source) rows for `ml config show`."""
    flat = _flatten(settings.as_dict())
    return [(key, flat[key], settings.provenance.get(key, "default")) for key in sorted(flat)]
