"""The framework-free, task-agnostic training core: batching, optimiser/schedule, one epoch of
training, evaluation. Plain torch only, so a machine without Ray or MLflow (a GPU box running the
benchmark) uses exactly the code that `ml train` runs inside its Ray workers.

What differs between tasks comes in as the task's `collate(batch, device, train)`, which turns a
batch of encoded arrays into tensors on the device (labels under LABEL_COLUMN); the model's
forward takes the other tensors as keyword arguments and returns an object with `.logits`."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# The column of a task's encoded split (and of the dict its `collate` returns) holding the label
# ids; everything else `collate` returns is passed to the model as keyword arguments.
LABEL_COLUMN = "labels"

# collate(batch, device, train) -> tensors on device: a task's `collate` (ml/tasks/base.py).
Collate = Callable[[Mapping[str, Any], Any, bool], dict[str, Any]]


@dataclass(frozen=True)
class LoopConfig:
    """Hyperparameters of the core loop (a view of TrainSettings without the Ray parts)."""

    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    epochs: int = 8
    batch_size: int = 32
    max_length: int = 64
    dropout: float = 0.1
    grad_clip: float = 1.0
    seed: int = 42

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def iterate_batches(
    encoded: Mapping[str, np.ndarray], batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Batches from an in-memory encoded split (the plain-PyTorch path and the tests)."""
    n = len(encoded[LABEL_COLUMN])
    order = np.arange(n)
    if shuffle:
        order = np.random.default_rng(seed + epoch).permutation(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield {k: v[index] for k, v in encoded.items()}


def make_optimizer(model: Any, lr: float, weight_decay: float) -> Any:
    """AdamW; biases and norm-layer weights (every 1-d parameter) are not decayed (the usual
    BERT recipe, and as usual for a CNN's biases and batch norms)."""
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def make_scheduler(optimizer: Any, total_steps: int, warmup_fraction: float) -> Any:
    """One-cycle: linear warm-up to the peak lr, then cosine decay towards zero."""
    import torch

    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=max(total_steps, 1),
        pct_start=min(max(warmup_fraction, 0.01), 0.99),
        anneal_strategy="cos",
        div_factor=25.0,
        final_div_factor=1e3,
    )


def steps_per_epoch(rows: int, batch_size: int) -> int:
    return max(1, math.ceil(rows / batch_size))


def autocast_context(device: Any, use_bf16: bool) -> Any:
    import contextlib

    import torch

    if use_bf16:
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epoch(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    optimizer: Any,
    scheduler: Any,
    *,
    collate: Collate,
    device: Any = "cpu",
    label_smoothing: float = 0.1,
    grad_clip: float = 1.0,
    use_bf16: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    max_steps: int | None = None,
) -> dict[str, float]:
    """One pass over `batches`; returns mean loss, samples seen and seconds."""
    import torch

    model.train()
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    total_loss, samples, steps = 0.0, 0, 0
    started = time.perf_counter()
    for raw in batches:
        if max_steps is not None and steps >= max_steps:
            break
        batch = collate(raw, device, True)
        labels = batch.pop(LABEL_COLUMN)
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, use_bf16):
            logits = model(**batch).logits
        loss = loss_fn(logits.float(), labels)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None and scheduler.last_epoch < scheduler.total_steps:
            scheduler.step()
        steps += 1
        samples += len(labels)
        total_loss += float(loss.detach()) * len(labels)
        if on_step is not None:
            on_step(steps, float(loss.detach()))
    return {
        "loss": total_loss / max(samples, 1),
        "samples": float(samples),
        "steps": float(steps),
        "seconds": time.perf_counter() - started,
    }


def predict_batches(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    collate: Collate,
    device: Any = "cpu",
    use_bf16: bool = False,
    label_smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(probabilities, true label ids, summed loss) over `batches`, in eval mode."""
    import torch

    model.eval()
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing, reduction="sum")
    probabilities, labels, loss_sum = [], [], 0.0
    with torch.inference_mode():
        for raw in batches:
            batch = collate(raw, device, False)
            target = batch.pop(LABEL_COLUMN)
            with autocast_context(device, use_bf16):
                logits = model(**batch).logits.float()
            loss_sum += float(loss_fn(logits, target))
            probabilities.append(torch.softmax(logits, dim=-1).cpu().numpy())
            labels.append(target.cpu().numpy())
    if not labels:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64), 0.0
    return np.concatenate(probabilities), np.concatenate(labels), loss_sum


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, loss_sum: float, prefix: str = "val_"
) -> dict[str, float]:
    """Accuracy, weighted/macro F1 and mean loss, keys prefixed (val_f1 is the weighted F1)."""
    from sklearn.metrics import accuracy_score, f1_score

    n = len(labels)
    if n == 0:
        return {
            f"{prefix}loss": float("nan"),
            f"{prefix}accuracy": 0.0,
            f"{prefix}f1": 0.0,
            f"{prefix}f1_macro": 0.0,
        }
    predicted = probabilities.argmax(axis=1)
    return {
        f"{prefix}loss": loss_sum / n,
        f"{prefix}accuracy": float(accuracy_score(labels, predicted)),
        f"{prefix}f1": float(f1_score(labels, predicted, average="weighted", zero_division=0)),
        f"{prefix}f1_macro": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


@dataclass
class EarlyStopping:
    """Stop when the monitored metric has not improved by min_delta for `patience` epochs.
    mode "max" for scores (F1), "min" for losses."""

    patience: int = 3
    min_delta: float = 0.0
    mode: str = "max"
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is the best so far."""
        if self.best is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state(self) -> dict[str, Any]:
        return asdict(self)
