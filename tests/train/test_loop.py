"""The core loop knows no task: a model and the task's `collate` are all it needs (no Ray)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ml.train import loop


def blobs(n: int, seed: int) -> dict[str, np.ndarray]:
    """Two Gaussian blobs, as a task's `encode` would give them (plus the label ids)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    points = (rng.normal(0, 1, (n, 4)) + labels[:, None] * 3.0).astype(np.float32)
    return {"points": points, loop.LABEL_COLUMN: labels.astype(np.int64)}


def test_any_model_and_collate_train_and_predict():
    import torch

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def forward(self, x):
            return SimpleNamespace(logits=self.layer(x))

    seen_train: list[bool] = []

    def collate(batch, device, train):
        seen_train.append(train)
        return {
            "x": torch.from_numpy(np.array(batch["points"])).to(device),
            loop.LABEL_COLUMN: torch.from_numpy(np.array(batch[loop.LABEL_COLUMN])).to(device),
        }

    loop.set_seed(0)
    model = Linear()
    train, val = blobs(256, 1), blobs(128, 2)
    optimizer = loop.make_optimizer(model, lr=0.05, weight_decay=0.0)
    steps = loop.steps_per_epoch(256, 32)
    scheduler = loop.make_scheduler(optimizer, steps * 3, 0.1)
    for epoch in range(3):
        stats = loop.train_epoch(
            model,
            loop.iterate_batches(train, 32, True, seed=0, epoch=epoch),
            optimizer,
            scheduler,
            collate=collate,
            label_smoothing=0.0,
        )
        assert stats["samples"] == 256 and stats["steps"] == steps
    assert set(seen_train) == {True}
    probabilities, labels, loss_sum = loop.predict_batches(
        model, loop.iterate_batches(val, 64, False), collate=collate
    )
    assert seen_train[-1] is False
    assert probabilities.shape == (128, 2)
    np.testing.assert_array_equal(labels, val[loop.LABEL_COLUMN])
    metrics = loop.classification_metrics(probabilities, labels, loss_sum)
    assert metrics["val_accuracy"] > 0.9, metrics


def test_text_collate_trims_the_padding_every_row_shares():
    from ml.tasks.text_classification.model import collate

    batch = {
        "input_ids": np.array([[101, 7, 102, 0, 0], [101, 8, 9, 102, 0]]),
        "attention_mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]),
        loop.LABEL_COLUMN: np.array([0, 1]),
        "ignored": np.array([5, 6]),
    }
    tensors = collate(batch, "cpu", True)
    assert set(tensors) == {"input_ids", "attention_mask", loop.LABEL_COLUMN}
    assert tuple(tensors["input_ids"].shape) == (2, 4)
    assert tensors["attention_mask"].sum().item() == 7
