"""`ml train`: the core loop (ml/train/loop.py) run by Ray Train V2's TorchTrainer (DDP).

Driver side: read the splits, tokenise them with Ray Data, open the MLflow run, fit, install the
best checkpoint as the model dir, log the pyfunc model, write reports/train.json.
Worker side (`train_loop_per_worker`): build the model, resume from the latest checkpoint if
there is one, train/evaluate per epoch, report metrics with a checkpoint every epoch.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.config import Settings
from ml.errors import UserError
from ml.io import atomic_dir, write_json

CHECKPOINT_MODEL = "model"
CHECKPOINT_STATE = "train_state.pt"
REPORT_ARTIFACT = "train_report.json"
TRAIN_METRICS_FILE = "train_metrics.json"
# Test hook: "epoch:step:marker-file". The rank-0 worker raises once at that step of that epoch
# (the marker file records that it did), to prove recovery from the last checkpoint.
FAULT_ENV = "ML_TRAIN_INJECT_FAULT"


class TrainError(UserError):
    """Training cannot start or did not finish; the message says why and what to do."""


class TrainInterrupted(TrainError):
    """Ctrl-C or SIGTERM (a cancelled CI job) stopped fit(); the run can be resumed."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # 128 + the signal, as a shell reports it


@dataclass
class TrainOptions:
    """CLI flags that override params for one run."""

    num_workers: int | None = None
    epochs: int | None = None
    address: str | None = None
    run_name: str | None = None
    storage_path: str | None = None
    use_gpu: bool | None = None
    max_rows: int | None = None  # cap on train/val rows (tests, benchmarks)
    extra_tags: dict[str, str] = field(default_factory=dict)


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    model_dir: str
    metrics: dict[str, float]
    duration_s: float
    samples_per_s: float
    run_name: str
    storage_path: str
    report_path: str
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- worker side


def quiet_ray_data() -> None:
    """Per-epoch lines are the progress display; Ray Data's bars for tiny in-memory datasets
    would drown them."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


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


def _fault_hook(config: dict[str, Any], epoch: int, rank: int):
    spec = config.get("inject_fault")
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


def pull_split(dataset: Any) -> dict[str, Any]:
    """A whole tokenised split as numpy columns, read once in the dataset's row order (the
    same order every run, so a seed gives the same shuffles).

    With `data_sharding: interleave` the splits fit the object store by that mode's premise,
    so each worker keeps its token ids in memory (a few MB here) and shuffles them itself
    every epoch: Ray Data's per-batch iteration machinery then runs once, in the driver
    (`trainer_inputs`), instead of every epoch in every worker."""
    import numpy as np
    from ray.data import DataContext

    from ml.train.loop import LABEL_COLUMN, TOKEN_COLUMNS

    DataContext.get_current().execution_options.preserve_order = True
    parts = list(dataset.iter_batches(batch_size=4096, batch_format="numpy"))
    return {
        name: np.concatenate([part[name] for part in parts])
        for name in (*TOKEN_COLUMNS, LABEL_COLUMN)
    }


def _progress(line: str) -> None:
    """One console line from the rank-0 worker. Written to stdout directly: Ray Train's
    patched print would send it both to stdout and to its logger, and the console got it twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _gather(value: Any) -> list[Any]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker. `config` is plain data (see `_worker_config`)."""
    import numpy as np
    import ray.train
    import torch
    from ray.train import Checkpoint
    from ray.train.torch import prepare_model

    from ml.train import loop
    from ml.train.model import build_model, load_weights, save_model

    entered = time.time()
    quiet_ray_data()
    quiet_ray_train_worker()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config["threads_per_worker"])))
    cfg = loop.LoopConfig(**config["loop"])
    loop.set_seed(cfg.seed)
    use_gpu = bool(config["use_gpu"]) and torch.cuda.is_available()
    device = ray.train.torch.get_device() if use_gpu else torch.device("cpu")

    interleave = config["data_sharding"] == "interleave"
    # interleave: the splits' token ids are in the object store (`trainer_inputs`), fetched
    # below; streaming_split: Ray Train's dataset shards.
    train_shard = val_shard = None
    if not interleave:
        train_shard = ray.train.get_dataset_shard("train")
        val_shard = ray.train.get_dataset_shard("val")

    labels: list[str] = config["labels"]
    model, tokenizer = build_model(config["base_model"], labels, cfg.dropout)
    startup = {
        "worker_start_s": entered - config.get("fit_started_at", entered),
        "model_load_s": time.time() - entered,
    }
    per_worker_batch = max(1, cfg.batch_size // world)
    if interleave:
        per_worker_batch, steps = interleave_plan(config["train_rows"], per_worker_batch, world)
    else:
        steps = loop.steps_per_epoch(config["train_rows"] // world, per_worker_batch)
    optimizer = loop.make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = loop.make_scheduler(optimizer, steps * cfg.epochs, cfg.warmup_fraction)
    stopper = loop.EarlyStopping(config["patience"], config["min_delta"], config["metric_mode"])
    start_epoch = 0
    totals = {"train_samples_total": 0.0, "train_seconds_total": 0.0}

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            load_weights(model, Path(directory) / CHECKPOINT_MODEL)
            state = torch.load(Path(directory) / CHECKPOINT_STATE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper = loop.EarlyStopping(**state["early_stopping"])
        totals.update(state.get("totals", {}))
        start_epoch = state["epoch"] + 1
        if rank == 0:
            _progress(f"[train] resumed from checkpoint after epoch {state['epoch'] + 1}")
    if start_epoch >= cfg.epochs or stopper.should_stop:
        return

    model = (
        prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": False})
        if world > 1 or use_gpu
        else model.to(device)
    )
    metric = config["metric"]
    split_refs = config["split_refs"]
    train_data, val_data = (
        ray.get([split_refs["train"], split_refs["val"]]) if interleave else (None, None)
    )

    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        # interleave: one seed for all ranks, so every worker sees the same order.
        shuffle_seed = cfg.seed * 1000 + epoch * 10 + (0 if interleave else rank)
        if train_data is not None:
            batches = interleaved_shard(
                loop.iterate_batches(train_data, per_worker_batch, True, shuffle_seed),
                rank,
                world,
                steps,
            )
        else:
            batches = train_shard.iter_batches(
                batch_size=per_worker_batch,
                batch_format="numpy",
                local_shuffle_buffer_size=config["train_rows"],
                local_shuffle_seed=shuffle_seed,
            )
        train = loop.train_epoch(
            model,
            batches,
            optimizer,
            scheduler,
            device=device,
            label_smoothing=cfg.label_smoothing,
            grad_clip=cfg.grad_clip,
            use_bf16=use_gpu,
            on_step=_fault_hook(config, epoch, rank),
        )
        # Validation is not split by Ray: every worker reads it, each scores every world-th
        # batch, and the predictions are gathered, so the metric covers every row exactly once.
        val_batches = (
            loop.iterate_batches(val_data, 64, False)
            if val_data is not None
            else val_shard.iter_batches(batch_size=64, batch_format="numpy")
        )
        own = (batch for i, batch in enumerate(val_batches) if i % world == rank)
        # The unwrapped module: DDP's forward syncs buffers collectively, and the workers may
        # score different numbers of batches.
        probabilities, targets, loss_sum = loop.predict_batches(
            getattr(model, "module", model), own, device=device, use_bf16=use_gpu
        )
        gathered = _gather(
            (
                probabilities,
                targets,
                loss_sum,
                train["loss"] * train["samples"],
                train["samples"],
                train["seconds"],
            )
        )
        all_probs = np.concatenate([g[0] for g in gathered if len(g[1])])
        all_targets = np.concatenate([g[1] for g in gathered if len(g[1])])
        metrics = loop.classification_metrics(all_probs, all_targets, sum(g[2] for g in gathered))
        samples = sum(g[4] for g in gathered)
        seconds = time.perf_counter() - started
        metrics.update(
            epoch=epoch + 1,
            train_loss=sum(g[3] for g in gathered) / max(samples, 1),
            lr=float(scheduler.get_last_lr()[0]),
            epoch_s=seconds,
            train_samples_per_s=samples / max(max(g[5] for g in gathered), 1e-9),
        )
        totals["train_samples_total"] += samples
        totals["train_seconds_total"] += max(g[5] for g in gathered)
        metrics.update(totals)
        metrics.update(startup)
        improved = stopper.update(metrics[metric], epoch)
        metrics["best_" + metric] = stopper.best
        if rank == 0:
            _progress(
                f"[train] epoch {epoch + 1}/{cfg.epochs}  train_loss {metrics['train_loss']:.4f}  "
                f"val_loss {metrics['val_loss']:.4f}  val_f1 {metrics['val_f1']:.4f}  "
                f"val_acc {metrics['val_accuracy']:.4f}  {seconds:.1f}s  "
                f"{metrics['train_samples_per_s']:.1f} samples/s" + ("  *best*" if improved else "")
            )
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if rank == 0:
                save_model(
                    model,
                    tokenizer,
                    labels,
                    Path(directory) / CHECKPOINT_MODEL,
                    cfg.max_length,
                    extra=config["model_meta"],
                )
                torch.save(
                    {
                        "epoch": epoch,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "early_stopping": stopper.state(),
                        "totals": totals,
                    },
                    Path(directory) / CHECKPOINT_STATE,
                )
                checkpoint = Checkpoint.from_directory(directory)
            # Uploaded before the next epoch starts (~0.1-0.3 s here). CheckpointUploadMode.ASYNC
            # would run the ~260 MB copy beside the next epoch's steps on the same two cores;
            # not adopted without a measurement showing that it helps.
            ray.train.report(metrics, checkpoint=checkpoint)
        if stopper.should_stop:
            if rank == 0:
                _progress(f"[train] early stop: {metric} not better for {stopper.patience} epochs")
            break


# ---------------------------------------------------------------- driver side


def split_paths(settings: Settings) -> dict[str, Path]:
    splits = settings.path(settings.data.splits_dir)
    paths = {name: splits / f"{name}.csv" for name in ("train", "val", "test")}
    paths["labels"] = splits / "labels.json"
    missing = [str(p) for name, p in paths.items() if name != "test" and not p.is_file()]
    if missing:
        raise TrainError(f"split files missing: {', '.join(missing)}; run `ml data split` first")
    return paths


def read_split(settings: Settings, path: Path, labels: list[str], max_rows: int | None = None):
    """(texts, label ids) of a split file as a DataFrame with columns text, label."""
    import pandas as pd

    from ml.data.text import combine_text

    frame = pd.read_csv(path)
    label_column = settings.data.label_column
    needed = [*settings.data.text_columns, label_column]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise TrainError(f"{path} lacks column(s) {absent}; rerun `ml data split`")
    unknown = sorted(set(frame[label_column].astype(str)) - set(labels))
    if unknown:
        raise TrainError(f"{path} has labels not in labels.json: {unknown}")
    if max_rows is not None and len(frame) > max_rows:
        # Keep every class represented in a capped (test/benchmark) run.
        frame = (
            frame.groupby(label_column, group_keys=False)
            .apply(lambda g: g.head(max(1, max_rows * len(g) // len(frame))))
            .head(max_rows)
        )
    index = {label: i for i, label in enumerate(labels)}
    return pd.DataFrame(
        {
            "text": combine_text(frame, settings.data.text_columns).tolist(),
            "label": [index[str(v)] for v in frame[label_column]],
        }
    )


def _tokenize_batch(batch: Any, tokenizer_source: str, max_length: int) -> dict[str, Any]:
    from ml.train import loop

    tokenizer = _cached_tokenizer(tokenizer_source)
    encoded = loop.encode_frame(tokenizer, list(batch["text"]), list(batch["label"]), max_length)
    return encoded


_TOKENIZERS: dict[str, Any] = {}


def _cached_tokenizer(source: str) -> Any:
    if source not in _TOKENIZERS:
        from ml.train.loop import load_tokenizer

        _TOKENIZERS[source] = load_tokenizer(source)
    return _TOKENIZERS[source]


def build_datasets(
    frames: dict[str, Any], tokenizer_source: str, max_length: int, *, materialize: bool = True
) -> dict:
    """Ray Datasets of token ids, tokenised by Ray Data `map_batches`. Materialised (the
    default) before training starts, so tokenising never competes with the training workers
    for CPUs."""
    import ray.data

    quiet_ray_data()
    datasets = {}
    for name, frame in frames.items():
        dataset = ray.data.from_pandas(frame).map_batches(
            _tokenize_batch,
            batch_format="pandas",
            batch_size=1024,
            fn_kwargs={"tokenizer_source": tokenizer_source, "max_length": max_length},
        )
        datasets[name] = dataset.materialize() if materialize else dataset
    return datasets


def trainer_inputs(
    frames: dict[str, Any],
    tokenizer_source: str,
    max_length: int,
    data_sharding: str,
    *,
    private_ray: bool = False,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the TorchTrainer's `datasets`, the workers' `split_refs`) for the train/val frames.

    Ray Data tokenises either way. `streaming_split`: the materialised Datasets go to the
    trainer, which splits the train set across the workers every epoch. `interleave`: every
    worker needs every row once, so the driver gathers each split's token ids (a few MB) and
    puts them in Ray's object store once; the workers `ray.get` them. The trainer then gets no
    datasets, so `EmbeddedTorchTrainer` starts no DatasetManager actor to serve them: one
    process less, whose start (seconds of CPU) would fall on the workers' start. (The stock
    TorchTrainer, as in `ml tune` and on a cluster, starts one all the same.)

    `private_ray`: the connected Ray is this run's own (`init_ray` started it). With
    `interleave`, Ray Data is then done once the splits are in the object store, and its
    stats actor is stopped (`stop_ray_data_stats_actor`)."""
    import ray

    if data_sharding != "interleave":
        return build_datasets(frames, tokenizer_source, max_length), None
    lazy = build_datasets(frames, tokenizer_source, max_length, materialize=False)
    split_refs = {name: ray.put(pull_split(dataset)) for name, dataset in lazy.items()}
    if private_ray:
        stop_ray_data_stats_actor()
    return {}, split_refs


def stop_ray_data_stats_actor() -> None:
    """Stop Ray Data's stats actor, if there is one. It collects Ray Data's execution
    metrics for the dashboard and lives as long as the cluster: in `ml train`'s private Ray,
    a process that polls beside the training worker for the whole run (~0.5% of a core on 2
    cores), after its last dataset is long done. A later Ray Data run in the same cluster
    starts it again.

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


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """A clear error now, instead of ray.init retrying an unreachable GCS for a minute."""
    if address in ("auto", "local") or address.startswith("ray://"):
        target = address.removeprefix("ray://") if address.startswith("ray://") else None
    else:
        target = address.removeprefix("http://").removeprefix("https://")
    if not target:
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise TrainError(f"Ray address {address!r} is not host:port (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise TrainError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it "
            "(`ray start --head`) or fix --address / RAY_ADDRESS / ray.address"
        ) from exc


def check_local_cpus(num_workers: int, cpus_per_worker: float) -> None:
    """On the embedded local Ray, workers that can never all be placed would wait forever."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    if num_workers * cpus_per_worker > cpus:
        raise TrainError(
            f"{num_workers} worker(s) x {cpus_per_worker:g} CPU need "
            f"{num_workers * cpus_per_worker:g} CPUs; this machine's Ray has {cpus:g}. Lower "
            "train.num_workers / train.cpus_per_worker (or --workers), or join a cluster with "
            "--address"
        )


_started_local_ray = False


def init_ray(address: str | None, num_cpus: int | None = None, *, dashboard: bool = True) -> bool:
    """Connect to `address`, or start an embedded local Ray. No-op if already connected.
    True when the Ray connected is a private local instance that this process started (and
    that stops with it).

    The local instance runs its dashboard unless `dashboard` is false. Whoever runs Ray Train's
    stock TorchTrainer on it needs the dashboard: it serves the State API, which Ray Train's
    PlacementGroupCleaner polls to free a finished run's worker placement group; without it
    the cleaner warns every second and, in `ml tune`, the next trial's workers never fit.
    `ml train` uses `EmbeddedTorchTrainer`, which has no cleaner, so it can go without."""
    global _started_local_ray
    import ray

    if ray.is_initialized():
        return _started_local_ray
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if address:
        check_ray_address(address)
        try:
            ray.init(address=address, log_to_driver=True, include_dashboard=False)
        except Exception as exc:
            raise TrainError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc
        _started_local_ray = False
        return False
    # The local raylet's workers inherit the driver's environment. Setting it here rather than
    # as a job runtime_env matters: a job runtime_env makes Ray start fresh worker processes for
    # every actor instead of using the ones it prestarted, seconds each on a small machine.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # One node that is never drained: the preemption watcher is an actor to start for nothing.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # The log monitor, which streams the workers' output to this console, lists the log
    # directory on every 0.1 s poll while it holds fewer than 1000 files; with this, every
    # 0.5 s. A run starts a handful of workers, and a new file is still read from its start.
    os.environ.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")
    # Without a dashboard nothing reads this private instance's metrics; collecting and
    # exporting them is CPU that every Ray process spends for the whole run.
    system_config = {} if dashboard else {"enable_metrics_collection": False}
    # "local" always starts a private instance: a bare ray.init() would join whatever cluster
    # was last started on this machine (someone else's run, a test's cluster).
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        log_to_driver=True,
        _system_config=system_config,
    )
    _started_local_ray = True
    return True


def _worker_config(
    settings: Settings,
    labels: list[str],
    train_rows: int,
    epochs: int,
    use_gpu: bool,
    num_workers: int,
) -> dict[str, Any]:
    from ml.train.loop import LoopConfig

    train, model = settings.train, settings.model
    loop_config = LoopConfig(
        lr=train.lr,
        weight_decay=train.weight_decay,
        warmup_fraction=train.warmup_fraction,
        label_smoothing=train.label_smoothing,
        epochs=epochs,
        batch_size=train.batch_size,
        max_length=model.max_length,
        dropout=model.dropout,
        grad_clip=train.grad_clip,
        seed=train.seed,
    )
    return {
        "loop": loop_config.as_dict(),
        "base_model": model.base,
        "labels": labels,
        "train_rows": train_rows,
        "use_gpu": use_gpu,
        "threads_per_worker": max(1, int(train.cpus_per_worker)),
        "data_sharding": train.data_sharding,
        "patience": train.early_stopping_patience,
        "min_delta": train.early_stopping_min_delta,
        "metric": train.metric,
        "metric_mode": train.metric_mode,
        "inject_fault": os.environ.get(FAULT_ENV) or None,
        "model_meta": {
            "base_model": model.base,
            "text_columns": list(settings.data.text_columns),
            "label_column": settings.data.label_column,
        },
    }


def make_trainer(
    settings: Settings,
    worker_config: dict[str, Any],
    datasets: dict[str, Any],
    *,
    num_workers: int,
    use_gpu: bool,
    run_name: str,
    storage_path: str,
    callbacks: list[Any] | None = None,
    train_loop: Any = train_loop_per_worker,
    embedded: bool = False,
) -> Any:
    """The TorchTrainer of `ml train`. `train_loop` is replaceable so that a benchmark can run
    Ray's side of a training run, every process of it, with a worker that does not train.
    `embedded`: the run has a local Ray of its own, started for it and gone with it
    (`EmbeddedTorchTrainer`)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    train = settings.train
    resources = {"CPU": train.cpus_per_worker, **train.resources_per_worker}
    if use_gpu:
        resources.setdefault("GPU", 1)
    trainer_class = embedded_trainer_class() if embedded else TorchTrainer
    return trainer_class(
        train_loop,
        train_loop_config=worker_config,
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        datasets=datasets,
        # interleave: every worker gets the whole train set and takes its own batches of it.
        dataset_config=DataConfig(
            datasets_to_split=["train"] if train.data_sharding == "streaming_split" else []
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=train.checkpoints_to_keep,
                checkpoint_score_attribute=train.metric,
                checkpoint_score_order=train.metric_mode,
            ),
            failure_config=FailureConfig(max_failures=train.max_failures),
            callbacks=callbacks or None,
        ),
    )


def embedded_trainer_class() -> type:
    """`EmbeddedTorchTrainer`: the TorchTrainer, less two helper actors that serve a long-lived
    shared cluster and nothing on the private local Ray that `ml train` starts and stops.

    Each helper is a process of its own: on a 2-core machine its start (seconds of CPU, while
    the training worker starts) and its polling (through the training) are taken from the
    training. PlacementGroupCleaner frees the workers' placement group if the controller dies
    while the cluster lives on; this cluster dies with the driver, whose fit() then fails. Its
    polling goes through the dashboard, which can then stay off. DatasetManager serves
    `get_dataset_shard`; it is dropped only when the trainer has no datasets (`interleave`:
    the workers get the splits from the object store, see `trainer_inputs`).

    `_create_default_callbacks` is Ray Train's internal hook (ray 2.60). If Ray renames it or
    these callbacks, nothing is dropped and this is TorchTrainer again;
    tests/train/test_embedded_trainer.py notices."""
    from ray.train.torch import TorchTrainer

    class EmbeddedTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list[Any]:
            drop = {"PlacementGroupCleanerCallback"}
            if not self.datasets:
                drop.add("DatasetsCallback")
            return [c for c in super()._create_default_callbacks() if type(c).__name__ not in drop]

    return EmbeddedTorchTrainer


def install_model_dir(source: Path, target: Path) -> None:
    """Copy a checkpoint's model dir into place atomically (copy beside, then swap)."""
    with atomic_dir(target) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)


def write_train_reports(settings: Settings, report: dict[str, Any]) -> None:
    """reports/train.json (the full record) and, beside it, train_metrics.json: the best
    epoch's validation metrics, small enough for `dvc metrics diff` to read well."""
    report_path = settings.path(settings.train.report)
    write_json(report_path, report)
    keep = ("val_f1", "val_f1_macro", "val_accuracy", "val_loss", "train_loss", "epoch")
    metrics = {key: report["metrics"][key] for key in keep if key in report["metrics"]}
    metrics.update(duration_s=report["duration_s"], samples_per_s=report["samples_per_s"])
    write_json(report_path.with_name(TRAIN_METRICS_FILE), metrics)


def check_base_model(base: str) -> str:
    """The loadable source of the base model, checked here so a bad name fails in one line
    before any worker starts (a worker failing to load it would only be retried).

    A local folder (the packaged default included) is checked by reading its config.json,
    which spares the driver the ~3 s import of transformers; a hub id goes through AutoConfig."""
    from ml.train.model import ModelError, resolve_base_model

    source = resolve_base_model(base)
    advice = (
        "Use 'all-minilm-l6-v2' offline, a local model folder, or a reachable Hugging Face hub."
    )
    folder = Path(source)
    if folder.is_dir():
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelError(
                f"cannot load base model {base!r}: {folder} has no readable config.json "
                f"({exc}). {advice}"
            ) from exc
        if not model_type:
            raise ModelError(
                f"cannot load base model {base!r}: {folder / 'config.json'} names no "
                f"model_type. {advice}"
            )
        return source
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load base model {base!r} ({source}): {str(exc).splitlines()[0]}. {advice}"
        ) from exc
    return source


def _open_tracking_run(
    settings: Settings,
    paths: dict[str, Path],
    run_name: str,
    attempt: str,
    params: dict[str, str],
    extra_tags: dict[str, str],
) -> tuple[str, str]:
    """(tracking uri, run id): the run's provenance (git sha, data checksums, params hash,
    system info) gathered and the MLflow run opened, new or resumed (`tracking.open_run`)."""
    from ml.train import tracking

    checksums = tracking.data_checksums(paths["train"].parent)
    tags = {
        "git_sha": tracking.git_sha(settings.root),
        "params_hash": tracking.params_hash(settings),
        "base_model": settings.model.base,
        **{f"data_sha256.{name}": digest for name, digest in checksums.items()},
        **{f"system.{k}": v for k, v in tracking.system_info().items()},
        **extra_tags,
    }
    return tracking.open_run(
        settings, run_name, attempt, params, tags, {"data_checksums.json": checksums}
    )


def run_training(settings: Settings, options: TrainOptions | None = None) -> TrainResult:
    """Train with Ray Train, track in MLflow, install the best model; see the module doc."""
    options = options or TrainOptions()
    started = time.perf_counter()
    paths = split_paths(settings)
    labels = json.loads(paths["labels"].read_text())["labels"]

    train_settings = settings.train
    num_workers = options.num_workers or train_settings.num_workers
    epochs = options.epochs or train_settings.epochs
    use_gpu = train_settings.use_gpu if options.use_gpu is None else options.use_gpu
    address = options.address or settings.ray.address
    run_name = options.run_name or time.strftime("train-%Y%m%d-%H%M%S")
    storage_path = str(
        settings.path(options.storage_path or settings.ray.storage_path).resolve()
        if "://" not in (options.storage_path or settings.ray.storage_path)
        else (options.storage_path or settings.ray.storage_path)
    )

    frames = {
        name: read_split(settings, paths[name], labels, options.max_rows)
        for name in ("train", "val")
    }
    if len(frames["train"]) < num_workers:
        raise TrainError(f"{len(frames['train'])} train rows cannot feed {num_workers} workers")

    from ml.train import tracking

    # Quick checks before Ray starts, so a wrong base model or tracking URI fails at once.
    base_source = check_base_model(settings.model.base)
    tracking.check_tracking_uri(tracking.resolve_tracking_uri(settings))
    timings = {"prepare_s": time.perf_counter() - started}
    ray_started = time.perf_counter()
    embedded = init_ray(address, dashboard=settings.ray.dashboard)
    timings["ray_init_s"] = time.perf_counter() - ray_started
    if not address:
        check_local_cpus(num_workers, train_settings.cpus_per_worker)

    worker_config = _worker_config(
        settings, labels, len(frames["train"]), epochs, use_gpu, num_workers
    )
    params = tracking.flatten_params(
        {"model": settings.as_dict()["model"], "train": settings.as_dict()["train"]}
    )
    params.update(
        {
            "train.epochs": str(epochs),
            "train.num_workers": str(num_workers),
            "train.use_gpu": str(use_gpu),
            "data.train_rows": str(len(frames["train"])),
            "data.val_rows": str(len(frames["val"])),
        }
    )
    tokenize_started = time.perf_counter()
    datasets, worker_config["split_refs"] = trainer_inputs(
        frames,
        base_source,
        settings.model.max_length,
        train_settings.data_sharding,
        private_ray=embedded,
    )
    timings["tokenize_s"] = time.perf_counter() - tokenize_started
    attempt = uuid.uuid4().hex
    # The MLflow run is opened in the background (importing MLflow, opening its store, params,
    # tags, checksums: seconds of a small machine's CPU) while Ray Train starts its controller
    # and workers, which leaves this process idle. The controller's epoch logger finds the run
    # by its attempt tag when the first epoch reports.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ml-mlflow-run") as pool:
        opening = pool.submit(
            _open_tracking_run, settings, paths, run_name, attempt, params, options.extra_tags
        )
        fit_error: Exception | None = None
        try:
            trainer = make_trainer(
                settings,
                worker_config,
                datasets,
                num_workers=num_workers,
                use_gpu=use_gpu,
                run_name=run_name,
                storage_path=storage_path,
                embedded=embedded,
                callbacks=[
                    tracking.epoch_logger(
                        tracking.resolve_tracking_uri(settings),
                        experiment=settings.mlflow.experiment,
                        attempt=attempt,
                    )
                ],
            )
            fit_started = time.perf_counter()
            worker_config["fit_started_at"] = time.time()
            with sigterm_as_ctrl_c() as sigterm:
                try:
                    result = trainer.fit()
                except (KeyboardInterrupt, SystemExit):
                    # Ray Train's Ctrl-C handler ends fit() with SystemExit once it has
                    # aborted the controller.
                    fit_error = interruption(run_name, storage_path, bool(sigterm))
            timings["fit_s"] = time.perf_counter() - fit_started
        except Exception as exc:
            fit_error = exc
        except KeyboardInterrupt:  # before fit() started
            fit_error = interruption(run_name, storage_path, sigterm=False)
        tracking_uri, run_id = opening.result()
    import mlflow

    if isinstance(fit_error, TrainInterrupted):
        # KILLED, not FAILED: a rerun with the same name resumes this MLflow run, and the
        # checkpoints in storage_path, from the last epoch reported.
        tracking.mark_interrupted(tracking_uri, run_id, str(fit_error))
        raise fit_error
    with mlflow.start_run(run_id=run_id) as run:
        if fit_error is not None:
            mlflow.set_tag(tracking.FAILURE_TAG, str(fit_error)[:500])
            if isinstance(fit_error, TrainError):
                raise fit_error
            raise TrainError(
                f"training run {run_name!r} failed: {str(fit_error).splitlines()[0]}. "
                f"Rerun with --run-name {run_name} to resume from its last "
                "checkpoint."
            ) from fit_error
        metric = train_settings.metric
        best = (
            result.get_best_checkpoint(metric=metric, mode=train_settings.metric_mode)
            if hasattr(result, "get_best_checkpoint")
            else None
        )
        best_pairs = [
            pair for pair in (result.best_checkpoints or []) if pair[1].get(metric) is not None
        ]
        if best is None and best_pairs:
            pick = min if train_settings.metric_mode == "min" else max
            best = pick(best_pairs, key=lambda pair: pair[1][metric])[0]
        if best is None:
            raise TrainError(f"run {run_name!r} finished without a checkpoint")
        best_metrics = next((m for c, m in best_pairs if c.path == best.path), result.metrics or {})
        model_dir = settings.path(settings.model.dir).resolve()
        with best.as_directory() as directory:
            install_model_dir(Path(directory) / CHECKPOINT_MODEL, model_dir)
        final = {
            f"best_{k}": float(v)
            for k, v in best_metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        last = result.metrics or best_metrics
        samples_per_s = float(last.get("train_samples_total", 0.0)) / max(
            float(last.get("train_seconds_total", 0.0)), 1e-9
        )
        from ml.train.pyfunc import log_pyfunc_model

        log_started = time.perf_counter()
        model_uri = log_pyfunc_model(model_dir)
        mlflow.log_dict(json.loads((model_dir / "labels.json").read_text()), "labels.json")
        timings["log_model_s"] = time.perf_counter() - log_started
        for key in ("worker_start_s", "model_load_s"):
            if key in last:
                timings[key] = float(last[key])
        duration = time.perf_counter() - started
        mlflow.log_metrics({**final, "duration_s": duration, "samples_per_s": samples_per_s})
        report_path = settings.path(train_settings.report)
        report = {
            "run_id": run.info.run_id,
            "model_uri": model_uri,
            "model_dir": str(model_dir),
            "metrics": {
                **{
                    k: float(v)
                    for k, v in best_metrics.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
            },
            "duration_s": round(duration, 2),
            "timings": {k: round(v, 2) for k, v in {**timings, "total_s": duration}.items()},
            "samples_per_s": round(samples_per_s, 2),
            "resources": {
                "num_workers": num_workers,
                "use_gpu": use_gpu,
                "cpus_per_worker": train_settings.cpus_per_worker,
            },
            "params": {
                "model": settings.as_dict()["model"],
                "train": {**settings.as_dict()["train"], "epochs": epochs},
            },
            "run_name": run_name,
            "storage_path": storage_path,
            "checkpoint": best.path,
            "tracking_uri": tracking_uri,
            "epochs_run": int(last.get("epoch", 0)),
        }
        write_train_reports(settings, report)
        mlflow.log_dict(report, REPORT_ARTIFACT)
    return TrainResult(
        run.info.run_id,
        model_uri,
        str(model_dir),
        report["metrics"],
        duration,
        samples_per_s,
        run_name,
        storage_path,
        str(report_path),
        report["timings"],
    )


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """While the block runs, SIGTERM (a cancelled CI job, `kill`) takes the Ctrl-C path: in
    fit(), Ray Train's SIGINT handler aborts the controller and its workers. Yields the list
    that records a SIGTERM. Both handlers are put back afterwards; Ray Train leaves its own
    SIGINT handler installed, and it would exit 0 on a later Ctrl-C."""
    import signal
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.raise_signal(signal.SIGINT)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interruption(run_name: str, storage_path: str, sigterm: bool) -> TrainInterrupted:
    """The TrainInterrupted for a signal that stopped training, saying how to resume."""
    import signal

    signum = signal.SIGTERM if sigterm else signal.SIGINT
    return TrainInterrupted(
        f"training run {run_name!r} interrupted ({signum.name}); its checkpoints are kept in "
        f"{storage_path}. Rerun with --run-name {run_name} to resume from the last one.",
        128 + signum,
    )


def apply_params_override(settings: Settings, override_file: Path) -> Settings:
    """Settings with the model/train sections of `override_file` (e.g. written by `ml tune`)
    laid over params.yaml; every value is validated like params.yaml itself."""
    import yaml

    from ml.config import ConfigError

    if not override_file.is_file():
        raise ConfigError(f"params override file not found: {override_file}")
    override = yaml.safe_load(override_file.read_text()) or {}
    unknown = sorted(set(override) - {"model", "train"})
    if unknown:
        raise ConfigError(
            f"{override_file}: only model/train sections can be overridden, got {unknown}"
        )
    updates = {}
    for section, values in override.items():
        current = getattr(settings, section)
        try:
            updates[section] = type(current).model_validate({**current.model_dump(), **values})
        except Exception as exc:
            raise ConfigError(f"{override_file}: invalid {section} values: {exc}") from exc
    updated = settings.model_copy(update=updates)
    updated.root, updated.provenance = settings.root, dict(settings.provenance)
    for section, values in override.items():
        for key in values:
            updated.provenance[f"{section}.{key}"] = str(override_file)
    return updated
