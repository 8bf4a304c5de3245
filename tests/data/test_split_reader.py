"""The one text split reader (task.read_split) and the split paths (ml/data/splits.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ml.config import Settings
from ml.data.splits import SPLITS, SplitReadError, split_path, split_paths
from ml.tasks import task_of


def _settings(root: Path, **params) -> Settings:
    settings = Settings.model_validate({"data": {"source": "unused"}, **params})
    settings.root = root
    return settings


def test_split_paths_follow_the_task(tmp_path):
    text = _settings(tmp_path)
    image = _settings(tmp_path, task="image-classification")
    assert SPLITS == ("train", "val", "test")
    assert split_path(text, "test") == tmp_path / "data/splits/test.csv"
    assert split_paths(image) == {n: tmp_path / f"data/splits/{n}.npz" for n in SPLITS}
    with pytest.raises(ValueError, match="unknown split"):
        split_path(text, "holdout")


def test_na_like_strings_are_text_and_only_empty_cells_are_missing(tmp_path):
    settings = _settings(tmp_path)
    path = split_path(settings, "test")
    path.parent.mkdir(parents=True)
    path.write_text(
        "id,title,description,tag\n"
        "7,NA,null,mlops\n"
        "8,None,,computer-vision\n"
        "9,  N/A  model ,nan  text,NA\n"
    )
    examples = task_of(settings).read_split(settings, path)
    assert examples.inputs == ["NA null", "None", "N/A model nan text"]
    assert examples.labels == ["mlops", "computer-vision", "NA"]
    assert examples.ids == [7, 8, 9]
    assert examples.details == {
        "title": ["NA", "None", "  N/A  model "],
        "description": ["null", "", "nan  text"],
    }


def test_capped_read_keeps_every_class(tmp_path):
    settings = _settings(tmp_path)
    path = split_path(settings, "train")
    path.parent.mkdir(parents=True)
    rows = [(i, f"title {i}", "", "a" if i < 99 else "b") for i in range(100)]
    pd.DataFrame(rows, columns=["id", "title", "description", "tag"]).to_csv(path, index=False)
    examples = task_of(settings).read_split(settings, path, max_rows=20)
    assert len(examples) == 20  # 19 of a, and b (1 of 100) still kept
    assert examples.labels.count("b") == 1


def test_missing_or_malformed_split_says_rerun_the_split(tmp_path):
    settings = _settings(tmp_path)
    path = split_path(settings, "val")
    with pytest.raises(SplitReadError, match="run `ml data split` first"):
        task_of(settings).read_split(settings, path)
    path.parent.mkdir(parents=True)
    path.write_text("id,title,tag\n1,x,y\n")
    with pytest.raises(SplitReadError, match=r"lacks column\(s\) \['description'\]"):
        task_of(settings).read_split(settings, path)
    image = _settings(tmp_path, task="image-classification")
    bad = split_path(image, "val")
    bad.write_bytes(b"not an npz")
    with pytest.raises(SplitReadError, match="rerun"):
        task_of(image).read_split(image, bad)
