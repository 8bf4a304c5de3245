"""The settings root (every params.yaml section), read from params.yaml with environment
overrides and the provenance of each value.

params.yaml is the one configuration source (DVC tracks it). Values that depend on where the
code runs (tracking server, Ray cluster, data mirror) come from the environment when set.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ml.config.base import ConfigError
from ml.config.dotted import flatten, overlay
from ml.config.evaluation import EvaluateSettings, GateSettings, ReportSettings
from ml.config.operations import MlflowSettings, MonitorSettings, RaySettings, ServeSettings
from ml.config.training import (
    DataSettings,
    ImageSettings,
    ModelSettings,
    SplitSettings,
    TrainSettings,
    TuneSettings,
    ValidateSettings,
)

PARAMS_ENV = "ML_PARAMS"
DEFAULT_PARAMS_FILE = "params.yaml"

# Environment variable -> dotted settings key it overrides.
ENV_OVERRIDES: dict[str, str] = {
    "ML_DATA_MIRROR": "data.mirror",
    "ML_DATA_MIRROR_ROOT": "data.mirror_root",
    "MLFLOW_TRACKING_URI": "mlflow.tracking_uri",
    "RAY_ADDRESS": "ray.address",
    "ML_PREDICTION_LOG_DIR": "serve.prediction_log_dir",
    "ML_TIER": "mlflow.tier",
}


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
    # The declared model whose output paths these settings are scoped to (ml/config/outputs.py;
    # None: the params file's paths as written).
    model_name: str | None = Field(default=None, exclude=True)
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
        return self.model_dump(by_alias=True, exclude={"root", "provenance", "model_name"})


def _top_level_keys() -> list[str]:
    fields = Settings.model_fields.items()
    return sorted(f.alias or name for name, f in fields if not f.exclude)


def validate_tree(raw: dict[str, Any], where: str) -> Settings:
    """`raw` (a params tree) as Settings; a misspelt section is named with its close match."""
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


def read_mapping(path: Path) -> dict[str, Any]:
    """A YAML file of sections as a dict, or a ConfigError saying why it is not one."""
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
    params_file: str | Path | None = None,
    environ: dict[str, str] | None = None,
    model: str | None = None,
) -> Settings:
    """Read params.yaml (or $ML_PARAMS), apply environment overrides, and validate. With
    `model` (a declared model's name), every output path is scoped under that model's roots."""
    environ = dict(os.environ if environ is None else environ)
    path = params_path(params_file if params_file is not None else environ.get(PARAMS_ENV))
    if not path.is_file():
        raise ConfigError(
            f"params file not found: {path}. Run from the project root, or point {PARAMS_ENV} "
            "(or --params) at a params.yaml."
        )
    raw = read_mapping(path)
    provenance = {key: str(path) for key in flatten(raw)}
    for var, dotted in ENV_OVERRIDES.items():
        if environ.get(var):
            overlay(raw, {dotted: environ[var]}, f"env {var}", provenance)
    if environ.get("ML_DATA_MIRROR") and environ.get("ML_DATA_MIRROR_ROOT"):
        provenance["data.mirror_root"] += " (unused: ML_DATA_MIRROR wins, it names one folder)"
    from ml.access import apply_tier

    apply_tier(raw, provenance)
    settings = validate_tree(raw, str(path))
    # Paths resolve against the working folder (where dvc.yaml runs stages), not the params
    # file's folder, so an alternative params file under configs/ writes to the same places.
    settings.root = Path.cwd()
    for dotted in flatten(settings.as_dict()):
        provenance.setdefault(dotted, "default")
    settings.provenance = provenance
    if model is not None:
        from ml.config.outputs import scope_outputs

        scope_outputs(settings, model)
    return settings


def effective_values(settings: Settings) -> list[tuple[str, Any, str]]:
    """(key, value, source) rows for `ml config show`."""
    flat = flatten(settings.as_dict())
    return [(key, flat[key], settings.provenance.get(key, "default")) for key in sorted(flat)]
