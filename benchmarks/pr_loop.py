"""Wall time of the `pr` workflow under act on this machine: the full default config, cold, then
again with nothing changed (the DVC run cache restores every stage it can).

    python benchmarks/pr_loop.py            # writes reports/benchmarks/pr_loop.md

Goals (issue #7): <= 6 min cold, <= 60 s unchanged, on a 2-core machine. The Ray cluster is
two local nodes of 1 CPU each; MLflow is a SQLite store; the DVC remote is a local folder.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import (  # noqa: E402
    build_act_repo,
    pr_event,
    ray_cluster,
    run_act,
)
from tests.engines import mlflow_server  # noqa: E402

REPORT = ROOT / "reports" / "benchmarks" / "pr_loop.md"
GOALS = {"cold": 360.0, "unchanged": 60.0}


def step_times(log: str) -> list[tuple[str, float]]:
    """(step, seconds) for the train job's steps, from act's 'Success - Main NAME [1m2.3s]'."""
    rows = []
    for name, duration in re.findall(
        r"\[pr/train\s*\]\s+✅\s+Success - Main (.+?) \[([^\]]+)\]", log
    ):
        match = re.fullmatch(r"(?:(\d+)m)?([\d.]+)(ms|µs|s)", duration)
        if match:
            minutes, value, unit = match.groups()
            scale = {"s": 1.0, "ms": 1e-3, "µs": 1e-6}[unit]
            rows.append((name, int(minutes or 0) * 60 + float(value) * scale))
    return rows


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="pr-loop-"))
    results = {}
    with mlflow_server(base / "mlflow") as tracking, ray_cluster(base) as cluster:
        repo = build_act_repo(base, tracking)
        for run in ("cold", "unchanged"):
            start = time.perf_counter()
            result = run_act(repo, cluster, "pull_request", "pr.yml", pr_event(repo))
            wall = time.perf_counter() - start
            log = result.stdout + result.stderr
            cached = re.findall(r"Stage '(\w+)' is cached", log)
            results[run] = (wall, result.returncode, step_times(log), cached)
            print(f"{run}: {wall:.0f}s exit {result.returncode}; cached stages {cached}")
            if result.returncode != 0:
                print(log[-4000:])
                return 1

    load = os.getloadavg()
    lines = [
        "# PR loop: the `pr` workflow under act",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the "
        "end (shared machine). Default params (full training), a two-node local Ray cluster "
        "(1 CPU each), a local `mlflow server`, a local DVC remote. One run each, same checkout.",
        "",
        "| run | wall | goal | met | stages restored from the run cache |",
        "| --- | ---: | ---: | :-: | --- |",
    ]
    for run, (wall, _, _, cached) in results.items():
        met = "yes" if wall <= GOALS[run] else "no"
        lines.append(
            f"| {run} | {wall:.0f} s | {GOALS[run]:.0f} s | {met} | {', '.join(cached) or '-'} |"
        )
    lines += [
        "",
        "Train job steps (seconds):",
        "",
        "| step | cold | unchanged |",
        "| --- | ---: | ---: |",
    ]
    cold_steps, warm_steps = dict(results["cold"][2]), dict(results["unchanged"][2])
    for name in cold_steps:
        lines.append(
            f"| {name} | {cold_steps[name]:.1f} | {warm_steps.get(name, float('nan')):.1f} |"
        )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
