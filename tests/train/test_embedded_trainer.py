"""`ml train`'s trainer on its private local Ray: Ray Train's own callbacks, less the two
helper actors that only a long-lived shared cluster needs (`embedded_trainer_class`). If a Ray
upgrade renames the hook or the callbacks, the trainer silently keeps them all; this notices."""

from __future__ import annotations

import pytest

from ml.train.ray_train import embedded_trainer_class


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
