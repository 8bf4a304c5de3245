"""The data stages on the real shared datasets, through the installed `ml` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import cli_env, run_ml

DATASETS = {
    # name: (params file inside the project, mirror folder, train file, holdout file, classes)
    "madewithml": ("params.yaml", "madewithml", "dataset.csv", "holdout.csv", 4),
    "medical-abstracts": (
        "configs/medical-abstracts.yaml",
        "medical-abstracts",
        "train.csv",
        "test.csv",
        5,
    ),
}


def run_data_stages(project: Path, params: str, mirror: Path) -> dict[str, str]:
    env = cli_env(ML_DATA_MIRROR=str(mirror))
    outputs = {}
    for verb in ("ingest", "validate", "split"):
        result = run_ml(["--params", params, "data", verb], project, env)
        assert result.returncode == 0, f"ml data {verb}: {result.stdout}\n{result.stderr}"
        outputs[verb] = result.stdout
    return outputs


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_real_dataset_ingests_validates_and_splits(project, shared_data, dataset):
    params, mirror, train_file, holdout_file, n_classes = DATASETS[dataset]
    run_data_stages(project, params, shared_data / mirror)

    manifest = json.loads((project / "data/raw/manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == [train_file, holdout_file]
    report = json.loads((project / "reports/data_validation.json").read_text())
    assert report["passed"] is True and report["problems"] == []
    assert len(report["labels"]) == n_classes

    source = pd.read_csv(shared_data / mirror / train_file)
    train = pd.read_csv(project / "data/splits/train.csv")
    val = pd.read_csv(project / "data/splits/val.csv")
    test = pd.read_csv(project / "data/splits/test.csv")
    assert len(train) + len(val) == len(source)
    assert set(train["id"]).isdisjoint(val["id"])
    assert len(test) == len(pd.read_csv(shared_data / mirror / holdout_file))
    # Stratified: every class keeps its share within one row of the 20% target.
    for label, count in source["tag"].value_counts().items():
        assert abs((val["tag"] == label).sum() - round(count * 0.2)) <= 1, label


def test_split_is_identical_across_runs(project, shared_data):
    run_data_stages(project, "params.yaml", shared_data / "madewithml")
    first = {n: (project / "data/splits" / n).read_bytes() for n in ("train.csv", "val.csv")}
    shutil.rmtree(project / "data")
    run_data_stages(project, "params.yaml", shared_data / "madewithml")
    second = {n: (project / "data/splits" / n).read_bytes() for n in ("train.csv", "val.csv")}
    assert first == second


def test_offline_without_mirror_says_how_to_set_one(project):
    # Point the source at an address that cannot resolve, as on an offline machine.
    params = (project / "params.yaml").read_text()
    offline = params.replace("https://raw.githubusercontent.com", "https://host.invalid")
    (project / "params.yaml").write_text(offline)
    result = run_ml(["data", "ingest"], project)
    assert result.returncode != 0
    assert "ML_DATA_MIRROR" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "data/raw/dataset.csv").exists()


def test_checksum_mismatch_is_refused_and_keeps_previous_data(project, shared_data, tmp_path):
    run_ml(["data", "ingest"], project, cli_env(ML_DATA_MIRROR=str(shared_data / "madewithml")))
    before = (project / "data/raw/dataset.csv").read_bytes()
    tampered = tmp_path / "tampered"
    shutil.copytree(shared_data / "madewithml", tampered)
    with (tampered / "holdout.csv").open("a") as handle:
        handle.write("9999,2020-01-01,extra,row,other\n")
    result = run_ml(["data", "ingest"], project, cli_env(ML_DATA_MIRROR=str(tampered)))
    assert result.returncode != 0
    assert "checksum mismatch for holdout.csv" in result.stderr
    assert (project / "data/raw/dataset.csv").read_bytes() == before
    assert not list((project / "data/raw").glob(".*partial"))


def test_corrupted_dataset_lists_every_problem_and_blocks_split(project, shared_data, tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    train = pd.read_csv(shared_data / "madewithml/dataset.csv")
    holdout = pd.read_csv(shared_data / "madewithml/holdout.csv")
    train.loc[3, "id"] = train.loc[2, "id"]  # duplicate_id
    train.loc[5, "title"], train.loc[5, "description"] = "", ""  # empty_text
    train.loc[7, "tag"] = None  # missing_label
    holdout.loc[0, "id"] = train.loc[10, "id"]  # leakage_id
    holdout.loc[1, "tag"] = "quantum-computing"  # unknown_label
    train.to_csv(corrupt / "dataset.csv", index=False)
    holdout.to_csv(corrupt / "holdout.csv", index=False)
    params = (project / "params.yaml").read_text()
    # The corrupted copies have other checksums; accept and record them for this test.
    params = (
        params.split("  sha256:")[0]
        + "  sha256: {}\n"
        + params.split("holdout.csv: ")[1].split("\n", 1)[1]
    )
    (project / "params.yaml").write_text(params)

    env = cli_env(ML_DATA_MIRROR=str(corrupt))
    assert run_ml(["data", "ingest"], project, env).returncode == 0
    result = run_ml(["data", "validate"], project, env)
    assert result.returncode == 1
    for kind in ("duplicate_id", "empty_text", "missing_label", "leakage_id", "unknown_label"):
        assert f"[{kind}]" in result.stdout, result.stdout
    report = json.loads((project / "reports/data_validation.json").read_text())
    assert report["passed"] is False
    assert {p["check"] for p in report["problems"]} >= {"duplicate_id", "leakage_id"}

    split = run_ml(["data", "split"], project, env)
    assert split.returncode != 0 and "validation failed" in split.stderr
    assert not (project / "data/splits").exists()


def test_validate_without_ingest_names_the_missing_files(project):
    result = run_ml(["data", "validate"], project)
    assert result.returncode == 1
    assert "[missing_file]" in result.stdout and "ml data ingest" in result.stdout
