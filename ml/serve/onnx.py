"""ONNX Runtime for a task's model on CPU: the same weights, exported once, run by a compiled graph.

The task says what the module takes (`task.onnx_inputs(predictor)`: a sample of its keyword
inputs and their dynamic dims); the graph returns the module's `logits` (and `features` where the
module has them), and `OnnxModel` stands in for the module inside the predictor.

Why it is faster in a Serve replica than the same arithmetic in eager torch: a replica's event
loop (HTTP, JSON, the prediction log) and its inference thread share one GIL, and an eager forward
pass needs the GIL between every one of its ~200 ops, so on 2 cores the matmuls wait on request
handling. `InferenceSession.run` holds the GIL only to start and finish the whole graph. Its int8
(dynamic quantization of the MatMul weights) is the same trade as torch's: see
reports/benchmarks/serving.md for the label agreement with fp32.

Exported graphs are cached by the weights' sha256 (and the quantize flag), so restarting a
replica, or a second replica on the same node, reuses them instead of exporting again (~10 s on
2 cores). The cache is per deployment (a folder per Serve application), and an entry is used
only when its sha256 equals the one recorded with the model version (the version tag
`serve.onnx_sha256.<flavour>`, written by whoever first builds the graph with write access to
the version: the release). Anything else found there (a graph another job planted under the
champion's key, a damaged file, no recorded hash) is rebuilt from the weights, never run.
`ML_ONNX_VERIFY=0` turns the check off (the red-team suite's "protection off" run).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ml.io import atomic_dir

GRAPH_FILE = "model.onnx"
# Bump when the export changes in a way that makes cached graphs stale.
EXPORT_VERSION = "3"
# Module outputs the graph returns, where the module's output has them.
OUTPUTS = ("logits", "features")
HASH_TAG_PREFIX = "serve.onnx_sha256."
DEFAULT_DEPLOYMENT = "default"
logger = logging.getLogger(__name__)


class OnnxRuntimeError(RuntimeError):
    """ONNX Runtime is missing, or the model could not be exported or loaded by it."""


def deployment_name() -> str:
    """`ML_ONNX_DEPLOYMENT`, else the Serve application this replica belongs to."""
    explicit = os.environ.get("ML_ONNX_DEPLOYMENT")
    if explicit:
        return explicit
    if "ray.serve" in sys.modules:  # only inside a replica; never import Ray for this
        try:
            return sys.modules["ray.serve"].get_replica_context().app_name or DEFAULT_DEPLOYMENT
        except Exception:  # not in a replica (a test, `ml predict`)
            pass
    return DEFAULT_DEPLOYMENT


def cache_root(deployment: str | None = None) -> Path:
    """One folder per deployment under `ML_ONNX_CACHE`, else under the user's cache folder
    (never the model dir: it may be read-only)."""
    base = os.environ.get("ML_ONNX_CACHE")
    if not base:
        home_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(home_cache) / "ml" / "onnx")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", deployment or deployment_name())
    return Path(base) / safe


def verify_enabled() -> bool:
    return os.environ.get("ML_ONNX_VERIFY", "1").strip().lower() not in ("0", "false", "no", "off")


def graph_sha256(graph: Path) -> str:
    digest = hashlib.sha256()
    with open(graph, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def _tensors_only(model: Any, names: tuple[str, ...], outputs: tuple[str, ...]) -> Any:
    """The module with positional inputs and tensor outputs, the shape an exporter needs."""
    import torch

    class TensorsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args):
            result = self.model(**dict(zip(names, args, strict=True)))
            return tuple(getattr(result, name) for name in outputs)

    return TensorsOnly().eval()


def _outputs_of(model: Any, sample: dict[str, Any]) -> tuple[str, ...]:
    import torch

    with torch.inference_mode():
        result = model(**sample)
    return tuple(n for n in OUTPUTS if isinstance(getattr(result, n, None), torch.Tensor))


def export(classifier: Any, path: Path) -> None:
    """Write the fp32 graph of `classifier`'s module (the task's dims dynamic) to `path`."""
    import logging
    import warnings

    import torch

    from ml.serve.loader import task_of_predictor

    sample, dynamic = task_of_predictor(classifier).onnx_inputs(classifier)
    names = tuple(sample)
    module = classifier.model.cpu().eval()
    outputs = _outputs_of(module, sample)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    with warnings.catch_warnings(), torch.inference_mode(False):
        # The exporter reports each step of its translation (and every torchvision op it
        # skips) as a warning; a failure still raises, and that is what matters here.
        warnings.simplefilter("ignore")
        exporter_log.setLevel(logging.ERROR)
        try:
            torch.onnx.export(
                _tensors_only(module, names, outputs),
                tuple(sample[name] for name in names),
                str(path),
                input_names=list(names),
                output_names=list(outputs),
                dynamic_shapes=(tuple(dynamic.get(name) for name in names),),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        finally:
            exporter_log.setLevel(level)


def quantize(src: Path, dst: Path) -> None:
    """int8 weights for every MatMul (activations quantized per batch at run time).

    Per output channel, in 7 bits: ONNX Runtime's advice for CPUs without VNNI, where the
    8-bit kernels can saturate; measured as fast as the 8-bit default here."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic suggests a pre-processing pass in a root-logger warning on every call;
    # the exporter already folded constants and shapes.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
        )
    finally:
        root.setLevel(level)


def flavour(int8: bool) -> str:
    """What besides the weights decides the graph: precision, exporter, runtime, export code."""
    import onnxruntime
    import torch

    return (
        f"{'int8' if int8 else 'fp32'}-t{torch.__version__}-ort{onnxruntime.__version__}"
        f"-v{EXPORT_VERSION}"
    )


def hash_tag(int8: bool) -> str:
    """The model-version tag holding the sha256 of this flavour's graph."""
    return HASH_TAG_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", flavour(int8))


def cache_folder(model_dir: Path, int8: bool, deployment: str | None = None) -> Path:
    """Where the graph of this model dir's weights is cached (one folder per weights + flavour)."""
    return cache_root(deployment) / f"{_weights_digest(model_dir)}-{flavour(int8)}"


def build_graph(classifier: Any, folder: Path, int8: bool) -> Path:
    """Export (and quantize) `classifier` into the cache `folder`, replacing what is there."""
    # Built aside and renamed in: a reader never sees half a graph, and a failed export
    # leaves nothing behind that a later start would take for a finished one.
    with atomic_dir(folder) as staging:
        fp32 = staging / ("fp32.onnx" if int8 else GRAPH_FILE)
        export(classifier, fp32)
        if int8:
            quantize(fp32, staging / GRAPH_FILE)
            fp32.unlink()
    if not (folder / GRAPH_FILE).is_file():
        raise OnnxRuntimeError(f"the ONNX export left no graph in {folder}")
    return folder / GRAPH_FILE


def _session(graph: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Exactly the replica's CPUs, like torch.set_num_threads; one graph runs at a time.
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


# ONNX tensor types -> numpy dtypes of what the session is fed.
_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class OnnxModel:
    """Stands in for the torch module inside a predictor: `model(**inputs).logits` (and
    `.features`); any other attribute is the torch module's (a predictor's feature method)."""

    def __init__(self, graph: Path, session: Any, module: Any = None) -> None:
        self.graph = graph
        self.session = session
        self.module = module
        self.inputs = {i.name: _NUMPY_TYPES.get(i.type, "float32") for i in session.get_inputs()}
        self.outputs = [o.name for o in session.get_outputs()]

    def eval(self) -> OnnxModel:
        return self

    def to(self, *_: Any, **__: Any) -> OnnxModel:
        return self

    def __getattr__(self, name: str) -> Any:
        module = self.__dict__.get("module")
        if module is None:
            raise AttributeError(name)
        return getattr(module, name)

    def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        import torch

        kwargs.update(zip(self.inputs, args, strict=False))  # positional: in the graph's order
        feed = {
            name: kwargs[name].detach().cpu().numpy().astype(dtype, copy=False)
            for name, dtype in self.inputs.items()
        }
        values = self.session.run(self.outputs, feed)
        return SimpleNamespace(
            **{n: torch.from_numpy(v) for n, v in zip(self.outputs, values, strict=True)}
        )


def _cached_session(
    graph: Path, threads: int, expected: str | None, verify: bool
) -> tuple[Any, bool]:
    """(session, verified) for a cached graph, or (None, False) when it must be rebuilt."""
    if not graph.is_file():
        return None, False
    if verify:
        if not expected:
            return None, False  # nothing recorded to check it against: build our own
        if graph_sha256(graph) != expected:
            logger.warning("ONNX cache entry %s does not match the recorded hash: rebuilt", graph)
            return None, False
    try:
        return _session(graph, threads), True
    except Exception:  # a damaged cache entry (disk trouble, a hand edit): rebuild it
        return None, False


def registry_recorder(
    tracking_uri: str | None, name: str, version: str
) -> Callable[[str, str], None]:
    """Record a freshly built graph's hash on the model version; an identity that may not write
    the version (a read-only serving credential) just leaves it unrecorded (next start rebuilds)."""

    def record(key: str, value: str) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            client.set_model_version_tag(name, version, key, value)
        except MlflowException as exc:
            logger.warning("cannot record %s on %s v%s: %s", key, name, version, exc.message)

    return record


def use_onnxruntime(
    classifier: Any,
    model_dir: Path,
    int8: bool,
    threads: int,
    recorded: Mapping[str, str] | None = None,
    record: Callable[[str, str], None] | None = None,
    deployment: str | None = None,
    verify: bool | None = None,
) -> Any:
    """Swap `classifier`'s torch model for an ONNX Runtime session of the same weights.

    `recorded` holds the model version's tags (the graph hash is checked against them) and
    `record(key, value)` stores a new graph's hash when none is recorded yet."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise OnnxRuntimeError(
            "serve.runtime is onnxruntime but the package is missing; pip install onnxruntime "
            "onnx onnxscript (or set serve.runtime: torch)"
        ) from exc
    verify = verify_enabled() if verify is None else verify
    try:
        folder = cache_folder(Path(model_dir), int8, deployment)
        key = hash_tag(int8)
        expected = (recorded or {}).get(key)
        session, _ = _cached_session(folder / GRAPH_FILE, threads, expected, verify)
        if session is None:
            graph = build_graph(classifier, folder, int8)
            session = _session(graph, threads)
            if record is not None and not expected:
                record(key, graph_sha256(graph))
        classifier.model = OnnxModel(folder / GRAPH_FILE, session, classifier.model)
    except OnnxRuntimeError:
        raise
    except Exception as exc:  # the exporter and ORT raise many types; all mean "cannot run"
        raise OnnxRuntimeError(
            f"cannot run {model_dir} with ONNX Runtime: {type(exc).__name__}: {exc}. "
            "Serve it with serve.runtime: torch instead."
        ) from exc
    return classifier
