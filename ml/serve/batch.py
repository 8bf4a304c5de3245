"""Predictions outside the endpoint, with the endpoint's model and checks: one-off inputs
(`ml predict TEXT|IMAGE...`) and batch inference over a file (`ml predict batch`, Ray Data
`map_batches`).

Batch inputs: a CSV/Parquet file in the task's pyfunc input form (text: a `text` column or the
model's text columns, joined as training joined them; image: an `image` column of flat H*W
pixel lists or PNG/JPEG bytes), a folder of PNG/JPEG images, or an IDX image file (`.gz` or
not, as Fashion-MNIST ships). Image files are checked and converted exactly as the endpoint
checks them (the task's parse_request). Output rows keep the input order and columns (not the
pixels), plus `label`, `confidence` and one `prob_<label>` column per class.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.errors import UserError
from ml.io import atomic_path

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml.config import Settings

SUPPORTED = (".csv", ".parquet", ".pq")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
IDX_SUFFIXES = (".idx", ".idx3-ubyte", "-ubyte", ".ubyte")
# The pyfunc's pixel column: read by the model, not copied to the output.
PIXEL_COLUMN = "image"
_IDX_UBYTE_3D = 0x0803
_SHOWN = 5


class BatchInputError(UserError, ValueError):
    """The batch input/output cannot be used (missing file, unknown format, no text column)."""


class PredictInputError(UserError, ValueError):
    """A one-off input the endpoint would refuse; the message is the endpoint's reason."""

    exit_code = 2


@dataclass(frozen=True)
class BatchResult:
    output: Path
    rows: int
    seconds: float
    model_name: str
    model_version: str


def _outputs(frame: pd.DataFrame, probabilities: np.ndarray, labels: list[str]) -> pd.DataFrame:
    out = frame.drop(columns=[PIXEL_COLUMN], errors="ignore")
    best = probabilities.argmax(axis=1)
    out["label"] = [labels[i] for i in best]
    out["confidence"] = probabilities.max(axis=1).astype(float)
    for column, label in enumerate(labels):
        out[f"prob_{label}"] = probabilities[:, column].astype(float)
    return out


class _Predictor:
    """A Ray Data actor: loads the model once, then classifies pandas batches."""

    def __init__(
        self, uri: str, tracking_uri: str | None, quantize: bool, runtime: str, threads: int
    ) -> None:
        from ml.serve.loader import load_classifier, task_of_predictor

        self.classifier, self.info = load_classifier(
            uri, tracking_uri, quantize, "cpu", torch_threads=threads, runtime=runtime
        )
        self.task = task_of_predictor(self.classifier)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        meta = getattr(self.classifier, "meta", None) or {}
        try:
            inputs = self.task.from_frame(batch, meta)
        except ValueError as exc:
            raise BatchInputError(f"batch input: {exc}") from exc
        out = _outputs(batch, self.classifier.predict_proba(inputs, 32), self.classifier.labels)
        out["model_name"] = self.info.name
        out["model_version"] = self.info.version
        return out


def read_idx_images(path: Path) -> np.ndarray:
    """An IDX file of uint8 images (magic 0x00000803), gzipped or not, as N x H x W."""
    import numpy as np

    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise BatchInputError(f"batch input {path}: not a readable gzip file ({exc})") from exc
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 16 else None
    if magic != _IDX_UBYTE_3D:
        raise BatchInputError(
            f"batch input {path}: not an IDX image file (magic {magic!r}, want 0x00000803: "
            "uint8, 3 dimensions, as Fashion-MNIST's *-images-idx3-ubyte[.gz])"
        )
    count, height, width = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if pixels.size != count * height * width:
        raise BatchInputError(
            f"batch input {path}: header says {count} x {height} x {width} pixels, the file "
            f"holds {pixels.size}"
        )
    return pixels.reshape(count, height, width)


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_TYPES)
    if not files:
        raise BatchInputError(f"batch input {folder}: no {'/'.join(IMAGE_TYPES)} files in it")
    return files


def _folder_frame(folder: Path, settings: Settings, meta: dict[str, Any]) -> pd.DataFrame:
    """Each image checked and converted as the endpoint does; every bad file named at once."""
    import numpy as np

    from ml.tasks import get_task
    from ml.tasks.request import RequestError

    task = get_task(meta.get("task") or settings.task)
    names, pixels, bad = [], [], []
    for path in _image_files(folder):
        try:
            (image,), _ = task.parse_request(
                path.read_bytes(), IMAGE_TYPES[path.suffix.lower()], settings, meta
            )
        except RequestError as exc:
            bad.append(f"{path.name}: {exc.message.removeprefix('image ')}")
            continue
        names.append(path.name)
        pixels.append(image)
    if bad:
        more = f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        shown = "; ".join(bad[:_SHOWN]) + more
        raise BatchInputError(f"batch input {folder}: {len(bad)} images cannot be used: {shown}")
    frame = task.to_frame(np.stack(pixels))  # the pyfunc's input form, as a Parquet file has it
    frame.insert(0, "path", names)
    return frame


def _model_meta(settings: Settings, uri: str) -> dict[str, Any]:
    from ml.registry import tracking_uri
    from ml.serve.loader import download_model_dir, read_meta

    return read_meta(download_model_dir(uri, tracking_uri(settings)))


def _read(path: Path, settings: Settings, uri: str) -> Any:
    import ray.data

    if not path.exists():
        raise BatchInputError(f"batch input {path} does not exist")
    # Reading is I/O: a zero-CPU reservation lets reads run even when the model actors (and,
    # on a small machine, a Serve replica) hold every CPU; otherwise the pipeline stalls.
    read_args = {"num_cpus": 0}
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ray.data.read_csv(str(path), **read_args)
    if suffix in (".parquet", ".pq") or (path.is_dir() and any(path.glob("*.parquet"))):
        import pyarrow.parquet as pq

        # Read here, not by read_parquet: its file-listing task reserves a whole CPU, and with
        # a Serve replica and the model actor holding both of a small machine's, it never runs.
        return ray.data.from_arrow(pq.read_table(str(path)))
    if path.is_dir():
        return ray.data.from_pandas(_folder_frame(path, settings, _model_meta(settings, uri)))
    if path.name.lower().removesuffix(".gz").endswith(IDX_SUFFIXES):
        from ml.tasks import get_task

        meta = _model_meta(settings, uri)
        frame = get_task(meta.get("task") or settings.task).to_frame(read_idx_images(path))
        frame.insert(0, "index", range(len(frame)))
        return ray.data.from_pandas(frame)
    raise BatchInputError(
        f"batch input {path}: use a {', '.join(SUPPORTED)} file, a folder of images, or an "
        "IDX image file (*-ubyte[.gz])"
    )


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
    uri = model_uri or default_model_uri(settings)
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
    dataset = _read(input_path, settings, uri).map_batches(
        _Predictor,
        fn_constructor_args=(
            uri,
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


def _one_off_body(item: str) -> tuple[bytes, str, str]:
    """(body, content type, how the output names it): an image file's bytes, else a text."""
    import json

    path = Path(item)
    if path.suffix.lower() in IMAGE_TYPES and path.is_file():
        return path.read_bytes(), IMAGE_TYPES[path.suffix.lower()], "image"
    return json.dumps({"text": item}).encode(), "application/json", "text"


def predict_inputs(
    settings: Settings, items: list[str], model_uri: str | None = None
) -> list[dict[str, Any]]:
    """`ml predict TEXT|IMAGE.png ...`: one answer per item (the endpoint's checks, runtime and
    answer: label, confidence, probabilities, the model's name and version)."""
    from ml.registry import tracking_uri
    from ml.serve.loader import default_model_uri, load_classifier, task_of_predictor
    from ml.serve.model_call import as_batch, prediction
    from ml.tasks.request import RequestError

    classifier, info = load_classifier(
        model_uri or default_model_uri(settings),
        tracking_uri(settings),
        settings.serve.quantize,
        None,  # device: cuda when there is one
        None,  # threads: torch's default
        settings.serve.runtime,  # the endpoint's runtime, so one-off answers are the endpoint's
    )
    task = task_of_predictor(classifier)
    meta = getattr(classifier, "meta", None) or {}
    inputs, named = [], []
    for item in items:
        body, content_type, kind = _one_off_body(item)
        try:
            (parsed,), _ = task.parse_request(body, content_type, settings, meta)
        except RequestError as exc:
            if Path(item).suffix.lower() in IMAGE_TYPES and not Path(item).is_file():
                raise PredictInputError(f"{item}: no such image file") from exc
            raise PredictInputError(f"{item[:80]!r}: {exc.message}") from exc
        inputs.append(parsed)
        named.append({kind: parsed if kind == "text" else item})
    probabilities = classifier.predict_proba(as_batch(inputs), 32) if inputs else []
    model = {"model_name": info.name, "model_version": info.version}
    return [
        {**name, **prediction(classifier.labels, row), **model}
        for name, row in zip(named, probabilities, strict=True)
    ]
