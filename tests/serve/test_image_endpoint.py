"""Real HTTP against a locally started Ray Serve app serving a small Fashion-MNIST CNN.

The same app as the text task's (ml/serve/app.py), chosen by the model dir's task: one Ray
instance and one Serve app for the module. The model is trained in-process for a few steps on a
real stratified subset (tests/image_project.py) and registered like `ml registry register` does.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from tests.serve.conftest import MODEL_NAME, free_port, register_versions

pytestmark = pytest.mark.slow

TOKEN_ENV = "ML_TEST_IMAGE_SERVE_TOKEN"
TOKEN = "s3cret-" + uuid.uuid4().hex
APP = "image-classifier-test"
SERVE = {"max_batch_items": 8, "max_body_bytes": 300_000}
MAX_IMAGE_BYTES = 50_000


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_image_project) -> dict:
    from ml.config import load_settings, override
    from ml.data.splits import split_path
    from ml.tasks import task_of

    # The session's image project is only read (its splits, its model); what this module
    # writes (the registry, the prediction log, batch files) goes under `root`.
    root = tmp_path_factory.mktemp("image-serve")
    params_file, model_dir = tiny_image_project.params_file, tiny_image_project.model_dir
    registry = register_versions(root, model_dir, count=1)
    settings = load_settings(params_file, environ={})
    settings.root = params_file.parent
    settings = override(
        settings,
        {
            "mlflow.tracking_uri": registry.tracking_uri,
            "mlflow.registered_model": MODEL_NAME,
            "image.max_image_bytes": MAX_IMAGE_BYTES,
        },
        "image endpoint test",
    )
    holdout = task_of(settings).read_split(settings, split_path(settings, "test"))
    picked = [holdout.labels.index(label) for label in dict.fromkeys(holdout.labels)]
    picked += list(range(12))  # one of each class, then the first images
    return {
        "root": root,
        "settings": settings,
        "registry": registry,
        "images": np.asarray(holdout.inputs)[picked],
        "model_dir": model_dir,
    }


@pytest.fixture(scope="module")
def stack(project):
    import ray
    from ray import serve

    from ml.serve.app import build

    log_dir = project["root"] / "predictions"
    overrides = dict(prediction_log_dir=str(log_dir), auth_token_env=TOKEN_ENV, **SERVE)
    os.environ[TOKEN_ENV] = TOKEN
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build(project["settings"], **overrides), name=APP, route_prefix="/")
        yield {**project, "url": f"http://127.0.0.1:{port}", "log_dir": log_dir}
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.pop(TOKEN_ENV, None)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _post(url: str, payload, **headers) -> requests.Response:
    return requests.post(
        f"{url}/predict", json=payload, headers={**_auth(), **headers}, timeout=120
    )


def _raw(url: str, body: bytes, content_type: str, **headers) -> requests.Response:
    headers = {**_auth(), "Content-Type": content_type, **headers}
    return requests.post(f"{url}/predict", data=body, headers=headers, timeout=120)


def _labels(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["label"] for p in response.json()["predictions"]]


def test_predictions_match_the_pyfunc_model(stack):
    import mlflow

    from ml.tasks import get_task

    images = stack["images"][:8]
    response = _post(stack["url"], {"images": [b64(png(i)) for i in images]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL_NAME and body["model_version"] == "1"

    mlflow.set_tracking_uri(stack["registry"].tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    expected = pyfunc.predict(get_task("image-classification").to_frame(images))
    served = body["predictions"]
    assert [p["label"] for p in served] == expected["label"].tolist()
    for prediction, (_, row) in zip(served, expected.iterrows(), strict=True):
        assert set(prediction["probabilities"]) == set(stack["settings"].data.labels)
        for label, probability in prediction["probabilities"].items():
            assert probability == pytest.approx(row[f"prob_{label}"], abs=1e-4)

    # Raw PNG bytes, a base64 image and a pixel array answer alike for the same image.
    first = images[0]
    raw = _raw(stack["url"], png(first), "image/png").json()
    single = _post(stack["url"], {"image": b64(png(first))}).json()
    array = _post(stack["url"], {"array": first.tolist()}).json()
    assert raw["label"] == single["label"] == array["label"] == served[0]["label"]
    assert raw["confidence"] == pytest.approx(served[0]["confidence"], abs=1e-4)


def test_model_endpoint_reports_the_image_task_on_onnx_runtime(stack):
    model = requests.get(f"{stack['url']}/model", headers=_auth(), timeout=30).json()
    assert model["task"] == "image-classification"
    assert model["labels"] == list(stack["settings"].data.labels)
    assert (model["runtime"], model["device"]) == ("onnxruntime", "cpu")


def _truncated(pixels: np.ndarray) -> bytes:
    data = png(pixels)
    return data[: len(data) // 2]


def _noise(side: int) -> np.ndarray:
    return np.random.default_rng(side).integers(0, 256, (side, side), dtype=np.uint8)


# kind -> (body, content type, status, words the reason must hold); p: a real holdout image.
BAD = {
    "not an image": (lambda p: b"%PDF-1.7 not a picture", "image/png", 415, "not a PNG or JPEG"),
    "truncated png": (_truncated, "image/png", 422, "cannot be decoded"),
    "wrong size": (lambda p: png(_noise(32)), "image/png", 422, "32x32"),
    "rgb, colour not allowed": (lambda p: png(p, "RGB"), "image/png", 422, "allow_colour"),
    "too many items": (
        lambda p: json.dumps({"images": [b64(png(p))] * 9}).encode(),
        "application/json",
        413,
        "limit 8",
    ),
    "image too large": (lambda p: png(_noise(250)), "image/png", 413, "max_image_bytes"),
    "body too large": (lambda p: b"\x89PNG" + bytes(400_000), "image/png", 413, "limit 300000"),
    "bad base64": (
        lambda p: json.dumps({"image": "%%% not base64"}).encode(),
        "application/json",
        422,
        "base64",
    ),
    "wrong json shape": (
        lambda p: json.dumps({"text": "a shirt"}).encode(),
        "application/json",
        422,
        "exactly one of 'image'",
    ),
    "array values over 255": (
        lambda p: json.dumps({"array": (p.astype(int) + 256).tolist()}).encode(),
        "application/json",
        422,
        "0-255",
    ),
    "array wrong shape": (
        lambda p: json.dumps({"array": p[:, :20].tolist()}).encode(),
        "application/json",
        422,
        "28 x 20",
    ),
    "empty body": (lambda p: b"", "image/png", 400, "empty request body"),
    "png sent as json": (lambda p: png(p), "application/json", 415, "Content-Type image/png"),
    "unsupported content type": (lambda p: png(p), "image/gif", 415, "not accepted"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_image_requests_get_a_4xx_naming_the_problem(stack, kind):
    build, content_type, status, words = BAD[kind]
    response = _raw(stack["url"], build(stack["images"][0]), content_type)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in detail, detail


def test_bad_images_fail_alone_beside_good_ones(stack):
    """Good and bad requests sent at once share batches: every good one is answered."""
    good = [{"image": b64(png(image))} for image in stack["images"][:8]]
    bad = [(_truncated(stack["images"][0]), "image/png"), (png(_noise(40)), "image/png")]
    barrier = threading.Barrier(len(good) + len(bad))

    def send(job):
        barrier.wait()
        return _post(stack["url"], job) if isinstance(job, dict) else _raw(stack["url"], *job)

    with ThreadPoolExecutor(len(good) + len(bad)) as pool:
        answers = list(pool.map(send, [*good, *bad]))
    assert [a.status_code for a in answers[: len(good)]] == [200] * len(good)
    assert [a.status_code for a in answers[len(good) :]] == [422, 422]


def test_bearer_token_auth(stack):
    url, body = stack["url"], png(stack["images"][0])
    headers = {"Content-Type": "image/png"}
    missing = requests.post(f"{url}/predict", data=body, headers=headers, timeout=30)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    wrong = requests.post(
        f"{url}/predict", data=body, headers={**headers, "Authorization": "Bearer x"}, timeout=30
    )
    assert wrong.status_code == 401
    assert _raw(url, body, "image/png").status_code == 200


def _wait_for_records(log_dir: Path, request_ids: set[str], timeout: float = 30.0):
    from ml.serve.prediction_log import read_prediction_log

    deadline = time.monotonic() + timeout
    while True:
        frame = read_prediction_log(log_dir)
        found = frame[frame["request_id"].isin(request_ids)] if len(frame) else frame
        if set(found["request_id"]) >= request_ids or time.monotonic() > deadline:
            return found


def test_predictions_reach_the_log_as_hash_and_statistics(stack):
    from ml.serve.prediction_log import IMAGE_RECORD_FIELDS
    from ml.tasks.image_classification.drift import image_statistics
    from ml.tasks.image_classification.serving import image_sha256

    image = stack["images"][0]
    request_id = uuid.uuid4().hex
    response = _raw(stack["url"], png(image), "image/png", **{"X-Request-ID": request_id})
    assert response.status_code == 200
    found = _wait_for_records(stack["log_dir"], {request_id})
    assert list(found.columns) == list(IMAGE_RECORD_FIELDS)
    record = found.iloc[0]
    stats = image_statistics(image[None])
    assert record["image_sha256"] == image_sha256(image)
    assert record["mean_intensity"] == pytest.approx(stats["mean_intensity"][0], abs=1e-5)
    assert record["contrast"] == pytest.approx(stats["contrast"][0], abs=1e-5)
    assert not record["blank"]
    hidden = json.loads((stack["model_dir"] / "meta.json").read_text())["architecture"]["hidden"]
    assert len(record["embedding"]) == hidden
    assert all(round(v, 4) == v for v in record["embedding"])
    assert record["image"] is None  # the pixels are not kept (serve.log_inputs is off)
    assert record["label"] == response.json()["label"]
    # No record anywhere holds the pixels.
    for path in stack["log_dir"].glob("date=*/*.jsonl"):
        assert all('"image":' not in line for line in path.read_text().splitlines())


def test_batch_inference_matches_the_endpoint(stack):
    from ml.serve.batch import predict_file
    from ml.tasks import get_task
    from ml.tasks.image_classification import idx

    images = stack["images"]
    served = _labels(_post(stack["url"], {"images": [b64(png(i)) for i in images[:8]]}))
    served += _labels(_post(stack["url"], {"images": [b64(png(i)) for i in images[8:16]]}))
    served += _labels(_post(stack["url"], {"images": [b64(png(i)) for i in images[16:]]}))
    root, uri = stack["root"], f"models:/{MODEL_NAME}@champion"

    folder = root / "batch-images"
    folder.mkdir()
    for i, image in enumerate(images):
        (folder / f"img-{i:03d}.png").write_bytes(png(image))
    out = root / "from-folder.parquet"
    result = predict_file(stack["settings"], folder, out, uri, 8)
    frame = pd.read_parquet(out)
    assert result.rows == len(images) and result.model_version == "1"
    assert frame["path"].tolist() == [f"img-{i:03d}.png" for i in range(len(images))]
    assert frame["label"].tolist() == served

    idx_file = root / "batch-images-idx3-ubyte.gz"
    idx.write(idx_file, images)
    out = root / "from-idx.csv"
    predict_file(stack["settings"], idx_file, out, uri, 8)
    assert pd.read_csv(out)["label"].tolist() == served

    parquet = root / "batch-in.parquet"
    get_task("image-classification").to_frame(images).to_parquet(parquet)
    out = root / "from-parquet.parquet"
    predict_file(stack["settings"], parquet, out, uri, 8)
    frame = pd.read_parquet(out)
    assert frame["label"].tolist() == served and "image" not in frame.columns


def test_one_off_predict_matches_the_endpoint(stack):
    """What `ml predict IMAGE.png ...` runs: the endpoint's checks, runtime and answers."""
    from ml.serve.batch import PredictInputError, predict_inputs

    images = stack["images"][:3]
    paths = []
    for i, image in enumerate(images):
        paths.append(stack["root"] / f"one-off-{i}.png")
        paths[-1].write_bytes(png(image))
    served = _post(stack["url"], {"images": [b64(png(i)) for i in images]}).json()["predictions"]
    uri = f"models:/{MODEL_NAME}@champion"
    rows = predict_inputs(stack["settings"], [str(p) for p in paths], uri)
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    assert [r["label"] for r in rows] == [p["label"] for p in served]
    assert rows[0]["confidence"] == pytest.approx(served[0]["confidence"], abs=1e-4)
    assert rows[0]["model_version"] == "1"
    rgb = stack["root"] / "one-off-rgb.png"
    rgb.write_bytes(png(images[0], "RGB"))
    with pytest.raises(PredictInputError, match="colour mode RGB") as info:
        predict_inputs(stack["settings"], [str(rgb)], uri)
    assert info.value.exit_code == 2
    with pytest.raises(PredictInputError, match="no such image file"):
        predict_inputs(stack["settings"], [str(stack["root"] / "missing.png")], uri)
