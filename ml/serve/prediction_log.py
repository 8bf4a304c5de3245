"""The append-only prediction log: what the server writes and what drift monitoring reads.

Layout (a contract with ml/monitor; keep it exactly):

    <log_dir>/date=YYYY-MM-DD/<writer-id>-<start-timestamp>.jsonl

one JSON object per line and per prediction, with the keys in `RECORD_FIELDS` (text models) or
`IMAGE_RECORD_FIELDS` (image models: a content hash and statistics instead of the text, the
pixels only with serve.log_inputs); the task's `log_fields` fill the task's keys. Each writer
(a Serve replica, a CLI process) owns its own files, so writers never interleave lines and no lock
is shared between processes. Files are only ever appended to.

The writer hands records to a background thread through a queue, so a request never waits on disk;
`close()` (also registered with atexit) drains the queue, so nothing is lost on a clean shutdown.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import queue
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import pandas as pd

LOG_DIR_ENV = "ML_PREDICTION_LOG_DIR"
DEFAULT_LOG_DIR = "logs/predictions"

RECORD_FIELDS: tuple[str, ...] = (
    "ts",
    "request_id",
    "text",
    "text_sha256",
    "text_length",
    "label",
    "confidence",
    "probabilities",
    "model_name",
    "model_version",
    "latency_ms",
)
# Around the task's own keys, every record has these.
_HEAD = ("ts", "request_id")
_TAIL = ("label", "confidence", "probabilities", "model_name", "model_version", "latency_ms")
IMAGE_FIELDS = ("image_sha256", "mean_intensity", "contrast", "blank", "embedding", "image")
IMAGE_RECORD_FIELDS: tuple[str, ...] = (*_HEAD, *IMAGE_FIELDS, *_TAIL)

_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")
_STOP = object()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_log_dir(configured: str | Path | None = None) -> Path:
    """$ML_PREDICTION_LOG_DIR wins over the configured folder, which wins over the default."""
    return Path(os.environ.get(LOG_DIR_ENV) or configured or DEFAULT_LOG_DIR)


def make_record(
    *,
    label: str,
    probabilities: Mapping[str, float],
    model_name: str,
    model_version: str,
    latency_ms: float,
    text: str | None = None,
    fields: Mapping[str, Any] | None = None,
    log_text: bool = True,
    request_id: str | None = None,
    ts: datetime | None = None,
) -> dict[str, Any]:
    """One prediction as a log record: `fields` are the task's (its log_fields), or, given
    `text`, the text's (with log_text=False only the hash of the text is kept)."""
    if fields is None:
        if text is None:
            raise TypeError("make_record needs the task's `fields` or a `text`")
        fields = {
            "text": text if log_text else None,
            "text_sha256": text_sha256(text),
            "text_length": len(text),
        }
    probs = {str(k): float(v) for k, v in probabilities.items()}
    when = (ts or datetime.now(UTC)).astimezone(UTC)
    return {
        "ts": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "request_id": request_id or uuid.uuid4().hex,
        **fields,
        "label": str(label),
        "confidence": float(probs.get(str(label), max(probs.values(), default=0.0))),
        "probabilities": probs,
        "model_name": str(model_name),
        "model_version": str(model_version),
        "latency_ms": float(latency_ms),
    }


def default_writer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class PredictionLogWriter:
    """Appends records to date-partitioned JSONL files from a background thread.

    `write()` never blocks on I/O (it only enqueues). A write error is kept in `last_error` and
    counted in `dropped` rather than raised into the request that happened to trigger it.
    """

    def __init__(self, log_dir: str | Path, writer_id: str | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.writer_id = _SAFE_ID.sub("_", writer_id or default_writer_id())
        self.started = datetime.now(UTC)
        self._stamp = self.started.strftime("%Y%m%dT%H%M%S%fZ")
        self._queue: queue.Queue[Any] = queue.Queue()
        self._files: dict[str, IO[str]] = {}
        self._closed = False
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def write(self, record: Mapping[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("prediction log writer is closed")
        self._queue.put(dict(record))

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def path_for(self, day: str) -> Path:
        return self.log_dir / f"date={day}" / f"{self.writer_id}-{self._stamp}.jsonl"

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything enqueued so far is on disk (used by tests and shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Drain the queue, close the files. Safe to call twice (atexit calls it too)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        atexit.unregister(self.close)

    def _run(self) -> None:
        stop = False
        while not stop:
            items = [self._queue.get()]
            # Drain whatever else is waiting so one flush covers a whole burst of requests.
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events: list[threading.Event] = []
            touched: set[str] = set()
            for item in items:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    events.append(item)
                else:
                    touched.add(self._append(item))
            for day in touched - {""}:
                self._files[day].flush()
            for event in events:
                event.set()
        for handle in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._files.clear()

    def _append(self, record: dict[str, Any]) -> str:
        try:
            day = str(record["ts"])[:10]
            handle = self._files.get(day)
            if handle is None:
                path = self.path_for(day)
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = self._files[day] = path.open("a", encoding="utf-8")
            handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            self.written += 1
            return day
        except Exception as exc:  # a log failure must not kill the writer thread
            self.dropped += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return ""


def _parse_since(since: datetime | date | str | None) -> pd.Timestamp | None:
    if since is None:
        return None
    stamp = pd.Timestamp(since)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _empty_frame(fields: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in fields})
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def log_files(log_dir: str | Path, since: datetime | date | str | None = None) -> list[Path]:
    """The JSONL files under log_dir, skipping date partitions wholly before `since`."""
    root = Path(log_dir)
    if not root.is_dir():
        return []
    start = _parse_since(since)
    files: list[Path] = []
    for part in sorted(root.iterdir()):
        match = _PARTITION.match(part.name)
        if not match or not part.is_dir():
            continue
        if start is not None and match.group(1) < start.strftime("%Y-%m-%d"):
            continue
        files.extend(sorted(part.glob("*.jsonl")))
    return files


def read_prediction_log(
    log_dir: str | Path,
    since: datetime | date | str | None = None,
    last_n: int | None = None,
    fields: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """All prediction records under log_dir as a DataFrame sorted by time (`ts` is UTC datetime).

    since: keep records at or after this time (naive times are read as UTC).
    last_n: keep only the most recent n records (after `since`).
    A line that is not valid JSON (e.g. the tail of a file being written by a crashed process)
    is skipped, not fatal. Columns are always `fields`, even when there are no records; by
    default `IMAGE_RECORD_FIELDS` where the records are an image model's, else `RECORD_FIELDS`.
    """
    rows: list[dict[str, Any]] = []
    for path in log_files(log_dir, since):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    rows.append(record)
    if fields is None:
        is_image = any("image_sha256" in row for row in rows)
        fields = IMAGE_RECORD_FIELDS if is_image else RECORD_FIELDS
    if not rows:
        return _empty_frame(fields)
    frame = pd.DataFrame(rows)
    for name in fields:
        if name not in frame.columns:
            frame[name] = None
    frame = frame[list(fields)]
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    start = _parse_since(since)
    if start is not None:
        frame = frame[frame["ts"] >= start]
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    if last_n is not None:
        frame = frame.tail(max(int(last_n), 0)).reset_index(drop=True)
    return frame
