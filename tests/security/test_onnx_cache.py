"""Red team, serving: a PR job on the serving host plants an ONNX graph under the champion's
cache key (its weights' hash), so that the next replica start runs the attacker's graph.

With the protection the cache entry is checked against the graph hash recorded on the model
version (written by the release identity when it first built the graph; the PR identity cannot
write it: 403) and the planted graph is rebuilt from the weights, never run. With verification
off (ML_ONNX_VERIFY=0) the same plant is what answers: every text gets the attacker's label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.security.conftest import act_as, make_world

pytestmark = pytest.mark.slow
TEXTS = ["a transformer for text classification", "object detection in images with a cnn"]


def attacker_graph(path: Path, labels: int) -> None:
    """A valid graph with the classifier's inputs and output that always picks the last label."""
    import onnx
    from onnx import TensorProto, helper

    weights = np.zeros((1, labels), dtype=np.float32)
    weights[0, -1] = 1.0
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["mask", "axes"], ["length"], keepdims=1),
            helper.make_node("MatMul", ["length", "weights"], ["logits"]),
        ],
        "planted",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(
                "attention_mask", TensorProto.INT64, ["batch", "sequence"]
            ),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])],
        [
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("weights", TensorProto.FLOAT, [1, labels], weights.ravel()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _serve(model_dir: Path, world, deployment: str):
    """What a replica start does: the champion's tags, then the cached graph if it verifies."""
    from mlflow import MlflowClient

    from ml.serve.onnx import registry_recorder, use_onnxruntime
    from ml.train.model import TextClassifier

    client = MlflowClient(tracking_uri=world.uri, registry_uri=world.uri)
    champion = client.get_model_version_by_alias(world.model, "champion")
    record = registry_recorder(world.uri, world.model, champion.version)
    classifier = TextClassifier.load(model_dir, device="cpu")
    return use_onnxruntime(
        classifier, model_dir, False, 2, champion.tags, record, deployment=deployment
    )


@pytest.mark.parametrize("protected", [True, False], ids=["protected", "protection-off"])
def test_a_planted_graph_under_the_champions_key_is_never_run(
    protected, auth_server, tiny_model_dir, tmp_path, monkeypatch
):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ml.serve.onnx import graph_sha256, hash_tag

    world = make_world(auth_server, tmp_path / "project", f"onnx-{protected}", monkeypatch)
    monkeypatch.setenv("ML_ONNX_CACHE", str(tmp_path / "onnx-cache"))
    monkeypatch.setenv("ML_ONNX_VERIFY", "1" if protected else "0")
    # The release deploys the champion: its replica builds the graph and records its hash.
    act_as(monkeypatch, "production")
    honest = _serve(tiny_model_dir, world, "tag-classifier")
    graph = honest.model.graph
    expected = honest.predict_proba(TEXTS)
    client = MlflowClient(tracking_uri=world.uri, registry_uri=world.uri)
    assert client.get_model_version(world.model, "1").tags[hash_tag(False)] == graph_sha256(graph)

    # The PR job: plants its graph under the same key, and cannot re-record the hash.
    act_as(monkeypatch, "pr")
    labels = len(honest.labels)
    attacker_graph(graph, labels)
    planted = graph_sha256(graph)
    with pytest.raises(MlflowException) as refused:
        client.set_model_version_tag(world.model, "1", hash_tag(False), planted)
    assert refused.value.get_http_status_code() == 403

    act_as(monkeypatch, "production")  # the replica restarts
    served = _serve(tiny_model_dir, world, "tag-classifier").predict_proba(TEXTS)
    if protected:
        assert graph_sha256(graph) != planted  # rebuilt from the weights
        np.testing.assert_allclose(served, expected, atol=1e-6)
    else:
        assert graph_sha256(graph) == planted
        assert (served.argmax(axis=1) == labels - 1).all()  # the attacker's label, every time
