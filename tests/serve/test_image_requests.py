"""Image request parsing without a server (ml/tasks/image_classification/serving.py): every form
gives the same pixels, every bad request a 4xx naming the problem, nothing reaches a batch that
the model could choke on, and the log keeps a hash and statistics, not the pixels."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ml.tasks.request import RequestError
from tests.conftest import REPO_ROOT

META = {"task": "image-classification", "height": 28, "width": 28}


@pytest.fixture(scope="module")
def settings():
    from ml.config import load_settings, override

    base = load_settings(REPO_ROOT / "configs" / "fashion-mnist.yaml")
    return override(
        base,
        {
            "serve.max_batch_items": 4,
            "serve.max_body_bytes": 200_000,
            "image.max_image_bytes": 20_000,
        },
        "test",
    )


def _with(settings, **image):
    from ml.config import override

    return override(settings, {"image": image}, "test")


def _parse(body, content_type="application/json", settings=None, meta=META):
    from ml.tasks import get_task

    return get_task("image-classification").parse_request(body, content_type, settings, meta)


def png(pixels: np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format=fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _json(payload) -> bytes:
    return json.dumps(payload).encode()


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)


def test_every_form_gives_the_same_pixels(settings, pixels):
    data = png(pixels)
    for body, content_type in (
        (data, "image/png"),
        (_json({"image": b64(data)}), "application/json"),
        (_json({"image": "data:image/png;base64," + b64(data)}), "application/json"),
        (_json({"array": pixels.tolist()}), "application/json"),
    ):
        (image,), is_batch = _parse(body, content_type, settings)
        assert not is_batch and image.dtype == np.uint8
        np.testing.assert_array_equal(image, pixels)
    images, is_batch = _parse(_json({"images": [b64(data)] * 2}), settings=settings)
    assert is_batch and len(images) == 2
    arrays, _ = _parse(_json({"arrays": [pixels.tolist()]}), settings=settings)
    np.testing.assert_array_equal(arrays[0], pixels)
    # A greyscale JPEG is lossy but accepted.
    (jpeg,), _ = _parse(png(pixels, fmt="JPEG"), "image/jpeg", settings)
    assert jpeg.shape == (28, 28)


def _truncated_png(pixels) -> bytes:
    data = png(pixels)
    return data[: len(data) // 2]


def _bomb(side: int = 12000) -> bytes:
    """A PNG whose header says side x side greyscale pixels (144 megapixels), in under 100 bytes:
    what a decompression bomb looks like before it is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1000, 9)  # the start of the rows; a real bomb has them all
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


BAD = {
    # kind: (body builder(pixels), content type, status, words in the reason)
    "empty body": (lambda p: b"", "image/png", 400, "empty request body"),
    "not an image": (lambda p: b"GIF89a" + bytes(100), "image/png", 415, "not a PNG or JPEG"),
    "text as png": (lambda p: b"hello world", "image/png", 415, "not a PNG or JPEG"),
    "truncated png": (_truncated_png, "image/png", 422, "cannot be decoded"),
    "wrong size": (lambda p: png(np.zeros((32, 32), np.uint8)), "image/png", 422, "32x32"),
    "rgb": (lambda p: png(p, "RGB"), "image/png", 422, "colour mode RGB"),
    "too large file": (
        lambda p: png(np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)),
        "image/png",
        413,
        "image.max_image_bytes",
    ),
    "bad base64": (lambda p: _json({"image": "not base64!!"}), "application/json", 422, "base64"),
    "base64 of text": (
        lambda p: _json({"image": b64(b"plain text")}),
        "application/json",
        415,
        "not a PNG or JPEG",
    ),
    "image not a string": (lambda p: _json({"image": 5}), "application/json", 422, "base64 string"),
    "wrong json shape": (lambda p: _json({"picture": "x"}), "application/json", 422, "exactly one"),
    "two forms": (
        lambda p: _json({"image": "x", "array": []}),
        "application/json",
        422,
        "exactly one",
    ),
    "json list": (lambda p: _json([1, 2]), "application/json", 422, "JSON object"),
    "images not a list": (lambda p: _json({"images": "x"}), "application/json", 422, "a list"),
    "empty batch": (lambda p: _json({"images": []}), "application/json", 422, "empty"),
    "too many items": (
        lambda p: _json({"arrays": [p.tolist()] * 5}),
        "application/json",
        413,
        "limit 4",
    ),
    "array over 255": (
        lambda p: _json({"array": (p.astype(int) + 300).tolist()}),
        "application/json",
        422,
        "0-255",
    ),
    "negative array": (
        lambda p: _json({"array": (p.astype(int) - 300).tolist()}),
        "application/json",
        422,
        "0-255",
    ),
    "array of floats": (
        lambda p: _json({"array": (p / 2).tolist()}),
        "application/json",
        422,
        "fractional",
    ),
    "ragged array": (
        lambda p: _json({"array": [[1, 2], [3]]}),
        "application/json",
        422,
        "list of lists",
    ),
    "array wrong shape": (
        lambda p: _json({"array": p[:10].tolist()}),
        "application/json",
        422,
        "10 x 28",
    ),
    "array of strings": (
        lambda p: _json({"array": [["a"] * 28] * 28}),
        "application/json",
        422,
        "not integers",
    ),
    "flat array": (
        lambda p: _json({"array": p.ravel().tolist()}),
        "application/json",
        422,
        "1 dimensions",
    ),
    "png sent as json": (lambda p: png(p), "application/json", 415, "Content-Type image/png"),
    "form encoded": (
        lambda p: b"image=abc",
        "application/x-www-form-urlencoded",
        415,
        "not accepted",
    ),
    "bad json": (lambda p: b'{"image": ', "application/json", 400, "not valid JSON"),
    "body too large": (
        lambda p: _json({"image": "A" * 300_000}),
        "application/json",
        413,
        "limit 200000",
    ),
    "decompression bomb": (lambda p: _bomb(), "image/png", 422, "12000x12000"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_requests_get_a_4xx_naming_the_problem(settings, pixels, kind):
    build, content_type, status, words = BAD[kind]
    with pytest.raises(RequestError) as info:
        _parse(build(pixels), content_type, settings)
    assert (info.value.status, words in info.value.message) == (status, True), info.value.message


def test_resize_and_colour_only_where_params_allow(settings, pixels):
    big = png(np.kron(pixels, np.ones((2, 2), np.uint8)))  # 56 x 56
    colour = png(pixels, "RGB")
    with pytest.raises(RequestError, match="allow_resize"):
        _parse(big, "image/png", settings)
    with pytest.raises(RequestError, match="allow_colour"):
        _parse(colour, "image/png", settings)
    (resized,), _ = _parse(big, "image/png", _with(settings, allow_resize=True))
    assert resized.shape == (28, 28)
    assert np.abs(resized.astype(int) - pixels).mean() < 40  # the same picture, downsampled
    (grey,), _ = _parse(colour, "image/png", _with(settings, allow_colour=True))
    np.testing.assert_array_equal(grey, pixels)
    # Resizing allowed still refuses what would decode to more than the bound.
    with pytest.raises(RequestError) as info:
        _parse(_bomb(), "image/png", _with(settings, allow_resize=True, max_image_bytes=10**6))
    assert info.value.status == 413 and "limit 16777216 pixels" in info.value.message


def test_the_served_models_size_wins_over_the_params(settings):
    small = np.full((14, 14), 7, np.uint8)
    meta = {**META, "height": 14, "width": 14}
    (image,), _ = _parse(png(small), "image/png", settings, meta)
    assert image.shape == (14, 14)
    with pytest.raises(RequestError, match="14x14 greyscale"):
        _parse(png(np.zeros((28, 28), np.uint8)), "image/png", settings, meta)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(
        st.binary(max_size=300), st.binary(max_size=300).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)
    )
)
def test_any_bytes_are_parsed_or_refused_with_a_4xx(settings, body):
    for content_type in ("image/png", "application/json"):
        try:
            images, _ = _parse(body, content_type, settings)
        except RequestError as exc:
            assert 400 <= exc.status < 500 and exc.message
            continue
        assert all(i.shape == (28, 28) and i.dtype == np.uint8 for i in images)


def test_log_fields_keep_hash_statistics_and_embedding_not_pixels(settings, pixels):
    from ml.config import override
    from ml.tasks import get_task

    task = get_task("image-classification")
    blank = np.zeros((28, 28), np.uint8)
    features = np.array([[0.123456, 1.0], [2.0, 3.333333]], np.float32)
    first, second = task.log_fields([pixels, blank], settings, features)
    assert "image" not in first and first["embedding"] == [0.1235, 1.0]
    assert first["mean_intensity"] == pytest.approx(pixels.mean() / 255, abs=1e-5)
    assert first["contrast"] == pytest.approx(pixels.std() / 255, abs=1e-5)
    assert (first["blank"], second["blank"]) == (False, True)
    assert first["image_sha256"] != second["image_sha256"]
    # The same picture sent as a PNG or as an array hashes the same.
    (decoded,), _ = _parse(png(pixels), "image/png", settings)
    assert task.log_fields([decoded], settings)[0]["image_sha256"] == first["image_sha256"]
    assert task.log_fields([decoded], settings)[0]["embedding"] is None
    logged = override(settings, {"serve.log_inputs": True}, "test")
    assert task.log_fields([pixels], logged)[0]["image"] == pixels.tolist()


def test_the_smoke_request_is_an_accepted_batch(settings):
    from ml.tasks import get_task

    task = get_task("image-classification")
    images, is_batch = _parse(*task.smoke_request(settings), settings=settings)
    assert is_batch and len(images) == 2 and not np.array_equal(images[0], images[1])
