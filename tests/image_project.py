"""Real Fashion-MNIST project folders for the image-task tests: params + ingested, validated,
split data, made in-process by the real stages from the shared mirror.

    from tests.image_project import make_image_project
    params = make_image_project(tmp_path, train_rows=1000, holdout_rows=300, train={"epochs": 1})
    # tmp_path/params.yaml, data/raw (the four IDX files), data/splits/{train,val,test}.npz

The params are configs/fashion-mnist.yaml with the mirror set and a seeded stratified subset
(split.max_train_rows / max_holdout_rows); keyword sections are merged over it. Splits made
once per process for the same data/validate/split params are copied, not made again.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "fashion-mnist.yaml"
# Sections whose values decide data/ and reports/data_validation.json (the cache key).
DATA_SECTIONS = ("task", "data", "validate", "split", "image")

_made: dict[str, Path] = {}  # cache key -> a project folder holding those data outputs


def mirror_dir() -> Path:
    """The Fashion-MNIST files beside the checkout (../shared/data/fashion-mnist), or under
    $ML_SHARED_DATA."""
    shared = Path(os.environ.get("ML_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return (shared / "fashion-mnist").resolve()


def image_params(
    train_rows: int | None = 1000, holdout_rows: int | None = 300, **overrides: dict[str, Any]
) -> dict[str, Any]:
    """configs/fashion-mnist.yaml for a test: the mirror, a subset of train_rows training
    images (train + val) and holdout_rows test images (None: all), then `overrides` merged
    section by section (e.g. train={"epochs": 1})."""
    params = yaml.safe_load(CONFIG.read_text())
    params["data"]["mirror"] = str(mirror_dir())
    params.setdefault("split", {}).update(
        {"max_train_rows": train_rows, "max_holdout_rows": holdout_rows}
    )
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(params.get(section), dict):
            params[section].update(copy.deepcopy(values))
        else:
            params[section] = copy.deepcopy(values)
    return params


def _run_data_stages(root: Path, params_file: Path) -> None:
    from ml.config import load_settings
    from ml.data.ingest import ingest
    from ml.data.split import split
    from ml.data.validate import validate

    settings = load_settings(params_file, environ={})
    settings.root = root
    ingest(settings)
    report = validate(settings)
    if not report.passed:
        raise AssertionError(f"the Fashion-MNIST mirror failed validation: {report.problems}")
    split(settings)


def make_image_project(
    root: Path,
    train_rows: int | None = 1000,
    holdout_rows: int | None = 300,
    **overrides: dict[str, Any],
) -> Path:
    """Write root/params.yaml (image_params) and run ingest, validate and split into root;
    returns the params file. Paths in the params are relative to root: run stages there
    (cwd=root, or settings.root = root)."""
    if not (mirror_dir() / "train-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST not found at {mirror_dir()}: clone with ../shared beside the repo "
            "or set ML_SHARED_DATA"
        )
    root.mkdir(parents=True, exist_ok=True)
    params = image_params(train_rows, holdout_rows, **overrides)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    key = yaml.safe_dump({k: params.get(k) for k in DATA_SECTIONS}, sort_keys=True)
    cached = _made.get(key)
    if cached is not None and (cached / "data" / "splits").is_dir():
        for folder in ("data", "reports"):
            shutil.copytree(cached / folder, root / folder, dirs_exist_ok=True)
        return params_file
    _run_data_stages(root, params_file)
    # Keep a private copy: the caller's folder may be changed or removed by its test.
    keep = Path(tempfile.mkdtemp(prefix="ml-image-project-"))
    atexit.register(shutil.rmtree, keep, True)
    for folder in ("data", "reports"):
        shutil.copytree(root / folder, keep / folder)
    _made[key] = keep
    return params_file


def train_tiny_image_model(project: Path, steps: int = 30, batch_size: int = 32) -> Path:
    """An image model dir trained in-process for `steps` steps on a project's train split
    (made by make_image_project; `project` is its params file or folder), by the loop core and
    the task's save_model, without Ray: a real model dir in seconds for serve/monitor/evaluate
    tests. Returns settings.model.dir under the project."""
    from ml.config import load_settings
    from ml.data.splits import split_path
    from ml.tasks import task_of
    from ml.train import loop

    params_file = project / "params.yaml" if project.is_dir() else project
    settings = load_settings(params_file, environ={})
    settings.root = params_file.parent
    task = task_of(settings)
    labels = list(settings.data.labels)
    train = task.read_split(settings, split_path(settings, "train"))
    loop.set_seed(settings.train.seed)
    model, preprocessor = task.build_model(settings, labels)
    encoded = dict(task.encode(preprocessor, train.inputs, settings))
    index = {label: i for i, label in enumerate(labels)}
    encoded[loop.LABEL_COLUMN] = np.asarray([index[label] for label in train.labels], np.int64)
    optimizer = loop.make_optimizer(model, 3e-3, 0.0)
    epoch = 0
    while steps > 0:
        batches = loop.iterate_batches(encoded, batch_size, True, settings.train.seed, epoch)
        done = loop.train_epoch(
            model, batches, optimizer, None, collate=task.collate, max_steps=steps
        )
        if not done["steps"]:
            raise AssertionError(f"{split_path(settings, 'train')} has no images to train on")
        steps -= int(done["steps"])
        epoch += 1
    model_dir = settings.path(settings.model.dir)
    task.save_model(model, preprocessor, labels, model_dir, {"task": task.name, "labels": labels})
    return model_dir
