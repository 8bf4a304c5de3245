"""What an ML task is to the shared stages: the one interface every task module implements.

The stages (ingest, validate, split, train, evaluate, gate, report, serve, predict, monitor,
release, retrain) are written once and call a `Task` for everything that differs between
tasks: how the data files are read and checked, the model and its preprocessing, how a batch
becomes model inputs, the predictor, the slices, what `/predict` accepts and answers, what a
release sends as smoke inputs, and the drift features. A task module exposes one object,
`TASK`, and `ml.tasks.get_task(name)` finds it by the params' `task:`.

Tasks import shared helpers (ml.config, ml.io, ml.errors, ml.data's report types) but never
the CLI, serving or workflow code (an import-linter contract in pyproject.toml checks it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from ml.config import Settings


@dataclass(frozen=True)
class Examples:
    """One split of a task's data, in the form its model reads.

    inputs: what a predictor takes (text: a list of str; image: a uint8 array N x H x W).
    labels: the true class name of each example (None where unknown, e.g. a prediction log).
    ids: a stable id per example (the id column; the row index in the source file for images).
    details: per-example columns a report or slice may show (text: the raw fields; image: mean
    intensity and contrast), as a mapping of equal-length sequences.
    """

    inputs: Any
    labels: list[str] | None
    ids: list[Any]
    details: Mapping[str, Sequence[Any]]

    def __len__(self) -> int:
        return len(self.ids)


@runtime_checkable
class Predictor(Protocol):
    """A loaded model: class probabilities for a batch of inputs, columns in `labels` order."""

    labels: list[str]

    def predict_proba(self, inputs: Any, batch_size: int = 64) -> np.ndarray: ...


class Task(Protocol):
    """Everything that differs between ML tasks. Stages call these; nothing else branches on
    the task."""

    name: ClassVar[str]
    # The file suffix of data/splits/{train,val,test}<suffix>.
    split_suffix: ClassVar[str]
    # Whether the prediction log keeps the predictor's `features` of each input (log_fields).
    log_features: ClassVar[bool]

    # -- data ---------------------------------------------------------------------------------
    def source_files(self, settings: Settings) -> list[str]:
        """The file names ingest fetches from data.source (or the mirror) into data/raw."""

    def validate(self, settings: Settings) -> Any:
        """Check data/raw; a ValidationReport listing every problem (ml.data.validate)."""

    def write_splits(self, settings: Settings) -> Any:
        """Seeded, stratified train/val from the train file; the holdout file as test."""

    def read_split(self, settings: Settings, path: Path, max_rows: int | None = None) -> Examples:
        """One split file written by write_splits, as Examples."""

    # -- model --------------------------------------------------------------------------------
    def build_model(self, settings: Settings, labels: list[str]) -> tuple[Any, Any]:
        """A fresh torch module for `labels` and its preprocessor (tokenizer, image transform)."""

    def preprocessor(self, settings: Settings) -> Any:
        """The preprocessor alone, as build_model returns it but without loading any weights:
        training encodes the splits with it in the driver before the workers start."""

    def encode(self, preprocessor: Any, inputs: Any, settings: Settings) -> dict[str, np.ndarray]:
        """Model-ready arrays for a split (token ids and masks; normalised pixels)."""

    def collate(self, batch: Mapping[str, Any], device: Any, train: bool) -> dict[str, Any]:
        """Tensors on `device` that the model takes as keyword arguments (train: augment)."""

    def save_model(
        self, model: Any, preprocessor: Any, labels: list[str], model_dir: Path, meta: dict
    ) -> None:
        """Write the model dir (safetensors + whatever load_predictor needs + meta.json)."""

    def load_predictor(self, model_dir: Path, device: str = "cpu") -> Predictor:
        """The trained model in model_dir, ready to predict."""

    def to_frame(self, inputs: Any) -> Any:
        """Inputs as the pandas DataFrame the MLflow pyfunc model takes (from_frame's inverse)."""

    def from_frame(self, frame: Any, meta: dict[str, Any]) -> Any:
        """A pyfunc input DataFrame as inputs; meta is the model dir's meta.json."""

    def tune_space(self, settings: Settings) -> dict[str, list[Any]]:
        """`ml tune`'s dimensions of this task's own, beside the shared lr/batch size/epochs:
        dotted params keys (e.g. "model.max_length") -> the values a trial chooses from."""

    # -- evaluation ---------------------------------------------------------------------------
    # Whether ml/evaluate/behavioural.py's text cases apply; False: reported as not applicable.
    behavioural_checks: ClassVar[bool]

    def slice_functions(self) -> list[str]:
        """The evaluate.slices `function:` names this task offers (config rejects others)."""

    def slice_masks(self, settings: Settings, examples: Examples) -> dict[str, np.ndarray]:
        """evaluate.slices from params: slice name -> boolean mask over the examples."""

    def prediction_columns(self, examples: Examples) -> dict[str, Sequence[Any]]:
        """What reports/eval/predictions.csv shows of each example beside its id (text: the
        text; image: its statistics, never the pixels)."""

    # -- serving ------------------------------------------------------------------------------
    def parse_request(
        self,
        body: bytes,
        content_type: str,
        settings: Settings,
        meta: Mapping[str, Any] | None = None,
    ) -> tuple[list[Any], bool]:
        """A /predict body as (one input per item, is_batch), or a RequestError (4xx,
        ml/tasks/request.py) saying what is accepted; meta: the served model dir's meta.json."""

    def smoke_request(self, settings: Settings) -> tuple[bytes, str]:
        """What a release POSTs to /predict to check the deployed model: (body, content type)."""

    def log_fields(
        self, inputs: Any, settings: Settings, features: Any = None
    ) -> list[dict[str, Any]]:
        """Per input, what the prediction log keeps (text or its hash; an image's hash and
        statistics, never its pixels unless configured); features: the predictor's
        penultimate activations of the inputs where it has them (the image embedding)."""

    def onnx_inputs(self, predictor: Any) -> tuple[dict[str, Any], dict[str, dict[int, str]]]:
        """A sample of the predictor's module inputs (keyword -> tensor) and their dynamic
        dims, from which ml/serve/onnx.py exports the graph ONNX Runtime serves."""

    # -- monitoring ---------------------------------------------------------------------------
    def drift_record_problem(self, record: dict[str, Any]) -> str:
        """'' when a prediction-log record has what drift_features reads, else what is wrong
        (the record is then counted as malformed, never fatal)."""

    def drift_reference(
        self, settings: Settings, model_dir: Path | str | None = None, **options: Any
    ) -> Any:
        """The drift reference (ml.monitor.signals.Reference) from the reference splits (and
        the model's predictions and embeddings when model_dir holds a model). options: stand-ins
        for the model or encoder (tests, benchmarks)."""

    def drift_features(
        self, records: Any, settings: Settings, reference: Any, embed: Any = None
    ) -> Any:
        """A window of log records (a DataFrame) as ml.monitor.signals.WindowFeatures: the
        column signals' values per record and a seeded sample of embeddings."""


class PartsTask:
    """A task package whose Task methods each delegate to the part module owning them (data,
    model, evaluation, serving, drift beside the package's __init__). A task subclasses it and
    sets the class attributes; parts are imported on first use, so `ml --help` stays light."""

    name: ClassVar[str]
    split_suffix: ClassVar[str]
    behavioural_checks: ClassVar[bool]
    log_features: ClassVar[bool]

    def _part(self, part: str) -> Any:
        import importlib

        return importlib.import_module(f"{type(self).__module__}.{part}")

    def source_files(self, settings: Any) -> list[str]:
        return self._part("data").source_files(settings)

    def validate(self, settings: Any) -> Any:
        return self._part("data").validate(settings)

    def write_splits(self, settings: Any) -> Any:
        return self._part("data").write_splits(settings)

    def read_split(self, settings: Any, path: Path, max_rows: int | None = None) -> Any:
        return self._part("data").read_split(settings, path, max_rows)

    def build_model(self, settings: Any, labels: list[str]) -> tuple[Any, Any]:
        return self._part("model").build_model(settings, labels)

    def preprocessor(self, settings: Any) -> Any:
        return self._part("model").preprocessor(settings)

    def encode(self, preprocessor: Any, inputs: Any, settings: Any) -> dict[str, Any]:
        return self._part("model").encode(preprocessor, inputs, settings)

    def collate(self, batch: Any, device: Any, train: bool) -> dict[str, Any]:
        return self._part("model").collate(batch, device, train)

    def save_model(
        self, model_: Any, preprocessor: Any, labels: list[str], model_dir: Path, meta: dict
    ) -> None:
        self._part("model").save_model(model_, preprocessor, labels, model_dir, meta)

    def load_predictor(self, model_dir: Path, device: str = "cpu") -> Any:
        return self._part("model").load_predictor(model_dir, device)

    def to_frame(self, inputs: Any) -> Any:
        return self._part("model").to_frame(inputs)

    def from_frame(self, frame: Any, meta: dict[str, Any]) -> Any:
        return self._part("model").from_frame(frame, meta)

    def slice_functions(self) -> list[str]:
        return sorted(self._part("evaluation").SLICE_FUNCTIONS)

    def tune_space(self, settings: Any) -> dict[str, list[Any]]:
        return self._part("model").tune_space(settings)

    def slice_masks(self, settings: Any, examples: Any) -> dict[str, Any]:
        return self._part("evaluation").slice_masks(settings, examples)

    def prediction_columns(self, examples: Any) -> dict[str, Any]:
        return self._part("evaluation").prediction_columns(examples)

    def parse_request(
        self, body: bytes, content_type: str, settings: Any, meta: Any = None
    ) -> tuple[list[Any], bool]:
        return self._part("serving").parse_request(body, content_type, settings, meta)

    def smoke_request(self, settings: Any) -> tuple[bytes, str]:
        return self._part("serving").smoke_request(settings)

    def log_fields(self, inputs: Any, settings: Any, features: Any = None) -> list[dict[str, Any]]:
        return self._part("serving").log_fields(inputs, settings, features)

    def onnx_inputs(self, predictor: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._part("serving").onnx_inputs(predictor)

    def drift_record_problem(self, record: dict[str, Any]) -> str:
        return self._part("drift").record_problem(record)

    def drift_reference(self, settings: Any, model_dir: Any = None, **options: Any) -> Any:
        return self._part("drift").load_reference(settings, model_dir, **options)

    def drift_features(self, records: Any, settings: Any, reference: Any, embed: Any = None) -> Any:
        return self._part("drift").drift_features(records, settings, reference, embed)
