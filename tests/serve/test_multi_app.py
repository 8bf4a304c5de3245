"""Several models as one Serve config, one application per model at /NAME (ml/serve/multi.py).

The fast tests check the generated config against Ray's own schema and `ml serve config`. The
slow one serves a tiny text model and a tiny image model, each the champion of its own
registered model in one MLflow store, as the two applications of a project's models.yaml, on
one local Ray through the path `ml serve --all` takes (start_local_apps over the generated
applications), and asks both over real HTTP.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tests.serve.conftest import MODEL_NAME, free_port, register_versions

TOKEN_ENV = "ML_TEST_MULTI_SERVE_TOKEN"
IMAGE_MODEL = "fashion-classifier"
TOKEN = "s3cret-" + uuid.uuid4().hex
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt"]
FASHION += ["Sneaker", "Bag", "Ankle boot"]


def test_the_config_has_one_application_per_model_as_one_model_serving_builds_it(monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    from ml.config import load_settings
    from ml.models import load_models
    from ml.serve.loader import default_model_uri
    from ml.serve.multi import serve_config
    from ml.serve.options import serve_options

    monkeypatch.chdir(REPO_ROOT)
    config = serve_config()
    ServeDeploySchema.model_validate(config)
    catalog = load_models()
    assert [app["name"] for app in config["applications"]] == catalog.names
    for app, model in zip(config["applications"], catalog.models, strict=True):
        settings = load_settings(model.params)
        assert app["route_prefix"] == f"/{model.name}"
        assert app["args"] == {"params": model.params, "log_subdir": model.name}
        (deployment,) = app["deployments"]
        assert deployment["user_config"]["model_uri"] == default_model_uri(settings)
        assert deployment["num_replicas"] == serve_options(settings)["num_replicas"]


def test_ml_serve_config_writes_the_chosen_models_and_refuses_unknown_ones(tmp_path, monkeypatch):
    from ml.cli import app

    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "serve.yaml"
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "config", "--models", "fashion-mnist", "-o", str(out)])
    assert result.exit_code == 0, result.output
    (only,) = yaml.safe_load(out.read_text())["applications"]
    assert only["name"] == "fashion-mnist" and only["route_prefix"] == "/fashion-mnist"
    result = runner.invoke(app, ["serve", "config", "--models", "fashon-mnist"])
    assert result.exit_code == 2
    assert "unknown model 'fashon-mnist'" in result.output and "fashion-mnist" in result.output
    result = runner.invoke(app, ["serve", "--all", "--model", "models:/x@champion"])
    assert result.exit_code == 2 and "serves one model" in result.output


def _write(path: Path, values: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def _params(params_file: Path, store: str, registered: str, log_dir: Path) -> dict:
    values = yaml.safe_load(params_file.read_text())
    values.setdefault("mlflow", {}).update(tracking_uri=store, registered_model=registered)
    # torch: no ONNX export at start (seconds per model on 2 cores), the same answers.
    serve = {"runtime": "torch", "auth_token_env": TOKEN_ENV, "prediction_log_dir": str(log_dir)}
    values.setdefault("serve", {}).update(serve)
    return values


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir, tiny_image_project) -> dict:
    """A project holding two models: `text` (params.yaml) and `images` (configs/images.yaml)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("multi")
    image_params = tiny_image_project.params_file  # read only: its settings and a test image
    # One registry holding one registered model per model, each with its own champion.
    store = register_versions(root, tiny_image_project.model_dir, 1).tracking_uri
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.rename_registered_model(MODEL_NAME, IMAGE_MODEL)
    client.set_registered_model_alias(IMAGE_MODEL, "champion", "1")
    register_versions(root, tiny_model_dir, count=1)
    log_dir = root / "predictions"
    text = _params(REPO_ROOT / "params.yaml", store, MODEL_NAME, log_dir)
    _write(root / "params.yaml", text)
    _write(root / "configs" / "images.yaml", _params(image_params, store, IMAGE_MODEL, log_dir))
    models = {"text": {"params": "params.yaml"}, "images": {"params": "configs/images.yaml"}}
    _write(root / "models.yaml", {"default": "text", "models": models})
    return {"root": root, "log_dir": log_dir, "image": _first_test_image(image_params)}


def _first_test_image(params_file: Path) -> np.ndarray:
    from ml.config import load_settings
    from ml.data.splits import split_path
    from ml.tasks import task_of

    settings = load_settings(params_file, environ={})
    settings.root = params_file.parent
    holdout = task_of(settings).read_split(settings, split_path(settings, "test"))
    return np.asarray(holdout.inputs)[0]


@pytest.fixture(scope="module")
def served(project):
    import ray

    from ml.serve.local import start_local_apps, stop_local
    from ml.serve.multi import applications, model_settings

    cwd = os.getcwd()
    os.chdir(project["root"])  # the builder reads each app's params file as a replica would
    os.environ[TOKEN_ENV] = TOKEN
    settings = model_settings("params.yaml")
    entries = applications()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        urls = start_local_apps(settings, entries, "127.0.0.1", free_port())
        yield {**project, "urls": urls}
    finally:
        stop_local(settings, [entry["name"] for entry in entries])
        os.environ.pop(TOKEN_ENV, None)
        os.chdir(cwd)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("L").save(out, format="PNG")
    return out.getvalue()


def _post(url: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
    return requests.post(f"{url}/predict", headers=headers, timeout=120, **kwargs)


def _wait_for_logs(folder: Path, timeout: float = 30.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = [f for f in folder.rglob("*.jsonl") if f.stat().st_size]
        if files:
            return files
        time.sleep(0.5)
    return []


@pytest.mark.slow
def test_two_models_answer_at_their_own_routes_on_one_ray(served):
    text_url, image_url = served["urls"]["text"], served["urls"]["images"]
    assert text_url.endswith("/text") and image_url.endswith("/images")
    png = _png(served["image"])

    text = _post(text_url, json={"title": "Transformers", "description": "attention for NLP"})
    assert text.status_code == 200, text.text
    text_labels = set(text.json()["probabilities"])
    assert text.json()["label"] in text_labels and not text_labels & set(FASHION)
    image = _post(image_url, data=png, headers={"Content-Type": "image/png"})
    assert image.status_code == 200, image.text
    assert set(image.json()["probabilities"]) == set(FASHION)

    # Each application refuses the other's kind of input with its task's 4xx.
    wrong = _post(text_url, data=png, headers={"Content-Type": "image/png"})
    assert wrong.status_code == 415, wrong.text
    wrong = _post(image_url, json={"text": "a title"})
    assert 400 <= wrong.status_code < 500 and wrong.json()["detail"], wrong.text
    base = text_url.removesuffix("/text")
    assert _post(f"{base}/other", json={"text": "x"}).status_code == 404

    # One prediction-log folder per application (what drift monitoring reads per model).
    for name in ("text", "images"):
        assert _wait_for_logs(served["log_dir"] / name), f"no prediction log for {name}"
