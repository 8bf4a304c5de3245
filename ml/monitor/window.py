"""Reading a window of the prediction log for drift monitoring: any task's records, read
tolerantly (bad lines are counted, never fatal) from a folder or an fsspec URI in the
`date=YYYY-MM-DD/*.jsonl` layout of ml/serve/prediction_log.py."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.monitor.signals import MonitorError

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_FIELDS = ("ts", "label", "confidence")
# A record's task-specific problem ('' when none): Task.drift_record_problem.
RecordCheck = Callable[[dict[str, Any]], str]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


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


def _valid_record(record: Any, check: RecordCheck | None = None) -> str:
    """'' when the record has what the monitor needs (and `check`, the task's, finds nothing
    wrong), else what is wrong."""
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
    return check(record) if check is not None else ""


def _read_records(
    fs: Any, path: str, check: RecordCheck | None, bad: Callable[[str, str], None]
) -> tuple[list[dict[str, Any]], int]:
    """(the valid records, the non-empty lines) of one log file; `bad(where, why)` is called for
    each line left out."""
    rows, lines = [], 0
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
            problem = _valid_record(record, check)
            if problem:
                bad(where, problem)
                continue
            rows.append(record)
    return rows, lines


def read_log_window(
    location: str | Path,
    since: str | datetime | None = None,
    last_n: int | None = None,
    check: RecordCheck | None = None,
) -> LogWindow:
    """Read the prediction log at a folder or fsspec URI, keeping the window (records at/after
    `since`, then the newest `last_n`). Lines that are not JSON, or records without a valid ts,
    label and confidence, or that `check` (the task's `drift_record_problem`: text or its
    length; an image's statistics) rejects, are counted as malformed and left out; they never
    stop the check. This is ml/serve/prediction_log.py's layout read tolerantly and
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
        valid, read = _read_records(fs, path, check, bad)
        rows += valid
        lines += read
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["ts", "label", "confidence"])
    if "model_version" not in frame.columns:
        frame["model_version"] = None
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
