"""The text-classification task (ml/tasks/base.py): methods delegate to the part owning them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar


class TextClassificationTask:
    name: ClassVar[str] = "text-classification"
    behavioural_checks: ClassVar[bool] = True
    split_suffix: ClassVar[str] = ".csv"
    log_features: ClassVar[bool] = False

    def source_files(self, settings: Any) -> list[str]:
        from ml.tasks.text_classification import data

        return data.source_files(settings)

    def validate(self, settings: Any) -> Any:
        from ml.tasks.text_classification import data

        return data.validate(settings)

    def write_splits(self, settings: Any) -> Any:
        from ml.tasks.text_classification import data

        return data.write_splits(settings)

    def read_split(self, settings: Any, path: Path, max_rows: int | None = None) -> Any:
        from ml.tasks.text_classification import data

        return data.read_split(settings, path, max_rows)

    def build_model(self, settings: Any, labels: list[str]) -> tuple[Any, Any]:
        from ml.tasks.text_classification import model

        return model.build_model(settings, labels)

    def preprocessor(self, settings: Any) -> Any:
        from ml.tasks.text_classification import model

        return model.preprocessor(settings)

    def encode(self, preprocessor: Any, inputs: Any, settings: Any) -> dict[str, Any]:
        from ml.tasks.text_classification import model

        return model.encode(preprocessor, inputs, settings)

    def collate(self, batch: Any, device: Any, train: bool) -> dict[str, Any]:
        from ml.tasks.text_classification import model

        return model.collate(batch, device, train)

    def save_model(
        self, model_: Any, preprocessor: Any, labels: list[str], model_dir: Path, meta: dict
    ) -> None:
        from ml.tasks.text_classification import model

        model.save_model(model_, preprocessor, labels, model_dir, meta)

    def load_predictor(self, model_dir: Path, device: str = "cpu") -> Any:
        from ml.tasks.text_classification import model

        return model.load_predictor(model_dir, device)

    def to_frame(self, inputs: Any) -> Any:
        from ml.tasks.text_classification import model

        return model.to_frame(inputs)

    def from_frame(self, frame: Any, meta: dict[str, Any]) -> Any:
        from ml.tasks.text_classification import model

        return model.from_frame(frame, meta)

    def slice_functions(self) -> list[str]:
        from ml.tasks.text_classification import evaluation

        return sorted(evaluation.SLICE_FUNCTIONS)

    def tune_space(self, settings: Any) -> dict[str, list[Any]]:
        from ml.tasks.text_classification import model

        return model.tune_space(settings)

    def slice_masks(self, settings: Any, examples: Any) -> dict[str, Any]:
        from ml.tasks.text_classification import evaluation

        return evaluation.slice_masks(settings, examples)

    def prediction_columns(self, examples: Any) -> dict[str, Any]:
        from ml.tasks.text_classification import evaluation

        return evaluation.prediction_columns(examples)

    def parse_request(
        self, body: bytes, content_type: str, settings: Any, meta: Any = None
    ) -> tuple[list[Any], bool]:
        from ml.tasks.text_classification import serving

        return serving.parse_request(body, content_type, settings, meta)

    def smoke_request(self, settings: Any) -> tuple[bytes, str]:
        from ml.tasks.text_classification import serving

        return serving.smoke_request(settings)

    def log_fields(self, inputs: Any, settings: Any, features: Any = None) -> list[dict[str, Any]]:
        from ml.tasks.text_classification import serving

        return serving.log_fields(inputs, settings, features)

    def onnx_inputs(self, predictor: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        from ml.tasks.text_classification import serving

        return serving.onnx_inputs(predictor)

    def drift_record_problem(self, record: dict[str, Any]) -> str:
        from ml.tasks.text_classification import drift

        return drift.record_problem(record)

    def drift_reference(self, settings: Any, model_dir: Any = None, **options: Any) -> Any:
        from ml.tasks.text_classification import drift

        return drift.load_reference(settings, model_dir, **options)

    def drift_features(self, records: Any, settings: Any, reference: Any, embed: Any = None) -> Any:
        from ml.tasks.text_classification import drift

        return drift.drift_features(records, settings, reference, embed)


TASK = TextClassificationTask()
