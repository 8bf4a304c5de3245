"""The response shapes of the endpoint, shared by every task (what a request may be is each
task's own: its `parse_request`, e.g. ml/tasks/text_classification/serving.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

# The request checks every task shares live in a leaf module tasks may import.
from ml.tasks.request import Limits, RequestError, json_depth

__all__ = [
    "Limits",
    "ModelResponse",
    "PredictResponse",
    "Prediction",
    "RequestError",
    "json_depth",
]


class Prediction(BaseModel):
    label: str
    confidence: float
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    request_id: str
    model_name: str
    model_version: str
    predictions: list[Prediction]
    # Single-input requests also get their one prediction at the top level.
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
    task: str | None = None
    labels: list[str]
    quantized: bool
    runtime: str
    device: str
