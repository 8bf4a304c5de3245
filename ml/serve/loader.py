"""Resolve a model URI to its task's loaded predictor plus what `GET /model` reports about it.

Serving loads the model dir inside the registered pyfunc model (its `model_dir` artifact) rather
than the pyfunc wrapper, so the server controls batching, threads and quantization itself. The
model dir's meta.json names its task (text-classification where it predates tasks), and that
task's `load_predictor` loads it.
Accepted URIs: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/...`, any MLflow artifact
URI, or a local folder (a model dir, or a downloaded pyfunc model holding one).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.errors import UserError

if TYPE_CHECKING:
    from ml.config import Settings
    from ml.tasks.base import Predictor, Task

CHAMPION_ALIAS = "champion"
META_FILE = "meta.json"
# Model dirs written before tasks existed are text classifiers.
DEFAULT_TASK = "text-classification"
_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


class ModelLoadError(UserError):
    """The model URI cannot be resolved or loaded; the message names the URI and the store."""


@dataclass
class ModelInfo:
    """What `GET /model` and every prediction log record say about the served model."""

    uri: str
    name: str
    version: str
    alias: str | None = None
    run_id: str | None = None
    git_sha: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    quantized: bool = False
    runtime: str = "torch"
    device: str = "cpu"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_model_uri(settings: Settings) -> str:
    return settings.serve.model_uri or f"models:/{settings.mlflow.registered_model}@champion"


def _find_model_dir(root: Path) -> Path:
    """The folder holding meta.json: root itself, or the pyfunc's artifacts/model_dir."""
    if (root / META_FILE).is_file():
        return root
    for candidate in sorted(root.rglob(META_FILE)):
        return candidate.parent
    raise ModelLoadError(f"no model dir ({META_FILE}) under {root}; is it one `ml train` wrote?")


def read_meta(model_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(model_dir) / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {Path(model_dir) / META_FILE}: {exc}") from exc


def task_of_predictor(predictor: Any) -> Task:
    """The task a loaded predictor belongs to (its meta.json's `task`)."""
    from ml.tasks import get_task

    return get_task((getattr(predictor, "meta", None) or {}).get("task") or DEFAULT_TASK)


def _version_info(uri: str, tracking_uri: str | None) -> ModelInfo:
    """Registry facts (version, tags, metrics) for a models:/ URI; a plain URI gets defaults."""
    match = _REGISTERED.match(uri)
    if not match:
        return ModelInfo(uri=uri, name=Path(uri.rstrip("/")).name or uri, version="unregistered")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    registry = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name, alias = match["name"], match["alias"]
    try:
        if alias:
            version = registry.get_model_version_by_alias(name, alias)
        else:
            version = registry.get_model_version(name, match["version"])
    except MlflowException as exc:
        raise ModelLoadError(
            f"cannot resolve {uri} in the registry at {tracking_uri}: {exc.message}. "
            "Register and promote a model first (`ml registry register`, `ml registry promote`)."
        ) from exc
    tags = dict(version.tags or {})
    metrics = {}
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                metrics[key.removeprefix("metric.")] = float(value)
            except ValueError:
                continue
    return ModelInfo(
        uri=uri,
        name=name,
        version=str(version.version),
        alias=alias or next(iter(version.aliases or []), None),
        run_id=version.run_id,
        git_sha=tags.get("git_sha"),
        metrics=metrics,
        tags={k: v for k, v in tags.items() if not k.startswith("audit.")},
    )


def download_model_dir(uri: str, tracking_uri: str | None, dst: Path | None = None) -> Path:
    """A local model dir for `uri` (a local folder is used in place, nothing is copied)."""
    is_local = ("://" not in uri or uri.startswith("file://")) and not uri.startswith(
        ("models:", "runs:")
    )
    if is_local:
        local = Path(uri.removeprefix("file://"))
        if not local.exists():
            raise ModelLoadError(f"model path {local} does not exist")
        return _find_model_dir(local)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    try:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dst) if dst else None
        )
    except Exception as exc:  # MLflow raises several types here; all mean "cannot fetch"
        raise ModelLoadError(f"cannot download {uri} from {tracking_uri}: {exc}") from exc
    return _find_model_dir(Path(path))


def quantize_int8(model: Any) -> Any:
    """int8 dynamic quantization of the Linear layers: ~1.5x faster on CPU, small score changes
    (measured in reports/benchmarks/serving.md), so it is a switch, not a default."""
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the API still works in 2.13.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_classifier(
    uri: str,
    tracking_uri: str | None = None,
    quantize: bool = False,
    device: str | None = None,
    torch_threads: int | None = None,
    runtime: str = "torch",
) -> tuple[Predictor, ModelInfo]:
    """(predictor, info) for a model URI, on `device` (default: cuda when available).

    On CPU, `runtime` "onnxruntime" runs an ONNX export of the same weights (ml/serve/onnx.py);
    `quantize` then quantizes that graph instead of the torch module. On a GPU torch runs it.
    """
    import torch

    from ml.tasks import get_task
    from ml.tasks.base import Predictor

    if torch_threads:
        # One pool sized to the CPUs this process owns: more threads than cores only contend.
        torch.set_num_threads(torch_threads)
    info = _version_info(uri, tracking_uri)
    model_dir = download_model_dir(uri, tracking_uri)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    task = get_task(read_meta(model_dir).get("task") or DEFAULT_TASK)
    try:
        classifier = task.load_predictor(model_dir, device=device)
    except (UserError, OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the model dir of {uri} ({model_dir}): {exc}") from exc
    if not isinstance(classifier, Predictor):
        raise ModelLoadError(f"{task.name}.load_predictor gave no predictor for {model_dir}")
    if runtime == "onnxruntime" and device == "cpu":
        from ml.serve.onnx import OnnxRuntimeError, registry_recorder, use_onnxruntime

        registered = info.version != "unregistered"
        # The graph cache is trusted only where the version records its hash (ml/serve/onnx.py).
        record = registry_recorder(tracking_uri, info.name, info.version) if registered else None
        try:
            threads = torch_threads or torch.get_num_threads()
            use_onnxruntime(classifier, model_dir, quantize, threads, info.tags, record)
        except OnnxRuntimeError as exc:
            raise ModelLoadError(f"{uri}: {exc}") from exc
        info.runtime = "onnxruntime"
        info.quantized = quantize
    elif quantize and device == "cpu":
        classifier.model = quantize_int8(classifier.model)
        info.quantized = True
    info.device = device
    if info.version == "unregistered":
        info.version = str(classifier.meta.get("version", "unregistered"))
    return classifier, info
