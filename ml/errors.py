"""The errors a user can fix; the CLI turns them into a message and a non-zero exit."""

from __future__ import annotations

from ml.access import AccessError
from ml.config import ConfigError
from ml.data.ingest import IngestError
from ml.data.split import SplitError
from ml.evaluate.behavioural import BehaviouralError
from ml.evaluate.evaluate import EvaluationError
from ml.gate import GateError
from ml.monitor.drift import MonitorError
from ml.monitor.retrain import RetrainError
from ml.registry import RegistryError
from ml.release import ReleaseError
from ml.report.pr import ReportError
from ml.serve.batch import BatchInputError
from ml.serve.loader import ModelLoadError
from ml.train.model import ModelError
from ml.train.ray_train import TrainError
from ml.train.tracking import TrackingError
from ml.train.tune import TuneError

USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    IngestError,
    SplitError,
    FileNotFoundError,
    ModelError,
    TrainError,
    TrackingError,
    TuneError,
    EvaluationError,
    BehaviouralError,
    GateError,
    MonitorError,
    RetrainError,
    RegistryError,
    AccessError,
    ReleaseError,
    ReportError,
    ModelLoadError,
    BatchInputError,
)
