"""What the image task's `/predict` accepts, what a release sends, what the prediction log keeps.

A request is one of:

    raw bytes, Content-Type image/png or image/jpeg           (one image)
    {"image": "<base64 PNG or JPEG>"}    {"images": ["<base64>", ...]}
    {"array": [[0-255, ...], ...]}       {"arrays": [[[...]], ...]}   (H x W pixel values)

An image must be greyscale and the model's size (meta.json height/width, else params `image`);
other sizes are resized only with `image.allow_resize`, colour converted to greyscale only with
`image.allow_colour`. Every refusal is a 4xx naming the item, the problem and what is accepted.

Decoding is bounded before it starts: the encoded size against `image.max_image_bytes`, and the
pixel count from the header (read without decoding) against the model's size, or, where resizing
is allowed, against MAX_DECODE_PIXELS, so a small file that inflates to gigapixels (a
decompression bomb) is refused without being decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.tasks.request import (
    Limits,
    RequestError,
    check_batch_size,
    check_body,
    load_json,
    media_type,
)

if TYPE_CHECKING:
    import numpy as np

    from ml.config import Settings

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg"}
RAW_TYPES = ("image/png", "image/jpeg", "image/jpg", "application/octet-stream")
JSON_FORMS = ("image", "images", "array", "arrays")
# With image.allow_resize, the largest image decoded to be resized (a 4096 x 4096 photo).
MAX_DECODE_PIXELS = 4096 * 4096
_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
_GREY_MODES = ("L", "1")
_ACCEPTED = "PNG or JPEG images (raw with Content-Type image/png or image/jpeg, or base64 in JSON)"


@dataclass(frozen=True)
class Shape:
    """What the served model takes, and what the params let serving convert."""

    height: int
    width: int
    allow_resize: bool
    allow_colour: bool

    @property
    def wanted(self) -> str:
        return f"{self.width}x{self.height} greyscale"

    @classmethod
    def of(cls, settings: Settings, meta: Mapping[str, Any] | None) -> Shape:
        meta = meta or {}
        arch = meta.get("architecture") or {}
        height = meta.get("height") or arch.get("height") or settings.image.height
        width = meta.get("width") or arch.get("width") or settings.image.width
        s = settings.image
        return cls(int(height), int(width), s.allow_resize, s.allow_colour)


def sniff(data: bytes) -> str | None:
    """ "PNG" / "JPEG" from the file's magic bytes, None for anything else."""
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    return None


def _fit_size(image: Any, shape: Shape, where: str) -> Any:
    from PIL import Image

    if image.size == (shape.width, shape.height):
        return image
    if not shape.allow_resize:
        raise RequestError(
            422,
            f"{where} is {image.size[0]}x{image.size[1]} pixels; the model takes {shape.wanted} "
            "images (image.allow_resize: true in params lets the server resize)",
        )
    return image.resize((shape.width, shape.height), Image.Resampling.BILINEAR)


def _fit_mode(image: Any, shape: Shape, where: str) -> Any:
    if image.mode == "L":
        return image
    if image.mode == "1":  # black and white is greyscale already
        return image.convert("L")
    if image.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr") and shape.allow_colour:
        return image.convert("L")
    hint = (
        "send 8-bit greyscale (mode L)"
        if image.mode.startswith("I") or image.mode == "F"
        else "send greyscale, or set image.allow_colour: true in params to convert"
    )
    raise RequestError(
        422, f"{where} has colour mode {image.mode}; the model takes {shape.wanted} images ({hint})"
    )


def decode_image(data: bytes, shape: Shape, limits: Limits, where: str = "image") -> np.ndarray:
    """A PNG/JPEG file as uint8 H x W pixels the model takes, or a 4xx saying why not."""
    import numpy as np
    from PIL import Image

    if len(data) > limits.max_image_bytes:
        raise RequestError(
            413, f"{where} is {len(data)} bytes; image.max_image_bytes is {limits.max_image_bytes}"
        )
    kind = sniff(data)
    if kind is None:
        raise RequestError(
            415, f"{where} is not a PNG or JPEG image (it starts {data[:8]!r}); send {_ACCEPTED}"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns past its own pixel guard; the bound below refuses those more clearly.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow's ways of saying "cannot decode" (a bomb: past its own pixel guard)
        raise RequestError(422, f"{where} cannot be decoded as {kind}: {exc}") from exc
    width, height = image.size  # from the header: nothing is decoded yet
    bound = MAX_DECODE_PIXELS if shape.allow_resize else shape.width * shape.height
    if width * height > bound:
        if not shape.allow_resize:
            _fit_size(image, shape, where)  # raises: the size is wrong
        raise RequestError(413, f"{where} is {width}x{height} pixels; limit {bound} pixels")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(422, f"{where} cannot be decoded as {kind}: {exc}") from exc
    image = _fit_size(_fit_mode(image, shape, where), shape, where)
    return np.asarray(image, dtype=np.uint8).copy()


def decode_array(value: Any, shape: Shape, where: str = "array") -> np.ndarray:
    """A JSON H x W list of 0-255 integers as uint8 pixels, or a 4xx saying why not."""
    import numpy as np

    wanted = f"a {shape.height} x {shape.width} list of lists of integers 0-255"
    try:
        array = np.array(value)
    except (ValueError, OverflowError) as exc:  # ragged lists, huge integers
        raise RequestError(422, f"{where} must be {wanted} ({exc})") from exc
    if array.dtype.kind not in "iu":
        kind = "fractional numbers" if array.dtype.kind == "f" else "values that are not integers"
        raise RequestError(422, f"{where} holds {kind}; send {wanted}")
    if array.ndim != 2:
        raise RequestError(422, f"{where} has {array.ndim} dimensions {array.shape}; send {wanted}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise RequestError(
            422, f"{where} has values from {array.min()} to {array.max()}; pixels are 0-255"
        )
    if array.shape != (shape.height, shape.width):
        if not shape.allow_resize:
            raise RequestError(
                422,
                f"{where} is {array.shape[0]} x {array.shape[1]}; send {wanted} "
                "(image.allow_resize: true in params lets the server resize)",
            )
        from PIL import Image

        resized = Image.fromarray(array.astype(np.uint8), "L").resize((shape.width, shape.height))
        return np.asarray(resized, dtype=np.uint8).copy()
    return array.astype(np.uint8)


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise RequestError(
            422, f"{where} must be a base64 string of a PNG or JPEG, got {type(value).__name__}"
        )
    if value.startswith("data:"):  # a data URL: data:image/png;base64,....
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(422, f"{where} is not valid base64 ({exc})") from exc


def _json_items(payload: Any) -> tuple[str, list[Any], bool]:
    if not isinstance(payload, dict):
        raise RequestError(
            422, f"request body must be a JSON object, got a JSON {type(payload).__name__}"
        )
    forms = [key for key in JSON_FORMS if key in payload]
    unknown = sorted(str(k) for k in payload if k not in JSON_FORMS)
    if unknown or len(forms) != 1:
        found = ", ".join(forms + unknown) or "none of them"
        raise RequestError(
            422,
            "give exactly one of 'image' (base64 PNG/JPEG), 'images' (a list of them), "
            f"'array' (H x W integers 0-255) or 'arrays' (found: {found})",
        )
    form = forms[0]
    value = payload[form]
    if form in ("images", "arrays"):
        if not isinstance(value, list):
            raise RequestError(422, f"'{form}' must be a list, got {type(value).__name__}")
        return form, value, True
    return form, [value], False


def parse_request(
    body: bytes, content_type: str, settings: Settings, meta: Mapping[str, Any] | None = None
) -> tuple[list[np.ndarray], bool]:
    """(images as uint8 H x W arrays, is_batch), or RequestError naming what is accepted."""
    limits = Limits.from_settings(settings)
    shape = Shape.of(settings, meta)
    check_body(body, limits, 'an image or a JSON object such as {"image": "<base64 PNG>"}')
    kind = media_type(content_type or "application/json")
    if kind in RAW_TYPES:
        return [decode_image(body, shape, limits)], False
    if "json" not in kind:
        raise RequestError(
            415, f"content-type {content_type!r} is not accepted; send {_ACCEPTED}, or pixels"
        )
    sent_raw = sniff(body)
    if sent_raw:
        raise RequestError(
            415,
            f"the body is a {sent_raw} file sent as {kind}; send it with Content-Type "
            f"{FORMATS[sent_raw]}, or base64 in JSON",
        )
    form, values, is_batch = _json_items(load_json(body, limits))
    check_batch_size(len(values), is_batch, limits)
    images = []
    for i, value in enumerate(values):
        where = f"item {i}" if is_batch else form
        if form in ("image", "images"):
            images.append(decode_image(_b64(value, where), shape, limits, where))
        else:
            images.append(decode_array(value, shape, where))
    return images, is_batch


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 H x W pixels as a greyscale PNG file."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, format="PNG")
    return out.getvalue()


def smoke_images(height: int, width: int) -> list[np.ndarray]:
    """Two images any trained classifier answers: a filled block (a shirt-like silhouette) and
    two bars (trouser-like), drawn in code so a release needs no data files."""
    import numpy as np

    block = np.zeros((height, width), dtype=np.uint8)
    block[height // 6 : height - height // 8, width // 5 : width - width // 5] = 180
    bars = np.zeros((height, width), dtype=np.uint8)
    bars[height // 8 :, width // 4 : width // 2 - 1] = 200
    bars[height // 8 :, width // 2 + 1 : 3 * width // 4] = 200
    return [block, bars]


def smoke_request(settings: Settings) -> tuple[bytes, str]:
    images = smoke_images(settings.image.height, settings.image.width)
    encoded = [base64.b64encode(encode_png(image)).decode("ascii") for image in images]
    return json.dumps({"images": encoded}).encode(), "application/json"


def image_sha256(pixels: np.ndarray) -> str:
    """The hash of the decoded pixels: the same image sent raw, as base64 or as a pixel
    array hashes the same."""
    return hashlib.sha256(pixels.astype("uint8").tobytes()).hexdigest()


def log_fields(images: Any, settings: Settings, features: Any = None) -> list[dict[str, Any]]:
    """Per image: its content hash, statistics and the model's penultimate features (drift);
    the pixels only with serve.log_inputs."""
    import numpy as np

    from ml.tasks.image_classification.drift import image_statistics

    images = [np.asarray(image, dtype=np.uint8) for image in images]
    if not images:
        return []
    stats = image_statistics(np.stack(images))
    rows = []
    for i, image in enumerate(images):
        row: dict[str, Any] = {
            "image_sha256": image_sha256(image),
            "mean_intensity": round(float(stats["mean_intensity"][i]), 6),
            "contrast": round(float(stats["contrast"][i]), 6),
            "blank": bool(stats["blank"][i]),
            "embedding": None
            if features is None
            else [round(float(v), 4) for v in np.asarray(features[i]).ravel()],
        }
        if settings.serve.log_inputs:
            row["image"] = image.tolist()
        rows.append(row)
    return rows


def onnx_inputs(predictor: Any) -> tuple[dict[str, Any], dict[str, dict[int, str]]]:
    """Two sample images as the module's `pixels` (N x 1 x H x W raw 0-255 values, as the
    predictor feeds them); only the batch is dynamic."""
    import torch

    from ml.config import ImageSettings

    meta = getattr(predictor, "meta", None) or {}
    default = ImageSettings()
    height, width = int(meta.get("height", default.height)), int(meta.get("width", default.width))
    pixels = torch.zeros((2, 1, height, width), dtype=torch.float32)
    pixels[1] = 255.0
    return {"pixels": pixels}, {"pixels": {0: "batch"}}
