"""The image task's part of benchmarks/drift.py: false alarms and detection on Fashion-MNIST.

- Project: the real files split as configs/fashion-mnist.yaml does (seeded, 54,000 train /
  6,000 val from the training file; the 10,000 t10k images are the holdout), the CNN of that
  config trained briefly (one epoch on a stratified subset of train, plain loop) so windows
  carry real predictions and penultimate features. Built once under data/monitor/bench-image.
- Same-distribution windows: `--window` records bootstrapped from the holdout (never in the
  reference), each record as the serving replica logs it (the task's log_fields).
- Shifted windows: brightness (+10 and +25 of 255 levels on every pixel), contrast (values
  scaled by 0.75 about each image's mean), a 30% class-mix shift (that share of the window from
  Pullover, Coat, Ankle boot only) and 5% blank (constant) images.
Each window goes through the monitor's own check (ml.monitor.drift.check_drift) with the
thresholds of configs/fashion-mnist.yaml.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.monitor.drift import LogWindow, check_drift
from tests.monitor import image_windows as iw

CONDITIONS: dict[str, str] = {
    "none": "same distribution",
    "brightness10": "brightness +10",
    "brightness": f"brightness +{iw.BRIGHTNESS}",
    "contrast": f"contrast x{iw.CONTRAST}",
    "class_mix": "30% class mix (" + ", ".join(iw.SHIFT_CLASSES) + ")",
    "blank": "5% blank images",
}
GOALS = {"none": "<= 5%", "brightness": ">= 95%", "contrast": ">= 95%", "class_mix": ">= 95%"}


def project(root: Path, train_rows: int, epochs: int, model_dir: Path | None) -> dict[str, Any]:
    """Settings, predictor and the holdout pool of the benchmark project (built on first use)."""
    from ml.config import load_settings
    from ml.data.splits import split_path
    from ml.tasks import task_of

    root.mkdir(parents=True, exist_ok=True)
    # Rewritten each run (same seed, same splits) so params follow configs/fashion-mnist.yaml.
    iw.write_image_project(root, 48_000, 12_000, 10_000, seed=42, image={})
    os.chdir(root)
    settings = load_settings(root / "params.yaml")
    task = task_of(settings)
    trained = f"the configured CNN, {epochs} epoch(s) on {train_rows:,} train images"
    if model_dir is None:
        model_dir = root / "models" / f"cnn-{train_rows}-{epochs}"
        if not (model_dir / "meta.json").is_file():
            started = time.perf_counter()
            iw.train_cnn(settings, model_dir, epochs=epochs, rows=train_rows)
            trained += f" (trained in {time.perf_counter() - started:.0f} s)"
    else:
        trained = f"model {model_dir}"
    predictor = task.load_predictor(model_dir)
    test = task.read_split(settings, split_path(settings, "test"))
    pool, pool_labels = np.asarray(test.inputs), list(test.labels)
    predicted = np.array(predictor.labels)[predictor.predict_proba(pool).argmax(1)]
    accuracy = float((predicted == np.array(pool_labels)).mean())
    return {
        "settings": settings,
        "model_dir": model_dir,
        "predictor": predictor,
        "pool": pool,
        "pool_labels": pool_labels,
        "model": f"{trained}; holdout accuracy {accuracy:.3f}",
    }


def record_pools(bench: dict[str, Any], seed: int = 0) -> dict[str, pd.DataFrame]:
    """Log records of every holdout image, unshifted and per pixel shift (the model runs once per
    pool; windows are bootstrapped from these), and of 500 blank images."""
    settings, predictor, pool = bench["settings"], bench["predictor"], bench["pool"]
    rng = np.random.default_rng(seed)
    shifted = {
        "none": pool,
        "brightness10": np.clip(pool.astype(np.int16) + 10, 0, 255).astype(np.uint8),
        "brightness": iw.shift_images(pool, "brightness"),
        "contrast": iw.shift_images(pool, "contrast"),
        "blank": np.repeat(rng.integers(0, 256, (500, 1, 1), dtype=np.uint8), 28 * 28).reshape(
            500, 28, 28
        ),
    }
    pools = {}
    for name, images in shifted.items():
        frame = pd.DataFrame(iw.prediction_records(settings, predictor, images))
        pools[name] = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True))
    in_group = np.flatnonzero([v in iw.SHIFT_CLASSES for v in bench["pool_labels"]])
    pools["class_mix"] = pools["none"].iloc[in_group].reset_index(drop=True)
    return pools


def window_frame(pools: dict[str, pd.DataFrame], kind: str, size: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = pools["none"]
    share = {"class_mix": 0.3, "blank": 0.05}.get(kind, 0.0)
    if kind in ("none", "class_mix", "blank"):
        mixed = round(share * size)
        other = pools[kind] if mixed else base
        rows = [base.iloc[rng.integers(0, len(base), size - mixed)]]
        rows.append(other.iloc[rng.integers(0, len(other), mixed)])
        frame = pd.concat(rows, ignore_index=True)
    else:
        frame = pools[kind].iloc[rng.integers(0, len(pools[kind]), size)]
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    start = pd.Timestamp("2026-01-01T00:00:00Z")
    return frame.assign(ts=start + pd.to_timedelta(np.arange(len(frame)), unit="s"))


def run(bench: dict[str, Any], reps: int, seed0: int, size: int) -> dict[str, Any]:
    """Per condition: a frame of per-window verdicts and scores, and seconds per window."""
    from ml.monitor.reference import load_reference

    settings = bench["settings"]
    reference = load_reference(settings, model_dir=bench["model_dir"])
    pools = record_pools(bench)
    results, timing = {}, {}
    for kind in CONDITIONS:
        started = time.perf_counter()
        rows = []
        for rep in range(reps):
            frame = window_frame(pools, kind, size, seed0 + rep)
            result = check_drift(settings, LogWindow(frame, "bootstrap"), reference, write=False)
            row: dict[str, Any] = {"drift": result.decision.verdict == "drift"}
            for signal in result.signals:
                row[signal.name] = signal.score
                row[f"{signal.name}_drift"] = signal.drifted
            rows.append(row)
        results[kind] = pd.DataFrame(rows)
        timing[kind] = (time.perf_counter() - started) / reps
        print(f"image {CONDITIONS[kind]}: drift in {results[kind]['drift'].mean():.1%} of {reps}")
    return {"results": results, "timing": timing, "reference": reference}


def calibration_lines(run_out: dict[str, Any]) -> list[str]:
    lines = []
    for kind, frame in run_out["results"].items():
        lines.append(f"image {CONDITIONS[kind]} score quantiles (0, 50, 95, 99, 100%):")
        for name in ["embedding", *run_out["reference"].signals]:
            if name in frame and frame[name].notna().any():
                q = np.nanpercentile(frame[name].astype(float), [0, 50, 95, 99, 100])
                lines.append(f"  {name:<15} " + " ".join(f"{v:.4f}" for v in q))
    return lines


def upper_bound(successes: int, trials: int, level: float = 0.95) -> float:
    from scipy.stats import beta

    return 1.0 if successes >= trials else float(beta.ppf(level, successes + 1, trials - successes))


def report_lines(args: Any, bench: dict[str, Any], run_out: dict[str, Any]) -> list[str]:
    cfg = bench["settings"].monitor
    reference, results = run_out["reference"], run_out["results"]
    signals = ["embedding", *reference.signals]
    methods = {
        "mmd": "MMD² (RBF, median bandwidth; Evidently `mmd`)",
        "wasserstein": "Wasserstein distance / reference std (Evidently `wasserstein`)",
        "jensenshannon": "Jensen-Shannon distance (Evidently `jensenshannon`)",
    }
    lines = [
        "## Image classification (Fashion-MNIST)",
        "",
        f"`python benchmarks/drift.py --task image-classification --reps {args.reps} "
        f"--window {args.window}` on {platform.machine()} with {os.cpu_count()} CPU cores "
        f"(shared with other work; run times are one run), Python {platform.python_version()}.",
        "",
        "### Setup",
        f"- Reference: image statistics of {', '.join(cfg.reference_splits)} "
        f"({reference.info['rows']:,} images); predictions and penultimate features of the "
        f"model on {cfg.prediction_reference_split} ({reference.info['prediction_rows']:,} "
        f"images; the MMD uses a seeded sample of {cfg.embedding_reference_sample}).",
        f"- Model: {bench['model']}. A briefly trained model, not the pipeline's: the monitor "
        "compares the model's features with themselves, so any trained CNN exercises it.",
        f"- Windows: {args.window} records bootstrapped (with replacement) from the 10,000 "
        "holdout images (t10k, never in the reference); each record as serving logs it "
        "(statistics, the predicted class and confidence, the 4-decimal penultimate features).",
        "- Shifts: brightness +10 / +25 intensity levels (of 255) on every pixel, clipped; "
        f"contrast: values scaled by {iw.CONTRAST} about each image's mean; class mix: 30% of "
        f"the window from {', '.join(iw.SHIFT_CLASSES)} only (the rest from all classes); "
        "blank: 5% of the window constant images.",
        f"- Repetitions: {args.reps} per condition, seeds 0..{args.reps - 1}; thresholds chosen "
        f"beforehand from `--calibrate` runs on seeds {args.calibration_offset}+. Embedding "
        f"sample: {cfg.embedding_sample} records per window.",
        "",
        "### Thresholds (configs/fashion-mnist.yaml `monitor.thresholds`)",
        "",
        "| signal | method | threshold |",
        "|---|---|---|",
    ]
    all_methods = {"embedding": "mmd", **reference.signals}
    for name in signals:
        lines.append(f"| {name} | {methods[all_methods[name]]} | {getattr(cfg.thresholds, name)} |")
    lines += [
        "",
        "### Results",
        "",
        "| window | flagged as drift | goal | " + " | ".join(signals) + " | time / window |",
        "|---|---|---|" + "---|" * len(signals) + "---|",
    ]
    for kind, frame in results.items():
        cells = [
            f"{frame[f'{s}_drift'].mean():.1%}" if f"{s}_drift" in frame else "-" for s in signals
        ]
        lines.append(
            f"| {CONDITIONS[kind]} | **{frame['drift'].mean():.1%}** | {GOALS.get(kind, '-')} | "
            + " | ".join(cells)
            + f" | {run_out['timing'][kind]:.2f}s |"
        )
    null = results["none"]
    alarms, n = int(null["drift"].sum()), len(null)
    lines += [
        "",
        "Per-signal columns: share of windows where that signal alone exceeded its threshold. "
        f"False alarms: {alarms} of {n} same-distribution windows; one-sided 95% upper bound "
        f"(Clopper-Pearson) {upper_bound(alarms, n):.1%}. Times per window are on a machine "
        "shared with other work (the first condition also warms the caches).",
        "",
        "Median scores on same-distribution windows: "
        + ", ".join(f"{s} {null[s].median():.4f}" for s in signals if s in null)
        + ".",
    ]
    return lines
