"""`ml monitor drift`: a window of the prediction log against the training reference.

Signals (each a drift score with a threshold from `monitor.thresholds`):
  - embedding   MMD^2 between sentence embeddings (base MiniLM-L6 encoder, mean pooled) of a
                seeded sample of the window's texts and of the reference texts (Evidently's
                `mmd` embedding-drift method; RBF kernel, median bandwidth).
  - text_length Wasserstein distance / reference std of text length in characters.
  - oov_rate    the same on each text's share of word tokens never seen in the reference texts.
  - label       Jensen-Shannon distance between predicted-class distributions.
  - confidence  Wasserstein distance / reference std of the top-class probability.
The four column signals run in an Evidently Report (`ValueDrift`) over every row of the window
(they are cheap); only the embedding signal uses a sample, because embedding is the slow part.

Decision: fewer valid records than `monitor.min_window` is "not enough data" (never "no drift");
otherwise "drift" when any available signal's score exceeds its threshold.

Exit codes of the CLI (also in `ml monitor drift --help` and docs/monitoring.md):
  0 no drift, 3 drift, 4 not enough data, 1 error (unreadable log/reference), 2 bad config/usage.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import DriftThresholds, Settings
from ml.errors import UserError

if TYPE_CHECKING:
    import numpy as np
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

COLUMN_SIGNALS: dict[str, str] = {
    "text_length": "wasserstein",
    "oov_rate": "wasserstein",
    "label": "jensenshannon",
    "confidence": "wasserstein",
}
SIGNALS = ("embedding", *COLUMN_SIGNALS)
REQUIRED_FIELDS = ("ts", "label", "confidence")

_TOKEN = re.compile(r"[a-z0-9]+")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class MonitorError(UserError):
    """The drift check cannot run (log unreadable, reference missing); the message says why."""


# --- window selection ---------------------------------------------------------------------------


def parse_since(value: str | datetime | None, now: datetime | None = None) -> datetime | None:
    """'24h', '7d', '30m', '2w' (relative to now) or an ISO-8601 time (naive = UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    match = _DURATION.match(str(value))
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise MonitorError(
            f"window since {value!r} is neither a duration like '24h'/'7d' nor an ISO-8601 time"
        ) from exc
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


@dataclass
class LogWindow:
    """The records of the window (valid ones only) and what was wrong with the rest."""

    frame: pd.DataFrame
    source: str
    files: int = 0
    lines: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    since: str | None = None
    last_n: int | None = None


def _is_remote(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _list_log_files(location: str, since: datetime | None) -> tuple[Any, list[str]]:
    """(filesystem, files) under a local folder or an fsspec URI (s3://, gs://, memory://...),
    in the `date=YYYY-MM-DD/*.jsonl` layout of ml/serve/prediction_log.py, partitions wholly
    before `since` skipped."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(location)
    if not fs.exists(root):
        return fs, []
    day = since.strftime("%Y-%m-%d") if since else ""
    files = []
    for path in sorted(fs.glob(f"{root.rstrip('/')}/date=*/*.jsonl")):
        partition = path.rstrip("/").split("/")[-2]
        if partition[len("date=") :] >= day:
            files.append(path)
    return fs, files


def _valid_record(record: Any) -> str:
    """'' when the record has what the monitor needs, else what is wrong."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED_FIELDS if record.get(k) in (None, "")]
    if missing:
        return f"missing {missing}"
    confidence = record["confidence"]
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return f"confidence {confidence!r} is not a number"
    if not (0.0 <= float(confidence) <= 1.0) or math.isnan(float(confidence)):
        return f"confidence {confidence!r} outside [0, 1]"
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        return "text is not a string"
    length = record.get("text_length")
    if text is None and (isinstance(length, bool) or not isinstance(length, int | float)):
        return "neither text nor a numeric text_length"
    return ""


def read_log_window(
    location: str | Path, since: str | datetime | None = None, last_n: int | None = None
) -> LogWindow:
    """Read the prediction log at a folder or fsspec URI, keeping the window (records at/after
    `since`, then the newest `last_n`). Lines that are not JSON, or records without a valid ts,
    label, confidence and text (or text_length), are counted as malformed and left out; they
    never stop the check. This is ml/serve/prediction_log.py's layout read tolerantly and
    through fsspec (the serving reader is local-only and drops bad lines without counting)."""
    import pandas as pd

    location = str(location)
    start = parse_since(since)
    fs, files = _list_log_files(location, start)
    rows: list[dict[str, Any]] = []
    lines = malformed = 0
    examples: list[str] = []

    def bad(where: str, why: str) -> None:
        nonlocal malformed
        malformed += 1
        if len(examples) < 5:
            examples.append(f"{where}: {why}")

    for path in files:
        with fs.open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                raw = raw.strip()
                if not raw:
                    continue
                lines += 1
                where = f"{path.rsplit('/', 1)[-1]}:{number}"
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    bad(where, "not valid JSON")
                    continue
                problem = _valid_record(record)
                if problem:
                    bad(where, problem)
                    continue
                rows.append(record)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["ts", "text", "text_length", "label", "confidence"])
    for column in ("text", "text_length", "model_version"):
        if column not in frame.columns:
            frame[column] = None
    ts = pd.to_datetime(frame["ts"], utc=True, errors="coerce", format="ISO8601")
    for index in frame.index[ts.isna()]:
        bad(f"record {index}", f"ts {frame.at[index, 'ts']!r} is not an ISO-8601 time")
    frame = frame.assign(ts=ts)[ts.notna()]
    if start is not None:
        frame = frame[frame["ts"] >= pd.Timestamp(start)]
    frame = frame.sort_values("ts", kind="stable")
    if last_n is not None:
        frame = frame.tail(max(int(last_n), 0))
    return LogWindow(
        frame.reset_index(drop=True),
        location,
        files=len(files),
        lines=lines,
        malformed=malformed,
        malformed_examples=examples,
        since=start.isoformat() if start else None,
        last_n=last_n,
    )


# --- features -----------------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def document_frequency(texts: Iterable[str]) -> Counter[str]:
    """In how many texts each word token occurs (the reference vocabulary)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(set(tokens(text)))
    return counts


def oov_rates(texts: Sequence[str | None], vocabulary: Counter[str], leave_one_out: bool = False):
    """Share of each text's word tokens that are not in the vocabulary (NaN without text).

    With leave_one_out (for the reference texts themselves) a token counts as unseen when no
    *other* reference text has it, so the reference is not scored against its own words."""
    import numpy as np

    floor = 1 if leave_one_out else 0
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts):
        if text is None:
            continue
        words = tokens(text)
        if words:
            out[i] = sum(vocabulary.get(w, 0) <= floor for w in words) / len(words)
        else:
            out[i] = 0.0
    return out


def window_features(window: pd.DataFrame, vocabulary: Counter[str]) -> pd.DataFrame:
    """text_length, oov_rate, label, confidence for every record of the window."""
    import pandas as pd

    texts = [t if isinstance(t, str) else None for t in window["text"]]
    logged = pd.to_numeric(window["text_length"], errors="coerce")
    length = pd.Series([len(t) if t is not None else None for t in texts], dtype=float)
    return pd.DataFrame(
        {
            "text_length": length.fillna(logged.reset_index(drop=True)).to_numpy(),
            "oov_rate": oov_rates(texts, vocabulary),
            "label": window["label"].astype(str).to_numpy(),
            "confidence": window["confidence"].astype(float).to_numpy(),
        }
    )


def embedding_sample(texts: Sequence[str | None], size: int, seed: int) -> list[int]:
    """Indices of a seeded sample (without replacement) of the rows that have text."""
    import numpy as np

    present = [i for i, t in enumerate(texts) if isinstance(t, str) and t]
    if len(present) <= size:
        return present
    chosen = np.random.default_rng(seed).choice(len(present), size=size, replace=False)
    return sorted(present[i] for i in chosen)


# --- scores and decision ------------------------------------------------------------------------


@dataclass
class Signal:
    name: str
    method: str
    score: float | None
    threshold: float
    drifted: bool
    available: bool = True
    rows: int = 0
    note: str = ""


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


def embedding_signal(
    reference: np.ndarray, current: np.ndarray, threshold: float, min_rows: int
) -> Signal:
    """Evidently's MMD embedding-drift method (called directly: the EmbeddingsDrift metric
    always computes a t-SNE plot, ~20 s for a few hundred rows on 2 cores)."""
    import pandas as pd
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import mmd

    if len(current) < min(min_rows, 10) or len(reference) < 10:
        return Signal(
            "embedding",
            "mmd",
            None,
            threshold,
            False,
            False,
            len(current),
            "too few texts in the window (text logging off?)",
        )
    score, _, _ = mmd(threshold=threshold)(pd.DataFrame(current), pd.DataFrame(reference))
    score = float(score)
    return Signal("embedding", "mmd", score, threshold, score > threshold, True, len(current))


def column_report(
    reference: pd.DataFrame, current: pd.DataFrame, thresholds: DriftThresholds
) -> tuple[Any, list[Signal]]:
    """An Evidently Report with one ValueDrift per available column signal; (snapshot, signals).
    A column absent on either side (no text logged; no reference predictions) is unavailable."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    signals: list[Signal] = []
    metrics, used = [], []
    for name, method in COLUMN_SIGNALS.items():
        threshold = float(getattr(thresholds, name))
        ref, cur = reference[name].dropna(), current[name].dropna()
        if len(ref) < 10 or len(cur) < 10:
            note = "no reference values" if len(ref) < 10 else "no values in the window"
            signals.append(Signal(name, method, None, threshold, False, False, len(cur), note))
            continue
        metrics.append(ValueDrift(column=name, method=method, threshold=threshold))
        used.append(name)
    if not metrics:
        return None, signals
    numeric = [c for c in used if c != "label"]
    definition = DataDefinition(
        numerical_columns=numeric, categorical_columns=[c for c in used if c == "label"]
    )

    def dataset(frame: pd.DataFrame):
        frame = frame[used].copy()
        if "label" in used:
            frame["label"] = frame["label"].astype(str)
        return Dataset.from_pandas(frame, data_definition=definition)

    snapshot = Report(metrics, include_tests=True).run(
        current_data=dataset(current), reference_data=dataset(reference)
    )
    values = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            values[config["column"]] = float(metric["value"])
    for name in used:
        threshold = float(getattr(thresholds, name))
        score = values[name]
        signals.append(
            Signal(
                name,
                COLUMN_SIGNALS[name],
                score,
                threshold,
                score >= threshold,
                True,
                int(current[name].notna().sum()),
            )
        )
    order = {name: i for i, name in enumerate(COLUMN_SIGNALS)}
    return snapshot, sorted(signals, key=lambda s: order[s.name])


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


def check_drift(
    settings: Settings,
    window: LogWindow,
    reference: Any | None,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    write: bool = True,
) -> DriftResult:
    """Score a window against a reference (ml.monitor.reference.Reference), decide, and (with
    `write`) save the Evidently HTML report and the JSON summary under monitor.report_dir."""
    import numpy as np

    cfg = settings.monitor
    timings: dict[str, float] = {}
    started = time.perf_counter()
    frame = window.frame
    texts = [t if isinstance(t, str) else None for t in frame["text"]]
    signals: list[Signal] = []
    snapshot = None
    valid = len(frame)
    if valid >= cfg.min_window:
        if reference is None:
            raise MonitorError("a window of this size needs a reference; none was given")
        features = window_features(frame, reference.vocabulary)
        timings["features"] = time.perf_counter() - started
        t0 = time.perf_counter()
        chosen = embedding_sample(texts, cfg.embedding_sample, cfg.seed)
        if embed is None:
            from ml.monitor.reference import embed_texts

            def embed(batch: list[str]) -> np.ndarray:
                return embed_texts(batch, cfg.embedding_model, cfg.embedding_max_length)

        current_emb = (
            embed([texts[i] for i in chosen]) if chosen else np.zeros((0, 1), dtype=np.float32)
        )
        timings["embedding"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        signals.append(
            embedding_signal(
                reference.embeddings, current_emb, cfg.thresholds.embedding, cfg.min_window
            )
        )
        timings["mmd"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        snapshot, column_signals = column_report(reference.features, features, cfg.thresholds)
        signals.extend(column_signals)
        timings["evidently"] = time.perf_counter() - t0
    decision = decide(signals, valid, cfg.min_window)

    versions = frame["model_version"].dropna().astype(str).value_counts().to_dict()
    window_info = {
        "source": window.source,
        "since": window.since,
        "last_n": window.last_n,
        "files": window.files,
        "lines": window.lines,
        "valid_records": valid,
        "malformed_records": window.malformed,
        "malformed_examples": window.malformed_examples,
        "records_with_text": sum(t is not None for t in texts),
        "embedded_sample": next((s.rows for s in signals if s.name == "embedding"), 0),
        "first_ts": frame["ts"].min().isoformat() if valid else None,
        "last_ts": frame["ts"].max().isoformat() if valid else None,
        "model_versions": versions,
        "min_window": cfg.min_window,
    }
    summary_path = html_path = None
    if write:
        from ml.io import atomic_path, write_json

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

    cfg = settings.monitor
    window = read_log_window(
        log_location(settings, log_dir),
        since if since is not None else cfg.window_since,
        last_n if last_n is not None else cfg.window_last_n,
    )
    # Too few records is decided before the (possibly slow) reference is built or loaded.
    enough = len(window.frame) >= cfg.min_window
    reference = load_reference(settings, model_dir=model_dir) if enough else None
    return check_drift(settings, window, reference)
