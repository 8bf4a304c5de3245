"""Training throughput: `ml train` (Ray Train) against a plain PyTorch loop, in one run.

Both sides use the same core (ml/train/loop.py), model, data and global batch size. Each side
runs as its own process, as a user would run it, timed from process launch to the trained model
saved (the plain loop) or installed and logged to MLflow (`ml train`); Ray cluster start
(ray.init) is left out of the ratio, as the issue asks. The sides run in the order
plain, Ray, Ray, plain (`--rounds 2`), so a machine that drifts faster or slower during the run
weighs on both alike; the ratio is Ray's summed wall over plain's. The CPU time of every process
each run starts (Ray's daemons, controller, actors and workers included) is sampled too, so the
report shows what share of the cores Ray's own processes take from the training.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--epochs N] [--rows N] [--rounds N]

Any task: `--params` names its params file (run from that project's folder), e.g. the image
task from a project made by tests/image_project.py with
`--output reports/benchmarks/training-image.md`. Writes reports/benchmarks/training.md. On a
machine without ray/mlflow (a bare GPU box) the plain loop is still measured and the Ray row
says why it is missing. `--device cuda` trains in bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plain_pytorch(settings, rows: int | None, epochs: int, device: str) -> dict:
    """The task's model trained by the core loop alone, in this process (no Ray, no MLflow)."""
    import torch

    from ml.tasks import task_of
    from ml.train import inputs, loop

    task = task_of(settings)
    paths = inputs.split_paths(settings)
    labels = inputs.read_labels(paths)
    train = inputs.read_split(settings, paths["train"], labels, rows)
    val = inputs.read_split(settings, paths["val"], labels)
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    cfg = settings.train
    loop.set_seed(cfg.seed)
    model, preprocessor = task.build_model(settings, labels)
    model.to(device)
    encoded, encoded_val = (
        {**task.encode(preprocessor, split.inputs, settings), loop.LABEL_COLUMN: split.label_ids}
        for split in (train, val)
    )
    optimizer = loop.make_optimizer(model, cfg.lr, cfg.weight_decay)
    steps = loop.steps_per_epoch(len(train), cfg.batch_size)
    scheduler = loop.make_scheduler(optimizer, steps * epochs, cfg.warmup_fraction)
    train_seconds, samples = 0.0, 0.0
    for epoch in range(epochs):
        stats = loop.train_epoch(
            model,
            loop.iterate_batches(encoded, cfg.batch_size, True, cfg.seed, epoch),
            optimizer,
            scheduler,
            collate=task.collate,
            device=device,
            label_smoothing=cfg.label_smoothing,
            grad_clip=cfg.grad_clip,
            use_bf16=device == "cuda",
        )
        train_seconds += stats["seconds"]
        samples += stats["samples"]
        # What any training script does each epoch: score the validation split.
        probabilities, targets, loss_sum = loop.predict_batches(
            model, loop.iterate_batches(encoded_val, 64, False), collate=task.collate, device=device
        )
        scores = loop.classification_metrics(probabilities, targets, loss_sum)
        print(
            f"plain epoch {epoch + 1}/{epochs}: {stats['samples'] / stats['seconds']:.1f} "
            f"samples/s, loss {stats['loss']:.4f}, val_f1 {scores['val_f1']:.4f}, "
            f"val_acc {scores['val_accuracy']:.4f}",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as tmp:
        meta = {"task": task.name, "labels": labels}
        task.save_model(model, preprocessor, labels, Path(tmp) / "model", meta)
    return {
        "train_s": train_seconds,
        "samples_per_s": samples / train_seconds,
        "val_accuracy": scores["val_accuracy"],
        "val_f1": scores["val_f1"],
    }


def ray_train(settings, rows: int | None, epochs: int, device: str, workers: int) -> dict:
    import threading

    import ray

    from ml.config import override
    from ml.train.ray_train import TrainOptions, run_training

    ray_ready = {}

    def note_ray_ready() -> None:
        while not ray.is_initialized():
            time.sleep(0.1)
        ray_ready["at"] = time.time()

    # When ray.init returned: the CPU accounting leaves cluster start out from then on.
    threading.Thread(target=note_ray_ready, daemon=True).start()

    with tempfile.TemporaryDirectory() as tmp:
        # Outputs of a benchmark run must not replace the project's model or report.
        trial = override(
            settings,
            {
                "model.dir": f"{tmp}/model",
                "train.report": f"{tmp}/train.json",
                "train.early_stopping_patience": 0,
                "mlflow.experiment": f"{settings.mlflow.experiment}-benchmark",
            },
            "benchmarks/train_throughput.py",
        )
        options = TrainOptions(
            num_workers=workers,
            epochs=epochs,
            use_gpu=device == "cuda",
            max_rows=rows,
            storage_path=f"{tmp}/ray_results",
            extra_tags={"benchmark": "train_throughput"},
        )
        result = run_training(trial, options)
    # Measured here, with the run's files cleaned up like the plain side's, but before the local
    # cluster shuts down at exit (cluster stop, like cluster start, is not part of a run).
    wall = time.time() - float(os.environ[SPAWNED_AT])
    timings = result.timings
    return {
        "wall_s": wall - timings.get("ray_init_s", 0.0),
        "samples_per_s": result.samples_per_s,
        "timings": timings,
        "ray_ready_at": ray_ready.get("at", 0.0),
    }


SPAWNED_AT = "ML_BENCHMARK_SPAWNED_AT"


def child(args) -> None:
    """One measured run in this process; writes its numbers to args.result."""
    from ml.config import load_settings

    settings = load_settings(args.params)
    if args.side == "plain":
        result = plain_pytorch(settings, args.rows, args.epochs, args.device)
        result["wall_s"] = time.time() - float(os.environ[SPAWNED_AT])
        import torch

        result["threads"] = torch.get_num_threads() if args.device == "cpu" else "n/a"
    else:
        result = ray_train(settings, args.rows, args.epochs, args.device, args.workers)
    Path(args.result).write_text(json.dumps(result))


def run_side(args, side: str, tmp: Path, index: int, niceness: int = 0) -> dict:
    """Launch one side as a fresh process (imports, model load and all) and read its numbers;
    `niceness` > 0 runs it at that nice value (`nice` execs it, so the pid is the same)."""
    import subprocess

    result = tmp / f"{index}-{side}.json"
    command = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--result",
        str(result),
        "--device",
        args.device,
        "--epochs",
        str(args.epochs),
        "--workers",
        str(args.workers),
        "--params",
        args.params,
        *(["--rows", str(args.rows)] if args.rows else []),
    ]
    print(f"== run {index + 1}: {side}", flush=True)
    if niceness:
        command = ["nice", "-n", str(niceness), *command]
    process = subprocess.Popen(command, env={**os.environ, SPAWNED_AT: repr(time.time())})
    samples = sample_process_tree(process)
    if process.returncode != 0:
        raise SystemExit(f"the {side} run failed (exit {process.returncode}); see its output above")
    numbers = json.loads(result.read_text())
    if samples is not None:
        numbers["cpu_s"] = cpu_by_group(samples, process.pid, numbers.get("ray_ready_at", 0.0))
    return numbers


def sample_process_tree(process) -> dict[int, list[tuple[float, float, str]]] | None:
    """(time, CPU seconds, title) of the process and every descendant (Ray's daemons, actors
    and workers are children of the driver that started the local cluster), twice a second until
    it exits; None without psutil (a bare GPU box)."""
    try:
        import psutil
    except ImportError:
        process.wait()
        return None
    samples: dict[int, list[tuple[float, float, str]]] = {}
    root = psutil.Process(process.pid)
    while process.poll() is None:
        now = time.time()
        for pid, (cpu, cmdline) in tree_cpu_seconds(root).items():
            samples.setdefault(pid, []).append((now, cpu, " ".join(cmdline)))
        time.sleep(0.5)
    return samples


def tree_cpu_seconds(root) -> dict[int, tuple[float, list[str]]]:
    """{pid: (CPU seconds so far, command line)} of the psutil process `root` and all its
    descendants; processes that exit while being read are left out."""
    import psutil

    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    found = {}
    for proc in tree:
        try:
            cpu = proc.cpu_times()
            found[proc.pid] = (cpu.user + cpu.system, proc.cmdline())
        except psutil.Error:
            continue
    return found


CPU_GROUPS = {
    "driver": "the process that was launched (plain: the whole loop; Ray: the `ml train` driver)",
    "train_worker": "Ray Train worker: the training itself",
    "controller": "Ray Train controller",
    "ray_actors": "other Ray actors and workers (Ray Data, Train helpers, idle workers)",
    "ray_daemons": "Ray's daemons (GCS, raylet, dashboard, agents, log monitor)",
}


def cpu_by_group(samples: dict, root_pid: int, since: float) -> dict[str, float]:
    """CPU seconds per CPU_GROUPS key, counted from `since` (the end of ray.init, so cluster
    start is left out as in the wall times; 0 for the plain loop) to the process's exit."""
    groups = dict.fromkeys(CPU_GROUPS, 0.0)
    for pid, series in samples.items():
        before = [cpu for at, cpu, _ in series if at <= since]
        start = before[-1] if before else 0.0
        title = series[-1][2]
        if pid == root_pid:
            group = "driver"
        elif title.startswith("ray::RayTrainWorker"):
            group = "train_worker"
        elif title.startswith("ray::TrainController"):
            group = "controller"
        elif title.startswith("ray::"):
            group = "ray_actors"
        else:
            group = "ray_daemons"
        groups[group] += series[-1][1] - start
    return groups


def order_of_runs(rounds: int, with_ray: bool) -> list[str]:
    """plain, ray, ray, plain, plain, ray, ...: each side's runs sit symmetrically in time."""
    if not with_ray:
        return ["plain"] * rounds
    pairs = [("plain", "ray") if i % 2 == 0 else ("ray", "plain") for i in range(rounds)]
    return [side for pair in pairs for side in pair]


def write_report(path: Path, args, runs: list[tuple[str, dict]], ray_note: str) -> None:
    import torch

    plain = [r for side, r in runs if side == "plain"]
    ray = [r for side, r in runs if side == "ray"]
    plain_wall = sum(r["wall_s"] for r in plain)
    plain_rate = sum(r["samples_per_s"] for r in plain) / len(plain)
    lines = [
        "# Training throughput: Ray Train vs plain PyTorch",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        "`python benchmarks/train_throughput.py "
        f"--device {args.device} --epochs {args.epochs} --rounds {args.rounds}"
        + (f" --rows {args.rows}" if args.rows else "")
        + "`.",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores"
        + (f", GPU {torch.cuda.get_device_name(0)}" if args.device == "cuda" else ", no GPU")
        + f"; torch {torch.__version__}.",
        f"- Task `{args.task}` (`--params {params_label(args.params)}`). Same model "
        f"({args.model}), data ({args.train_rows} train rows), global batch "
        f"{args.batch_size}, {args.epochs} epoch(s)"
        + (", bf16 autocast" if args.device == "cuda" else ", fp32")
        + ".",
        f"- Plain PyTorch: one process, {plain[0]['threads']} threads; it trains, scores the "
        "validation split every epoch and saves the model at the end. `ml train`: "
        f"{args.workers} Ray Train worker(s) (`train.cpus_per_worker: {args.cpus_per_worker}`; "
        "DDP when more than one), Ray Data encodes the splits (`train.data_sharding: "
        f"{args.data_sharding}`), a checkpoint every epoch, MLflow logging, model dir + MLflow "
        "model at the end; the embedded local Ray as `ml train` starts it (no dashboard, "
        "`EmbeddedTorchTrainer`).",
        "- Each run is a fresh process, timed from its launch (imports included) to the trained "
        "model saved (plain) or installed and logged to MLflow (`ml train`), minus Ray cluster "
        "start (ray.init), shown apart. samples/s counts training steps only.",
        f"- Runs in the order {', '.join(side for side, _ in runs)}, so drift in the machine's "
        "speed during the benchmark weighs on both sides alike.",
        f"- Load average (1 min) at start / end: {args.load_start:.1f} / {os.getloadavg()[0]:.1f}"
        " (a shared, noisy 2-core machine: compare ratios within one run).",
        "",
        "| run | method | wall s | training samples/s | Ray cluster start s (excluded) |",
        "|---:|---|---:|---:|---:|",
    ]
    for index, (side, r) in enumerate(runs, 1):
        method = "plain PyTorch loop" if side == "plain" else "`ml train` (Ray Train)"
        init = f"{r['timings'].get('ray_init_s', 0):.1f}" if side == "ray" else "-"
        lines.append(
            f"| {index} | {method} | {r['wall_s']:.1f} | {r['samples_per_s']:.1f} | {init} |"
        )
    if ray:
        ratio = sum(r["wall_s"] for r in ray) / plain_wall
        ray_rate = sum(r["samples_per_s"] for r in ray) / len(ray)
        lines += [
            "",
            f"**Ray overhead, whole run: {ratio:.2f}x** the plain loop's wall (summed over the "
            f"runs of each side); target <= 1.15x: {'met' if ratio <= 1.15 else 'NOT met'}. "
            f"Per training step alone: {plain_rate / ray_rate:.2f}x (mean samples/s, plain "
            "over Ray).",
        ]
        pairs = [
            dict(runs[i : i + 2])
            for i in range(0, len(runs) - 1, 2)
            if {side for side, _ in runs[i : i + 2]} == {"plain", "ray"}
        ]
        if len(pairs) > 1:
            lines.append(
                "Each adjacent plain/Ray pair alone: "
                + ", ".join(f"{p['ray']['wall_s'] / p['plain']['wall_s']:.2f}x" for p in pairs)
                + " (their spread is the machine's drift, which the sums above even out)."
            )
        lines += [
            "",
            "Where `ml train`'s time goes (seconds, from reports/train.json `timings`; means over "
            "its runs):",
            "",
            "| phase | s |",
            "|---|---:|",
        ]
        phases = {
            "prepare_s": "read splits, check base model (before Ray starts)",
            "encode_s": "Ray Data encoding the splits (tokenizing; pixels)",
            "worker_start_s": "fit() to the train function running in the worker",
            "model_load_s": "build the model in the worker",
            "fit_s": "all of trainer.fit() (includes the two above and every epoch)",
            "log_model_s": "MLflow pyfunc model at the end",
        }
        for key, label in phases.items():
            values = [r["timings"][key] for r in ray if key in r["timings"]]
            if values:
                lines.append(f"| `{key}`: {label} | {sum(values) / len(values):.1f} |")
        lines += cpu_table(plain, ray)
        lines += [
            "",
            "What `ml train` adds over the plain loop: Ray Train starts a controller and a "
            "worker process (each imports Ray Train and torch) plus a synchronization actor; Ray "
            "Data encodes the splits (the task's `encode`) in its own worker, beside its stats "
            "and autoscaling actors; with `interleave` the encoded arrays reach the worker "
            "through Ray's object store; each epoch writes a checkpoint (the task's model dir "
            "and the optimizer state, written and then copied to storage); MLflow gets params "
            "and tags (the run is opened in a driver thread while Ray Train starts), per-epoch "
            "metrics (from the Ray Train controller, so the worker never imports MLflow) and the "
            "pyfunc model. During the epochs, Ray's other processes (the CPU table) keep "
            "running beside the worker: on two cores, the CPU they take is what the worker's "
            "steps lose.",
        ]
    else:
        lines += ["", f"`ml train` rows missing: {ray_note}"]
    if args.device == "cpu":
        lines += [
            "",
            "GPU numbers: `python benchmarks/train_throughput.py --device cuda` measures the same "
            "pair on a GPU (bf16); reports/benchmarks/training-gpu.md has an H100 run.",
        ]
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def cpu_table(plain: list[dict], ray: list[dict]) -> list[str]:
    """Where the CPU went, per process group (means over each side's runs); empty without
    the accounting (no psutil)."""
    if not all("cpu_s" in r for r in plain + ray):
        return []

    def mean(runs: list[dict], group: str) -> float:
        return sum(r["cpu_s"][group] for r in runs) / len(runs)

    cores = os.cpu_count() or 1
    ray_wall = sum(r["wall_s"] for r in ray) / len(ray)
    others = sum(mean(ray, g) for g in ("controller", "ray_actors", "ray_daemons"))
    ray_total = sum(mean(ray, g) for g in CPU_GROUPS)
    plain_total = mean(plain, "driver")
    lines = [
        "",
        "Where the CPU went (CPU seconds, user + system, of the launched process and all its "
        "descendants, sampled twice a second; Ray runs counted from the end of ray.init; means "
        "over each side's runs):",
        "",
        "| process group | plain | `ml train` |",
        "|---|---:|---:|",
    ]
    for group, label in CPU_GROUPS.items():
        plain_value = f"{mean(plain, group):.1f}" if group == "driver" else "-"
        lines.append(f"| {label} | {plain_value} | {mean(ray, group):.1f} |")
    lines += [
        "",
        f"Ray's processes other than the training worker used {others:.1f} CPU s, "
        f"{100 * others / (ray_wall * cores):.1f}% of the machine's {cores} cores over "
        "`ml train`'s wall: CPU that the training worker, which wants both cores, does not get.",
        f"All of `ml train`'s processes together used {ray_total:.1f} CPU s against the plain "
        f"loop's {plain_total:.1f}: **{ray_total / plain_total:.2f}x the CPU work**. Where the "
        "training keeps every core busy, as here, the wall ratio cannot go below that.",
    ]
    return lines


def params_label(params: str) -> str:
    """The params file as the report names it: relative to the repository when inside it."""
    path = Path(params).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def describe_model(settings) -> str:
    """The model as the report names it (the params that size it)."""
    if settings.task == "text-classification":
        return f"{settings.model.base}, max length {settings.model.max_length}"
    image = settings.image
    return (
        f"CNN, conv channels {image.conv_channels}, hidden {image.hidden}, "
        f"{image.height}x{image.width} images"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--epochs", type=int, default=None, help="default: train.epochs (8)")
    parser.add_argument("--rows", type=int, default=None, help="cap on train rows")
    parser.add_argument("--workers", type=int, default=None, help="Ray workers (default: params)")
    parser.add_argument("--rounds", type=int, default=2, help="plain/Ray pairs (default 2)")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--output", default=str(ROOT / "reports" / "benchmarks" / "training.md"))
    parser.add_argument("--side", choices=["plain", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if args.side:
        child(args)
        return
    args.load_start = os.getloadavg()[0]

    from ml.config import load_settings

    settings = load_settings(args.params)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible to torch")
    args.workers = args.workers or (1 if args.device == "cuda" else settings.train.num_workers)
    args.batch_size = settings.train.batch_size
    args.epochs = args.epochs or settings.train.epochs
    args.data_sharding = settings.train.data_sharding
    args.cpus_per_worker = settings.train.cpus_per_worker

    from ml.train import inputs

    paths = inputs.split_paths(settings)
    labels = inputs.read_labels(paths)
    args.train_rows = len(inputs.read_split(settings, paths["train"], labels, args.rows))
    args.task, args.model = settings.task, describe_model(settings)
    note = ""
    try:
        import mlflow  # noqa: F401
        import ray  # noqa: F401
    except ImportError as exc:
        note = f"{exc.name} is not installed here, so only the plain loop was measured."
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            (side, run_side(args, side, Path(tmp), index))
            for index, side in enumerate(order_of_runs(args.rounds, not note))
        ]
    write_report(Path(args.output), args, runs, note)
    print(Path(args.output).read_text())


if __name__ == "__main__":
    main()
