"""Batch inference over a CSV/Parquet file with Ray Data `map_batches` (same model as serving).

The texts are built exactly as the endpoint builds them: a `text` column as is, otherwise the
model's text columns (title, description) joined like ml.data.text.combine_text. Output rows keep
the input order and columns, plus `label`, `confidence` and one `prob_<label>` column per class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.errors import UserError
from ml.io import atomic_path
from ml.serve.schemas import combine_fields

if TYPE_CHECKING:
    import pandas as pd

    from ml.config import Settings

SUPPORTED = (".csv", ".parquet", ".pq")
TEXT_COLUMN = "text"


class BatchInputError(UserError, ValueError):
    """The batch input/output cannot be used (missing file, unknown format, no text column)."""


@dataclass(frozen=True)
class BatchResult:
    output: Path
    rows: int
    seconds: float
    model_name: str
    model_version: str


def _texts(frame: pd.DataFrame, text_columns: list[str]) -> list[str]:
    if TEXT_COLUMN in frame.columns:
        return frame[TEXT_COLUMN].fillna("").astype(str).tolist()
    present = [c for c in text_columns if c in frame.columns]
    if not present:
        raise BatchInputError(
            f"input needs a {TEXT_COLUMN!r} column or the model's text columns {text_columns}; "
            f"got {list(frame.columns)}"
        )
    rows = frame[present].astype(object).where(frame[present].notna(), None)
    return [combine_fields(list(values)) for values in rows.itertuples(index=False, name=None)]


class _Predictor:
    """A Ray Data actor: loads the model once, then classifies pandas batches."""

    def __init__(
        self, uri: str, tracking_uri: str | None, quantize: bool, runtime: str, threads: int
    ) -> None:
        from ml.serve.loader import load_classifier, text_columns

        self.classifier, self.info = load_classifier(
            uri, tracking_uri, quantize, "cpu", torch_threads=threads, runtime=runtime
        )
        self.text_columns = text_columns(self.classifier)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        probabilities = self.classifier.predict_proba(_texts(batch, self.text_columns), 32)
        labels = self.classifier.labels
        out = batch.copy()
        best = probabilities.argmax(axis=1)
        out["label"] = [labels[i] for i in best]
        out["confidence"] = probabilities.max(axis=1).astype(float)
        for column, label in enumerate(labels):
            out[f"prob_{label}"] = probabilities[:, column].astype(float)
        out["model_name"] = self.info.name
        out["model_version"] = self.info.version
        return out


def _read(path: Path) -> Any:
    import ray.data

    if not path.exists():
        raise BatchInputError(f"batch input {path} does not exist")
    # Reading is I/O: a zero-CPU reservation lets reads run even when the model actors (and,
    # on a small machine, a Serve replica) hold every CPU; otherwise the pipeline stalls.
    read_args = {"num_cpus": 0}
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ray.data.read_csv(str(path), **read_args)
    if suffix in (".parquet", ".pq") or path.is_dir():
        return ray.data.read_parquet(str(path), **read_args)
    raise BatchInputError(f"batch input {path}: use a {', '.join(SUPPORTED)} file")


def predict_file(
    settings: Settings,
    input_path: Path,
    output_path: Path,
    model_uri: str | None = None,
    batch_size: int = 256,
    concurrency: int = 1,
) -> BatchResult:
    """Classify every row of `input_path` into `output_path` (.csv or .parquet, written whole or
    not at all). `concurrency` model actors share the Ray cluster's CPUs."""
    import ray

    from ml.registry import tracking_uri
    from ml.serve import init_ray
    from ml.serve.loader import default_model_uri

    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.suffix.lower() not in SUPPORTED:
        raise BatchInputError(f"batch output {output_path}: use a .csv or .parquet file name")
    started = time.perf_counter()
    init_ray(settings.ray.address, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # output row i is input row i
    ctx.enable_progress_bars = True
    # Each model actor reserves one CPU, so the read tasks always find one (an actor reserving
    # every CPU starves the reader and the pipeline stalls); its torch threads still use its share
    # of the machine, since the reads are brief.
    share = float(ray.cluster_resources().get("CPU", 1)) / concurrency
    threads = settings.serve.torch_threads or max(1, int(share))
    dataset = _read(input_path).map_batches(
        _Predictor,
        fn_constructor_args=(
            model_uri or default_model_uri(settings),
            tracking_uri(settings),
            settings.serve.quantize,
            settings.serve.runtime,
            threads,
        ),
        batch_format="pandas",
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=1,
    )
    frame = dataset.to_pandas()
    with atomic_path(output_path) as tmp:
        if output_path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    name = str(frame["model_name"].iloc[0]) if len(frame) else ""
    version = str(frame["model_version"].iloc[0]) if len(frame) else ""
    return BatchResult(output_path, len(frame), time.perf_counter() - started, name, version)
