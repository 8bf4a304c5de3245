"""What the text task's `/predict` accepts, what a release sends, what the prediction log keeps.

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
shared `@serve.batch` call: a bad text must fail only the request that sent it. A text must be
encodable as UTF-8 (a JSON `\\ud800` escape decodes to a lone surrogate, which the tokenizer
rejects with a TypeError for the whole batch).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError, model_validator

from ml.tasks.request import (
    Limits,
    RequestError,
    check_batch_size,
    check_body,
    load_json,
    media_type,
)

if TYPE_CHECKING:
    from ml.config import Settings

DEFAULT_TEXT_COLUMNS = ("title", "description")
# Two project descriptions any trained tag classifier answers: what a release sends.
SMOKE_TEXTS = [
    "Transformers for text classification: fine-tuning BERT on a small labelled set.",
    "Real-time object detection in video streams with a convolutional network.",
]
_WHITESPACE = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def _unencodable(text: str) -> str | None:
    """Why `text` cannot be encoded as UTF-8 (a lone surrogate), or None when it can."""
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return (
        f"holds an unpaired surrogate U+{ord(match.group()):04X} at character {match.start()}; "
        "send valid Unicode (a JSON \\uD800-\\uDFFF escape must be half of a pair)"
    )


def _texts_of(request: PredictRequest, text_columns: Sequence[str]) -> list[str]:
    if request.text is not None:
        return [request.text]
    if request.texts is not None:
        return list(request.texts)
    if request.records is not None:
        return [
            combine_fields([getattr(record, c, None) for c in text_columns])
            for record in request.records
        ]
    return [combine_fields([getattr(request, c, None) for c in text_columns])]


def parse_texts(
    body: bytes, limits: Limits, text_columns: Sequence[str] = DEFAULT_TEXT_COLUMNS
) -> tuple[list[str], bool]:
    """(texts, is_batch) from a raw JSON request body, or RequestError with the reason."""
    check_body(body, limits, 'a JSON object such as {"text": "..."}')
    payload = load_json(body, limits)
    if not isinstance(payload, dict):
        raise RequestError(
            422, f"request body must be a JSON object, got a JSON {type(payload).__name__}"
        )
    try:
        request = PredictRequest.model_validate(payload)
    except ValidationError as exc:
        raise RequestError(422, _describe(exc)) from exc
    texts = _texts_of(request, text_columns)
    check_batch_size(len(texts), request.is_batch, limits)
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


def parse_request(
    body: bytes, content_type: str, settings: Settings, meta: Mapping[str, Any] | None = None
) -> tuple[list[str], bool]:
    """The Task method: a JSON body only; the text columns are the served model's."""
    if "json" not in media_type(content_type or "application/json"):
        raise RequestError(415, f"content-type must be application/json, got {content_type!r}")
    columns = (meta or {}).get("text_columns") or settings.data.text_columns
    return parse_texts(body, Limits.from_settings(settings), tuple(columns))


def smoke_request(settings: Settings) -> tuple[bytes, str]:
    return json.dumps({"texts": SMOKE_TEXTS}).encode(), "application/json"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def log_fields(
    inputs: Sequence[str], settings: Settings, features: Any = None
) -> list[dict[str, Any]]:
    """Per text: the text itself (unless serve.log_text is off), its hash and length."""
    keep = settings.serve.log_text
    return [
        {"text": text if keep else None, "text_sha256": text_sha256(text), "text_length": len(text)}
        for text in inputs
    ]


def onnx_inputs(predictor: Any) -> tuple[dict[str, Any], dict[str, dict[int, str]]]:
    """A sample of the model's keyword inputs and their dynamic dims, for the ONNX export."""
    # Two texts of different lengths: size-0/1 dims would be specialised into the graph.
    sample = predictor.tokenizer(
        ["an example title", "an example title with a longer description after it"],
        padding=True,
        return_tensors="pt",
    )
    names = ("input_ids", "attention_mask")
    dynamic = {0: "batch", 1: "sequence"}
    return {name: sample[name] for name in names}, {name: dynamic for name in names}
