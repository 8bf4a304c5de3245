"""Red team, MLflow: acting with the PR identity against a real `mlflow server --app-name
basic-auth` provisioned by `ml registry access apply`'s code, try to move `champion`, write
`gate.status` on a production version and register a version of the production model.

Each attack runs twice: with the tier policy (refused: HTTP 403, reported as a clear error) and
with the protection off (the PR identity granted EDIT on the production model, what a
`default_permission = EDIT` server gives everyone), where it must succeed: so a pass proves the
permission stops the attack, not that the attack was broken."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.security.conftest import World, act_as, make_world

pytestmark = pytest.mark.slow
_names = itertools.count(1)
PROTECTION = [pytest.param(True, id="protected"), pytest.param(False, id="protection-off")]


def _world(uri, tmp_path, monkeypatch, protected: bool) -> World:
    """A fresh production model per test (no attack leaks into the next), acted on as PR."""
    from mlflow.server.auth.client import AuthServiceClient

    from ml.access import _grant

    built = make_world(uri, tmp_path / "project", f"prod-{next(_names)}", monkeypatch)
    if not protected:
        act_as(monkeypatch, "admin")
        _grant(AuthServiceClient(uri), "ml-pr", "registered_model", built.model, "EDIT")
    act_as(monkeypatch, "pr")
    return built


@pytest.fixture(params=PROTECTION)
def world(request, auth_server, tmp_path, monkeypatch) -> tuple[World, bool]:
    return _world(auth_server, tmp_path, monkeypatch, request.param), request.param


@pytest.fixture
def protected_world(auth_server, tmp_path, monkeypatch) -> World:
    return _world(auth_server, tmp_path, monkeypatch, True)


@pytest.fixture
def unprotected_world(auth_server, tmp_path, monkeypatch) -> World:
    return _world(auth_server, tmp_path, monkeypatch, False)


def _client(world: World):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=world.uri, registry_uri=world.uri)


def _train_reports(world: World, run_id: str, model_uri: str) -> None:
    """What `ml train` and `ml evaluate` leave for `ml registry register`."""
    reports = world.root / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "train.json").write_text(json.dumps({"run_id": run_id, "model_uri": model_uri}))
    (reports / "metrics.json").write_text(json.dumps({"f1_weighted": 0.99}))


def _refused_with_403(call) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        call()
    assert caught.value.get_http_status_code() == 403, caught.value


def test_pr_identity_moves_champion(world):
    from ml.access import AccessError
    from ml.registry import promote

    world, protected = world
    settings = world.settings("pr")
    if protected:
        with pytest.raises(AccessError, match=r"refused to move the champion alias.*ml-pr"):
            promote(settings, "2", "attack", force=True)
        client = _client(world)
        _refused_with_403(lambda: client.set_registered_model_alias(world.model, "champion", "2"))
        expected = "1"
    else:
        promote(settings, "2", "attack", force=True)
        expected = "2"
    assert _client(world).get_model_version_by_alias(world.model, "champion").version == expected


def test_pr_identity_writes_gate_status(world):
    from ml.access import AccessError
    from ml.registry import record_gate

    world, protected = world
    client = _client(world)
    client_tags = lambda: client.get_model_version(world.model, "2").tags  # noqa: E731
    settings = world.settings("pr")
    if protected:
        with pytest.raises(AccessError, match="refused to record the gate decision"):
            record_gate(settings, "2", True, "1", "forged")
        _refused_with_403(lambda: client.set_model_version_tag(world.model, "2", "gate.status", ""))
        assert "gate.summary" not in client_tags()
    else:
        record_gate(settings, "2", True, "1", "forged")
        assert client_tags()["gate.summary"] == "forged"


def test_pr_identity_registers_a_production_version(world):
    """The PR job's code claims the trusted tier (ML_TIER is the job's own setting) and registers
    its run's model with main's sha: only the credentials can stop it, and they do."""
    from ml.access import AccessError
    from ml.registry import register

    world, protected = world
    client = _client(world)
    pr_experiment = client.get_experiment_by_name("tag-classifier-pr").experiment_id
    run = client.create_run(pr_experiment)  # the PR identity may log its own runs
    source = f"{run.info.artifact_uri}/model"  # its own run, not a logged model: no lookup
    _train_reports(world, run.info.run_id, source)
    before = len(client.search_model_versions(f"name = '{world.model}'"))
    if protected:
        with pytest.raises(AccessError, match=r"refused to register a model version.*tier pr"):
            register(world.settings("trusted"))
        _refused_with_403(
            lambda: client.create_model_version(world.model, source, run_id=run.info.run_id)
        )
        assert len(client.search_model_versions(f"name = '{world.model}'")) == before
    else:
        created = client.create_model_version(world.model, source, run_id=run.info.run_id)
        assert created.version == str(before + 1)


def test_the_pr_tier_registers_nothing(protected_world):
    """What pr.yml runs, with the PR identity: `register` only describes the run's model."""
    from ml.registry import register, registry_report

    world = protected_world
    client = _client(world)
    experiment = client.get_experiment_by_name("tag-classifier-pr").experiment_id
    run = client.create_run(experiment)
    _train_reports(world, run.info.run_id, f"runs:/{run.info.run_id}/model")
    settings = world.settings("pr")
    assert settings.mlflow.experiment == "tag-classifier-pr"
    result = register(settings)
    assert not result.registered and result.model_uri == f"runs:/{run.info.run_id}/model"
    described = json.loads(registry_report(settings).read_text())
    assert described["registered"] is False and described["tier"] == "pr"
    assert len(client.search_model_versions(f"name = '{world.model}'")) == 2


def test_access_apply_is_idempotent_and_the_pr_identity_reads_the_champion(
    protected_world, monkeypatch
):
    from ml.access import apply

    world = protected_world
    act_as(monkeypatch, "admin")
    again = apply(world.settings("trusted"))
    assert set(again["users"].values()) == {"exists"}
    act_as(monkeypatch, "pr")
    assert _client(world).get_model_version_by_alias(world.model, "champion").version == "1"


def test_release_refuses_a_version_a_pr_job_registered(unprotected_world, monkeypatch):
    """The second line: with the MLflow protection off a PR job can register a version tagged
    with main's sha and a passed gate; release's provenance check still refuses it, since its
    run lives in the PR experiment (ml/release_checks.py)."""
    from ml.release_checks import ReleaseError, check_provenance

    world = unprotected_world  # protected, the PR identity cannot register at all (above)
    client = _client(world)
    commit = "a" * 40
    experiment = client.get_experiment_by_name("tag-classifier-pr").experiment_id
    run = client.create_run(experiment, tags={"git_sha": commit})
    tags = {"git_sha": commit, "gate.status": "passed", "gate.champion_version": "1"}
    forged = client.create_model_version(
        world.model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags
    )
    act_as(monkeypatch, "production")
    with pytest.raises(ReleaseError, match="not the trusted 'tag-classifier'"):
        check_provenance(world.settings("production"), client, forged, commit)
    # ... while main's own version of the same commit passes the same check.
    main_version = client.get_model_version(world.model, "1")
    assert check_provenance(world.settings("production"), client, main_version, commit) == commit
