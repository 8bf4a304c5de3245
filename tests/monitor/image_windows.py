"""Image drift on real Fashion-MNIST: a project whose splits are real images, a CNN trained
briefly through the task's own interface, and prediction-log windows as serving writes them
(the task's log_fields + ml.serve.prediction_log.make_record), same-distribution or shifted.
Shared by tests/monitor/test_image_drift.py and benchmarks/drift.py."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tests.conftest import REPO_ROOT, shared_data_dir

CONFIG = REPO_ROOT / "configs" / "fashion-mnist.yaml"
# A 30% class-mix shift: that share of a window comes from these classes instead of all ten
# (winter stock: pullovers, coats and ankle boots).
SHIFT_CLASSES = ("Pullover", "Coat", "Ankle boot")
BRIGHTNESS = 25  # intensity levels (of 255) added to every pixel
CONTRAST = 0.75  # pixel values scaled about the image's mean


def labels() -> list[str]:
    return list(yaml.safe_load(CONFIG.read_text())["data"]["labels"])


def _idx(name: str, offset: int) -> np.ndarray:
    path = shared_data_dir() / "fashion-mnist" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: set ML_SHARED_DATA or clone ../shared")
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=offset)


@lru_cache(maxsize=1)
def fashion_mnist() -> dict[str, np.ndarray]:
    """The four official files as arrays (read-only views; copy before changing)."""
    return {
        "train_images": _idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "train_labels": _idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64),
        "test_images": _idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "test_labels": _idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64),
    }


def _save_split(path: Path, images: np.ndarray, label_ids: np.ndarray, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, labels=label_ids, ids=ids.astype(np.int64))


def write_image_project(
    root: Path,
    train: int,
    val: int,
    test: int,
    seed: int = 0,
    image: dict[str, Any] | None = None,
    **monitor: Any,
) -> Path:
    """A project folder: configs/fashion-mnist.yaml as params.yaml (monitor section extended by
    `monitor`; image section by `image`, default a small CNN) and data/splits/{train,val,test}.npz
    drawn (seeded, without replacement) from the real files: train/val from the training file,
    test from t10k."""
    data = fashion_mnist()
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(data["train_labels"]))
    splits = root / "data" / "splits"
    for name, chosen in (("train", rows[:train]), ("val", rows[train : train + val])):
        chosen = np.sort(chosen)
        _save_split(
            splits / f"{name}.npz",
            data["train_images"][chosen],
            data["train_labels"][chosen],
            chosen,
        )
    held = np.sort(rng.permutation(len(data["test_labels"]))[:test])
    _save_split(splits / "test.npz", data["test_images"][held], data["test_labels"][held], held)
    params = yaml.safe_load(CONFIG.read_text())
    small = {"conv_channels": [8, 16], "hidden": 32}
    params["image"] = {**params.get("image", {}), **(small if image is None else image)}
    params["monitor"] = {
        **params.get("monitor", {}),
        "report_dir": "reports/drift",
        "cache_dir": "data/monitor",
        **monitor,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root / "params.yaml"


def train_cnn(
    settings: Any, model_dir: Path, epochs: int = 1, seed: int = 0, rows: int | None = None
) -> Path:
    """The task's CNN trained briefly (plain loop, no Ray) on the project's train split (its
    stratified first `rows`) and saved as a model dir: a real model whose predictions and
    features the log carries."""
    from ml.data.splits import split_path
    from ml.tasks import task_of
    from ml.train import loop

    task = task_of(settings)
    names = list(settings.data.labels)
    train = task.read_split(settings, split_path(settings, "train"), max_rows=rows)
    label_ids = np.array([names.index(v) for v in train.labels], dtype=np.int64)
    loop.set_seed(seed)
    module, transform = task.build_model(settings, names)
    encoded = {**task.encode(transform, train.inputs, settings), "labels": label_ids}
    optimizer = loop.make_optimizer(module, 3e-3, 0.0)
    for epoch in range(epochs):
        batches = loop.iterate_batches(encoded, 64, shuffle=True, seed=seed, epoch=epoch)
        loop.train_epoch(module, batches, optimizer, None, collate=task.collate)
    module.eval()
    task.save_model(module, transform, names, model_dir, {"note": "briefly trained (drift)"})
    return model_dir


def shift_images(images: np.ndarray, kind: str) -> np.ndarray:
    """brightness: +BRIGHTNESS levels; contrast: values scaled by CONTRAST about each image's
    mean; both clipped to 0-255."""
    pixels = images.astype(np.float32)
    if kind == "brightness":
        pixels = pixels + BRIGHTNESS
    elif kind == "contrast":
        mean = pixels.mean(axis=(1, 2), keepdims=True)
        pixels = mean + CONTRAST * (pixels - mean)
    elif kind != "none":
        raise ValueError(kind)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def window_images(
    pool: np.ndarray, pool_labels: list[str], size: int, seed: int, kind: str = "none"
) -> np.ndarray:
    """`size` images bootstrapped from the pool. kind: none | brightness | contrast (every image
    shifted) | class_mix (30% drawn from SHIFT_CLASSES only) | blank (5% constant images)."""
    rng = np.random.default_rng(seed)
    if kind == "class_mix":
        mixed = round(0.3 * size)
        group = np.flatnonzero([v in SHIFT_CLASSES for v in pool_labels])
        rows = np.concatenate([rng.integers(0, len(pool), size - mixed), rng.choice(group, mixed)])
        return pool[rng.permutation(rows)]
    images = pool[rng.integers(0, len(pool), size)]
    if kind == "blank":
        images = images.copy()
        blank = rng.choice(size, round(0.05 * size), replace=False)
        images[blank] = rng.integers(0, 256, (len(blank), 1, 1), dtype=np.uint8)
        return images
    return shift_images(images, kind)


def prediction_records(
    settings: Any, predictor: Any, images: np.ndarray, start: datetime | None = None
) -> list[dict[str, Any]]:
    """One prediction-log record per image, as the serving replica writes it."""
    from ml.serve.prediction_log import make_record
    from ml.tasks import task_of

    probabilities = predictor.predict_proba(images)
    fields = task_of(settings).log_fields(images, settings, predictor.features(images))
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    names = predictor.labels
    return [
        make_record(
            label=names[int(p.argmax())],
            probabilities=dict(zip(names, map(float, p), strict=True)),
            model_name="fashion-classifier",
            model_version="1",
            latency_ms=4.0,
            fields=field,
            ts=start + timedelta(seconds=i),
        )
        for i, (p, field) in enumerate(zip(probabilities, fields, strict=True))
    ]
