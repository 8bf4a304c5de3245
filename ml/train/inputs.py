"""Training's inputs: the train/val splits read by the task's one split reader, encoded by the
task (token ids; normalised pixels) with Ray Data, and handed to the workers.

`interleave` (the default): every worker needs every row once, so the driver gathers each
encoded split (a few MB to a few hundred) and puts it in Ray's object store once; the workers
`ray.get` it. `streaming_split`: the materialised Datasets go to the trainer, which splits the
train set across the workers every epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.train.errors import TrainError

if TYPE_CHECKING:
    from ml.config import Settings

# The column of the inputs in the Ray Datasets the task's `encode` reads.
INPUT_COLUMN = "input"
TRAIN_SPLITS = ("train", "val")


@dataclass(frozen=True)
class Split:
    """One split as training reads it: the task's inputs and the label ids."""

    inputs: Any
    label_ids: Any  # int64 array, ids into labels.json

    def __len__(self) -> int:
        return len(self.label_ids)


def split_paths(settings: Settings) -> dict[str, Path]:
    """train/val/test split paths and labels.json; a TrainError if train, val or the labels
    are missing."""
    from ml.data.splits import labels_path
    from ml.data.splits import split_paths as task_split_paths

    paths = {**task_split_paths(settings), "labels": labels_path(settings)}
    missing = [str(p) for name, p in paths.items() if name != "test" and not p.is_file()]
    if missing:
        raise TrainError(f"split files missing: {', '.join(missing)}; run `ml data split` first")
    return paths


def read_labels(paths: dict[str, Path]) -> list[str]:
    return list(json.loads(paths["labels"].read_text())["labels"])


def read_split(
    settings: Settings, path: Path, labels: list[str], max_rows: int | None = None
) -> Split:
    """A split by the task's reader, labels as ids into `labels` (the labels.json order)."""
    import numpy as np

    from ml.tasks import task_of

    examples = task_of(settings).read_split(settings, path, max_rows)
    names = list(examples.labels or [])
    if len(names) != len(examples):
        raise TrainError(f"{path} has no label for every example; rerun `ml data split`")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(name) for name in names} - set(index))
    if unknown:
        raise TrainError(f"{path} has labels not in labels.json: {unknown[:10]}")
    return Split(examples.inputs, np.asarray([index[str(n)] for n in names], dtype=np.int64))


def read_splits(
    settings: Settings, paths: dict[str, Path], labels: list[str], max_rows: int | None = None
) -> dict[str, Split]:
    return {name: read_split(settings, paths[name], labels, max_rows) for name in TRAIN_SPLITS}


# ---------------------------------------------------------------- encoding with Ray Data


def quiet_ray_data() -> None:
    """Per-epoch lines are the progress display; Ray Data's bars for small in-memory datasets
    would drown them."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def _encode_batch(
    batch: dict[str, Any], task_name: str, preprocessor: Any, settings: Settings
) -> dict[str, Any]:
    import numpy as np

    from ml.tasks import get_task
    from ml.train.loop import LABEL_COLUMN

    encoded = dict(get_task(task_name).encode(preprocessor, batch[INPUT_COLUMN], settings))
    encoded[LABEL_COLUMN] = np.asarray(batch[LABEL_COLUMN], dtype=np.int64)
    return encoded


def build_datasets(
    settings: Settings,
    preprocessor: Any,
    splits: dict[str, Split],
    *,
    materialize: bool = True,
) -> dict[str, Any]:
    """Ray Datasets of encoded splits, encoded by Ray Data `map_batches`. Materialised (the
    default) before training starts, so encoding never competes with the training workers
    for CPUs."""
    import pandas as pd
    import ray.data

    from ml.train.loop import LABEL_COLUMN

    quiet_ray_data()
    datasets = {}
    for name, split in splits.items():
        frame = pd.DataFrame({INPUT_COLUMN: list(split.inputs), LABEL_COLUMN: split.label_ids})
        dataset = ray.data.from_pandas(frame).map_batches(
            _encode_batch,
            batch_format="numpy",
            batch_size=1024,
            fn_kwargs={
                "task_name": settings.task,
                "preprocessor": preprocessor,
                "settings": settings,
            },
        )
        datasets[name] = dataset.materialize() if materialize else dataset
    return datasets


def pull_split(dataset: Any) -> dict[str, Any]:
    """A whole encoded split as numpy columns, read once in the dataset's row order (the same
    order every run, so a seed gives the same shuffles).

    With `data_sharding: interleave` the splits fit the object store by that mode's premise,
    so each worker keeps them in memory and shuffles them itself every epoch: Ray Data's
    per-batch iteration machinery then runs once, in the driver, instead of every epoch in
    every worker."""
    import numpy as np
    from ray.data import DataContext

    DataContext.get_current().execution_options.preserve_order = True
    parts = list(dataset.iter_batches(batch_size=4096, batch_format="numpy"))
    if not parts:
        return {}
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def trainer_inputs(
    settings: Settings,
    preprocessor: Any,
    splits: dict[str, Split],
    *,
    private_ray: bool = False,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the TorchTrainer's `datasets`, the workers' `split_refs`) for the train/val splits.

    Ray Data encodes either way. With `interleave` the trainer gets no datasets, so
    `EmbeddedTorchTrainer` starts no DatasetManager actor to serve them: one process less,
    whose start (seconds of CPU) would fall on the workers' start. (The stock TorchTrainer, as
    in `ml tune` and on a cluster, starts one all the same.)

    `private_ray`: the connected Ray is this run's own (`init_ray` started it). With
    `interleave`, Ray Data is then done once the splits are in the object store, and its
    stats actor is stopped (`stop_ray_data_stats_actor`)."""
    import ray

    if settings.train.data_sharding != "interleave":
        return build_datasets(settings, preprocessor, splits), None
    lazy = build_datasets(settings, preprocessor, splits, materialize=False)
    split_refs = {name: ray.put(pull_split(dataset)) for name, dataset in lazy.items()}
    if private_ray:
        stop_ray_data_stats_actor()
    return {}, split_refs


def stop_ray_data_stats_actor() -> None:
    """Stop Ray Data's stats actor, if there is one. It collects Ray Data's execution
    metrics for the dashboard and lives as long as the cluster: in `ml train`'s private Ray,
    a process that polls beside the training worker for the whole run, after its last dataset
    is long done. A later Ray Data run in the same cluster starts it again.

    Only this actor: Ray Data's other helper, the AutoscalingCoordinator, is shared with Ray
    Train, whose controller would start it again while its workers start. The name is Ray
    Data's internal one (ray 2.60); tests/train/test_embedded_trainer.py notices a rename."""
    import ray
    from ray.data._internal.stats import STATS_ACTOR_NAME, STATS_ACTOR_NAMESPACE

    try:
        actor = ray.get_actor(STATS_ACTOR_NAME, namespace=STATS_ACTOR_NAMESPACE)
    except ValueError:
        return
    ray.kill(actor)
