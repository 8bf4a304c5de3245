"""Typed settings read from params.yaml, with environment overrides and provenance.

Import every name from here (`from ml.config import Settings, override`); the modules are:
  base        ConfigError and the strict base of every section
  training    the sections that decide what is trained (data ... tune)
  evaluation  the sections that judge it (evaluate and its slices, gate, report)
  operations  where and how it runs (mlflow, ray, serve, monitor)
  settings    the root Settings, load_settings (params file, ENV_OVERRIDES, provenance)
  overrides   override / override_from_file: the one way to change loaded settings
  outputs     output_roots / scope_outputs: one model's output paths (data/NAME, reports/NAME)
  hashing     params_hash: the one hash of the settings that make a model
  dotted      dotted-key trees ("train.epochs") that loading and overriding share
"""

from ml.config.base import ConfigError
from ml.config.evaluation import (
    SLICE_ARGUMENTS,
    EvaluateSettings,
    GateSettings,
    ReportSettings,
    SliceSettings,
)
from ml.config.hashing import DEPLOYMENT_ONLY, MODEL_SECTIONS, params_hash
from ml.config.operations import (
    DriftThresholds,
    MlflowSettings,
    MonitorSettings,
    RaySettings,
    ServeSettings,
)
from ml.config.outputs import OUTPUT_FIELDS, output_roots, scope_outputs
from ml.config.overrides import TUNED_SECTIONS, override, override_from_file
from ml.config.settings import (
    DEFAULT_PARAMS_FILE,
    ENV_OVERRIDES,
    PARAMS_ENV,
    Settings,
    effective_values,
    load_settings,
    params_path,
)
from ml.config.training import (
    DataSettings,
    ImageSettings,
    ModelSettings,
    SplitSettings,
    TrainSettings,
    TuneSettings,
    ValidateSettings,
)

__all__ = [
    "DEFAULT_PARAMS_FILE",
    "DEPLOYMENT_ONLY",
    "ENV_OVERRIDES",
    "MODEL_SECTIONS",
    "OUTPUT_FIELDS",
    "PARAMS_ENV",
    "SLICE_ARGUMENTS",
    "TUNED_SECTIONS",
    "ConfigError",
    "DataSettings",
    "DriftThresholds",
    "EvaluateSettings",
    "GateSettings",
    "ImageSettings",
    "MlflowSettings",
    "ModelSettings",
    "MonitorSettings",
    "RaySettings",
    "ReportSettings",
    "ServeSettings",
    "Settings",
    "SliceSettings",
    "SplitSettings",
    "TrainSettings",
    "TuneSettings",
    "ValidateSettings",
    "effective_values",
    "load_settings",
    "output_roots",
    "override",
    "override_from_file",
    "params_hash",
    "params_path",
    "scope_outputs",
]
