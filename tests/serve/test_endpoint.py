"""Real HTTP against a locally started Ray Serve app serving a small registered model.

One Ray instance and one Serve app for the module (starting them costs ~20-30 s on 2 cores).
Tests run in file order: the rollout test moves the app to version 2, and the last test stops
the app to check that shutdown flushes the prediction log.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO_ROOT, cli_env, run_ml, shared_data_dir
from tests.serve.conftest import GIT_SHA, MODEL_NAME, free_port, register_versions
from tests.serve.strategies import any_char, json_values, texts

pytestmark = pytest.mark.slow

TOKEN_ENV = "ML_TEST_SERVE_TOKEN"
TOKEN = "s3cret-" + uuid.uuid4().hex
APP = "tag-classifier-test"
LIMITS = {"max_text_chars": 2000, "max_batch_items": 64, "max_body_bytes": 200_000}


def _settings(tracking_uri: str):
    from ml.config import load_settings, override

    values = {"tracking_uri": tracking_uri, "registered_model": MODEL_NAME}
    return override(load_settings(REPO_ROOT / "params.yaml"), {"mlflow": values}, "test")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    import ray
    from ray import serve

    from ml.serve.app import build

    root = tmp_path_factory.mktemp("serve")
    registry = register_versions(root, tiny_model_dir, count=2)
    settings = _settings(registry.tracking_uri)
    log_dir = root / "predictions"
    overrides = dict(
        prediction_log_dir=str(log_dir), auth_token_env=TOKEN_ENV, quantize=False, **LIMITS
    )
    # Replicas read the token from their environment, inherited from this process.
    os.environ[TOKEN_ENV] = TOKEN
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build(settings, **overrides), name=APP, route_prefix="/")
        yield {
            "url": f"http://127.0.0.1:{port}",
            "settings": settings,
            "overrides": overrides,
            "registry": registry,
            "log_dir": log_dir,
            "root": root,
        }
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.pop(TOKEN_ENV, None)


@pytest.fixture(scope="module")
def holdout() -> pd.DataFrame:
    frame = pd.read_csv(shared_data_dir() / "madewithml" / "holdout.csv")
    return frame.groupby("tag", group_keys=False).head(5).reset_index(drop=True)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _post(url: str, payload, **kwargs) -> requests.Response:
    headers = {**_auth(), **kwargs.pop("headers", {})}
    return requests.post(f"{url}/predict", json=payload, headers=headers, timeout=60, **kwargs)


def test_predictions_match_the_pyfunc_model(stack, holdout):
    import mlflow

    records = holdout[["title", "description"]].to_dict("records")
    response = _post(stack["url"], {"records": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL_NAME and body["model_version"] == "1"

    mlflow.set_tracking_uri(stack["registry"].tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    expected = pyfunc.predict(holdout[["title", "description"]])
    served = body["predictions"]
    assert [p["label"] for p in served] == expected["label"].tolist()
    for prediction, (_, row) in zip(served, expected.iterrows(), strict=True):
        for label, probability in prediction["probabilities"].items():
            assert probability == pytest.approx(row[f"prob_{label}"], abs=1e-4)

    # The other request forms give the same answer for the same text.
    from ml.data.text import combine_text

    first = holdout.iloc[:1]
    text = combine_text(first, ["title", "description"]).iloc[0]
    single = _post(stack["url"], {"text": text}).json()
    record = _post(stack["url"], first[["title", "description"]].iloc[0].to_dict()).json()
    batch = _post(stack["url"], {"texts": [text, text]}).json()
    assert single["label"] == record["label"] == served[0]["label"]
    assert [p["label"] for p in batch["predictions"]] == [served[0]["label"]] * 2
    assert single["confidence"] == pytest.approx(served[0]["confidence"], abs=1e-4)


def test_health_model_and_metrics(stack):
    health = requests.get(f"{stack['url']}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["model_version"] == "1"
    model = requests.get(f"{stack['url']}/model", headers=_auth(), timeout=30).json()
    assert model["name"] == MODEL_NAME and model["version"] == "1"
    assert model["alias"] == "champion" and model["git_sha"] == GIT_SHA
    assert model["metrics"] == {"f1_weighted": 0.5}
    assert model["labels"] == sorted(model["labels"]) and len(model["labels"]) == 4
    # The default runtime on CPU: the probabilities above came from ONNX Runtime.
    assert (model["runtime"], model["quantized"], model["device"]) == ("onnxruntime", False, "cpu")
    metrics = requests.get(f"{stack['url']}/metrics", timeout=30).text
    assert 'ml_serve_requests_total{status="200"}' in metrics
    assert "ml_serve_batch_size_bucket" in metrics


# A JSON body nested 5,000 levels deep: Python's parser recurses, so unchecked it is a 500.
DEEP_BODY = b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}"

MALFORMED = {
    "empty body": (b"", "application/json", 400),
    "not json": (b"{'text': 'single quotes'}", "application/json", 400),
    "truncated json": (b'{"text": "abc"', "application/json", 400),
    "json list": (b'["a", "b"]', "application/json", 422),
    "json string": (b'"just a string"', "application/json", 422),
    "number text": (b'{"text": 42}', "application/json", 422),
    "null text": (b'{"text": null}', "application/json", 422),
    "empty text": (b'{"text": ""}', "application/json", 422),
    "whitespace text": (b'{"text": "   \\n\\t "}', "application/json", 422),
    "texts not a list": (b'{"texts": "abc"}', "application/json", 422),
    "texts with a number": (b'{"texts": ["ok", 3]}', "application/json", 422),
    "empty batch": (b'{"texts": []}', "application/json", 422),
    "unknown key": (b'{"txt": "typo"}', "application/json", 422),
    "two forms": (b'{"text": "a", "texts": ["b"]}', "application/json", 422),
    "record extra key": (b'{"records": [{"title": "a", "body": "b"}]}', "application/json", 422),
    "record empty": (b'{"records": [{"title": "", "description": " "}]}', "application/json", 422),
    "text too long": (json.dumps({"text": "x" * 2001}).encode(), "application/json", 413),
    "batch too large": (json.dumps({"texts": ["t"] * 65}).encode(), "application/json", 413),
    "body too large": (json.dumps({"text": "y" * 300_000}).encode(), "application/json", 413),
    "form encoded": (b"text=hello", "application/x-www-form-urlencoded", 415),
    "invalid utf-8": (b'{"text": "\xff\xfe"}', "application/json", 400),
    "lone surrogate": (b'{"text": "\\ud800 abc"}', "application/json", 422),
    "surrogate in a record": (b'{"records": [{"title": "\\udfff"}]}', "application/json", 422),
    "surrogate in a key": (b'{"\\ud800": "x"}', "application/json", 422),
    "5000-level json": (DEEP_BODY, "application/json", 400),
    "4301-digit integer": (b'{"text": ' + b"7" * 4301 + b"}", "application/json", 400),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_requests_get_a_4xx_with_a_reason(stack, kind):
    body, content_type, status = MALFORMED[kind]
    response = requests.post(
        f"{stack['url']}/predict",
        data=body,
        headers={**_auth(), "Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 10


def test_wrong_method_and_route_are_4xx(stack):
    assert requests.get(f"{stack['url']}/predict", timeout=30).status_code == 405
    assert requests.get(f"{stack['url']}/nope", timeout=30).status_code == 404


def test_bearer_token_auth(stack):
    url = stack["url"]
    payload = {"text": "a graph neural network for molecules"}
    missing = requests.post(f"{url}/predict", json=payload, timeout=30)
    assert missing.status_code == 401 and "bearer" in missing.json()["detail"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = requests.post(
        f"{url}/predict", json=payload, headers={"Authorization": "Bearer nope"}, timeout=30
    )
    assert wrong.status_code == 401
    basic = requests.post(
        f"{url}/predict", json=payload, headers={"Authorization": f"Basic {TOKEN}"}, timeout=30
    )
    assert basic.status_code == 401
    assert requests.get(f"{url}/model", timeout=30).status_code == 401
    assert _post(url, payload).status_code == 200
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200  # probes need no token


def _send(url: str, body: bytes) -> requests.Response:
    headers = {**_auth(), "Content-Type": "application/json"}
    return requests.post(f"{url}/predict", data=body, headers=headers, timeout=120)


def _together(url: str, good: list[dict], bad: list[bytes]) -> tuple[list, list]:
    """Send every request at once (a barrier), so the bad ones share batches with the good."""
    barrier = threading.Barrier(len(good) + len(bad))

    def send(job):
        barrier.wait()
        return _post(url, job) if isinstance(job, dict) else _send(url, job)

    with ThreadPoolExecutor(len(good) + len(bad)) as pool:
        answers = list(pool.map(send, [*good, *bad]))
    return answers[: len(good)], answers[len(good) :]


def test_bad_requests_fail_alone_beside_32_good_ones(stack):
    """32 concurrent good requests beside one lone-surrogate text and one 5,000-level body:
    every good one is answered, the bad ones get a 4xx. (Before inputs were checked ahead of
    batching, the surrogate's TypeError failed the whole batch: 8-12 good requests got 500.)"""
    good = [{"text": f"pytorch models for image segmentation, request {i}"} for i in range(32)]
    for _ in range(3):  # each round gathers different batches
        answers, (surrogate, deep) = _together(
            stack["url"], good, [b'{"text": "\\ud800 abc"}', DEEP_BODY]
        )
        assert [a.status_code for a in answers] == [200] * 32, [a.text for a in answers][:3]
        assert surrogate.status_code == 422 and "surrogate" in surrogate.json()["detail"]
        assert deep.status_code == 400 and "deep" in deep.json()["detail"]


_json = json_values(max_text=30, max_items=3, max_leaves=8)
_bodies = st.one_of(
    _json.map(lambda v: json.dumps(v).encode()),
    texts(any_char, min_size=1, max_size=60).map(lambda t: json.dumps({"text": t}).encode()),
    st.lists(texts(any_char, min_size=1, max_size=30), min_size=1, max_size=4).map(
        lambda ts: json.dumps({"texts": ts}).encode()
    ),
    st.binary(max_size=80),
)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_bodies)
def test_arbitrary_json_and_unicode_never_hurt_good_requests(stack, body):
    """Whatever one client sends, it gets no 5xx, and the good requests beside it all get 200."""
    good = [{"text": f"transformers for named entity recognition {i}"} for i in range(4)]
    answers, (odd,) = _together(stack["url"], good, [body])
    assert odd.status_code < 500, (body[:200], odd.text)
    assert [a.status_code for a in answers] == [200] * 4


def _wait_for_records(log_dir: Path, request_ids: set[str], timeout: float = 30.0):
    from ml.serve.prediction_log import read_prediction_log

    deadline = time.monotonic() + timeout
    while True:
        frame = read_prediction_log(log_dir)
        found = frame[frame["request_id"].isin(request_ids)]
        if set(found["request_id"]) >= request_ids or time.monotonic() > deadline:
            return found


def test_predictions_reach_the_log(stack):
    from ml.serve.prediction_log import RECORD_FIELDS, text_sha256

    request_id = uuid.uuid4().hex
    text = "Serving  transformers with Ray"
    response = _post(stack["url"], {"text": text}, headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    batch_id = uuid.uuid4().hex
    _post(stack["url"], {"texts": ["one text", "two texts"]}, headers={"X-Request-ID": batch_id})
    wanted = {request_id, f"{batch_id}:0", f"{batch_id}:1"}
    found = _wait_for_records(stack["log_dir"], wanted)
    assert set(found["request_id"]) == wanted
    record = found[found["request_id"] == request_id].iloc[0]
    assert list(found.columns) == list(RECORD_FIELDS)
    assert record["text"] == text and record["text_sha256"] == text_sha256(text)
    assert record["text_length"] == len(text)
    assert record["label"] == response.json()["label"]
    assert record["confidence"] == pytest.approx(response.json()["confidence"])
    assert record["model_name"] == MODEL_NAME and record["model_version"] == "1"
    assert record["latency_ms"] > 0
    files = list(stack["log_dir"].glob("date=*/*.jsonl"))
    assert files and all(p.parent.name.startswith("date=20") for p in files)


def test_batch_inference_matches_the_endpoint(stack, holdout):
    from ml.serve.batch import predict_file

    records = holdout[["title", "description"]].to_dict("records")
    served = _post(stack["url"], {"records": records}).json()["predictions"]
    source = stack["root"] / "batch-in.csv"
    holdout[["id", "title", "description"]].to_csv(source, index=False)
    out = stack["root"] / "batch-out.parquet"
    result = predict_file(stack["settings"], source, out, f"models:/{MODEL_NAME}@champion", 8)
    frame = pd.read_parquet(out)
    assert result.rows == len(holdout) and result.model_version == "1"
    assert frame["id"].tolist() == holdout["id"].tolist()  # input order kept
    assert frame["label"].tolist() == [p["label"] for p in served]
    assert frame["confidence"].tolist() == pytest.approx([p["confidence"] for p in served], 1e-4)


def test_cli_predict_one_off_matches_the_endpoint(stack):
    text = "Real-time object detection on edge devices with YOLO"
    served = _post(stack["url"], {"text": text}).json()
    env = cli_env(MLFLOW_TRACKING_URI=stack["registry"].tracking_uri)
    result = run_ml(["predict", text, "--model", f"models:/{MODEL_NAME}@champion"], REPO_ROOT, env)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["label"] == served["label"] and row["model_version"] == "1"
    bad = run_ml(["predict", "   "], REPO_ROOT, env)
    assert bad.returncode == 2 and "empty" in bad.stderr


def test_model_update_under_traffic_drops_no_request(stack):
    """Roll version 2 out with `serve.run` (as `serve deploy` would: only user_config changes)
    while clients keep sending requests; every request must succeed."""
    from ray import serve

    from ml.serve.app import build

    url, results, errors = stack["url"], [], []
    stop = threading.Event()

    def client(n: int) -> None:
        for i in range(400):  # bounded even if `stop` never comes
            if stop.is_set():
                return
            try:
                response = _post(url, {"text": f"client {n} request {i} about pytorch models"})
                results.append((response.status_code, response.json().get("model_version")))
            except Exception as exc:  # a dropped connection is a failed request
                errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    overrides = {**stack["overrides"], "model_uri": f"models:/{MODEL_NAME}/2"}
    serve.run(build(stack["settings"], **overrides), name=APP, route_prefix="/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(v == "2" for _, v in results[-5:]):
        time.sleep(0.5)
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join(120)

    assert not errors, errors[:3]
    statuses = {status for status, _ in results}
    assert statuses == {200}, statuses
    versions = [v for _, v in results]
    assert "1" in versions and versions[-1] == "2", versions[-10:]
    model = requests.get(f"{url}/model", headers=_auth(), timeout=30).json()
    assert model["version"] == "2"


def test_shutdown_flushes_every_prediction(stack):
    from ray import serve

    ids = [uuid.uuid4().hex for _ in range(20)]
    for request_id in ids:
        response = _post(stack["url"], {"text": "flush me"}, headers={"X-Request-ID": request_id})
        assert response.status_code == 200
    serve.delete(APP)  # graceful: replicas run __del__, which drains the writer queue
    # Read once, right away: the records must be on disk by the time delete returns.
    found = _wait_for_records(stack["log_dir"], set(ids), timeout=0)
    assert set(found["request_id"]) == set(ids)
