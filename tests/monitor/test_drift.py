"""`ml monitor drift` on real data: a shifted window is flagged, a same-distribution one is not;
empty, tiny and malformed logs give "not enough data" (never a false "drift"); exit codes and
the GITHUB_OUTPUT lines a workflow reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import pytest

from ml.config import load_settings
from ml.monitor.drift import (
    EXIT_DRIFT,
    EXIT_NOT_ENOUGH_DATA,
    MonitorError,
    Signal,
    check_drift,
    decide,
    document_frequency,
    monitor_drift,
    oov_rates,
    parse_since,
    read_log_window,
)
from ml.monitor.reference import load_reference
from tests.conftest import cli_env, run_ml
from tests.monitor.conftest import record, window_records, write_log

MALFORMED = [
    "this is not json",
    '{"ts": "2026-01-01T00:00:00Z", "label": "mlops"',  # truncated line (crashed writer)
    json.dumps({"ts": "2026-01-01T00:00:00Z", "text": "no label", "confidence": 0.9}),
    json.dumps({"ts": "yesterday", "text": "bad time", "label": "mlops", "confidence": 0.9}),
    json.dumps({"ts": "2026-01-01T00:00:01Z", "text": "x", "label": "mlops", "confidence": "hi"}),
    json.dumps({"ts": "2026-01-01T00:00:02Z", "text": "x", "label": "mlops", "confidence": 7}),
    json.dumps(["a", "list"]),
]


def settings_for(root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(root)
    return load_settings(root / "params.yaml")


# --- the decision itself ------------------------------------------------------------------------


def test_decide_never_calls_a_small_window_no_drift() -> None:
    drifted = [Signal("embedding", "mmd", 0.5, 0.006, True)]
    assert decide(drifted, 10, 200).verdict == "not_enough_data"
    assert decide([], 0, 1).verdict == "not_enough_data"
    assert decide(drifted, 200, 200).verdict == "drift"
    quiet = [Signal("label", "jensenshannon", 0.01, 0.1, False)]
    assert decide(quiet, 500, 200).verdict == "no_drift"
    # An unavailable signal (no text logged) cannot make drift.
    off = [Signal("embedding", "mmd", None, 0.006, True, available=False)]
    assert decide(off, 500, 200).verdict == "no_drift"
    assert decide(drifted, 500, 200).exit_code == EXIT_DRIFT


def test_parse_since_durations_and_times() -> None:
    now = datetime(2026, 1, 8, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since("24h", now) == datetime(2026, 1, 7, tzinfo=UTC)
    assert parse_since("2026-01-02T00:00:00Z") == datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_since("2026-01-02") == datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(MonitorError, match="neither a duration"):
        parse_since("last tuesday")


def test_oov_rate_is_leave_one_out_for_the_reference() -> None:
    reference = ["graph neural networks", "neural machine translation", "graph databases"]
    vocabulary = document_frequency(reference)
    # "networks", "machine", "translation", "databases" occur in one text only.
    assert list(oov_rates(reference, vocabulary, leave_one_out=True)) == pytest.approx(
        [1 / 3, 2 / 3, 1 / 2]
    )
    assert list(oov_rates(["graph of proteins", None], vocabulary)[:1]) == pytest.approx([2 / 3])


# --- reading the log ------------------------------------------------------------------------------


def test_malformed_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    good = [
        record(
            "a text about transformers",
            "natural-language-processing",
            0.9,
            f"2026-01-01T00:00:{i:02d}Z",
        )
        for i in range(5)
    ]
    write_log(tmp_path / "log", good, MALFORMED)
    window = read_log_window(tmp_path / "log")
    assert len(window.frame) == 5
    assert window.malformed == len(MALFORMED)
    assert any("not valid JSON" in e for e in window.malformed_examples)


def test_window_by_time_and_last_n(tmp_path: Path) -> None:
    rows = [record(f"text {d}", "mlops", 0.8, f"2026-01-0{d}T12:00:00Z") for d in range(1, 8)]
    write_log(tmp_path / "log", rows)
    since = read_log_window(tmp_path / "log", since="2026-01-05T00:00:00Z")
    assert list(since.frame["text"]) == ["text 5", "text 6", "text 7"]
    last = read_log_window(tmp_path / "log", last_n=2)
    assert list(last.frame["text"]) == ["text 6", "text 7"]


def test_log_on_an_fsspec_uri() -> None:
    """An object-store URI reads the same way (memory:// stands in for s3:// / gs://)."""
    fs = fsspec.filesystem("memory")
    line = json.dumps(record("served text", "mlops", 0.7, "2026-02-01T00:00:00Z"))
    with fs.open("/prod-log/date=2026-02-01/replica-1-x.jsonl", "w") as handle:
        handle.write(line + "\nnot json\n")
    window = read_log_window("memory://prod-log")
    assert len(window.frame) == 1 and window.malformed == 1 and window.files == 1
    fs.rm("/prod-log", recursive=True)


@pytest.mark.parametrize("case", ["missing", "empty", "tiny", "only_malformed"])
def test_empty_tiny_or_malformed_log_is_not_enough_data(
    case: str, monitor_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = monitor_project / "log"
    if case == "empty":
        (log / "date=2026-01-01").mkdir(parents=True)
        (log / "date=2026-01-01" / "w-0.jsonl").write_text("")
    elif case == "tiny":
        write_log(log, [record("short window", "mlops", 0.9, "2026-01-01T00:00:00Z")] * 5)
    elif case == "only_malformed":
        write_log(log, [], MALFORMED * 40)
    settings = settings_for(monitor_project, monkeypatch)
    result = monitor_drift(settings, log_dir=str(log))
    assert result.decision.verdict == "not_enough_data"
    assert result.decision.exit_code == EXIT_NOT_ENOUGH_DATA
    assert "monitor.min_window" in result.decision.reasons[0]
    assert result.signals == []  # nothing was scored, so nothing can claim drift
    summary = json.loads(result.summary_path.read_text())
    assert summary["verdict"] == "not_enough_data" and summary["drift"] is False
    if case == "only_malformed":
        assert summary["window"]["malformed_records"] == len(MALFORMED) * 40


# --- real data: shifted vs same distribution ---------------------------------------------------


def test_shifted_window_flagged_same_distribution_not(
    monitor_project: Path, texts, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(monitor_project, monkeypatch)
    reference = load_reference(settings, embed=embedder)
    assert reference.info["prediction_source"].startswith("training labels")

    same_log = write_log(
        monitor_project / "same", window_records(texts, 500, 0.0, seed=11), MALFORMED
    )
    window = read_log_window(same_log)
    same = check_drift(settings, window, reference, embed=embedder)
    assert same.window["malformed_records"] == len(MALFORMED)
    assert same.decision.verdict == "no_drift", same.decision.reasons

    shifted_log = write_log(monitor_project / "shifted", window_records(texts, 500, 0.3, seed=12))
    shifted = check_drift(settings, read_log_window(shifted_log), reference, embed=embedder)
    assert shifted.decision.verdict == "drift"
    drifted = {s.name for s in shifted.signals if s.drifted}
    # Medical abstracts differ in topic (embeddings), length and vocabulary: all three fire.
    assert {"embedding", "text_length", "oov_rate"} <= drifted, shifted.signals
    scores = {s.name: s.score for s in same.signals}
    assert all(s.score > scores[s.name] for s in shifted.signals if s.name in drifted)
    # Confidence has no reference without a model: reported as not checked, never as drift.
    confidence = next(s for s in shifted.signals if s.name == "confidence")
    assert not confidence.available and not confidence.drifted
    assert shifted.html_path.is_file() and shifted.html_path.stat().st_size > 10_000


def test_text_logging_off_still_checks_lengths_and_labels(
    monitor_project: Path, texts, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(monitor_project, monkeypatch)
    reference = load_reference(settings, embed=embedder)
    rows = window_records(texts, 300, 0.3, seed=13)
    hidden = [{**r, "text": None, "text_length": len(r["text"])} for r in rows]
    result = check_drift(
        settings,
        read_log_window(write_log(monitor_project / "h", hidden)),
        reference,
        embed=embedder,
    )
    by_name = {s.name: s for s in result.signals}
    assert not by_name["embedding"].available and not by_name["oov_rate"].available
    assert by_name["text_length"].drifted and result.decision.verdict == "drift"


# --- the CLI: exit codes, GITHUB_OUTPUT, messages -------------------------------------------------


def test_cli_not_enough_data_exit_code_and_github_output(monitor_project: Path) -> None:
    output = monitor_project / "github_output"
    write_log(monitor_project / "log", [record("x" * 40, "mlops", 0.9, "2026-01-01T00:00:00Z")])
    proc = run_ml(
        ["monitor", "drift", "--log-dir", "log"],
        cwd=monitor_project,
        env=cli_env(GITHUB_OUTPUT=str(output)),
    )
    assert proc.returncode == EXIT_NOT_ENOUGH_DATA, proc.stderr
    assert "not enough data" in proc.stdout
    lines = output.read_text().splitlines()
    assert "verdict=not_enough_data" in lines and "drift=false" in lines
    assert f"exit_code={EXIT_NOT_ENOUGH_DATA}" in lines
    (decision,) = [line.split("=", 1)[1] for line in lines if line.startswith("decision=")]
    assert json.loads(decision)["verdict"] == "not_enough_data"


def test_cli_bad_window_is_an_error(monitor_project: Path) -> None:
    proc = run_ml(["monitor", "drift", "--since", "last tuesday"], cwd=monitor_project)
    assert proc.returncode == 1
    assert "neither a duration" in proc.stderr


def test_cli_flags_a_shifted_window(monitor_project: Path, texts, embedder) -> None:
    # Warm the reference cache in-process (same encoder) so the CLI only embeds its sample.
    import os

    cwd = os.getcwd()
    os.chdir(monitor_project)
    try:
        load_reference(load_settings(monitor_project / "params.yaml"), embed=embedder)
    finally:
        os.chdir(cwd)
    write_log(monitor_project / "log", window_records(texts, 400, 0.5, seed=14))
    output = monitor_project / "github_output"
    proc = run_ml(
        ["monitor", "drift", "--log-dir", "log", "--last-n", "400"],
        cwd=monitor_project,
        env=cli_env(GITHUB_OUTPUT=str(output)),
    )
    assert proc.returncode == EXIT_DRIFT, proc.stdout + proc.stderr
    assert "DRIFT" in proc.stdout
    assert "drift=true" in output.read_text().splitlines()
    summary = json.loads((monitor_project / "reports/drift/summary.json").read_text())
    assert summary["verdict"] == "drift" and summary["window"]["valid_records"] == 400
    assert summary["reference"]["embeddings_cached"] is True
    assert (monitor_project / "reports/drift/report.html").is_file()
