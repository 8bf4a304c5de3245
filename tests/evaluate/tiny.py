"""A small real model and project folder for evaluation, gate, registry and report tests.

The model is the packaged MiniLM-L6 with a classifier head trained for a few plain torch steps on
a few dozen Made-With-ML rows (seconds, no Ray): real enough to load, predict and log, cheap
enough for every test run. Its quality is whatever those steps give; tests that need a pass or a
fail control it with the gate's thresholds, not with the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tests.conftest import REPO_ROOT, shared_data_dir

LABEL_COLUMN = "tag"
TEXT_COLUMNS = ["title", "description"]
MAX_LENGTH = 32


def build_tiny_model(
    out_dir: Path, steps: int = 60, seed: int = 0, data_file: Path | None = None
) -> Path:
    """`data_file`: a CSV with the same columns (default: Made-With-ML's dataset.csv)."""
    import torch

    from ml.data.text import combine_text
    from ml.train.model import build_model, save_model

    if (out_dir / "meta.json").is_file():
        return out_dir
    torch.manual_seed(seed)
    data = pd.read_csv(data_file or shared_data_dir() / "madewithml" / "dataset.csv")
    sample = data.groupby(LABEL_COLUMN, group_keys=False).head(8).reset_index(drop=True)
    labels = sorted(data[LABEL_COLUMN].unique())
    model, tokenizer = build_model("all-minilm-l6-v2", labels)
    texts = combine_text(sample, TEXT_COLUMNS).tolist()
    target = torch.tensor([labels.index(t) for t in sample[LABEL_COLUMN]])
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    # Only the head learns, on the features it receives (captured with a forward hook, so this
    # works whatever pooling the model uses): one encoder pass in all, seconds on 2 cores.
    captured: list[torch.Tensor] = []
    hook = model.classifier.register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].detach())
    )
    model.eval()
    with torch.no_grad():
        model(**batch)
    hook.remove()
    optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model.classifier(captured[0]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_model(model, tokenizer, labels, out_dir, MAX_LENGTH, extra={"text_columns": TEXT_COLUMNS})
    return out_dir


def make_eval_project(
    root: Path, holdout_per_class: int = 6, params: dict[str, Any] | None = None
) -> Path:
    """A project folder: the repo's params.yaml (plus `params` merged per section), the
    behavioural cases, a small real holdout and a passing data-validation report."""
    root.mkdir(parents=True, exist_ok=True)
    settings = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    settings["mlflow"] = {
        "tracking_uri": "sqlite:///mlflow.db",
        "experiment": "test",
        "registered_model": "tag-classifier",
    }
    for section, values in (params or {}).items():
        settings.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    cases = root / "ml" / "evaluate"
    cases.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "ml" / "evaluate" / "behavioural.yaml", cases / "behavioural.yaml")

    holdout = pd.read_csv(shared_data_dir() / "madewithml" / "holdout.csv")
    test = holdout.groupby(LABEL_COLUMN, group_keys=False).head(holdout_per_class)
    splits = root / "data" / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    test[["id", *TEXT_COLUMNS, LABEL_COLUMN]].to_csv(splits / "test.csv", index=False)
    for name in ("train.csv", "val.csv"):  # only their checksums are read (registry tags)
        test.head(2).to_csv(splits / name, index=False)
    reports = root / "reports"
    reports.mkdir(exist_ok=True)
    labels = sorted(holdout[LABEL_COLUMN].unique())
    (reports / "data_validation.json").write_text(
        json.dumps(
            {
                "passed": True,
                "problems": [],
                "labels": labels,
                "files": {"train": {"rows": 764}, "holdout": {"rows": len(holdout)}},
                "class_counts": {},
            }
        )
    )
    return root


def set_params(root: Path, section: str, **values: Any) -> None:
    path = root / "params.yaml"
    settings = yaml.safe_load(path.read_text())
    settings.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))


def log_model_run(root: Path, model_dir: Path, tracking_uri: str) -> dict[str, Any]:
    """Log `model_dir` as the pyfunc model of a new MLflow run (as `ml train` does) and write
    reports/train.json for it."""
    import mlflow

    from ml.train.pyfunc import log_pyfunc_model

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("test")
    with mlflow.start_run() as run:
        model_uri = log_pyfunc_model(model_dir)
    report = {
        "run_id": run.info.run_id,
        "model_uri": model_uri,
        "model_dir": str(model_dir),
        "metrics": {"val_f1": 0.5},
        "duration_s": 12.5,
        "samples_per_s": 24.0,
        "resources": {"num_workers": 2, "use_gpu": False, "cpus_per_worker": 1},
        "params": {},
    }
    (root / "reports" / "train.json").write_text(json.dumps(report))
    return report
