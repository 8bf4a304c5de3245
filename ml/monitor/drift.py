"""`ml monitor drift`: a window of the prediction log against the training reference.

Written once for every task: ml/monitor/window.py reads the log window (tolerantly, through
fsspec), this module scores it and decides; what is compared comes from the configured task
(`task_of(settings)`): its reference (`drift_reference`, see ml/monitor/reference.py), its
per-record features (`drift_features`) and which records it can use (`drift_record_problem`).

Signals (each a drift score with a threshold from `monitor.thresholds`):
  - embedding   MMD^2 between the window's embeddings (a seeded sample) and the reference's
                (Evidently's `mmd` embedding-drift method; RBF kernel, median bandwidth).
                Text: base MiniLM-L6 sentence embeddings of the texts. Image: the CNN's
                penultimate features, logged with each prediction.
  - the task's column signals, in one Evidently Report (`ValueDrift`) over every row of the
    window. Text: text_length, oov_rate. Image: mean_intensity, contrast, blank_share.
    Both: label (Jensen-Shannon distance between predicted-class distributions) and confidence
    (Wasserstein distance / reference std of the top-class probability).

Decision: fewer valid records than `monitor.min_window` is "not enough data" (never "no drift");
otherwise "drift" when any available signal's score exceeds its threshold.

Exit codes of the CLI (also in `ml monitor drift --help` and docs/monitoring.md):
  0 no drift, 3 drift, 4 not enough data, 1 error (unreadable log/reference), 2 bad config/usage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings

# MonitorError and Signal live in the leaf module the tasks share; the text statistics are
# re-exported for existing callers (tests import them from here).
from ml.monitor.signals import (
    MonitorError,
    Reference,
    Signal,
    column_report,
    embedding_signal,
)
from ml.monitor.text_stats import document_frequency, oov_rates, tokens
from ml.monitor.window import LogWindow, parse_since, read_log_window

if TYPE_CHECKING:
    import pandas as pd

EXIT_NO_DRIFT = 0
EXIT_ERROR = 1
EXIT_DRIFT = 3
EXIT_NOT_ENOUGH_DATA = 4
EXIT_CODES = {
    "no_drift": EXIT_NO_DRIFT,
    "drift": EXIT_DRIFT,
    "not_enough_data": EXIT_NOT_ENOUGH_DATA,
}

# Re-exported: callers (tests, benchmarks, the CLI) import these from here.
__all__ = [
    "LogWindow",
    "MonitorError",
    "Signal",
    "document_frequency",
    "oov_rates",
    "parse_since",
    "read_log_window",
    "tokens",
]


# --- scores and decision ------------------------------------------------------------------------


@dataclass
class Decision:
    verdict: str  # "drift" | "no_drift" | "not_enough_data"
    reasons: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


def decide(signals: Sequence[Signal], valid_rows: int, min_window: int) -> Decision:
    """Pure decision: too few rows is never "no drift"; any drifted signal is drift."""
    if valid_rows < min_window:
        return Decision(
            "not_enough_data",
            [
                f"{valid_rows} valid record(s) in the window, {min_window} needed "
                "(monitor.min_window)"
            ],
        )
    drifted = [s for s in signals if s.available and s.drifted]
    if drifted:
        return Decision(
            "drift",
            [f"{s.name}: {s.method} {s.score:.4f} > {s.threshold}" for s in drifted],
        )
    checked = [s.name for s in signals if s.available]
    return Decision("no_drift", [f"no signal above its threshold ({', '.join(checked)})"])


# --- the stage ----------------------------------------------------------------------------------


@dataclass
class DriftResult:
    decision: Decision
    signals: list[Signal]
    window: dict[str, Any]
    reference: dict[str, Any]
    summary_path: Path | None
    html_path: Path | None
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.decision.verdict,
            "drift": self.decision.verdict == "drift",
            "exit_code": self.decision.exit_code,
            "reasons": self.decision.reasons,
            "signals": [asdict(s) for s in self.signals],
            "window": self.window,
            "reference": self.reference,
            "html_report": str(self.html_path) if self.html_path else None,
            "timings_s": self.timings,
        }


def log_location(settings: Settings, override: str | None = None) -> str:
    """--log-dir, else serve.prediction_log_dir ($ML_PREDICTION_LOG_DIR overrides it in
    load_settings), resolved against the project root unless it is a URI."""
    location = override or settings.serve.prediction_log_dir
    return location if "://" in location else str(settings.path(location))


def score_window(
    settings: Settings, frame: pd.DataFrame, reference: Reference, embed: Any = None
) -> tuple[Any, list[Signal], dict[str, Any], dict[str, float]]:
    """The task's features of the window scored against the reference: (Evidently snapshot,
    signals, the task's window facts, timings). `embed` replaces the task's encoder (tests)."""
    from ml.tasks import task_of

    cfg = settings.monitor
    task = task_of(settings)
    features = task.drift_features(frame, settings, reference, embed=embed)
    timings = dict(features.timings)
    started = time.perf_counter()
    signals = [
        embedding_signal(
            reference.embeddings,
            features.embeddings,
            cfg.thresholds.embedding,
            cfg.min_window,
            features.note,
            cfg.embedding_reference_sample,
            cfg.seed,
        )
    ]
    timings["mmd"] = time.perf_counter() - started
    started = time.perf_counter()
    snapshot, column_signals = column_report(reference, features.columns, cfg.thresholds)
    timings["evidently"] = time.perf_counter() - started
    return snapshot, signals + column_signals, features.info, timings


def _window_info(
    settings: Settings, window: LogWindow, signals: list[Signal], facts: dict[str, Any]
) -> dict[str, Any]:
    frame, valid = window.frame, len(window.frame)
    texts = frame.get("text", ())
    return {
        "source": window.source,
        "since": window.since,
        "last_n": window.last_n,
        "files": window.files,
        "lines": window.lines,
        "valid_records": valid,
        "malformed_records": window.malformed,
        "malformed_examples": window.malformed_examples,
        # The CLI prints it for every task (0 where the log holds no texts).
        "records_with_text": sum(isinstance(t, str) for t in texts),
        **facts,
        "embedded_sample": next((s.rows for s in signals if s.name == "embedding"), 0),
        "first_ts": frame["ts"].min().isoformat() if valid else None,
        "last_ts": frame["ts"].max().isoformat() if valid else None,
        "model_versions": frame["model_version"].dropna().astype(str).value_counts().to_dict(),
        "min_window": settings.monitor.min_window,
    }


def check_drift(
    settings: Settings,
    window: LogWindow,
    reference: Reference | None,
    embed: Any = None,
    write: bool = True,
) -> DriftResult:
    """Score a window against a reference (ml.monitor.reference.load_reference), decide, and
    (with `write`) save the Evidently HTML report and the JSON summary under monitor.report_dir.
    `embed` replaces the task's encoder (text: texts -> embeddings), for tests and benchmarks."""
    cfg = settings.monitor
    started = time.perf_counter()
    signals: list[Signal] = []
    snapshot, facts, timings = None, {}, {}
    valid = len(window.frame)
    if valid >= cfg.min_window:
        if reference is None:
            raise MonitorError("a window of this size needs a reference; none was given")
        snapshot, signals, facts, timings = score_window(settings, window.frame, reference, embed)
    decision = decide(signals, valid, cfg.min_window)
    window_info = _window_info(settings, window, signals, facts)
    summary_path = html_path = None
    if write:
        from ml.io import atomic_path

        out_dir = settings.path(cfg.report_dir)
        summary_path = out_dir / "summary.json"
        if snapshot is not None:
            html_path = out_dir / "report.html"
            t0 = time.perf_counter()
            with atomic_path(html_path) as tmp:
                snapshot.save_html(str(tmp))
            timings["html"] = time.perf_counter() - t0
        else:
            (out_dir / "report.html").unlink(missing_ok=True)  # no stale report beside a verdict
    timings["total"] = time.perf_counter() - started
    result = DriftResult(
        decision,
        signals,
        window_info,
        reference.describe() if reference is not None else {},
        summary_path,
        html_path,
        {k: round(v, 3) for k, v in timings.items()},
    )
    if write and summary_path is not None:
        from ml.io import write_json

        write_json(summary_path, {"checked_at": datetime.now(UTC).isoformat(), **result.to_dict()})
    return result


def github_output_lines(result: DriftResult) -> list[str]:
    """`key=value` lines for $GITHUB_OUTPUT (a workflow's `if:` reads steps.<id>.outputs.drift)."""
    return [
        f"verdict={result.decision.verdict}",
        f"drift={'true' if result.decision.verdict == 'drift' else 'false'}",
        f"exit_code={result.decision.exit_code}",
        f"valid_records={result.window['valid_records']}",
        f"summary={result.summary_path or ''}",
        # One line of JSON: a later job (on another runner) puts the verdict in its PR body.
        "decision="
        + json.dumps({"verdict": result.decision.verdict, "reasons": result.decision.reasons}),
    ]


def write_github_output(result: DriftResult, path: str | None) -> bool:
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(github_output_lines(result)) + "\n")
    return True


def monitor_drift(
    settings: Settings,
    log_dir: str | None = None,
    since: str | None = None,
    last_n: int | None = None,
    model_dir: str | None = None,
) -> DriftResult:
    """The `ml monitor drift` stage: read the window, load (or build) the reference, check."""
    from ml.monitor.reference import load_reference
    from ml.tasks import task_of

    cfg = settings.monitor
    window = read_log_window(
        log_location(settings, log_dir),
        since if since is not None else cfg.window_since,
        last_n if last_n is not None else cfg.window_last_n,
        check=task_of(settings).drift_record_problem,
    )
    # Too few records is decided before the (possibly slow) reference is built or loaded.
    enough = len(window.frame) >= cfg.min_window
    reference = load_reference(settings, model_dir=model_dir) if enough else None
    return check_drift(settings, window, reference)
