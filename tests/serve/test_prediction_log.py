"""The prediction log contract that ml/monitor reads: layout, fields, hashing, reader filters."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from ml.serve.prediction_log import (
    RECORD_FIELDS,
    PredictionLogWriter,
    make_record,
    read_prediction_log,
    resolve_log_dir,
    text_sha256,
)

PROBS = {"a": 0.7, "b": 0.3}


def _record(text: str, ts: datetime, log_text: bool = True) -> dict:
    return make_record(
        text=text,
        label="a",
        probabilities=PROBS,
        model_name="m",
        model_version="3",
        latency_ms=1.5,
        log_text=log_text,
        ts=ts,
    )


def test_writer_layout_and_reader_roundtrip(tmp_path):
    now = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
    writer = PredictionLogWriter(tmp_path, writer_id="replica/1")
    writer.write(_record("yesterday text", now - timedelta(days=1)))
    writer.write_many(_record(f"text {i}", now + timedelta(seconds=i)) for i in range(5))
    writer.write(_record("secret", now + timedelta(seconds=10), log_text=False))
    writer.close()

    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert len(files) == 2
    assert files[0].startswith("date=2024-05-01/") and files[1].startswith("date=2024-05-02/")
    pattern = r"date=\d{4}-\d{2}-\d{2}/replica_1-\d{8}T\d+Z\.jsonl"
    assert all(re.fullmatch(pattern, f) for f in files)
    first = json.loads((tmp_path / files[1]).read_text().splitlines()[0])
    assert tuple(first) == RECORD_FIELDS and first["ts"].endswith("Z")

    frame = read_prediction_log(tmp_path)
    assert list(frame.columns) == list(RECORD_FIELDS) and len(frame) == 7
    assert frame["ts"].is_monotonic_increasing and str(frame["ts"].dt.tz) == "UTC"
    hidden = frame.iloc[-1]
    assert hidden["text"] is None and hidden["text_sha256"] == text_sha256("secret")
    assert hidden["text_length"] == 6 and hidden["confidence"] == 0.7
    assert hidden["probabilities"] == PROBS

    assert len(read_prediction_log(tmp_path, since=now)) == 6
    assert len(read_prediction_log(tmp_path, since="2024-05-02T12:00:03")) == 3
    assert list(read_prediction_log(tmp_path, last_n=2)["text"]) == ["text 4", None]


def test_reader_skips_torn_lines_and_handles_missing_dir(tmp_path):
    assert list(read_prediction_log(tmp_path / "none").columns) == list(RECORD_FIELDS)
    part = tmp_path / "date=2024-01-01"
    part.mkdir()
    good = json.dumps(_record("ok", datetime(2024, 1, 1, tzinfo=UTC)))
    (part / "w-1.jsonl").write_text(good + "\n" + good[:20])  # a crash mid-line
    (tmp_path / "not-a-partition").mkdir()
    assert len(read_prediction_log(tmp_path)) == 1


def test_writer_flush_is_visible_before_close_and_env_override(tmp_path, monkeypatch):
    writer = PredictionLogWriter(tmp_path)
    writer.write(_record("x", datetime.now(UTC)))
    writer.flush()
    assert len(read_prediction_log(tmp_path)) == 1
    writer.close()
    writer.close()  # idempotent
    monkeypatch.setenv("ML_PREDICTION_LOG_DIR", str(tmp_path / "env"))
    assert resolve_log_dir("logs/predictions") == tmp_path / "env"
    monkeypatch.delenv("ML_PREDICTION_LOG_DIR")
    assert str(resolve_log_dir(None)) == "logs/predictions"
