"""The Ray Train worker: the core loop (ml/train/loop.py) on a task's model, under DDP.

Every worker builds the task's model, resumes from the latest checkpoint if there is one,
trains and evaluates per epoch, and reports the metrics with a checkpoint (the task's model dir
plus the optimiser state) every epoch. What the model is, how a batch becomes its inputs and
how it is saved are the task's (`build_model`, `collate`, `save_model`).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.config import Settings, TrainSettings

CHECKPOINT_MODEL = "model"
CHECKPOINT_STATE = "train_state.pt"
# The key of the WorkerConfig in the trainer's train_loop_config (Ray Train wants a dict).
CONFIG_KEY = "worker"
# Test hook: "epoch:step:marker-file". The rank-0 worker raises once at that step of that epoch
# (the marker file records that it did), to prove recovery from the last checkpoint.
FAULT_ENV = "ML_TRAIN_INJECT_FAULT"
VAL_BATCH_SIZE = 64


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs, fixed by the driver: the settings (the task, model and train
    params, epochs and batch size already resolved for this run) and the run's facts."""

    settings: Settings
    labels: tuple[str, ...]
    train_rows: int
    threads_per_worker: int = 1
    use_gpu: bool = False
    # interleave: ObjectRefs of the encoded train/val splits (ml/train/inputs.py).
    split_refs: dict[str, Any] | None = None
    inject_fault: str | None = None
    fit_started_at: float = field(default_factory=time.time)

    @property
    def train(self) -> TrainSettings:
        return self.settings.train

    @property
    def interleave(self) -> bool:
        return self.settings.train.data_sharding == "interleave"

    def as_loop_config(self) -> dict[str, Any]:
        return {CONFIG_KEY: self}


def worker_config_of(config: dict[str, Any]) -> WorkerConfig:
    return config[CONFIG_KEY]


def quiet_ray_train_worker() -> None:
    """Ray Train logs every checkpoint and report at INFO, with the whole metrics dict; the
    per-epoch line says the same in one line. The loggers are taken from their modules because
    their names are not stable (`context` names its logger by file path, not module). (Internal
    modules: if they move, this only stops quieting them.)"""
    try:
        from ray.train.v2._internal.execution import context, storage
    except ImportError:
        return
    for module in (context, storage):
        logger = getattr(module, "logger", None)
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.WARNING)


def fault_hook(spec: str | None, epoch: int, rank: int) -> Callable[[int, float], None] | None:
    if not spec or rank != 0:
        return None
    fault_epoch, fault_step, marker = spec.split(":", 2)
    if int(fault_epoch) != epoch or Path(marker).exists():
        return None

    def on_step(step: int, loss: float) -> None:
        if step == int(fault_step) and not Path(marker).exists():
            Path(marker).write_text(f"failed at epoch {epoch} step {step}\n")
            raise RuntimeError(f"injected worker fault at epoch {epoch} step {step}")

    return on_step


def interleave_plan(rows: int, per_worker_batch: int, world: int) -> tuple[int, int]:
    """(batch size, steps) per worker per epoch with `data_sharding: interleave`.

    Every worker takes every world-th batch of one shared order, and all take the same number
    (DDP needs equal steps), so up to world-1 trailing batches of an epoch are left out (the
    order changes every epoch). A train set smaller than world x batch gets smaller batches, so
    that every worker still has one."""
    per_worker_batch = max(1, min(per_worker_batch, rows // world))
    batches = -(-rows // per_worker_batch)
    return per_worker_batch, max(1, batches // world)


def interleaved_shard(batches: Iterable[Any], rank: int, world: int, steps: int) -> Iterator[Any]:
    """Worker `rank`'s batches of the shared order: rank, rank + world, ... (`steps` of them)."""
    return itertools.islice(batches, rank, steps * world, world)


def progress(line: str) -> None:
    """One console line from the rank-0 worker. Written to stdout directly: Ray Train's
    patched print would send it both to stdout and to its logger, and the console got it twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def gather(value: Any) -> list[Any]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


@dataclass
class _Run:
    """One worker's training state: what resume restores and every epoch checkpoints."""

    model: Any
    preprocessor: Any
    optimizer: Any
    scheduler: Any
    stopper: Any
    per_worker_batch: int
    steps: int
    start_epoch: int = 0
    totals: dict[str, float] = field(
        default_factory=lambda: {"train_samples_total": 0.0, "train_seconds_total": 0.0}
    )

    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "early_stopping": self.stopper.state(),
            "totals": self.totals,
        }


def _build_run(cfg: WorkerConfig, task: Any, world: int) -> _Run:
    from ml.train import loop

    train = cfg.train
    model, preprocessor = task.build_model(cfg.settings, list(cfg.labels))
    per_worker_batch = max(1, train.batch_size // world)
    if cfg.interleave:
        per_worker_batch, steps = interleave_plan(cfg.train_rows, per_worker_batch, world)
    else:
        steps = loop.steps_per_epoch(cfg.train_rows // world, per_worker_batch)
    optimizer = loop.make_optimizer(model, train.lr, train.weight_decay)
    scheduler = loop.make_scheduler(optimizer, steps * train.epochs, train.warmup_fraction)
    stopper = loop.EarlyStopping(
        train.early_stopping_patience, train.early_stopping_min_delta, train.metric_mode
    )
    return _Run(model, preprocessor, optimizer, scheduler, stopper, per_worker_batch, steps)


def _resume(run: _Run, checkpoint: Any, rank: int) -> None:
    import torch

    from ml.train import loop
    from ml.train.model import load_weights

    with checkpoint.as_directory() as directory:
        load_weights(run.model, Path(directory) / CHECKPOINT_MODEL)
        state = torch.load(Path(directory) / CHECKPOINT_STATE, weights_only=False)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.stopper = loop.EarlyStopping(**state["early_stopping"])
    run.totals.update(state.get("totals", {}))
    run.start_epoch = state["epoch"] + 1
    if rank == 0:
        progress(f"[train] resumed from checkpoint after epoch {state['epoch'] + 1}")


def _train_batches(
    cfg: WorkerConfig, run: _Run, data: Any, epoch: int, rank: int, world: int
) -> Iterable[Any]:
    from ml.train import loop

    seed = cfg.train.seed
    if cfg.interleave:
        # One seed for all ranks, so every worker sees the same order.
        batches = loop.iterate_batches(data, run.per_worker_batch, True, seed * 1000 + epoch * 10)
        return interleaved_shard(batches, rank, world, run.steps)
    return data.iter_batches(
        batch_size=run.per_worker_batch,
        batch_format="numpy",
        local_shuffle_buffer_size=cfg.train_rows,
        local_shuffle_seed=seed * 1000 + epoch * 10 + rank,
    )


@dataclass(frozen=True)
class _Place:
    """Where this worker runs: its rank among `world` workers, and its device."""

    rank: int
    world: int
    device: Any
    use_gpu: bool


def _place(cfg: WorkerConfig) -> _Place:
    import ray.train
    import torch

    context = ray.train.get_context()
    torch.set_num_threads(cfg.threads_per_worker)
    use_gpu = cfg.use_gpu and torch.cuda.is_available()
    device = ray.train.torch.get_device() if use_gpu else torch.device("cpu")
    return _Place(context.get_world_rank(), context.get_world_size(), device, use_gpu)


def _evaluate(
    run: _Run, data: Any, interleave: bool, collate: Any, place: _Place
) -> tuple[Any, Any, float]:
    """Validation is not split by Ray: every worker reads it, each scores every world-th batch,
    and the predictions are gathered, so the metric covers every row exactly once."""
    from ml.train import loop

    batches = (
        loop.iterate_batches(data, VAL_BATCH_SIZE, False)
        if interleave
        else data.iter_batches(batch_size=VAL_BATCH_SIZE, batch_format="numpy")
    )
    own = (batch for i, batch in enumerate(batches) if i % place.world == place.rank)
    # The unwrapped module: DDP's forward syncs buffers collectively, and the workers may
    # score different numbers of batches.
    return loop.predict_batches(
        getattr(run.model, "module", run.model),
        own,
        collate=collate,
        device=place.device,
        use_bf16=place.use_gpu,
    )


def _epoch(
    cfg: WorkerConfig,
    task: Any,
    run: _Run,
    place: _Place,
    data: tuple[Any, Any],
    epoch: int,
    startup: dict[str, float],
) -> tuple[dict[str, Any], bool]:
    """Train one epoch and score validation: (the epoch's metrics, whether it is the best)."""
    from ml.train import loop

    train = cfg.train
    started = time.perf_counter()
    stats = loop.train_epoch(
        run.model,
        _train_batches(cfg, run, data[0], epoch, place.rank, place.world),
        run.optimizer,
        run.scheduler,
        collate=task.collate,
        device=place.device,
        label_smoothing=train.label_smoothing,
        grad_clip=train.grad_clip,
        use_bf16=place.use_gpu,
        on_step=fault_hook(cfg.inject_fault, epoch, place.rank),
    )
    probabilities, targets, loss_sum = _evaluate(run, data[1], cfg.interleave, task.collate, place)
    train_sum = stats["loss"] * stats["samples"]
    gathered = gather(
        (probabilities, targets, loss_sum, train_sum, stats["samples"], stats["seconds"])
    )
    metrics = _epoch_metrics(run, gathered, epoch, time.perf_counter() - started, startup)
    improved = run.stopper.update(metrics[train.metric], epoch)
    metrics["best_" + train.metric] = run.stopper.best
    return metrics, improved


def _progress_line(epochs: int, metrics: dict[str, Any], improved: bool) -> str:
    return (
        f"[train] epoch {metrics['epoch']}/{epochs}  train_loss {metrics['train_loss']:.4f}  "
        f"val_loss {metrics['val_loss']:.4f}  val_f1 {metrics['val_f1']:.4f}  "
        f"val_acc {metrics['val_accuracy']:.4f}  {metrics['epoch_s']:.1f}s  "
        f"{metrics['train_samples_per_s']:.1f} samples/s" + ("  *best*" if improved else "")
    )


def _epoch_metrics(
    run: _Run, gathered: list[Any], epoch: int, seconds: float, startup: dict[str, float]
) -> dict[str, Any]:
    import numpy as np

    from ml.train import loop

    scored = [g for g in gathered if len(g[1])]
    metrics: dict[str, Any] = loop.classification_metrics(
        np.concatenate([g[0] for g in scored]),
        np.concatenate([g[1] for g in scored]),
        sum(g[2] for g in gathered),
    )
    samples = sum(g[4] for g in gathered)
    train_seconds = max(g[5] for g in gathered)
    run.totals["train_samples_total"] += samples
    run.totals["train_seconds_total"] += train_seconds
    metrics.update(
        epoch=epoch + 1,
        train_loss=sum(g[3] for g in gathered) / max(samples, 1),
        lr=float(run.scheduler.get_last_lr()[0]),
        epoch_s=seconds,
        train_samples_per_s=samples / max(train_seconds, 1e-9),
        **run.totals,
        **startup,
    )
    return metrics


def _report(
    cfg: WorkerConfig, task: Any, run: _Run, metrics: dict[str, Any], epoch: int, rank: int
) -> None:
    """ray.train.report with a checkpoint from rank 0: the task's model dir and the state."""
    import ray.train
    import torch
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            meta = {"task": task.name, "labels": list(cfg.labels)}
            model_dir = Path(directory) / CHECKPOINT_MODEL
            task.save_model(run.model, run.preprocessor, list(cfg.labels), model_dir, meta)
            torch.save(run.state(epoch), Path(directory) / CHECKPOINT_STATE)
            checkpoint = Checkpoint.from_directory(directory)
        # Uploaded before the next epoch starts. CheckpointUploadMode.ASYNC would run the copy
        # beside the next epoch's steps on the same cores; not adopted without a measurement
        # showing that it helps.
        ray.train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker; `config` holds the WorkerConfig (`as_loop_config`)."""
    import ray
    import ray.train
    from ray.train.torch import prepare_model

    from ml.tasks import task_of
    from ml.train import loop
    from ml.train.inputs import quiet_ray_data

    entered = time.time()
    cfg = worker_config_of(config)
    train, task = cfg.train, task_of(cfg.settings)
    quiet_ray_data()
    quiet_ray_train_worker()
    place = _place(cfg)
    loop.set_seed(train.seed)
    run = _build_run(cfg, task, place.world)
    startup = {
        "worker_start_s": entered - cfg.fit_started_at,
        "model_load_s": time.time() - entered,
    }
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        _resume(run, checkpoint, place.rank)
    if run.start_epoch >= train.epochs or run.stopper.should_stop:
        return
    run.model = (
        prepare_model(run.model, parallel_strategy_kwargs={"find_unused_parameters": False})
        if place.world > 1 or place.use_gpu
        else run.model.to(place.device)
    )
    if cfg.interleave:
        data = tuple(ray.get([cfg.split_refs["train"], cfg.split_refs["val"]]))
    else:
        data = (ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val"))

    for epoch in range(run.start_epoch, train.epochs):
        metrics, improved = _epoch(cfg, task, run, place, data, epoch, startup)
        if place.rank == 0:
            progress(_progress_line(train.epochs, metrics, improved))
        _report(cfg, task, run, metrics, epoch, place.rank)
        if run.stopper.should_stop:
            if place.rank == 0:
                progress(
                    f"[train] early stop: {train.metric} not better for "
                    f"{run.stopper.patience} epochs"
                )
            break


def fault_from_env() -> str | None:
    return os.environ.get(FAULT_ENV) or None
