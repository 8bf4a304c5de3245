"""Fixtures for the monitor tests: a small project on the real Made-With-ML data, a shared
(memoised) sentence embedder, and helpers that write prediction logs in the serving layout."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO_ROOT

REFERENCE_ROWS = 300
PREDICTION_ROWS = 80


class MemoEmbedder:
    """embed_texts with a per-text memo, shared by the whole test session."""

    def __init__(self) -> None:
        self.memo: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        from ml.monitor.reference import embed_texts

        missing = sorted({t for t in texts if t not in self.memo})
        if missing:
            for text, row in zip(missing, embed_texts(missing), strict=True):
                self.memo[text] = row
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, 384))


@pytest.fixture(scope="session")
def embedder() -> MemoEmbedder:
    return MemoEmbedder()


@pytest.fixture(scope="session")
def texts(shared_data: Path) -> dict[str, Any]:
    """Real texts: Made-With-ML (reference rows, val rows, holdout) and medical abstracts."""
    from ml.data.text import combine_text

    columns = ["title", "description"]
    full = pd.read_csv(shared_data / "madewithml" / "dataset.csv", dtype=str, keep_default_na=False)
    full = full.sample(frac=1.0, random_state=0).reset_index(drop=True)
    holdout = pd.read_csv(
        shared_data / "madewithml" / "holdout.csv", dtype=str, keep_default_na=False
    )
    medical = pd.read_csv(
        shared_data / "medical-abstracts" / "test.csv", dtype=str, keep_default_na=False
    )
    return {
        "train": full.iloc[:REFERENCE_ROWS],
        "val": full.iloc[REFERENCE_ROWS : REFERENCE_ROWS + PREDICTION_ROWS],
        "holdout": list(combine_text(holdout, columns)),
        "holdout_labels": list(holdout["tag"]),
        "medical": list(combine_text(medical, columns))[:150],
    }


def write_params(root: Path, **monitor: Any) -> Path:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["monitor"] = {**params.get("monitor", {}), **monitor}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def monitor_project(tmp_path: Path, texts: dict[str, Any]) -> Path:
    """A project folder with data/splits/{train,val}.csv from the real data and a params.yaml
    whose monitor section keeps everything inside the folder."""
    root = tmp_path / "project"
    splits = root / "data" / "splits"
    splits.mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "configs", root / "configs")
    columns = ["id", "title", "description", "tag"]
    texts["train"][columns].to_csv(splits / "train.csv", index=False)
    texts["val"][columns].to_csv(splits / "val.csv", index=False)
    write_params(root, embedding_sample=100, min_window=100, window_last_n=1000)
    return root


def record(text: str | None, label: str, confidence: float, ts: str, **extra: Any) -> dict:
    return {
        "ts": ts,
        "request_id": extra.pop("request_id", "r"),
        "text": text,
        "text_sha256": "",
        "text_length": len(text) if text is not None else extra.pop("text_length", 0),
        "label": label,
        "confidence": confidence,
        "probabilities": {label: confidence},
        "model_name": "tag-classifier",
        "model_version": "1",
        "latency_ms": 3.0,
        **extra,
    }


def write_log(log_dir: Path, records: Iterable[dict], raw_lines: Iterable[str] = ()) -> Path:
    """JSON Lines in the serving layout: <log_dir>/date=YYYY-MM-DD/<writer>-<start>.jsonl."""
    by_day: dict[str, list[str]] = {}
    for rec in records:
        by_day.setdefault(str(rec["ts"])[:10], []).append(json.dumps(rec))
    extra = list(raw_lines)
    if extra:
        by_day.setdefault("2026-01-01", []).extend(extra)
    for day, lines in by_day.items():
        part = log_dir / f"date={day}"
        part.mkdir(parents=True, exist_ok=True)
        (part / "test-0-20260101T000000Z.jsonl").write_text("\n".join(lines) + "\n")
    return log_dir


def window_records(
    texts: dict[str, Any], size: int, shift: float, seed: int
) -> list[dict[str, Any]]:
    """`size` records bootstrapped from the real holdout, `shift` of them medical abstracts.
    Labels: the holdout's true tags (a perfect model); medical rows get a random ML tag."""
    rng = np.random.default_rng(seed)
    n_out = round(shift * size)
    holdout, labels = texts["holdout"], texts["holdout_labels"]
    tags = sorted(set(labels))
    rows = []
    for i in range(size):
        ts = f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
        if i < n_out:
            text, label = texts["medical"][rng.integers(len(texts["medical"]))], rng.choice(tags)
        else:
            j = rng.integers(len(holdout))
            text, label = holdout[j], labels[j]
        rows.append(record(text, str(label), float(rng.uniform(0.6, 1.0)), ts))
    order = rng.permutation(size)
    return [{**rows[k], "ts": rows[i]["ts"]} for i, k in enumerate(order)]
