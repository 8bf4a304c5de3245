"""`ml monitor drift` for the image task on real Fashion-MNIST, with a CNN trained briefly
through the task's own interface: a same-distribution window is not drift; a brightness, a
contrast and a 30% class-mix window are, naming the signals that moved; records as the serving
replica writes them; the CLI's exit codes (0 none, 3 drift, 4 not enough data, 1 error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.config import load_settings
from ml.monitor.drift import (
    EXIT_DRIFT,
    EXIT_ERROR,
    EXIT_NO_DRIFT,
    EXIT_NOT_ENOUGH_DATA,
    LogWindow,
    MonitorError,
    check_drift,
    monitor_drift,
)
from ml.monitor.reference import load_reference
from tests.conftest import cli_env, run_ml
from tests.monitor.conftest import write_log
from tests.monitor.image_windows import (
    prediction_records,
    train_cnn,
    window_images,
    write_image_project,
)

WINDOW = 500


@pytest.fixture(scope="module")
def image_project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real splits (2,000 train / 600 val / 1,000 test images), a CNN trained for one epoch on
    the train split, and the test images as the pool production windows are drawn from."""
    root = tmp_path_factory.mktemp("image-drift")
    write_image_project(root, train=2000, val=600, test=1000, min_window=100, window_last_n=1000)
    settings = _settings(root)
    model_dir = train_cnn(settings, root / "models" / "model")
    from ml.data.splits import split_path
    from ml.tasks import task_of

    task = task_of(settings)
    test = task.read_split(settings, split_path(settings, "test"))
    return {
        "root": root,
        "predictor": task.load_predictor(model_dir),
        "pool": np.asarray(test.inputs),
        "pool_labels": list(test.labels),
    }


def _settings(root: Path):
    import os

    cwd = os.getcwd()
    os.chdir(root)  # project paths resolve against the working folder
    try:
        return load_settings(root / "params.yaml")
    finally:
        os.chdir(cwd)


def records(project: dict, kind: str, seed: int, size: int = WINDOW) -> list[dict]:
    images = window_images(project["pool"], project["pool_labels"], size, seed, kind)
    return prediction_records(_settings(project["root"]), project["predictor"], images)


def window(rows: list[dict]) -> LogWindow:
    frame = pd.DataFrame(rows)
    return LogWindow(frame.assign(ts=pd.to_datetime(frame["ts"], utc=True)), source="test")


def drifted(result) -> set[str]:
    return {s.name for s in result.signals if s.available and s.drifted}


def test_same_distribution_is_not_drift_shifted_windows_are(image_project: dict) -> None:
    settings = _settings(image_project["root"])
    reference = load_reference(settings)
    assert reference.info["prediction_source"].startswith("model predictions and features")
    assert reference.embeddings.shape[1] == 32  # the CNN's penultimate width (image.hidden)

    same = check_drift(settings, window(records(image_project, "none", 1)), reference, write=False)
    assert same.decision.verdict == "no_drift", same.decision.reasons
    assert {s.name for s in same.signals if s.available} == {
        "embedding", "mean_intensity", "contrast", "blank_share", "label", "confidence",
    }  # fmt: skip
    baseline = {s.name: s.score for s in same.signals}

    expected = {"brightness": "mean_intensity", "contrast": "contrast", "class_mix": "label"}
    for kind, signal in expected.items():
        result = check_drift(
            settings, window(records(image_project, kind, 2)), reference, write=False
        )
        assert result.decision.verdict == "drift", (kind, result.signals)
        assert signal in drifted(result), (kind, result.signals)
        moved = next(s for s in result.signals if s.name == signal)
        assert moved.score > baseline[signal]
        assert any(r.startswith(f"{signal}: ") for r in result.decision.reasons)
    # Pixel shifts move the CNN's features too: the embedding signal sees them.
    brighter = check_drift(
        settings, window(records(image_project, "brightness", 3)), reference, write=False
    )
    assert "embedding" in drifted(brighter), brighter.signals


def test_blank_images_raise_the_blank_share(image_project: dict) -> None:
    settings = _settings(image_project["root"])
    reference = load_reference(settings)
    assert reference.info["blank_share"] == 0.0  # the official files hold no constant image
    result = check_drift(
        settings, window(records(image_project, "blank", 4)), reference, write=False
    )
    assert "blank_share" in drifted(result), result.signals


def test_without_a_model_embedding_and_confidence_are_not_checked(
    image_project: dict, tmp_path: Path
) -> None:
    settings = _settings(image_project["root"])
    reference = load_reference(settings, model_dir=tmp_path / "no-model")
    assert reference.info["prediction_source"].startswith("training labels")
    result = check_drift(
        settings, window(records(image_project, "brightness", 5)), reference, write=False
    )
    by_name = {s.name: s for s in result.signals}
    assert not by_name["embedding"].available and not by_name["embedding"].drifted
    assert "no model" in by_name["embedding"].note
    assert not by_name["confidence"].available
    assert by_name["mean_intensity"].drifted and result.decision.verdict == "drift"


def test_embeddings_of_another_model_are_a_clear_error(image_project: dict) -> None:
    settings = _settings(image_project["root"])
    reference = load_reference(settings)
    rows = [{**r, "embedding": r["embedding"][:8]} for r in records(image_project, "none", 6)]
    with pytest.raises(MonitorError, match=r"another model than the reference.*--model-dir"):
        check_drift(settings, window(rows), reference, write=False)


def test_bad_image_records_are_counted_not_fatal(image_project: dict) -> None:
    root = image_project["root"]
    good = records(image_project, "none", 7, size=120)
    bad = [
        {**good[0], "mean_intensity": "bright"},
        {**good[1], "contrast": None},
        {**good[2], "blank": "no"},
        {**good[3], "embedding": "0.1,0.2"},
        {k: v for k, v in good[4].items() if k != "mean_intensity"},
    ]
    log = write_log(root / "bad-log", good[5:], [json.dumps(r) for r in bad])
    result = monitor_drift(_settings(root), log_dir=str(log))
    assert result.window["valid_records"] == len(good) - 5
    assert result.window["malformed_records"] == len(bad)
    assert any("mean_intensity" in e for e in result.window["malformed_examples"])
    assert result.window["records_with_embedding"] == len(good) - 5


# --- the CLI on a prediction log as serving writes it ---------------------------------------


@pytest.mark.parametrize(
    ("kind", "size", "code", "verdict"),
    [
        ("none", WINDOW, EXIT_NO_DRIFT, "no_drift"),
        ("brightness", WINDOW, EXIT_DRIFT, "drift"),
        ("none", 20, EXIT_NOT_ENOUGH_DATA, "not_enough_data"),
    ],
)
def test_cli_exit_codes_on_an_image_log(
    image_project: dict, kind: str, size: int, code: int, verdict: str
) -> None:
    root = image_project["root"]
    log = write_log(root / f"log-{kind}-{size}", records(image_project, kind, 8, size=size))
    output = root / f"github_output-{kind}-{size}"
    proc = run_ml(
        ["monitor", "drift", "--log-dir", str(log)],
        cwd=root,
        env=cli_env(GITHUB_OUTPUT=str(output)),
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert f"verdict={verdict}" in output.read_text().splitlines()
    summary = json.loads((root / "reports/drift/summary.json").read_text())
    assert summary["verdict"] == verdict and summary["window"]["valid_records"] == size
    if verdict == "drift":
        assert "mean_intensity" in proc.stdout and "DRIFT" in proc.stdout
        assert (root / "reports/drift/report.html").is_file()


def test_cli_reference_split_missing_is_an_error(image_project: dict, tmp_path: Path) -> None:
    root = image_project["root"]
    write_log(tmp_path / "log", records(image_project, "none", 9, size=150))
    import yaml

    params = root / "params.yaml"
    changed = yaml.safe_load(params.read_text())
    changed["monitor"]["reference_splits"] = ["train.csv"]
    other = tmp_path / "params.yaml"
    other.write_text(yaml.safe_dump(changed))
    proc = run_ml(
        ["-p", str(other), "monitor", "drift", "--log-dir", str(tmp_path / "log")], cwd=root
    )
    assert proc.returncode == EXIT_ERROR
    assert "train.csv not found" in proc.stderr and ".npz" in proc.stderr
