"""The image task's model: a small CNN (cnn.py) on raw uint8 pixels, and its model dir.

Splits travel as uint8 `pixels` (N x H x W): a quarter of float32's memory in the object store.
The module normalises and augments itself (cnn.py says why), so `collate` only makes tensors.
The model dir (model.safetensors + meta.json with the architecture) is self-contained, so
evaluation, the registry and serving load it without params.yaml.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.errors import UserError
from ml.train.model import LABELS_FILE, META_FILE, ModelError, read_meta

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from ml.config import Settings

TASK_NAME = "image-classification"
PIXELS = "pixels"
LABELS = "labels"
WEIGHTS_FILE = "model.safetensors"
# The pyfunc input: one column; a cell is a flat list of H*W ints 0-255, or PNG/JPEG bytes.
IMAGE_COLUMN = "image"


class ImageInputError(UserError, ValueError):
    """Images of the wrong shape, type or encoding; the message says what is accepted."""


@dataclass(frozen=True)
class ImageTransform:
    """The image task's preprocessor: the shape every image must have (no resizing here)."""

    height: int
    width: int

    @classmethod
    def of(cls, settings: Settings) -> ImageTransform:
        return cls(settings.image.height, settings.image.width)

    def check(self, images: Any) -> np.ndarray:
        """`images` as a uint8 N x H x W array, or ImageInputError saying what is wrong."""
        array = np.asarray(images)
        expected = (self.height, self.width)
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 3 or tuple(array.shape[1:]) != expected:
            raise ImageInputError(
                f"images must be N x {self.height} x {self.width} greyscale arrays, got shape "
                f"{array.shape}"
            )
        if array.dtype != np.uint8:
            if array.size and (
                not np.issubdtype(array.dtype, np.number)
                or array.min() < 0
                or array.max() > 255
                or not np.array_equal(array, np.round(array))
            ):
                raise ImageInputError(f"pixel values must be integers 0-255 (got {array.dtype})")
            array = array.astype(np.uint8)
        return np.ascontiguousarray(array)


def architecture(settings: Settings, labels: list[str]) -> Any:
    from ml.tasks.image_classification.cnn import Architecture

    image = settings.image
    return Architecture(
        height=image.height,
        width=image.width,
        num_classes=len(labels),
        conv_channels=tuple(image.conv_channels),
        hidden=image.hidden,
        convs_per_block=image.convs_per_block,
        dropout=settings.model.dropout,
        augment=image.augment,
        max_shift=image.max_shift,
        mean=image.pixel_mean,
        std=image.pixel_std,
    )


def preprocessor(settings: Settings) -> ImageTransform:
    return ImageTransform.of(settings)


def tune_space(settings: Settings) -> dict[str, list[Any]]:
    """`ml tune`'s image dimensions beside lr, batch size and epochs: dropout and the width of
    the feature layer."""
    return {
        "model.dropout": list(settings.tune.dropout),
        "image.hidden": list(settings.tune.hidden),
    }


def build_model(settings: Settings, labels: list[str]) -> tuple[Any, ImageTransform]:
    """A freshly initialised CNN for `labels`, sized by params.image, and its transform."""
    from ml.tasks.image_classification.cnn import ImageCNN

    if not labels:
        raise ModelError("cannot build a classifier without labels (data.labels is empty)")
    try:
        module = ImageCNN(architecture(settings, labels))
    except ValueError as exc:
        raise ModelError(str(exc)) from exc
    return module, ImageTransform.of(settings)


def encode(
    transform: ImageTransform, images: Any, settings: Settings | None = None
) -> dict[str, np.ndarray]:
    """The split's pixels as they are (uint8 N x H x W); the model normalises them."""
    return {PIXELS: transform.check(images)}


def collate(batch: Mapping[str, Any], device: Any, train: bool) -> dict[str, Any]:
    """float32 pixel tensors (0-255) and int64 labels on `device`. `train` needs nothing here:
    the module's augmentation layer follows its train/eval mode."""
    import torch

    # np.array copies: Ray hands out read-only arrays, which torch will not wrap.
    out = {PIXELS: torch.from_numpy(np.array(batch[PIXELS], dtype=np.float32)).to(device)}
    if LABELS in batch:
        out[LABELS] = torch.from_numpy(np.array(batch[LABELS], dtype=np.int64)).to(device)
    return out


def save_model(
    model: Any, transform: ImageTransform, labels: list[str], model_dir: Path, meta: dict
) -> None:
    """Write the model dir (weights, labels.json, meta.json) beside `model_dir`, then rename it
    over, so readers never see a half-written one and a failure keeps the previous model."""
    from safetensors.torch import save_file

    from ml.io import atomic_dir

    module = getattr(model, "module", model)  # DDP wraps the model in .module
    arch = module.arch
    if arch.num_classes != len(labels):
        raise ModelError(f"the model has {arch.num_classes} outputs but {len(labels)} labels")
    record = {
        **meta,
        "task": TASK_NAME,
        "labels": list(labels),
        "height": transform.height,
        "width": transform.width,
        "architecture": arch.as_dict(),
    }
    model_dir = Path(model_dir)
    with atomic_dir(model_dir) as staging:
        tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / LABELS_FILE).write_text(json.dumps({"labels": list(labels)}, indent=2) + "\n")
        (staging / META_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


class ImageClassifier:
    """A saved image model dir loaded for inference: uint8 images in, probabilities out."""

    def __init__(self, model: Any, labels: list[str], meta: dict[str, Any], device: str) -> None:
        self.model = model.to(device).eval()
        self.labels = list(labels)
        self.meta = dict(meta)
        self.device = device
        self.transform = ImageTransform(int(meta["height"]), int(meta["width"]))

    def _batches(self, images: Any, batch_size: int) -> Any:
        import torch

        array = self.transform.check(images)
        for start in range(0, len(array), batch_size):
            # N x 1 x H x W float32: the module's (and its ONNX export's) input.
            chunk = torch.from_numpy(np.array(array[start : start + batch_size], np.float32))
            chunk = chunk.unsqueeze(1)
            yield chunk.to(self.device)

    def predict_proba(self, images: Any, batch_size: int = 256) -> np.ndarray:
        """Probabilities N x len(labels), in input order."""
        import torch

        out = [np.zeros((0, len(self.labels)), dtype=np.float32)]
        with torch.inference_mode():
            for pixels in self._batches(images, batch_size):
                result = self.model(pixels=pixels)
                logits = getattr(result, "logits", result)
                if isinstance(logits, tuple | list):  # an ONNX session's outputs
                    logits = logits[0]
                logits = torch.as_tensor(logits).float()
                out.append(torch.softmax(logits, dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def features(self, images: Any, batch_size: int = 256) -> np.ndarray:
        """The CNN's penultimate activations N x hidden (the embedding drift compares)."""
        import torch

        hidden = int(self.meta["architecture"]["hidden"])
        out = [np.zeros((0, hidden), dtype=np.float32)]
        with torch.inference_mode():
            for pixels in self._batches(images, batch_size):
                out.append(self.model.features(pixels).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def load_predictor(model_dir: Path, device: str = "cpu") -> ImageClassifier:
    from safetensors.torch import load_file

    from ml.tasks.image_classification.cnn import Architecture, ImageCNN

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    if meta.get("task") != TASK_NAME or "architecture" not in meta:
        raise ModelError(
            f"{model_dir} is not an image-classification model dir (meta.json task is "
            f"{meta.get('task')!r}); train one with `task: image-classification`"
        )
    module = ImageCNN(Architecture.from_dict(meta["architecture"]))
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{model_dir} has no {WEIGHTS_FILE}; run `ml train` again")
    module.load_state_dict(load_file(str(weights)), strict=True)
    return ImageClassifier(module, meta["labels"], meta, device)


# ------------------------------------------------------------------ the pyfunc's DataFrame


def to_frame(images: Any) -> pd.DataFrame:
    """uint8 N x H x W images as the pyfunc input: column `image`, a flat list of ints a cell."""
    import pandas as pd

    array = np.asarray(images, dtype=np.uint8)
    return pd.DataFrame({IMAGE_COLUMN: [row.reshape(-1).tolist() for row in array]})


def decode_image(data: bytes, height: int, width: int) -> np.ndarray:
    """PNG/JPEG bytes as a uint8 H x W array; the image must be greyscale and that size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode, size = image.mode, image.size
            if mode not in ("L", "1"):
                raise ImageInputError(f"image mode is {mode}; a greyscale (L) image is accepted")
            if size != (width, height):
                raise ImageInputError(
                    f"image is {size[0]}x{size[1]}; {width}x{height} (width x height) is accepted"
                )
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageInputError(f"cannot decode the image bytes as PNG or JPEG: {exc}") from exc


def from_frame(frame: pd.DataFrame, meta: dict[str, Any]) -> np.ndarray:
    """A pyfunc input frame as uint8 N x H x W: cells are flat lists of H*W ints 0-255, H x W
    nested lists, or PNG/JPEG bytes."""
    height, width = int(meta.get("height", 28)), int(meta.get("width", 28))
    if IMAGE_COLUMN not in frame.columns:
        raise ImageInputError(
            f"input needs an {IMAGE_COLUMN!r} column (flat lists of {height * width} pixel "
            f"values 0-255, or PNG/JPEG bytes); got {list(frame.columns)}"
        )
    transform = ImageTransform(height, width)
    images = np.zeros((len(frame), height, width), dtype=np.uint8)
    for i, cell in enumerate(frame[IMAGE_COLUMN]):
        if isinstance(cell, bytes | bytearray | memoryview):
            images[i] = decode_image(bytes(cell), height, width)
            continue
        values = np.asarray(cell)
        if values.size != height * width:
            raise ImageInputError(
                f"row {i}: {values.size} pixel values, {height}x{width} = {height * width} expected"
            )
        images[i] = transform.check(values.reshape(1, height, width))[0]
    return images
