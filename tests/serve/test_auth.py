"""Serving auth fails closed: no token at deploy time, no deployment; a token reaches replicas
on every node, so a request without it gets 401 even on a node that never saw the variable."""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from ml.serve.auth import AuthConfigError, check_bearer, deploy_token_digest, token_sha256
from tests.conftest import REPO_ROOT
from tests.serve.conftest import free_port
from tests.train.conftest import WORKER_RESOURCE, ray_cluster  # noqa: F401 (a fixture)

TOKEN_ENV = "ML_TEST_AUTH_TOKEN"


def _settings(**serve):
    from ml.config import load_settings, override

    values = {"auth_token_env": TOKEN_ENV, **serve}
    return override(load_settings(REPO_ROOT / "params.yaml"), {"serve": values}, "test")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_token_at_deploy_refuses_to_build(monkeypatch, tmp_path, value):
    from ml.serve.app import build

    if value is None:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(TOKEN_ENV, value)
    with pytest.raises(AuthConfigError) as info:
        build(_settings(), prediction_log_dir=str(tmp_path))
    message = str(info.value)
    assert f"${TOKEN_ENV}" in message and "unset or empty" in message
    assert "serve.auth: false" in message and "--no-auth" in message
    empty_name = _settings(auth_token_env=" ")
    with pytest.raises(AuthConfigError, match="names no environment variable"):
        deploy_token_digest(empty_name)


def test_auth_off_is_explicit_and_builds_without_a_token(monkeypatch, tmp_path):
    from ml.serve.app import build, replica_config

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = _settings(auth=False, prediction_log_dir=str(tmp_path))
    assert build(settings) is not None
    config = replica_config(settings)
    assert config["auth"] is False and config["auth_token_sha256"] is None


def test_the_token_itself_is_in_nothing_deployed(monkeypatch, tmp_path):
    from ml.serve.app import replica_config, serve_options, user_config

    token = "tok-" + uuid.uuid4().hex
    monkeypatch.setenv(TOKEN_ENV, token)
    settings = _settings(prediction_log_dir=str(tmp_path))
    config = replica_config(settings)
    assert config["auth"] is True and config["auth_token_sha256"] == token_sha256(token)
    deployed = repr((config, serve_options(settings), user_config(settings)))
    assert token not in deployed


def test_check_bearer_never_opens_up_when_auth_is_required():
    digest = token_sha256("right")
    assert check_bearer("Bearer right", True, digest)
    assert check_bearer("bearer  right ", True, digest)
    for header in ("", "Bearer", "Bearer ", "Bearer wrong", "Basic right", "right"):
        assert not check_bearer(header, True, digest), header
    # Auth required but no digest (a replica built some other way): nobody gets in.
    assert not check_bearer("Bearer ", True, None) and not check_bearer("Bearer x", True, "")
    assert check_bearer("", False, None)


@pytest.mark.slow
def test_two_node_cluster_replica_on_second_node_requires_the_token(
    ray_cluster,  # noqa: F811
    tiny_model_dir,
    tmp_path,
    monkeypatch,
):
    """The replica runs on the second node, whose Ray processes were started without the token
    variable (so the old way, each replica reading its own environment, served everyone
    there: the check below shows the variable really is missing on that node)."""
    import ray
    from ray import serve
    from ray.util.state import list_actors

    from ml.serve.app import Classifier, replica_config, serve_options, user_config

    token = "s3cret-" + uuid.uuid4().hex
    monkeypatch.setenv(TOKEN_ENV, token)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # as the cluster was started
    settings = _settings(
        model_uri=str(tiny_model_dir), runtime="torch", prediction_log_dir=str(tmp_path / "log")
    )
    options = serve_options(settings)
    options["ray_actor_options"]["resources"] = {WORKER_RESOURCE: 1}
    app = Classifier.options(user_config=user_config(settings), **options).bind(
        replica_config(settings)
    )
    port = free_port()
    ray.init(address=ray_cluster.gcs_address, log_to_driver=False)
    try:

        @ray.remote(num_cpus=0, resources={WORKER_RESOURCE: 0.01})
        def second_node_env() -> tuple[str, str | None]:
            return ray.get_runtime_context().get_node_id(), os.environ.get(TOKEN_ENV)

        worker_node, seen = ray.get(second_node_env.remote())
        assert seen is None  # the attack's precondition: no token in that node's environment
        # One proxy, on the head: both nodes share 127.0.0.1, so a proxy per node would clash.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(app, name="auth-two-node", route_prefix="/")
        replicas = [
            actor
            for actor in list_actors(
                address=ray_cluster.gcs_address, filters=[("state", "=", "ALIVE")]
            )
            if "Classifier" in (actor.class_name or "") or "Classifier" in actor.name
        ]
        assert replicas and {a.node_id for a in replicas} == {worker_node}

        url, payload = f"http://127.0.0.1:{port}/predict", {"text": "graph neural networks"}
        missing = requests.post(url, json=payload, timeout=60)
        assert missing.status_code == 401, missing.text
        wrong = requests.post(url, json=payload, headers={"Authorization": "Bearer x"}, timeout=60)
        assert wrong.status_code == 401
        right = requests.post(
            url, json=payload, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        assert right.status_code == 200, right.text
        assert requests.get(f"http://127.0.0.1:{port}/model", timeout=60).status_code == 401
    finally:
        serve.shutdown()
        ray.shutdown()
