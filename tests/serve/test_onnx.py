"""serve.runtime onnxruntime: the exported graph answers like the torch model, and is cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_data_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def texts() -> list[str]:
    frame = pd.read_csv(shared_data_dir() / "madewithml" / "holdout.csv")
    sample = frame.groupby("tag", group_keys=False).head(8)
    return (sample["title"] + " " + sample["description"].fillna("")).tolist()


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture
def cache_env(onnx_cache, monkeypatch) -> Path:
    monkeypatch.setenv("ML_ONNX_CACHE", str(onnx_cache))
    return onnx_cache


def _load(model_dir: Path, runtime: str, quantize: bool = False):
    from ml.serve.loader import load_classifier

    return load_classifier(
        str(model_dir), quantize=quantize, device="cpu", torch_threads=2, runtime=runtime
    )


@pytest.fixture(scope="module")
def fp32(tiny_model_dir, onnx_cache):
    """(classifier, info) of the model dir on ONNX Runtime, fp32, loaded once for the module:
    every load of a model dir without a recorded hash exports the graph again."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ML_ONNX_CACHE", str(onnx_cache))
        return _load(tiny_model_dir, "onnxruntime")


def test_onnxruntime_gives_the_torch_probabilities(tiny_model_dir, texts, cache_env, fp32):
    from ml.serve.onnx import OnnxModel

    torch_model, torch_info = _load(tiny_model_dir, "torch")
    onnx_model, onnx_info = fp32
    assert isinstance(onnx_model.model, OnnxModel)
    assert (torch_info.runtime, onnx_info.runtime) == ("torch", "onnxruntime")

    expected = torch_model.predict_proba(texts, 8)
    # Batch sizes and lengths differ from the export's sample: both dims are dynamic.
    for batch_size in (1, 5, 32):
        served = onnx_model.predict_proba(texts, batch_size)
        np.testing.assert_allclose(served, expected, atol=1e-4)
    assert [p["label"] for p in onnx_model.predict(texts)] == [
        p["label"] for p in torch_model.predict(texts)
    ]


def _onnx(model_dir: Path, recorded: dict[str, str], verify: bool | None = None):
    """The torch classifier of `model_dir` swapped to ONNX Runtime, the cache checked against
    `recorded` (a model version's tags) and a new graph's hash recorded there."""
    from ml.serve.onnx import use_onnxruntime
    from ml.train.model import TextClassifier

    classifier = TextClassifier.load(model_dir, device="cpu")
    return use_onnxruntime(
        classifier, model_dir, False, 2, recorded, recorded.__setitem__, verify=verify
    )


def test_the_graph_is_exported_once_and_a_damaged_one_is_rebuilt(
    tiny_model_dir, texts, cache_env, monkeypatch
):
    import ml.serve.onnx as onnx_runtime

    tags: dict[str, str] = {}
    first = _onnx(tiny_model_dir, tags)
    graph = first.model.graph
    assert graph.is_file() and graph.is_relative_to(cache_env / "default")  # per deployment
    assert tags == {onnx_runtime.hash_tag(False): onnx_runtime.graph_sha256(graph)}
    exported = graph.stat().st_mtime_ns

    def no_export(*_args, **_kwargs):
        raise AssertionError("a cached graph was exported again")

    with monkeypatch.context() as patch:
        patch.setattr(onnx_runtime, "export", no_export)
        again = _onnx(tiny_model_dir, tags)
    assert again.model.graph == graph and graph.stat().st_mtime_ns == exported

    graph.write_bytes(b"not an onnx graph")  # e.g. a disk that filled up under another tool
    rebuilt = _onnx(tiny_model_dir, tags)
    assert rebuilt.model.graph.stat().st_size > 1_000_000
    np.testing.assert_allclose(rebuilt.predict_proba(texts), first.predict_proba(texts), atol=1e-6)


def test_a_graph_without_a_recorded_hash_is_rebuilt_not_trusted(
    tiny_model_dir, cache_env, monkeypatch, fp32
):
    """A model dir served without a registry version (nothing recorded) never reuses a cache
    entry: whoever could write the cache folder could otherwise choose what runs."""
    import ml.serve.onnx as onnx_runtime

    assert fp32[0].model.graph.is_file()  # the cache holds this model dir's graph
    exports = []
    real_export = onnx_runtime.export
    monkeypatch.setattr(
        onnx_runtime, "export", lambda *a, **k: (exports.append(1), real_export(*a, **k))
    )
    _load(tiny_model_dir, "onnxruntime")
    assert exports == [1]


def test_int8_graph_is_smaller_and_still_a_classifier(tiny_model_dir, texts, cache_env, fp32):
    fp32, _ = fp32
    int8, info = _load(tiny_model_dir, "onnxruntime", quantize=True)
    assert info.quantized and info.runtime == "onnxruntime"
    assert int8.model.graph != fp32.model.graph
    # int8 weights: a quarter of the fp32 bytes, give or take the unquantized embeddings.
    assert int8.model.graph.stat().st_size < 0.4 * fp32.model.graph.stat().st_size
    probabilities = int8.predict_proba(texts)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    agreement = (probabilities.argmax(1) == fp32.predict_proba(texts).argmax(1)).mean()
    assert agreement >= 0.8, f"int8 labels agree with fp32 on only {agreement:.0%}"


def test_a_model_onnx_cannot_export_is_a_load_error_naming_the_fallback(
    tiny_model_dir, tmp_path, cache_env, monkeypatch
):
    import ml.serve.onnx as onnx_runtime
    from ml.serve.loader import ModelLoadError

    def broken_export(_classifier, _path):
        raise RuntimeError("unsupported operator aten::example")

    monkeypatch.setattr(onnx_runtime, "export", broken_export)
    monkeypatch.setenv("ML_ONNX_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match=r"aten::example.*serve\.runtime: torch"):
        _load(tiny_model_dir, "onnxruntime")
    assert not any((tmp_path / "empty-cache").rglob("model.onnx"))
