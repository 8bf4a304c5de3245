"""The image task's data stages on the real Fashion-MNIST files: ingest (sha256), validation
(the real files pass; each kind of corruption is named with its count and example indices),
and the stratified, seeded .npz splits.

Corruptions are applied to a small real sample in memory and validated from their bytes, the
same path `ml data validate` takes on data/raw/; the CLI tests corrupt real files on disk.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ml.config import Settings, override
from ml.tasks.image_classification import idx
from ml.tasks.image_classification.checks import CHECKS, validate_contents
from tests.conftest import cli_env, run_ml
from tests.image_project import image_params, make_image_project, mirror_dir

FILES = {
    "train": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "holdout": "t10k-images-idx3-ubyte.gz",
    "holdout_labels": "t10k-labels-idx1-ubyte.gz",
}
PER_CLASS = {"train": 8, "holdout": 3}
MIN_PER_CLASS = 4


def _settings(**validate) -> Settings:
    params = image_params(None, None)
    params["validate"].update({"min_examples_per_class": MIN_PER_CLASS, **validate})
    return Settings.model_validate(params)


SETTINGS = _settings()
CLASSES = list(SETTINGS.data.labels)


@pytest.fixture(scope="module", autouse=True)
def _mirror() -> None:
    if not (mirror_dir() / FILES["train"]).is_file():
        pytest.fail(f"Fashion-MNIST not found at {mirror_dir()}; set ML_SHARED_DATA")


@functools.cache
def sample() -> dict[str, np.ndarray]:
    """The first PER_CLASS real images of each class from each file (file order)."""
    arrays: dict[str, np.ndarray] = {}
    for split, per_class in PER_CLASS.items():
        images = idx.read(mirror_dir() / FILES[split])
        labels = idx.read(mirror_dir() / FILES[f"{split}_labels"])
        rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))
        arrays[split], arrays[f"{split}_labels"] = images[rows], labels[rows]
    return arrays


def encode(arrays: dict[str, np.ndarray]) -> dict[str, bytes | None]:
    return {role: idx.encode(array) for role, array in arrays.items()}


def problems_of(contents: dict[str, bytes | None], settings: Settings = SETTINGS):
    """check -> {file -> its problem}."""
    problems, *_ = validate_contents(contents, settings)
    found: dict[str, dict] = {}
    for problem in problems:
        found.setdefault(problem.check, {})[problem.file] = problem
    return found


def test_sample_of_real_files_passes():
    problems, counts, rows = validate_contents(encode(sample()), SETTINGS)
    assert problems == []
    assert counts["train"] == dict.fromkeys(CLASSES, PER_CLASS["train"])
    assert rows == {"train": 80, "train_labels": 80, "holdout": 30, "holdout_labels": 30}


# -------------------------------------------------------------- corruptions, one per kind
# Each: (arrays (a copy to change), hypothesis data) -> (bytes per role, settings, expected
# check, its file, its row count, its example indices or None when not indices).
Corruption = Callable[[dict[str, np.ndarray], st.DataObject], tuple]

ROLE = st.sampled_from(sorted(FILES))
SPLIT = st.sampled_from(["train", "holdout"])


def _rows(data: st.DataObject, n: int, low: int = 1, high: int = 5) -> list[int]:
    return sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=low, max_size=high)))


def missing_file(arrays, data):
    role = data.draw(ROLE)
    contents = encode(arrays)
    contents[role] = None
    return contents, SETTINGS, "missing_file", role, 0, None


def bad_gzip(arrays, data):
    role = data.draw(ROLE)
    contents = encode(arrays)
    raw = contents[role]
    if data.draw(st.booleans()):  # not gzip at all: the raw IDX bytes, or any junk
        contents[role] = data.draw(
            st.binary(min_size=1, max_size=64).filter(lambda b: b[:2] != b"\x1f\x8b")
        )
    else:  # a gzip stream cut short
        contents[role] = raw[: data.draw(st.integers(2, len(raw) - 9))]
    return contents, SETTINGS, "bad_gzip", role, 0, None


def bad_idx(arrays, data):
    import gzip

    role = data.draw(ROLE)
    payload = gzip.decompress(idx.encode(arrays[role]))
    if data.draw(st.booleans()):  # a magic number that is no IDX header
        magic = data.draw(st.binary(min_size=4, max_size=4).filter(lambda b: b[:2] != b"\0\0"))
        payload = magic + payload[4:]
    else:  # data cut short or padded: the header's dimensions disagree with the bytes
        cut = data.draw(st.integers(1, 700))
        payload = payload[:-cut] if data.draw(st.booleans()) else payload + b"\0" * cut
    contents = encode(arrays)
    contents[role] = gzip.compress(payload)
    return contents, SETTINGS, "bad_idx", role, 0, None


def wrong_dtype(arrays, data):
    split = data.draw(SPLIT)
    dtype = data.draw(st.sampled_from([np.int16, np.int32, np.float32, np.float64, np.int8]))
    arrays[split] = arrays[split].astype(dtype)
    return encode(arrays), SETTINGS, "wrong_dtype", split, len(arrays[split]), None


def wrong_dimensions(arrays, data):
    split = data.draw(SPLIT)
    n = len(arrays[split])
    shape = data.draw(st.sampled_from([(n, 14, 56), (n, 784), (n, 28, 27), (n, 1, 28, 28)]))
    flat = arrays[split].reshape(-1)
    arrays[split] = np.resize(flat, int(np.prod(shape))).reshape(shape)
    return encode(arrays), SETTINGS, "wrong_dimensions", split, n, None


def count_mismatch(arrays, data):
    split = data.draw(SPLIT)
    n = len(arrays[split])
    k = data.draw(st.integers(1, 5))
    arrays[f"{split}_labels"] = arrays[f"{split}_labels"][: n - k]
    return encode(arrays), SETTINGS, "count_mismatch", split, k, list(range(n - k, n))[:3]


def empty_file(arrays, data):
    split = data.draw(SPLIT)
    arrays[split] = arrays[split][:0]
    arrays[f"{split}_labels"] = arrays[f"{split}_labels"][:0]
    return encode(arrays), SETTINGS, "empty_file", split, 0, None


def undeclared_labels(arrays, data):
    settings = override(SETTINGS, {"data.labels": []}, "test")
    return encode(arrays), settings, "undeclared_labels", "train", 80, None


def unknown_label(arrays, data):
    split = data.draw(SPLIT)
    rows = _rows(data, len(arrays[split]))
    arrays[f"{split}_labels"][rows] = data.draw(st.integers(10, 255))
    return encode(arrays), SETTINGS, "unknown_label", f"{split}_labels", len(rows), rows[:3]


def blank_image(arrays, data):
    split = data.draw(SPLIT)
    rows = _rows(data, len(arrays[split]))
    for row in rows:
        arrays[split][row] = data.draw(st.integers(0, 255))
    return encode(arrays), SETTINGS, "blank_image", split, len(rows), rows[:3]


def _copies(arrays, data, split):
    """Copy distinct images over other rows of the same split: (sources, targets)."""
    rows = _rows(data, len(arrays[split]), low=2, high=6)
    sources, targets = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    for source, target in zip(sources, targets, strict=False):
        arrays[split][target] = arrays[split][source]
    return targets[: len(sources)]


def duplicate_image(arrays, data):
    split = data.draw(SPLIT)
    targets = _copies(arrays, data, split)
    # Same labels too: a pure duplicate, not a conflict.
    labels = arrays[f"{split}_labels"]
    images = arrays[split]
    for target in targets:
        source = next(
            i for i in range(len(images)) if i != target and (images[i] == images[target]).all()
        )
        labels[target] = labels[source]
    return encode(arrays), SETTINGS, "duplicate_image", split, len(targets), None


def conflicting_labels(arrays, data):
    split = data.draw(SPLIT)
    rows = _rows(data, len(arrays[split]), low=2, high=2)
    source, target = rows
    arrays[split][target] = arrays[split][source]
    labels = arrays[f"{split}_labels"]
    labels[target] = (labels[source] + data.draw(st.integers(1, 9))) % 10
    return encode(arrays), SETTINGS, "conflicting_labels", split, 2, rows


def leakage_image(arrays, data):
    rows = _rows(data, len(arrays["holdout"]))
    for row in rows:
        arrays["holdout"][row] = arrays["train"][data.draw(st.integers(0, 79))]
    return encode(arrays), SETTINGS, "leakage_image", "train+holdout", len(rows), rows[:3]


def too_few_examples(arrays, data):
    label = data.draw(st.integers(0, 9))
    keep = data.draw(st.integers(1, MIN_PER_CLASS - 1))
    labels = arrays["train_labels"]
    rows = np.flatnonzero(labels == label)[keep:]
    mask = np.ones(len(labels), bool)
    mask[rows] = False
    arrays["train"], arrays["train_labels"] = arrays["train"][mask], labels[mask]
    return encode(arrays), SETTINGS, "too_few_examples", "train", keep, [CLASSES[label]]


def missing_class(arrays, data):
    label = data.draw(st.integers(0, 9))
    mask = arrays["train_labels"] != label
    arrays["train"], arrays["train_labels"] = arrays["train"][mask], arrays["train_labels"][mask]
    return encode(arrays), SETTINGS, "missing_class", "train", 0, [CLASSES[label]]


CORRUPTIONS: dict[str, Corruption] = {
    f.__name__: f
    for f in (
        missing_file,
        bad_gzip,
        bad_idx,
        wrong_dtype,
        wrong_dimensions,
        count_mismatch,
        empty_file,
        undeclared_labels,
        unknown_label,
        blank_image,
        duplicate_image,
        conflicting_labels,
        leakage_image,
        too_few_examples,
        missing_class,
    )
}


def test_every_check_has_a_corruption():
    assert set(CORRUPTIONS) == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_corruption_is_named(name, data):
    arrays = {role: array.copy() for role, array in sample().items()}
    contents, settings, check, file, rows, examples = CORRUPTIONS[name](arrays, data)
    found = problems_of(contents, settings)
    assert file in found.get(check, {}), f"{name}: expected {check} in {file}, got {found}"
    problem = found[check][file]
    assert problem.rows == rows
    assert problem.message
    if examples is not None:
        assert problem.examples == examples


@hsettings(max_examples=8, deadline=None)
@given(data=st.data())
def test_duplicates_and_leakage_within_their_tolerance_pass(data):
    arrays = {role: array.copy() for role, array in sample().items()}
    row = data.draw(st.integers(0, 29))
    arrays["holdout"][row] = arrays["train"][data.draw(st.integers(0, 79))]
    contents = encode(arrays)
    assert "leakage_image" in problems_of(contents)
    # One holdout image of 30 is a share of 1/30.
    assert problems_of(contents, _settings(max_leakage_share=0.05)) == {}
    assert "leakage_image" in problems_of(contents, _settings(max_leakage_share=0.02))


# ------------------------------------------------------------------ real files, real CLI


def _project(root: Path, **sections) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    params = image_params(1000, 300, **sections)
    del params["data"]["mirror"]  # the tests give ML_DATA_MIRROR, as CI does
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _ml(root: Path, *args: str):
    return run_ml(["data", *args], root, cli_env(ML_DATA_MIRROR=str(mirror_dir())))


def test_ingest_checks_sha256_and_validate_passes_the_real_files(tmp_path):
    root = _project(tmp_path / "p")
    ingest = _ml(root, "ingest")
    assert ingest.returncode == 0, ingest.stderr
    manifest = json.loads((root / "data/raw/manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == list(FILES.values())
    declared = yaml.safe_load((root / "params.yaml").read_text())["data"]["sha256"]
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == declared

    validate = _ml(root, "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    report = json.loads((root / "reports/data_validation.json").read_text())
    assert report["passed"] and report["problems"] == []
    assert report["class_counts"]["train"] == dict.fromkeys(CLASSES, 6000)
    assert report["class_counts"]["holdout"] == dict.fromkeys(CLASSES, 1000)
    assert {role: info["rows"] for role, info in report["files"].items()} == {
        "train": 60000,
        "train_labels": 60000,
        "holdout": 10000,
        "holdout_labels": 10000,
    }


def test_ingest_refuses_a_wrong_sha256_and_keeps_data_raw(tmp_path):
    root = _project(tmp_path / "p")
    assert _ml(root, "ingest").returncode == 0
    before = (root / "data/raw/manifest.json").read_bytes()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["sha256"][FILES["holdout_labels"]] = "0" * 64
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = _ml(root, "ingest")
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr and FILES["holdout_labels"] in result.stderr
    assert (root / "data/raw/manifest.json").read_bytes() == before
    assert not list((root / "data/raw").glob(".*partial"))


def _rewrite(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    idx.write(path, change(idx.read(path)))


def _leak(images: np.ndarray) -> np.ndarray:
    train = idx.read(mirror_dir() / FILES["train"])
    images = images.copy()
    images[[5, 17]] = train[[0, 1]]
    return images


def _blank(images: np.ndarray, row: int) -> np.ndarray:
    images = images.copy()
    images[row] = 0
    return images


CLI_CORRUPTIONS = {
    # name: (file, change, the check named, the examples it shows)
    "leakage": (FILES["holdout"], _leak, "leakage_image", "[5, 17]"),
    "count_mismatch": (
        FILES["train_labels"],
        lambda a: a[:-3],
        "count_mismatch",
        "[59997, 59998, 59999]",
    ),
    "blank": (FILES["holdout"], lambda a: _blank(a, 42), "blank_image", "[42]"),
}


@pytest.mark.parametrize("name", sorted(CLI_CORRUPTIONS))
def test_ml_data_validate_fails_on_a_corrupted_file_and_split_refuses(tmp_path, name):
    file, change, check, examples = CLI_CORRUPTIONS[name]
    root = _project(tmp_path / "p")
    assert _ml(root, "ingest").returncode == 0
    _rewrite(root / "data/raw" / file, change)
    result = _ml(root, "validate")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"[{check}]" in result.stdout and examples in result.stdout
    report = json.loads((root / "reports/data_validation.json").read_text())
    assert not report["passed"] and check in {p["check"] for p in report["problems"]}
    split = _ml(root, "split")
    assert split.returncode != 0 and "validation failed" in split.stderr
    assert not (root / "data/splits").exists()


def test_split_refuses_raw_files_changed_after_validation(tmp_path):
    root = make_image_project(tmp_path / "p")
    _rewrite(root.parent / "data/raw" / FILES["holdout"], _leak)
    result = _ml(root.parent, "split")
    assert result.returncode != 0 and "changed after validation" in result.stderr


# ----------------------------------------------------------------------------- splits


def _load(root: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(root / f"data/splits/{name}.npz") as archive:
        return {key: archive[key] for key in archive.files}


def test_split_is_stratified_seeded_and_indexes_the_source(tmp_path):
    root = make_image_project(tmp_path / "p", train_rows=1000, holdout_rows=300).parent
    train, val, test = (_load(root, name) for name in ("train", "val", "test"))
    assert set(train) == {"images", "labels", "ids"}
    assert train["images"].dtype == np.uint8 and train["images"].shape[1:] == (28, 28)
    assert train["labels"].dtype == np.int64 and train["ids"].dtype == np.int64
    assert np.bincount(train["labels"]).tolist() == [90] * 10  # split.val_fraction 0.1
    assert np.bincount(val["labels"]).tolist() == [10] * 10
    assert np.bincount(test["labels"]).tolist() == [30] * 10
    assert set(train["ids"]).isdisjoint(val["ids"])
    source = idx.read(mirror_dir() / FILES["train"])
    source_labels = idx.read(mirror_dir() / FILES["train_labels"])
    for split in (train, val):
        assert (source[split["ids"]] == split["images"]).all()
        assert (source_labels[split["ids"]] == split["labels"]).all()
    holdout = idx.read(mirror_dir() / FILES["holdout"])
    assert (holdout[test["ids"]] == test["images"]).all()
    labels = json.loads((root / "data/splits/labels.json").read_text())["labels"]
    assert labels == CLASSES

    # Same params: the same bytes; another seed: another subset with the same class mix.
    again = make_image_project(tmp_path / "q", train_rows=1000, holdout_rows=300).parent
    shutil.rmtree(again / "data/splits")
    assert _ml(again, "split").returncode == 0
    for name in ("train", "val", "test"):
        assert (again / f"data/splits/{name}.npz").read_bytes() == (
            root / f"data/splits/{name}.npz"
        ).read_bytes()
    other = make_image_project(tmp_path / "r", 1000, 300, split={"seed": 7}).parent
    other_train = _load(other, "train")
    assert set(other_train["ids"]) != set(train["ids"])
    assert np.bincount(other_train["labels"]).tolist() == [90] * 10


def test_read_split_gives_class_names_ids_and_statistics(tmp_path):
    from ml.config import load_settings
    from ml.data.splits import split_path
    from ml.tasks import task_of

    params = make_image_project(tmp_path / "p")
    settings = load_settings(params, environ={})
    settings.root = params.parent
    task = task_of(settings)
    test = task.read_split(settings, split_path(settings, "test"))
    raw = _load(params.parent, "test")
    assert len(test) == 300 and test.inputs.dtype == np.uint8
    assert test.labels == [CLASSES[i] for i in raw["labels"]]
    assert test.ids == raw["ids"].tolist()
    pixels = raw["images"].reshape(300, -1) / 255.0
    assert np.allclose(test.details["mean_intensity"], pixels.mean(axis=1), atol=1e-6)
    assert np.allclose(test.details["contrast"], pixels.std(axis=1), atol=1e-6)
    capped = task.read_split(settings, split_path(settings, "test"), max_rows=50)
    assert len(capped) == 50 and set(capped.labels) == set(CLASSES)
