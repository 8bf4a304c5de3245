"""What Ray's own processes cost a training step: the plain PyTorch loop alone, against the same
loop beside a Ray Train run of `ml train` whose worker does not train.

The background is `ml train`'s Ray side, built by the same functions: the embedded local Ray
(`init_ray`), the splits tokenized by Ray Data (`trainer_inputs`) and `make_trainer`'s
TorchTrainer, with a worker that only waits. So its controller, helper actors, Ray Data's
actors and Ray's daemons all run, and nothing else. The foreground is train_throughput.py's
plain loop, 1 epoch per run, as a fresh process each time, at each of the nice values given:
Ray runs its daemons at nice 0 and its workers, the training worker among them, at
`RAY_worker_niceness` (15 unless set). Each round runs every niceness alone, then beside the
background in the order given and back, then alone again, so drift in the machine's speed
weighs on both sides alike.

On a machine whose cores the training fills, the slowdown measured here is paid on every step of
`ml train`, whatever its own code does, so it sits under train_throughput.py's per-step ratio;
the report sets it against the spread between runs of the same kind, this machine's noise.
Last, it times fit() of the same trainer with a worker that returns at once: what Ray Train's
own start and stop cost every run.

    python benchmarks/ray_background.py [--rounds N] [--epochs N] [--niceness 0,15] [--fit-runs N]

Writes reports/benchmarks/ray-background.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def idle_worker(config: dict) -> None:
    """A Ray Train worker that says it is up, then waits for the stop file."""
    import time as clock
    from pathlib import Path as FilePath

    FilePath(config["ready_file"]).write_text("ready\n")
    while not FilePath(config["stop_file"]).exists():
        clock.sleep(0.5)


def noop_worker(config: dict) -> None:
    """A Ray Train worker with nothing to do: what is left of `fit()` is Ray Train's own."""


def background(
    params: str,
    ready_file: str | None,
    stop_file: str | None,
    storage: str,
    fit_seconds_file: str | None,
) -> None:
    """`ml train`'s Ray side with `idle_worker` as the train loop (runs in its own process).
    With `fit_seconds_file`, the train loop is `noop_worker` and fit()'s wall time is written
    there instead."""
    from ml.config import load_settings
    from ml.tasks import task_of
    from ml.train import cluster, inputs
    from ml.train.worker import WorkerConfig

    settings = load_settings(params)
    paths = inputs.split_paths(settings)
    labels = inputs.read_labels(paths)
    splits = inputs.read_splits(settings, paths, labels)
    preprocessor = task_of(settings).preprocessor(settings)
    embedded = cluster.init_ray(None, dashboard=settings.ray.dashboard)
    train = settings.train
    scaling = cluster.plan_scaling(train, train.num_workers, False, wait_s=0.0)
    datasets, split_refs = inputs.trainer_inputs(
        settings, preprocessor, splits, private_ray=embedded
    )
    worker = WorkerConfig(
        settings,
        tuple(labels),
        len(splits["train"]),
        threads_per_worker=scaling.threads_per_worker,
        split_refs=split_refs,
    )
    config = {**worker.as_loop_config(), "ready_file": ready_file, "stop_file": stop_file}
    trainer = cluster.make_trainer(
        settings,
        scaling,
        config,
        datasets,
        run_name="ray-background",
        storage_path=storage,
        train_loop=noop_worker if fit_seconds_file else idle_worker,
        embedded=embedded,
    )
    started = time.perf_counter()
    trainer.fit()
    if fit_seconds_file:
        Path(fit_seconds_file).write_text(f"{time.perf_counter() - started}\n")


def process_title(cmdline: list[str]) -> str:
    """A short name for a Ray process: its actor title, or the script or binary it runs."""
    if not cmdline:
        return "?"
    if cmdline[0].startswith("ray"):
        return cmdline[0].split(" ")[0]
    args = [arg for arg in cmdline[1:] if not arg.startswith("-")]
    program = args[0] if "python" in Path(cmdline[0]).name and args else cmdline[0]
    return Path(program).name


def background_command(params: str, tmp: Path, *options: str) -> list[str]:
    """This script re-run as the process that holds `ml train`'s Ray side (`background`)."""
    storage = str(tmp / "ray_results")
    return [
        sys.executable,
        __file__,
        "--background",
        "--params",
        params,
        "--storage",
        storage,
        *options,
    ]


class Background:
    """The background run as a child process; its whole process tree's CPU time on demand."""

    def __init__(self, params: str, tmp: Path) -> None:
        self.ready, self.stop = tmp / "ready", tmp / "stop"
        for flag in (self.ready, self.stop):
            flag.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            background_command(
                params, tmp, "--ready-file", str(self.ready), "--stop-file", str(self.stop)
            ),
            stdout=(tmp / "background.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                log = (tmp / "background.log").read_text().splitlines()[-20:]
                raise SystemExit(
                    "the background Ray Train run did not start; its last output:\n"
                    + "\n".join(log)
                )
            time.sleep(0.5)
        time.sleep(10)  # let the actors' start-up work finish: the steady state is measured

    def cpu_seconds(self) -> dict[int, tuple[float, str]]:
        """{pid: (CPU seconds so far, title)} of every process in the run's tree."""
        import psutil
        from train_throughput import tree_cpu_seconds

        tree = tree_cpu_seconds(psutil.Process(self.process.pid))
        return {pid: (cpu, process_title(cmdline)) for pid, (cpu, cmdline) in tree.items()}

    def close(self) -> None:
        self.stop.write_text("stop\n")
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def noop_fit_seconds(params: str, tmp: Path) -> float:
    """Wall time of `ml train`'s trainer.fit() with a worker that returns at once, in a fresh
    process with its own local Ray (whose start is not counted)."""
    result = tmp / "fit-seconds"
    result.unlink(missing_ok=True)
    command = background_command(params, tmp, "--fit-seconds-file", str(result))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not result.exists():
        raise SystemExit(
            "the no-op Ray Train run failed; its last output:\n"
            + done.stdout[-2000:]
            + done.stderr[-2000:]
        )
    return float(result.read_text())


def spread(runs: list[tuple[str, dict]]) -> float:
    """The largest fastest/slowest - 1 of samples/s among runs of the same side and niceness."""
    groups: dict[tuple[str, int], list[float]] = {}
    for side, result in runs:
        groups.setdefault((side, result["niceness"]), []).append(result["samples_per_s"])
    return max(max(rates) / min(rates) - 1 for rates in groups.values())


def write_report(path: Path, args, runs: list[tuple[str, dict]], fit_seconds: list[float]) -> None:
    import torch

    besides = [r for side, r in runs if side == "beside"]
    processes = max(r["background_processes"] for r in besides)
    share = sum(r["background_cpu_share"] for r in besides) / len(besides)
    top = max((r["background_top"] for r in besides), key=lambda t: t[1])
    cores = os.cpu_count() or 1
    niceness = ",".join(str(n) for n in args.niceness)
    worker_niceness = int(os.environ.get("RAY_worker_niceness", "15"))  # noqa: SIM112 (Ray's name)
    lines = [
        "# Ray's own processes against a training step",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`python benchmarks/ray_background.py --rounds {args.rounds} --epochs {args.epochs} "
        f"--niceness {niceness} --fit-runs {args.fit_runs}`.",
        "",
        f"- Machine: {platform.machine()}, {cores} CPU cores; torch {torch.__version__}.",
        "- Foreground: train_throughput.py's plain PyTorch loop (threads = cores), "
        f"{args.epochs} epoch(s) per run, a fresh process each run, at nice {niceness}. Ray "
        "runs its daemons at nice 0 and its workers, the training worker among them, at "
        f"`RAY_worker_niceness`: {worker_niceness} here (Ray's default is 15).",
        '- Background ("beside" runs): `ml train`\'s Ray side, built by its own functions (local '
        "Ray, Ray Data tokenizing the splits, the same TorchTrainer with its controller and "
        "helper actors) with a worker that only waits: "
        f"{processes} processes. Measured from 10 s after its worker is up.",
        "- Order: " + ", ".join(f"{side} (nice {r['niceness']})" for side, r in runs) + ".",
        "",
        "| run | plain loop | nice | training samples/s | background's CPU, % of one core |",
        "|---:|---|---:|---:|---:|",
    ]
    for index, (side, result) in enumerate(runs, 1):
        cell = f"{100 * result['background_cpu_share']:.1f}" if side == "beside" else "-"
        lines.append(
            f"| {index} | {side} | {result['niceness']} | {result['samples_per_s']:.1f} | {cell} |"
        )
    lines.append("")
    for nice in args.niceness:
        rates = {
            side: [r["samples_per_s"] for s, r in runs if s == side and r["niceness"] == nice]
            for side in ("alone", "beside")
        }
        slowdown = (sum(rates["alone"]) / len(rates["alone"])) / (
            sum(rates["beside"]) / len(rates["beside"])
        )
        lines.append(
            f"- **At nice {nice}, the plain loop's steps took {slowdown:.2f}x as long beside "
            "Ray's idle training run** (mean samples/s alone over beside)."
        )
    lines += [
        "",
        f"The background used {100 * share:.1f}% of one core ({100 * share / cores:.1f}% of the "
        f"machine's {cores} cores), spread over its {processes} processes: the busiest, "
        f"`{top[0]}`, took {100 * top[1]:.1f}% of one core.",
        "",
        f"`ml train`'s training worker runs at nice {worker_niceness}: on a machine that its "
        "steps fill, it pays that row's slowdown on every step, whatever its own code does. "
        "Read it against the noise: the fastest and slowest run of one side at one niceness "
        f"differ by up to {100 * spread(runs):.0f}% here, so a slowdown smaller than that is not "
        "told apart from this machine's run-to-run drift by one round.",
    ]
    if fit_seconds:
        runs_text = ", ".join(f"{seconds:.1f}" for seconds in fit_seconds)
        lines += [
            "",
            "## Ray Train's start and stop",
            "",
            "`trainer.fit()` of the same trainer with a worker that returns at once (a fresh "
            "process and local Ray each run; Ray's start not counted) took "
            f"**{sum(fit_seconds) / len(fit_seconds):.1f} s** (runs: {runs_text} s): Ray Train "
            "starting its controller, worker and helper actors and stopping them again. `ml "
            "train` pays it once per run, however long it trains, on top of the per-step cost "
            "above.",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="alone/beside/beside/alone rounds")
    parser.add_argument(
        "--niceness",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[0, 15],
        help="the plain loop's nice values, comma-separated (default 0,15: Ray's daemons' and, "
        "unless RAY_worker_niceness says otherwise, its workers')",
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs per plain-loop run")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument(
        "--output", default=str(ROOT / "reports" / "benchmarks" / "ray-background.md")
    )
    parser.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    parser.add_argument("--fit-seconds-file", help=argparse.SUPPRESS)
    parser.add_argument(
        "--fit-runs", type=int, default=2, help="runs of fit() with a no-op worker (default 2)"
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if args.background:
        background(
            args.params, args.ready_file, args.stop_file, args.storage, args.fit_seconds_file
        )
        return

    import train_throughput

    plain_args = argparse.Namespace(
        device="cpu", epochs=args.epochs, workers=1, rows=None, params=args.params
    )
    runs: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)

        def plain(side: str, niceness: int, ray_side: Background | None = None) -> None:
            before = ray_side.cpu_seconds() if ray_side else {}
            started = time.time()
            result = train_throughput.run_side(
                plain_args, "plain", tmp, len(runs), niceness=niceness
            )
            result["niceness"] = niceness
            if ray_side:
                wall = time.time() - started
                after = ray_side.cpu_seconds()
                shares = {
                    title: (cpu - before.get(pid, (0.0, ""))[0]) / wall
                    for pid, (cpu, title) in after.items()
                }
                result["background_cpu_share"] = sum(shares.values())
                result["background_processes"] = len(after)
                result["background_top"] = max(shares.items(), key=lambda item: item[1])
            runs.append((side, result))

        for _ in range(args.rounds):
            for niceness in args.niceness:
                plain("alone", niceness)
            ray_side = Background(args.params, tmp)
            try:
                for niceness in [*args.niceness, *reversed(args.niceness)]:
                    plain("beside", niceness, ray_side)
            finally:
                ray_side.close()
            for niceness in reversed(args.niceness):
                plain("alone", niceness)
        fit_seconds = [noop_fit_seconds(args.params, tmp) for _ in range(args.fit_runs)]
    write_report(Path(args.output), args, runs, fit_seconds)
    print(Path(args.output).read_text())


if __name__ == "__main__":
    main()
