"""The image task's model: the CNN's shapes, collation, the model dir round trip, the pyfunc
frame, and that a few steps of training on real Fashion-MNIST images lower the loss."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest

from ml.config import Settings
from ml.tasks import get_task
from ml.tasks.image_classification import model as image_model
from tests.conftest import shared_data_dir

LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def settings(**image: object) -> Settings:
    return Settings(
        task="image-classification",
        data={"source": "unused", "labels": LABELS},
        image={"conv_channels": [8, 16], "hidden": 32, **image},
        model={"dropout": 0.1},
    )


def read_idx(name: str, offset: int, count: int) -> np.ndarray:
    path = shared_data_dir() / "fashion-mnist" / name
    if not path.is_file():
        pytest.fail(f"{path} missing: clone with ../shared beside the repo or set ML_SHARED_DATA")
    with gzip.open(path) as handle:
        values = np.frombuffer(handle.read(), np.uint8, offset=offset)
    return values[: count * (784 if offset == 16 else 1)]


@pytest.fixture(scope="module")
def real_images() -> tuple[np.ndarray, np.ndarray]:
    """The first 256 training images of Fashion-MNIST and their label ids."""
    images = read_idx("train-images-idx3-ubyte.gz", 16, 256).reshape(-1, 28, 28)
    return images, read_idx("train-labels-idx1-ubyte.gz", 8, 256).astype(np.int64)


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def test_forward_gives_logits_and_features_of_the_configured_sizes() -> None:
    import torch

    module, transform = get_task("image-classification").build_model(settings(), LABELS)
    encoded = image_model.encode(transform, random_images(5), settings())
    assert encoded["pixels"].dtype == np.uint8 and encoded["pixels"].shape == (5, 28, 28)
    batch = image_model.collate({**encoded, "labels": np.arange(5)}, "cpu", train=False)
    module.eval()
    out = module(pixels=batch["pixels"])
    assert out.logits.shape == (5, 10) and out.features.shape == (5, 32)
    assert batch["labels"].dtype == torch.int64
    # N x 1 x H x W (the predictor's and ONNX's input) gives the same as N x H x W
    same = module(pixels=batch["pixels"].unsqueeze(1)).logits
    torch.testing.assert_close(same, out.logits)


def test_three_blocks_and_two_convs_per_block_build() -> None:
    module, _ = image_model.build_model(
        settings(conv_channels=[4, 8, 8], convs_per_block=2), LABELS
    )
    import torch

    assert module(pixels=torch.zeros(2, 28, 28)).logits.shape == (2, 10)


def test_too_many_blocks_for_the_image_is_a_clear_error() -> None:
    with pytest.raises(image_model.ModelError, match=r"fewer image\.conv_channels"):
        image_model.build_model(settings(conv_channels=[4] * 6), LABELS)


def test_encode_rejects_the_wrong_shape() -> None:
    transform = image_model.preprocessor(settings())
    with pytest.raises(image_model.ImageInputError, match="N x 28 x 28"):
        image_model.encode(transform, np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(image_model.ImageInputError, match="0-255"):
        image_model.encode(transform, np.full((1, 28, 28), 300))


def test_augmentation_acts_in_training_only_and_follows_torch_seed() -> None:
    import torch

    module, _ = image_model.build_model(settings(augment=True), LABELS)
    pixels = torch.from_numpy(random_images(16).astype(np.float32))
    module.eval()
    torch.manual_seed(1)
    first = module.features(pixels)
    torch.manual_seed(2)
    torch.testing.assert_close(module.features(pixels), first)  # eval: no randomness
    module.augment.train()  # the augmentation layer alone, so batch norm stays in eval mode
    torch.manual_seed(3)
    a = module.augment(pixels.unsqueeze(1))
    torch.manual_seed(3)
    b = module.augment(pixels.unsqueeze(1))
    torch.manual_seed(4)
    c = module.augment(pixels.unsqueeze(1))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, pixels.unsqueeze(1))
    # a shift and flip move pixels, they do not invent values
    assert set(a.unique().tolist()) <= set(pixels.unique().tolist()) | {0.0}


def test_augment_off_is_the_identity_in_training() -> None:
    import torch

    module, _ = image_model.build_model(settings(augment=False), LABELS)
    module.train()
    pixels = torch.from_numpy(random_images(4).astype(np.float32)).unsqueeze(1)
    assert torch.equal(module.augment(pixels), pixels)


def test_collate_is_deterministic() -> None:
    import torch

    batch = {"pixels": random_images(8), "labels": np.arange(8) % 10}
    for flag in (False, True):
        one = image_model.collate(batch, "cpu", train=flag)
        two = image_model.collate(batch, "cpu", train=flag)
        assert one.keys() == {"pixels", "labels"}
        assert torch.equal(one["pixels"], two["pixels"])
        assert one["pixels"].dtype == torch.float32


def trained_a_little(module: object) -> None:
    import torch

    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    pixels = torch.from_numpy(random_images(32).astype(np.float32))
    for _ in range(2):  # moves batch-norm statistics and weights off their initial values
        loss = module(pixels=pixels).logits.logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_save_and_load_give_identical_probabilities_and_features(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    module, transform = image_model.build_model(settings(), LABELS)
    trained_a_little(module)
    module.eval()
    images = random_images(20, seed=3)
    target = tmp_path / "model"
    image_model.save_model(module, transform, LABELS, target, {"params_hash": "abc"})
    meta = image_model.read_meta(target)
    assert meta["task"] == "image-classification" and meta["labels"] == LABELS
    assert (meta["height"], meta["width"], meta["params_hash"]) == (28, 28, "abc")
    assert meta["architecture"]["conv_channels"] == [8, 16]
    predictor = get_task("image-classification").load_predictor(target)
    assert predictor.labels == LABELS
    with torch.inference_mode():
        pixels = torch.from_numpy(images.astype(np.float32))
        expected = torch.softmax(module(pixels=pixels).logits, 1)
    probabilities = predictor.predict_proba(images, batch_size=7)
    assert probabilities.dtype == np.float32 and probabilities.shape == (20, 10)
    np.testing.assert_allclose(probabilities, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    features = predictor.features(images)
    assert features.shape == (20, 32) and features.dtype == np.float32
    # a second save replaces the dir whole
    image_model.save_model(module, transform, LABELS, target, {})
    assert "params_hash" not in image_model.read_meta(target)
    np.testing.assert_array_equal(
        image_model.load_predictor(target).predict_proba(images, batch_size=7), probabilities
    )


def test_load_predictor_refuses_a_text_model_dir(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text('{"labels": ["a"], "max_length": 32}')
    with pytest.raises(image_model.ModelError, match="not an image-classification model dir"):
        image_model.load_predictor(tmp_path)


def test_predict_proba_checks_the_image_size(tmp_path: Path) -> None:
    module, transform = image_model.build_model(settings(), LABELS)
    image_model.save_model(module, transform, LABELS, tmp_path / "m", {})
    predictor = image_model.load_predictor(tmp_path / "m")
    with pytest.raises(image_model.ImageInputError, match="N x 28 x 28"):
        predictor.predict_proba(np.zeros((2, 27, 28), np.uint8))
    assert predictor.predict_proba(np.zeros((0, 28, 28), np.uint8)).shape == (0, 10)


def png_bytes(image: np.ndarray, mode: str = "L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_frame_round_trip_with_lists_and_png_bytes() -> None:
    images = random_images(6, seed=5)
    meta = {"height": 28, "width": 28}
    frame = image_model.to_frame(images)
    assert list(frame.columns) == ["image"] and len(frame.iloc[0]["image"]) == 784
    np.testing.assert_array_equal(image_model.from_frame(frame, meta), images)
    frame["image"] = [png_bytes(image) for image in images]
    np.testing.assert_array_equal(image_model.from_frame(frame, meta), images)
    task = get_task("image-classification")
    np.testing.assert_array_equal(task.from_frame(task.to_frame(images), meta), images)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (list(range(100)), "100 pixel values"),
        (png_bytes(np.zeros((28, 28), np.uint8), "RGB"), "mode is RGB"),
        (png_bytes(np.zeros((32, 28), np.uint8)), "28x32"),
        (b"not an image at all", "cannot decode"),
        ([300] * 784, "0-255"),
    ],
)
def test_from_frame_says_what_is_wrong(cell: object, message: str) -> None:
    import pandas as pd

    with pytest.raises(image_model.ImageInputError, match=message):
        image_model.from_frame(pd.DataFrame({"image": [cell]}), {"height": 28, "width": 28})


def test_from_frame_needs_the_image_column() -> None:
    import pandas as pd

    with pytest.raises(image_model.ImageInputError, match="'image' column"):
        image_model.from_frame(pd.DataFrame({"pixels": [[0] * 784]}), {})


def test_a_few_steps_on_real_images_lower_the_loss(real_images) -> None:
    import torch

    from ml.train import loop

    images, label_ids = real_images
    loop.set_seed(0)
    task = get_task("image-classification")
    config = settings(conv_channels=[16, 32], hidden=64, augment=False)
    module, transform = task.build_model(config, LABELS)
    encoded = {**task.encode(transform, images, config), "labels": label_ids}

    def loss_now() -> float:
        _, _, loss_sum = loop.predict_batches(
            module, loop.iterate_batches(encoded, 64, shuffle=False), collate=task.collate
        )
        return loss_sum / len(label_ids)

    before = loss_now()
    optimizer = loop.make_optimizer(module, 3e-3, 0.0)
    for epoch in range(3):
        loop.train_epoch(
            module,
            loop.iterate_batches(encoded, 32, shuffle=True, seed=0, epoch=epoch),
            optimizer,
            None,
            collate=task.collate,
            label_smoothing=0.0,
        )
    after = loss_now()
    assert after < 0.7 * before, (before, after)
    assert not torch.isnan(torch.tensor(after))


def test_train_tiny_image_model_writes_a_model_dir_that_predicts(tmp_path: Path) -> None:
    from ml.config import load_settings
    from ml.data.splits import split_path
    from tests.image_project import make_image_project, train_tiny_image_model

    params = make_image_project(tmp_path / "project", train_rows=300, holdout_rows=100)
    model_dir = train_tiny_image_model(params, steps=10)
    assert model_dir == tmp_path / "project" / "models" / "model"
    settings = load_settings(params, environ={})
    settings.root = params.parent
    task = get_task("image-classification")
    test = task.read_split(settings, split_path(settings, "test"))
    predictor = task.load_predictor(model_dir)
    probabilities = predictor.predict_proba(test.inputs)
    assert probabilities.shape == (len(test), 10)
    assert predictor.features(test.inputs[:3]).shape == (3, settings.image.hidden)


def test_tune_space_is_dropout_and_feature_width_of_valid_params() -> None:
    from ml.config import override

    config = settings()
    space = get_task("image-classification").tune_space(config)
    assert space == {"model.dropout": [0.0, 0.1, 0.2], "image.hidden": [64, 128, 256]}
    trial = override(config, {"model": {"dropout": 0.2}, "image": {"hidden": 64}}, "test")
    module, _ = image_model.build_model(trial, LABELS)
    assert module.arch.hidden == 64 and module.arch.dropout == 0.2
