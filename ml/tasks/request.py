"""What every task's `/predict` parsing shares: the 4xx error, the limits, safe JSON loading.

A leaf module: task modules import it (they may not import ml.serve), and so does the server.
Each task's `parse_request` turns a raw body into its inputs or raises `RequestError` with the
status and a reason that names the problem and what is accepted.

JSON nesting is measured before parsing: Python's parser recurses, and a deep body would raise
RecursionError (a 500) instead of a clear 400.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.config import Settings

# A JSON string literal (escapes included), so brackets inside texts are not counted as nesting.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Nesting step of each byte: +1 for [ and {, -1 for ] and }, 0 for everything else.
_DEPTH_STEP = [0] * 256
_DEPTH_STEP[ord("[")] = _DEPTH_STEP[ord("{")] = 1
_DEPTH_STEP[ord("]")] = _DEPTH_STEP[ord("}")] = -1
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class RequestError(ValueError):
    """Bad input: `status` is the HTTP status to answer with, the message the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = 10000
    max_batch_items: int = 256
    max_body_bytes: int = 2_000_000
    max_image_bytes: int = 1_000_000
    # The deepest valid text request is 3 levels ({"records": [{...}]}) and an image array 4
    # ({"arrays": [[[...]]]}); the slack is for clients.
    max_json_depth: int = 16

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        s = settings.serve
        return cls(
            max_text_chars=s.max_text_chars,
            max_batch_items=s.max_batch_items,
            max_body_bytes=s.max_body_bytes,
            max_image_bytes=settings.image.max_image_bytes,
        )


def json_depth(body: bytes) -> int:
    """How deeply the arrays and objects of a JSON document nest, without parsing it.

    Linear in the body and never recursive, so it is safe on any input; on invalid JSON the
    number is only an estimate (parsing then refuses the body anyway)."""
    from itertools import accumulate

    openers = body.count(b"[") + body.count(b"{")
    if openers <= 1:
        return openers
    skeleton = _JSON_STRING.sub(b"", body)
    brackets = skeleton.translate(None, _NOT_BRACKETS)
    return max(accumulate(_DEPTH_STEP[b] for b in brackets), default=0)


def load_json(body: bytes, limits: Limits) -> Any:
    """The parsed body, or a 400 naming why it is not (acceptable) JSON."""
    depth = json_depth(body)
    if depth > limits.max_json_depth:
        raise RequestError(
            400, f"request JSON nests {depth} levels deep; limit {limits.max_json_depth}"
        )
    try:
        return json.loads(body)
    except RecursionError as exc:  # a depth the estimate missed; never a 500
        raise RequestError(400, "request JSON nests too deeply") from exc
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of more than 4300 digits
        raise RequestError(400, f"request body is not valid JSON: {exc}") from exc


def check_body(body: bytes, limits: Limits, example: str) -> None:
    """The checks before any parsing: the size limit and an empty body (`example`: a valid one)."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes; limit {limits.max_body_bytes}")
    if not body.strip():
        raise RequestError(400, f"empty request body; send {example}")


def media_type(content_type: str) -> str:
    """`application/json; charset=utf-8` -> `application/json` (lower case)."""
    return content_type.split(";", 1)[0].strip().lower()


def check_batch_size(count: int, is_batch: bool, limits: Limits) -> None:
    if is_batch and count == 0:
        raise RequestError(422, "the batch is empty; send at least one item")
    if count > limits.max_batch_items:
        raise RequestError(
            413, f"the batch has {count} items; limit {limits.max_batch_items} per request"
        )
