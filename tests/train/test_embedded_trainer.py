"""`ml train` on its private local Ray: Ray Train's own callbacks, less the two helper actors
that only a long-lived shared cluster needs (`embedded_trainer_class`), and Ray Data's stats
actor stopped once the splits are stored. If a Ray upgrade renames the hook, the callbacks or
the actor, the run silently keeps them all; these tests notice."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.train.cluster import embedded_trainer_class

# The repository's params: the default task, model and data_sharding (interleave).
PARAMS_FILE = Path(__file__).resolve().parents[2] / "params.yaml"


def default_callbacks(trainer_class: type, datasets: dict) -> set[str]:
    from ray.train import ScalingConfig

    trainer = trainer_class(
        lambda config: None, scaling_config=ScalingConfig(num_workers=1), datasets=datasets
    )
    return {type(callback).__name__ for callback in trainer._create_default_callbacks()}


@pytest.mark.parametrize(
    ("datasets", "dropped"),
    [
        ({}, {"PlacementGroupCleanerCallback", "DatasetsCallback"}),
        ({"train": lambda: None}, {"PlacementGroupCleanerCallback"}),
    ],
    ids=["no-datasets", "with-datasets"],
)
def test_embedded_trainer_drops_only_the_shared_cluster_helpers(datasets, dropped):
    from ray.train.torch import TorchTrainer

    stock = default_callbacks(TorchTrainer, datasets)
    embedded = default_callbacks(embedded_trainer_class(), datasets)
    assert stock - embedded == dropped
    assert embedded <= stock
    assert "BackendSetupCallback" in embedded  # the DDP process group is still set up


STATS_ACTOR_PROBE = """
import json

import numpy as np
import ray
from ray.data._internal.stats import STATS_ACTOR_NAME, STATS_ACTOR_NAMESPACE

from ml.config import load_settings
from ml.tasks import task_of
from ml.train import cluster, inputs


def stats_actor_running() -> bool:
    try:
        ray.get_actor(STATS_ACTOR_NAME, namespace=STATS_ACTOR_NAMESPACE)
    except ValueError:
        return False
    return True


cluster.init_ray(None, num_cpus=2, dashboard=False)
settings = load_settings(PARAMS)
split = inputs.Split(["a graph network", "image segmentation"], np.array([0, 1]))
splits = {"train": split, "val": split}
preprocessor = task_of(settings).preprocessor(settings)
found = {}
_, shared = inputs.trainer_inputs(settings, preprocessor, splits)
found["running_after_shared"] = stats_actor_running()
_, private = inputs.trainer_inputs(settings, preprocessor, splits, private_ray=True)
found["running_after_private"] = stats_actor_running()
found["labels"] = ray.get(private["train"])["labels"].tolist()
print("FOUND " + json.dumps(found))
"""


def test_private_ray_stops_ray_data_stats_actor_once_the_splits_are_stored(tmp_path):
    """On `ml train`'s own Ray, Ray Data's stats actor goes once the splits are in the object
    store (it would poll beside the training worker all run); on a shared Ray it stays. Also
    fails if Ray renames the actor: the probe then finds none after the shared run either."""
    import json
    import subprocess
    import sys

    from tests.engines import engine_env

    done = subprocess.run(
        [sys.executable, "-c", STATS_ACTOR_PROBE.replace("PARAMS", repr(str(PARAMS_FILE)))],
        cwd=tmp_path,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("FOUND ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-2000:]
    found = json.loads(lines[-1].removeprefix("FOUND "))
    assert found == {
        "running_after_shared": True,
        "running_after_private": False,
        "labels": [0, 1],  # the splits themselves are still there for the workers
    }
