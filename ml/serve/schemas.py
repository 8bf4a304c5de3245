"""Request/response shapes of the endpoint and the input checks that turn bad input into a 4xx.

A request is a JSON object in exactly one of four forms:

    {"text": "one text"}
    {"texts": ["text", ...]}
    {"title": "...", "description": "..."}                       (one record)
    {"records": [{"title": "...", "description": "..."}, ...]}   (a batch of records)

Records are joined exactly as training joined them (ml.data.text.combine_text: fields in the
model's text-column order, missing ones empty, whitespace collapsed). Types are strict (a number is
not a text), unknown keys are refused, and the limits (characters per text, items per request,
body bytes) come from params.yaml `serve`. Every refusal names the problem.

Everything a model call could choke on is refused here, per request, before a text joins the
shared `@serve.batch` call: a bad text must fail only the request that sent it. JSON nesting is
measured before parsing (Python's parser recurses, and a deep body would raise RecursionError),
and a text must be encodable as UTF-8 (a JSON `\\ud800` escape decodes to a lone surrogate,
which the tokenizer rejects with a TypeError for the whole batch).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

_WHITESPACE = re.compile(r"\s+")
# A JSON string literal (escapes included), so brackets inside texts are not counted as nesting.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SURROGATE = re.compile("[\ud800-\udfff]")
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
    # The deepest valid request is 3 levels ({"records": [{...}]}); the slack is for clients.
    max_json_depth: int = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Record(_Strict):
    title: StrictStr | None = None
    description: StrictStr | None = None


class PredictRequest(_Strict):
    text: StrictStr | None = None
    texts: list[StrictStr] | None = None
    title: StrictStr | None = None
    description: StrictStr | None = None
    records: list[Record] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        forms = [
            name
            for name, present in (
                ("text", self.text is not None),
                ("texts", self.texts is not None),
                ("title/description", self.title is not None or self.description is not None),
                ("records", self.records is not None),
            )
            if present
        ]
        if len(forms) != 1:
            found = ", ".join(forms) or "none of them"
            raise ValueError(
                "give exactly one of 'text', 'texts', 'title'/'description' or 'records' "
                f"(found: {found})"
            )
        return self

    @property
    def is_batch(self) -> bool:
        return self.texts is not None or self.records is not None


class Prediction(BaseModel):
    label: str
    confidence: float
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    request_id: str
    model_name: str
    model_version: str
    predictions: list[Prediction]
    # Single-text requests also get their one prediction at the top level.
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None


class ModelResponse(BaseModel):
    name: str
    version: str
    alias: str | None
    uri: str
    run_id: str | None
    git_sha: str | None
    metrics: dict[str, float]
    tags: dict[str, str] = Field(default_factory=dict)
    labels: list[str]
    quantized: bool
    runtime: str
    device: str


def combine_fields(values: Sequence[str | None], separator: str = " ") -> str:
    """One record's text, exactly as ml.data.text.combine_text builds it for a DataFrame row."""
    joined = separator.join("" if v is None else str(v) for v in values)
    return _WHITESPACE.sub(" ", joined).strip()


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


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


def _unencodable(text: str) -> str | None:
    """Why `text` cannot be encoded as UTF-8 (a lone surrogate), or None when it can."""
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return (
        f"holds an unpaired surrogate U+{ord(match.group()):04X} at character {match.start()}; "
        "send valid Unicode (a JSON \\uD800-\\uDFFF escape must be half of a pair)"
    )


def _load_json(body: bytes, limits: Limits) -> Any:
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


def parse_request(
    body: bytes, limits: Limits, text_columns: Sequence[str] = ("title", "description")
) -> tuple[list[str], bool]:
    """(texts, is_batch) from a raw request body, or RequestError with the reason."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes; limit {limits.max_body_bytes}")
    if not body.strip():
        raise RequestError(400, 'empty request body; send a JSON object such as {"text": "..."}')
    payload = _load_json(body, limits)
    if not isinstance(payload, dict):
        raise RequestError(
            422, f"request body must be a JSON object, got a JSON {type(payload).__name__}"
        )
    try:
        request = PredictRequest.model_validate(payload)
    except ValidationError as exc:
        raise RequestError(422, _describe(exc)) from exc

    if request.text is not None:
        texts = [request.text]
    elif request.texts is not None:
        texts = list(request.texts)
    elif request.records is not None:
        texts = [
            combine_fields([getattr(record, c, None) for c in text_columns])
            for record in request.records
        ]
    else:
        texts = [combine_fields([getattr(request, c, None) for c in text_columns])]

    if request.is_batch and not texts:
        raise RequestError(422, "the batch is empty; send at least one item")
    if len(texts) > limits.max_batch_items:
        raise RequestError(
            413, f"the batch has {len(texts)} items; limit {limits.max_batch_items} per request"
        )
    for i, text in enumerate(texts):
        where = f"item {i}" if request.is_batch else "text"
        if not text.strip():
            raise RequestError(422, f"{where} is empty (or only whitespace)")
        if len(text) > limits.max_text_chars:
            raise RequestError(
                413, f"{where} has {len(text)} characters; limit {limits.max_text_chars}"
            )
        reason = _unencodable(text)
        if reason:
            raise RequestError(422, f"{where} {reason}")
    return texts, request.is_batch
