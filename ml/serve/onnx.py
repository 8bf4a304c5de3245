"""ONNX Runtime for the classifier on CPU: the same weights, exported once, run by a compiled graph.

Why it is faster in a Serve replica than the same arithmetic in eager torch: a replica's event
loop (HTTP, JSON, the prediction log) and its inference thread share one GIL, and an eager forward
pass needs the GIL between every one of its ~200 ops, so on 2 cores the matmuls wait on request
handling. `InferenceSession.run` holds the GIL only to start and finish the whole graph. Its int8
(dynamic quantization of the MatMul weights) is the same trade as torch's: see
reports/benchmarks/serving.md for the label agreement with fp32.

Exported graphs are cached by the weights' sha256 (and the quantize flag), so restarting a
replica, or a second replica on the same node, reuses them instead of exporting again (~10 s on
2 cores); a cache entry ONNX Runtime cannot load is exported again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ml.io import atomic_dir

if TYPE_CHECKING:
    from ml.train.model import TextClassifier

GRAPH_FILE = "model.onnx"
# Bump when the export changes in a way that makes cached graphs stale.
EXPORT_VERSION = "2"


class OnnxRuntimeError(RuntimeError):
    """ONNX Runtime is missing, or the model could not be exported or loaded by it."""


def cache_root() -> Path:
    """`ML_ONNX_CACHE`, else the user's cache folder (never the model dir: it may be read-only)."""
    explicit = os.environ.get("ML_ONNX_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ml" / "onnx"


def _weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def _logits_only(model: Any) -> Any:
    """The classifier with positional inputs and a tensor output, the shape an exporter needs."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    return LogitsOnly().eval()


def export(classifier: TextClassifier, path: Path) -> None:
    """Write the fp32 graph of `classifier` (batch and sequence length dynamic) to `path`."""
    import logging
    import warnings

    import torch

    # Two texts of different lengths: size-0/1 dims would be specialised into the graph.
    sample = classifier.tokenizer(
        ["an example title", "an example title with a longer description after it"],
        padding=True,
        return_tensors="pt",
    )
    dynamic = {0: "batch", 1: "sequence"}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    with warnings.catch_warnings(), torch.inference_mode(False):
        # The exporter reports each step of its translation (and every torchvision op it
        # skips) as a warning; a failure still raises, and that is what matters here.
        warnings.simplefilter("ignore")
        exporter_log.setLevel(logging.ERROR)
        try:
            torch.onnx.export(
                _logits_only(classifier.model.cpu()),
                (sample["input_ids"], sample["attention_mask"]),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_shapes={"input_ids": dynamic, "attention_mask": dynamic},
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


def cache_folder(model_dir: Path, int8: bool) -> Path:
    """Where the graph of this model dir's weights is cached (one folder per weights + flavour)."""
    import onnxruntime
    import torch

    key = f"{_weights_digest(model_dir)}-{'int8' if int8 else 'fp32'}"
    key += f"-t{torch.__version__}-ort{onnxruntime.__version__}-v{EXPORT_VERSION}"
    return cache_root() / key


def build_graph(classifier: TextClassifier, folder: Path, int8: bool) -> Path:
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


class OnnxModel:
    """Stands in for the torch module inside a TextClassifier: `model(**batch).logits`."""

    def __init__(self, graph: Path, session: Any) -> None:
        self.graph = graph
        self.session = session

    def eval(self) -> OnnxModel:
        return self

    def __call__(self, input_ids: Any, attention_mask: Any, **_: Any) -> SimpleNamespace:
        import torch

        (logits,) = self.session.run(
            ["logits"],
            {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()},
        )
        return SimpleNamespace(logits=torch.from_numpy(logits))


def use_onnxruntime(
    classifier: TextClassifier, model_dir: Path, int8: bool, threads: int
) -> TextClassifier:
    """Swap `classifier`'s torch model for an ONNX Runtime session of the same weights."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise OnnxRuntimeError(
            "serve.runtime is onnxruntime but the package is missing; pip install onnxruntime "
            "onnx onnxscript (or set serve.runtime: torch)"
        ) from exc
    try:
        folder = cache_folder(Path(model_dir), int8)
        graph = folder / GRAPH_FILE
        session = None
        if graph.is_file():
            try:
                session = _session(graph, threads)
            except Exception:  # a damaged cache entry (disk trouble, a hand edit): rebuild it
                session = None
        if session is None:
            graph = build_graph(classifier, folder, int8)
            session = _session(graph, threads)
        classifier.model = OnnxModel(graph, session)
    except OnnxRuntimeError:
        raise
    except Exception as exc:  # the exporter and ORT raise many types; all mean "cannot run"
        raise OnnxRuntimeError(
            f"cannot run {model_dir} with ONNX Runtime: {type(exc).__name__}: {exc}. "
            "Serve it with serve.runtime: torch instead."
        ) from exc
    return classifier
