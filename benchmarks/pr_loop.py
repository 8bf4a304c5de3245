"""Wall time of the `pr` workflow under act on this machine, per task: the full default params
of the task, cold (empty remotes), then again with nothing changed after main ran on the same
inputs (the DVC run cache in the trusted remote restores every stage it can).

    python benchmarks/pr_loop.py                 # both tasks; writes reports/benchmarks/pr_loop.md
    python benchmarks/pr_loop.py --task image    # one task; the other's last figures are kept
    python benchmarks/pr_loop.py --task image-subset   # the image workflow on a small subset

text: a PR editing the madewithml model's params.yaml; image: one editing the fashion-mnist
model's configs/fashion-mnist.yaml (so the workflow's matrix holds that one model), each model
reading its folder of ML_DATA_MIRROR_ROOT. Goals (issue #7, text): <= 6 min cold, <= 60 s
unchanged, on a 2-core machine; image (issue #22): `ml train` in <= 10 min on 2 cores. The Ray
cluster is two local nodes of 1 CPU each (tests/e2e/harness.py); MLflow is a local `mlflow
server`; the DVC remote is a local folder. Each task gets a fresh cluster, server, remote and
repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import shared_data_dir  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    build_act_repo,
    pr_event,
    pull_request,
    ray_cluster,
    run_act,
)
from tests.engines import mlflow_server  # noqa: E402

REPORT = ROOT / "reports" / "benchmarks" / "pr_loop.md"
# The raw figures of the last run of each task: a one-task run rewrites only its own.
RESULTS = REPORT.with_suffix(".json")
# The job's own limit is 60 minutes (pr.yml); a cold image run on 1-CPU workers needs more
# than the harness's default 30.
ACT_TIMEOUT_S = 3600
RUNS = ("cold", "unchanged")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    params_file: Path | None  # None: the repository's params.yaml
    mirror: Path
    goals: dict[str, float]  # run -> seconds; absent: no goal for that run
    # Sections merged over the params file: only for the subset check, never the defaults.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""


# A plumbing check of the image workflow in minutes, not a measurement of the defaults.
IMAGE_SUBSET = {
    "split": {"max_train_rows": 1000, "max_holdout_rows": 300},
    "train": {"epochs": 1},
    "gate": {"floors": {"accuracy": 0.1, "f1_weighted": 0.05, "f1_macro": 0.05}},
}
TASKS = {
    "text": TaskSpec("text", None, shared_data_dir() / "madewithml",
                     {"cold": 360.0, "unchanged": 60.0}),
    "image": TaskSpec("image", ROOT / "configs" / "fashion-mnist.yaml",
                      shared_data_dir() / "fashion-mnist", {"unchanged": 60.0}),
    "image-subset": TaskSpec(
        "image-subset", ROOT / "configs" / "fashion-mnist.yaml",
        shared_data_dir() / "fashion-mnist", {}, IMAGE_SUBSET,
        "NOT the defaults: a seeded 1,000 training / 300 test images, 1 epoch, floors lowered; "
        "it shows the image workflow runs end to end on the 1-CPU nodes"),
}  # fmt: skip
TRAIN_GOAL_S = {"image": 600.0}  # `ml train` alone (issue #22)


def task_change(spec: TaskSpec) -> dict[str, Any]:
    """The PR under measurement: it edits the task's model's params file only (the overrides,
    if any, and a comment line), so the PR workflow's matrix holds that one model."""
    path = "params.yaml" if spec.params_file is None else str(spec.params_file.relative_to(ROOT))

    def edit(text: str) -> str:
        if spec.overrides:
            params = yaml.safe_load(text)
            for section, values in spec.overrides.items():
                params.setdefault(section, {}).update(values)
            text = yaml.safe_dump(params, sort_keys=False)
        return text + "\n# the pull request under measurement (benchmarks/pr_loop.py)\n"

    return {path: edit}


class LoadSampler:
    """The 1-minute load average every few seconds while a run goes on."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every_s)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        values = self.samples or [os.getloadavg()[0]]
        return {"mean": sum(values) / len(values), "max": max(values), "min": min(values)}


def step_times(log: str) -> list[tuple[str, str, float]]:
    """(job, step, seconds) from act's '[pr/JOB] ✅ Success - Main NAME [1m2.3s]' lines."""
    rows = []
    for job, name, duration in re.findall(
        r"\[pr/(\w+)\s*\]\s+✅\s+Success - Main (.+?) \[([^\]]+)\]", log
    ):
        match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?([\d.]+)(ms|µs|s)", duration)
        if match:
            hours, minutes, value, unit = match.groups()
            scale = {"s": 1.0, "ms": 1e-3, "µs": 1e-6}[unit]
            seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(value) * scale
            rows.append((job, name, seconds))
    return rows


def log_facts(log: str) -> dict[str, Any]:
    """What `ml train` and `ml evaluate` printed: the scaling, each epoch's seconds, the
    holdout line."""
    epochs = dict(re.findall(r"\[train\] epoch (\d+)/\d+ .*?([\d.]+)s\s+[\d.]+ samples/s", log))
    holdout = re.search(r"holdout: (accuracy [^\n]+)", log)
    workers = re.search(
        r"worker group of size (\d+) with the following resources: (\[[^\]]*\])", log
    )
    return {
        "epoch_s": [float(epochs[k]) for k in sorted(epochs, key=int)],
        "holdout": holdout.group(1).strip() if holdout else None,
        "workers": f"{workers.group(1)} x {workers.group(2)}" if workers else None,
    }


def training_run(tracking: str) -> dict[str, Any]:
    """The newest MLflow run that `ml train` finished: its duration, throughput and metrics
    (the act job runs in act's own copy of the repository, so reports/ is not at hand)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "metrics.duration_s > 0", max_results=1,
                              order_by=["attributes.start_time DESC"])  # fmt: skip
    if not runs:
        return {}
    run = runs[0]
    return {"run_id": run.info.run_id, "params": dict(run.data.params),
            "metrics": dict(run.data.metrics)}  # fmt: skip


def main_pushed(base: Path) -> None:
    """The trusted remote as main.yml leaves it after running the same inputs: a PR job reads
    only that remote (it pushes to the PR-only one, which no job reads), so without main's
    run a PR's second run with nothing changed runs every stage again. The cold PR run's
    outputs stand in for main's: same stages, same deps and params, so the same run-cache
    entries."""
    shutil.copytree(base / "dvc-remote-pr", base / "dvc-remote", dirs_exist_ok=True)


def measure(spec: TaskSpec) -> dict[str, Any]:
    """Cold then unchanged, on a fresh cluster, server, remote and repository."""
    base = Path(tempfile.mkdtemp(prefix=f"pr-loop-{spec.name}-"))
    runs: dict[str, Any] = {}
    with mlflow_server(base / "mlflow") as tracking, ray_cluster(base) as cluster:
        repo = build_act_repo(base, tracking)
        for run in RUNS:
            if run == "unchanged":
                main_pushed(base)
            with LoadSampler() as load, pull_request(repo, "a change", task_change(spec)):
                start = time.perf_counter()
                result = run_act(repo, cluster, "pull_request", "pr.yml", pr_event(repo),
                                 timeout=ACT_TIMEOUT_S, mirror=spec.mirror)  # fmt: skip
                wall = time.perf_counter() - start
            log = result.stdout + result.stderr
            (base / f"act-{run}.log").write_text(log)
            runs[run] = {
                "wall_s": wall,
                "exit": result.returncode,
                "steps": step_times(log),
                "cached": re.findall(r"Stage '(\w+)' is cached", log),
                "load": load.summary(),
                "training": training_run(tracking) if run == "cold" else {},
                "facts": log_facts(log),
            }
            print(f"{spec.name} {run}: {wall:.0f}s exit {result.returncode}; "
                  f"cached {runs[run]['cached']}; logs in {base}", flush=True)  # fmt: skip
            if result.returncode != 0:
                print(log[-4000:])
                break
    return {"measured": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "logs": str(base),
            "runs": runs}  # fmt: skip


def fmt_goal(spec: TaskSpec, run: str, wall: float) -> tuple[str, str]:
    goal = spec.goals.get(run)
    if goal is None:
        return "-", "-"
    return f"{goal:.0f} s", "yes" if wall <= goal else "no"


def training_lines(name: str, cold: dict[str, Any]) -> list[str]:
    """The cold run's training: `ml train`'s time against the goal, the scaling, the epochs,
    the holdout scores."""
    metrics = cold.get("training", {}).get("metrics", {})
    facts = cold.get("facts", {})
    if "duration_s" not in metrics:
        return []
    duration = metrics["duration_s"]
    line = (f"`ml train` (the MLflow run's duration_s): **{duration:.0f} s**, "
            f"{metrics.get('samples_per_s', float('nan')):.0f} training samples/s")  # fmt: skip
    goal = TRAIN_GOAL_S.get(name)
    if goal is not None:
        met = "met" if duration <= goal else "not met"
        line += f"; goal {goal:.0f} s on 2 cores: {met} on this cluster"
    best = {k: v for k, v in sorted(metrics.items()) if k.startswith("best_val_")}
    if best:
        line += "; best epoch " + ", ".join(f"{k.removeprefix('best_')} {v:.4f}"
                                           for k, v in best.items())  # fmt: skip
    lines = [line + ".", ""]
    if facts.get("workers"):
        lines.append(f"- Ray Train workers x resources each: {facts['workers']}")
    if facts.get("epoch_s"):
        epochs = facts["epoch_s"]
        lines.append(
            f"- {len(epochs)} epochs, seconds each: " + ", ".join(f"{e:.0f}" for e in epochs)
        )
    if facts.get("holdout"):
        lines.append(f"- `ml evaluate`, holdout: {facts['holdout']}")
    return [*lines, ""] if len(lines) > 2 else lines


def task_section(spec: TaskSpec, data: dict[str, Any]) -> list[str]:
    runs = data["runs"]
    params = "params.yaml" if spec.params_file is None else (
        f"{spec.params_file.relative_to(ROOT)} (the fashion-mnist model)")  # fmt: skip
    lines = [
        f"## {spec.name} ({params})",
        "",
        f"Measured {data['measured']}."
        + (f" {spec.note}." if spec.note else "")
        + (f" {data['note']}" if data.get("note") else ""),  # a note added to the figures
        "",
        "| run | wall | exit | goal | met | load (1-min) mean / max | from the run cache |",
        "| --- | ---: | ---: | ---: | :-: | ---: | --- |",
    ]
    for run, r in runs.items():
        goal, met = fmt_goal(spec, run, r["wall_s"])
        load = f"{r['load']['mean']:.1f} / {r['load']['max']:.1f}"
        lines.append(f"| {run} | {r['wall_s']:.0f} s | {r['exit']} | {goal} | {met} | {load} "
                     f"| {', '.join(r['cached']) or '-'} |")  # fmt: skip
    lines.append("")
    lines += training_lines(spec.name, runs.get("cold", {}))
    lines += ["Steps (seconds):", "", "| job | step | cold | unchanged |",
              "| --- | --- | ---: | ---: |"]  # fmt: skip
    steps = {run: {(j, s): t for j, s, t in r["steps"]} for run, r in runs.items()}
    for key in steps.get("cold", {}):
        warm = steps.get("unchanged", {}).get(key)
        warm_text = "-" if warm is None else f"{warm:.1f}"
        lines.append(f"| {key[0]} | {key[1]} | {steps['cold'][key]:.1f} | {warm_text} |")
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    lines = [
        "# PR loop: the `pr` workflow under act",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores **shared with other "
        "sessions' tests and benchmarks** (noisy: the load average beside each figure; 2.0 "
        "means both cores busy). Per task: its full default params (what a user runs), a "
        "two-node local Ray cluster of 1 CPU each (so `train.cpus_per_worker: auto` gives one "
        "1-CPU worker), a local `mlflow server`, local DVC remotes; the workflow cold (empty "
        "remotes), then again unchanged. One run each. "
        "`python benchmarks/pr_loop.py [--task text|image|image-subset]`.",
        "",
        "*Unchanged* means: main has run on the same inputs. A PR job reads only the trusted "
        "remote and pushes to the PR-only one, which no job reads, so a PR's second run with "
        "nothing changed and no main run in between runs every stage again, training included "
        "(seen on the text task: the second run was retraining when stopped). The benchmark "
        "copies the cold run's run cache into the trusted remote, as main's run of the same "
        "stages, deps and params leaves it.",
        "",
        "Goals: text (issue #7) <= 360 s cold, <= 60 s unchanged; image (issue #22) `ml train` "
        "<= 600 s on 2 cores (here one 1-CPU worker: half of that machine).",
        "",
    ]
    for name, spec in TASKS.items():
        if name in results:
            lines += task_section(spec, results[name])
    return "\n".join(lines)


def backfill_facts(data: dict[str, Any]) -> None:
    """Facts of runs recorded before log_facts existed, from the act logs kept beside them."""
    for run, r in data["runs"].items():
        log = Path(data["logs"]) / f"act-{run}.log"
        if "facts" not in r and log.exists():
            r["facts"] = log_facts(log.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The pr workflow under act, cold then unchanged.")
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both",
                        help="both: text and image, the defaults")  # fmt: skip
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite the report from the last figures (and their logs)",
    )
    args = parser.parse_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.render:
        for data in results.values():
            backfill_facts(data)
        REPORT.write_text(render(results))
        return 0
    failed = False
    for name in ("text", "image") if args.task == "both" else [args.task]:
        results[name] = measure(TASKS[name])
        failed |= any(r["exit"] != 0 for r in results[name]["runs"].values())
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        REPORT.write_text(render(results))
        print(f"wrote {REPORT.relative_to(ROOT)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
