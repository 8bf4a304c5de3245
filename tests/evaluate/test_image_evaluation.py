"""Evaluation, slices, gate and PR report for the image task, on real Fashion-MNIST images.

The predictor here is a real (if weak) model, a nearest-centroid classifier over the pixels
fitted on training images: enough to score, slice and report without torch or Ray. The CNN's
own predictor is tested in test_image_model_eval.py.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import yaml

from ml.compare import compare
from ml.config import ConfigError, Settings, SliceSettings, load_settings
from ml.evaluate.evaluate import evaluate_predictor, not_applicable
from ml.evaluate.metrics import classification_metrics
from ml.gate import decide
from ml.report.pr import PrReportInputs, render
from ml.tasks import get_task
from ml.tasks.base import Examples
from tests.conftest import shared_data_dir

FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
TOPS = ["T-shirt/top", "Pullover", "Coat", "Shirt"]
SLICES = [
    {"name": "dark", "function": "brightness", "max_intensity": 0.2},
    {"name": "bright", "function": "brightness", "min_intensity": 0.43},
    {"name": "tops", "function": "classes", "classes": TOPS},
]
GOLDEN = Path(__file__).parent / "golden"


def read_idx(name: str, count: int) -> np.ndarray:
    """The first `count` items of one Fashion-MNIST IDX file (big-endian header, then bytes)."""
    raw = gzip.decompress((shared_data_dir() / "fashion-mnist" / name).read_bytes())
    if name.endswith("images-idx3-ubyte.gz"):
        return np.frombuffer(raw, np.uint8, count * 784, offset=16).reshape(count, 28, 28)
    return np.frombuffer(raw, np.uint8, count, offset=8).astype(np.int64)


def image_settings(**evaluate) -> Settings:
    return Settings.model_validate(
        {
            "task": "image-classification",
            "data": {"source": "unused", "labels": FASHION},
            "evaluate": {"slices": SLICES, **evaluate},
        }
    )


def examples(images: np.ndarray, label_ids: np.ndarray) -> Examples:
    flat = images.reshape(len(images), -1).astype(float) / 255
    return Examples(
        inputs=images,
        labels=[FASHION[i] for i in label_ids],
        ids=list(range(len(images))),
        details={"mean_intensity": flat.mean(axis=1), "contrast": flat.std(axis=1)},
    )


class NearestCentroid:
    """A real classifier: softmax over negative distances to each class's mean image."""

    labels = FASHION

    def __init__(self, images: np.ndarray, label_ids: np.ndarray) -> None:
        flat = images.reshape(len(images), -1).astype(np.float32) / 255
        self.centroids = np.stack([flat[label_ids == k].mean(axis=0) for k in range(10)])

    def predict_proba(self, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
        flat = np.asarray(inputs).reshape(len(inputs), -1).astype(np.float32) / 255
        distance = ((flat[:, None, :] - self.centroids[None]) ** 2).sum(axis=2)
        logits = -distance
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return (proba / proba.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def holdout() -> Examples:
    return examples(
        read_idx("t10k-images-idx3-ubyte.gz", 400), read_idx("t10k-labels-idx1-ubyte.gz", 400)
    )


@pytest.fixture(scope="module")
def predictor() -> NearestCentroid:
    images = read_idx("train-images-idx3-ubyte.gz", 2000)
    return NearestCentroid(images, read_idx("train-labels-idx1-ubyte.gz", 2000))


@pytest.fixture(scope="module")
def evaluated(holdout, predictor):
    return evaluate_predictor(predictor, holdout, image_settings(), None)


def test_brightness_and_class_slices_select_the_right_images():
    values = [0, 40, 50, 52, 110, 200]
    images = np.stack([np.full((28, 28), v, dtype=np.uint8) for v in values])
    ex = examples(images, np.array([0, 2, 4, 6, 1, 9]))
    masks = get_task("image-classification").slice_masks(image_settings(), ex)
    # 50/255 < 0.2 < 52/255 and 110/255 > 0.43
    assert masks["dark"].tolist() == [True, True, True, False, False, False]
    assert masks["bright"].tolist() == [False, False, False, False, True, True]
    assert masks["tops"].tolist() == [True, True, True, True, False, False]
    # Without read_split's detail the intensity is computed from the pixels, the same way.
    bare = Examples(ex.inputs, ex.labels, ex.ids, {})
    assert get_task("image-classification").slice_masks(image_settings(), bare)[
        "dark"
    ].tolist() == (masks["dark"].tolist())


def test_image_evaluation_scores_names_and_slices(evaluated, holdout):
    result, predictions = evaluated
    assert result["task"] == "image-classification"
    assert set(result["per_class"]) == set(FASHION)  # class names, never label ids
    assert result["confusion_matrix"]["labels"] == FASHION  # data.labels order, as the ids
    assert sum(map(sum, result["confusion_matrix"]["matrix"])) == 400
    assert result["overall"]["accuracy"] == pytest.approx(predictions["correct"].mean())
    assert 0.5 < result["overall"]["accuracy"] < 0.95  # nearest centroid: about 0.7
    assert 0 <= result["calibration"]["ece"] <= 1
    intensity = np.asarray(holdout.details["mean_intensity"])
    assert result["slices"]["dark"]["num_samples"] == int((intensity <= 0.2).sum()) > 0
    tops = [label in TOPS for label in holdout.labels]
    assert result["slices"]["tops"]["num_samples"] == sum(tops)
    assert result["slices"]["tops"]["accuracy"] == pytest.approx(
        predictions.loc[tops, "correct"].mean()
    )
    assert result["slices"]["tops"]["description"] == "classes " + ", ".join(TOPS)
    assert result["behavioural"]["status"] == "not_applicable"
    # predictions.csv shows the image statistics, never the pixels
    assert list(predictions.columns) == [
        "id",
        "mean_intensity",
        "contrast",
        "label",
        "predicted",
        "confidence",
        "correct",
    ]


def test_the_gate_skips_behavioural_checks_the_task_has_not(evaluated, holdout):
    result, predictions = evaluated
    settings = image_settings()
    floors = settings.gate.model_copy(update={"floors": {"accuracy": 0.5}})
    decision = decide(result, None, True, floors)
    assert decision.passed, decision.reasons
    behavioural = next(c for c in decision.checks if c.name == "behavioural")
    assert behavioural.passed and "not applicable" in behavioural.detail
    too_high = settings.gate.model_copy(update={"floors": {"accuracy": 0.99}})
    assert not decide(result, None, True, too_high).passed
    # Compared with itself (a champion on the same holdout) it passes: nothing task-specific.
    rows = {"predicted": predictions["predicted"], "confidence": predictions["confidence"]}
    itself = compare(
        predictions["label"].tolist(),
        rows,
        rows,
        list(result["per_class"]),
        list(holdout.ids),
        get_task("image-classification").prediction_columns(holdout),
        resamples=200,
    )
    assert decide(result, result, True, settings.gate, itself).passed
    assert itself.flips["disagree"] == 0 and itself.mdd["basis"] == "independent errors"


def image_report(evaluation: dict) -> PrReportInputs:
    challenger = {
        **evaluation,
        "version": "1",
        "model_uri": "models:/fashion-classifier/1",
        "run_id": "run1",
    }
    return PrReportInputs(
        evaluation=None,
        gate={
            "verdict": "pass",
            "passed": True,
            "mode": "floors",
            "reasons": ["accuracy 0.7550 >= floor 0.7"],
            "checks": [
                {
                    "name": "behavioural",
                    "passed": True,
                    "detail": "behavioural checks not applicable: the image-classification task "
                    "has none",
                },
                {
                    "name": "floor.accuracy",
                    "passed": True,
                    "detail": "accuracy 0.7550 >= floor 0.7",
                },
            ],
            "thresholds": {
                "f1_tolerance": 0.01,
                "max_class_f1_drop": 0.05,
                "min_behavioural_pass_rate": 1.0,
                "floors": {"accuracy": 0.7},
            },
            "challenger": challenger,
            "champion": None,
            "task": "image-classification",
        },
        data_validation={
            "passed": True,
            "problems": [],
            "labels": FASHION,
            "files": {"train": {"rows": 60000}, "holdout": {"rows": 10000}},
        },
        train=None,
        registry=None,
        params_diff={},
        params_diff_error=None,
        base_rev="main",
        commit="0123456789abcdef",
    )


def fixed_image_evaluation() -> dict:
    """An image evaluation from fixed predictions (stable across library versions)."""
    rng = np.random.default_rng(0)
    y_true = [FASHION[i % 10] for i in range(200)]
    y_pred = [t if rng.random() < 0.8 else FASHION[rng.integers(10)] for t in y_true]
    confidence = rng.uniform(0.3, 1.0, 200).round(3).tolist()
    result = classification_metrics(y_true, y_pred, confidence, FASHION)
    result["slices"] = {
        "dark": {
            "description": "mean intensity ≤ 0.2",
            "num_samples": 31,
            "accuracy": 0.7419,
            "f1_weighted": 0.7301,
        },
        "tops": {
            "description": "classes " + ", ".join(TOPS),
            "num_samples": 80,
            "accuracy": 0.8,
            "f1_weighted": 0.79,
        },
    }
    return {
        **result,
        "behavioural": not_applicable(image_settings()),
        "task": "image-classification",
    }


def test_image_report_has_every_section_with_class_names():
    body = render(image_report(fixed_image_evaluation()))
    golden = GOLDEN / "pr_comment_image.md"
    import os

    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(body, encoding="utf-8")
    assert body == golden.read_text(encoding="utf-8")
    assert "_Task `image-classification`, model `models:/fashion-classifier/1`._" in body
    for section in ("### Per class", "### Slices", "Confusion matrix", "### Calibration"):
        assert section in body
    assert "| T-shirt/top | 20 |" in body and "| Ankle boot |" in body
    assert "true ↓ / predicted → | T-shirt/top | Trouser | Pullover |" in body
    assert "tops (classes T-shirt/top, Pullover, Coat, Shirt)" in body
    assert "**not applicable**" in body and "Behavioural checks" in body


def test_a_slice_the_task_lacks_is_a_config_error_naming_what_it_offers(tmp_path: Path):
    params = {
        "task": "image-classification",
        "data": {"source": "x", "labels": FASHION},
        "evaluate": {"slices": [{"name": "short", "function": "short_text", "words": 5}]},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(
        ConfigError, match=r"does not offer; use one of \['brightness', 'classes'\]"
    ):
        load_settings(path, environ={})
    params["task"] = "text-classification"
    params["evaluate"]["slices"] = [
        {"name": "dark", "function": "brightness", "max_intensity": 0.1}
    ]
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"use one of \['keywords', 'long_text', 'short_text'\]"):
        load_settings(path, environ={})
    params["task"] = "image-classification"
    params["evaluate"]["slices"] = [{"name": "x", "function": "classes", "classes": ["Hat"]}]
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"classes \['Hat'\] that are not in data.labels"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"function": "brightness"}, "needs `min_intensity` and/or `max_intensity`"),
        ({"function": "brightness", "min_intensity": 0.9, "max_intensity": 0.1}, "> max_intensity"),
        ({"function": "brightness", "max_intensity": 200}, "less than or equal to 1"),
        ({"function": "classes"}, "needs a non-empty `classes` list"),
        ({"function": "classes", "classes": ["Bag"], "words": 3}, "takes classes, not"),
    ],
)
def test_slice_arguments_are_validated(spec: dict, message: str):
    with pytest.raises(ValueError, match=message):
        SliceSettings(name="s", **spec)
