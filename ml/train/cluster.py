"""The Ray side of training: connecting (one `init_ray`, shared with serving), checking that the
requested workers fit the cluster's nodes, and building the TorchTrainer.

A Ray Train worker is one actor, so it runs on ONE node: a request that no node can hold waits
for "worker group startup" forever. `plan_scaling` checks the request against the live nodes
(`ray.nodes()`) before anything starts, resolves `cpus_per_worker: auto`, and fails with the
numbers and the fix, after a bounded wait where an autoscaler may add nodes.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ml.train.errors import TrainError

if TYPE_CHECKING:
    from ml.config import Settings, TrainSettings

# The most CPUs `cpus_per_worker: auto` gives one worker: beyond this, a worker's torch threads
# would take a big node from everyone else sharing the cluster.
AUTO_CPUS_CAP = 8
NODE_POLL_S = 1.0


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


_started_local_ray = False


def init_ray(
    address: str | None,
    num_cpus: int | None = None,
    *,
    dashboard: bool = True,
    **init_kwargs: Any,
) -> bool:
    """Connect to `address`, or start an embedded local Ray. No-op if already connected.
    True when the Ray connected is a private local instance that this process started (and
    that stops with it).

    "local" always starts a private instance: a bare ray.init() would join whatever cluster
    was last started on this machine (/tmp/ray/ray_current_cluster: someone else's run, a
    test's cluster). The local instance runs its dashboard unless `dashboard` is false. Whoever
    runs Ray Train's stock TorchTrainer on it needs the dashboard: it serves the State API,
    which Ray Train's PlacementGroupCleaner polls to free a finished run's worker placement
    group; without it the cleaner warns every second and, in `ml tune`, the next trial's
    workers never fit. `ml train` uses `EmbeddedTorchTrainer`, which has no cleaner, so it can
    go without. `init_kwargs` go to ray.init as they are (serving passes its own)."""
    global _started_local_ray
    import ray

    if ray.is_initialized():
        return _started_local_ray
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if address and address != "local":
        check_ray_address(address)
        try:
            ray.init(
                **{"address": address, "log_to_driver": True, "include_dashboard": False}
                | init_kwargs
            )
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
    local = {
        "address": "local",
        "num_cpus": num_cpus,
        "include_dashboard": dashboard,
        "log_to_driver": True,
        "_system_config": system_config,
    }
    ray.init(**local | init_kwargs)
    _started_local_ray = True
    return True


# ---------------------------------------------------------------- does the request fit?


@dataclass(frozen=True)
class Scaling:
    """The workers one run asks for, `cpus_per_worker: auto` resolved."""

    num_workers: int
    cpus_per_worker: float
    use_gpu: bool
    resources: dict[str, float] = field(default_factory=dict)  # per worker, CPU/GPU included

    @property
    def threads_per_worker(self) -> int:
        return max(1, int(self.cpus_per_worker))


def worker_request(train: TrainSettings, cpus: float, use_gpu: bool) -> dict[str, float]:
    resources = {"CPU": float(cpus), **{k: float(v) for k, v in train.resources_per_worker.items()}}
    if use_gpu:
        resources.setdefault("GPU", 1.0)
    return resources


def workers_fitting(nodes: list[dict[str, float]], request: dict[str, float]) -> int:
    """How many workers asking `request` each the nodes can hold (each worker on one node)."""
    wanted = {k: v for k, v in request.items() if v > 0}
    total = 0
    for node in nodes:
        # The small epsilon: Ray keeps fractional resources in fixed point.
        total += min(math.floor(node.get(k, 0.0) / v + 1e-6) for k, v in wanted.items())
    return total


def fit_scaling(
    train: TrainSettings, num_workers: int, use_gpu: bool, nodes: list[dict[str, float]]
) -> Scaling | None:
    """The Scaling for these nodes, or None when the request does not fit them."""
    if train.cpus_per_worker == "auto":
        largest = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
        candidates = range(min(AUTO_CPUS_CAP, int(largest)), 0, -1)
    else:
        candidates = [train.cpus_per_worker]
    for cpus in candidates:
        request = worker_request(train, cpus, use_gpu)
        if workers_fitting(nodes, request) >= num_workers:
            return Scaling(num_workers, float(cpus), use_gpu, request)
    return None


def live_nodes() -> list[dict[str, float]]:
    """Each alive node's total resources."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def plan_scaling(
    train: TrainSettings,
    num_workers: int,
    use_gpu: bool,
    *,
    wait_s: float,
    nodes: Callable[[], list[dict[str, float]]] = live_nodes,
    sleep: Callable[[float], None] = time.sleep,
) -> Scaling:
    """The Scaling of this run on the connected cluster, waiting up to `wait_s` for nodes that
    fit (an autoscaler adds them); a TrainError with the numbers and the fix otherwise."""
    deadline = time.monotonic() + wait_s
    while True:
        current = nodes()
        scaling = fit_scaling(train, num_workers, use_gpu, current)
        if scaling is not None:
            return scaling
        if time.monotonic() + NODE_POLL_S > deadline:
            raise TrainError(misfit_message(train, num_workers, use_gpu, current, wait_s))
        sleep(NODE_POLL_S)


def _amounts(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if k in ("CPU", "GPU") or not _is_internal(k)}
    return ", ".join(f"{k} {v:g}" for k, v in sorted(shown.items())) or "nothing"


def _is_internal(name: str) -> bool:
    # Ray's own per-node resources (node:<ip>, memory, object_store_memory, accelerator types).
    return name.startswith(("node:", "accelerator_type:")) or name in (
        "memory",
        "object_store_memory",
    )


def misfit_message(
    train: TrainSettings,
    num_workers: int,
    use_gpu: bool,
    nodes: list[dict[str, float]],
    wait_s: float,
) -> str:
    cpus = 1 if train.cpus_per_worker == "auto" else train.cpus_per_worker
    request = worker_request(train, cpus, use_gpu)
    totals = {k: sum(n.get(k, 0.0) for n in nodes) for k in request}
    need = ", ".join(f"{k} {v * num_workers:g}" for k, v in request.items())
    offered = "; ".join(f"node {i + 1}: {_amounts(n)}" for i, n in enumerate(nodes)) or "none"
    fits = workers_fitting(nodes, request) if nodes else 0
    waited = f" (waited {wait_s:g} s for more: train.cluster_wait_s)" if wait_s else ""
    return (
        f"{num_workers} worker(s) x {{{_amounts(request)}}} need {need} in all, each worker on "
        f"ONE node; the cluster's {len(nodes)} node(s) hold {fits} such worker(s) "
        f"(in all: {_amounts(totals)}; {offered}){waited}. Lower train.num_workers (or "
        "--workers), train.cpus_per_worker (auto: the most a node offers) or "
        "train.resources_per_worker / train.use_gpu, add nodes that fit a worker, or raise "
        "train.cluster_wait_s if an autoscaler adds them"
    )


# ---------------------------------------------------------------- the trainer


def make_trainer(
    settings: Settings,
    scaling: Scaling,
    train_loop_config: dict[str, Any],
    datasets: dict[str, Any],
    *,
    run_name: str,
    storage_path: str,
    train_loop: Callable[[dict[str, Any]], None] | None = None,
    callbacks: list[Any] | None = None,
    embedded: bool = False,
) -> Any:
    """The TorchTrainer of `ml train`. `train_loop` is replaceable so that a benchmark can run
    Ray's side of a training run, every process of it, with a worker that does not train.
    `embedded`: the run has a local Ray of its own, started for it and gone with it
    (`EmbeddedTorchTrainer`)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ml.train.worker import train_loop_per_worker

    train = settings.train
    trainer_class = embedded_trainer_class() if embedded else TorchTrainer
    return trainer_class(
        train_loop or train_loop_per_worker,
        train_loop_config=train_loop_config,
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=dict(scaling.resources),
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
    the workers get the splits from the object store, see ml/train/inputs.py).

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
