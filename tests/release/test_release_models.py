"""ml.release.models (every declared model from one tag) against a real MLflow registry (SQLite)
and a real git repository; each model's application is a FakeServe of its own, which the real
smoke test talks to over HTTP. The real Serve deployment is tested in tests/e2e/test_release.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from ml.release import ReleaseError
from ml.release.models import release_models
from tests.release.conftest import MODELS, TOKEN, Project, registered
from tests.release.fake_serve import FakeServe, deploy_to, state, teardown_at

pytestmark = pytest.mark.slow  # a fresh SQLite MLflow store per test (a few seconds each)


@pytest.fixture
def apps() -> Iterator[dict[str, FakeServe]]:
    with ExitStack() as stack:
        yield {name: stack.enter_context(FakeServe(token=TOKEN)) for name in MODELS}


def ship(project: Project, apps: dict[str, FakeServe], tag: str, commit: str, **kwargs):
    def app(name: str, params: str):
        return deploy_to(apps[name].url), teardown_at(apps[name].url)

    return release_models(tag, commit, root=project.root, apps=app, **kwargs)


def register(project: Project, name: str, commit: str, **kwargs) -> str:
    return project.register(project.commits[commit], model=registered(name), **kwargs)


def champions(project: Project) -> dict[str, str | None]:
    return {name: project.champion(registered(name)) for name in MODELS}


def live(apps: dict[str, FakeServe]) -> dict[str, str | None]:
    return {name: state(fake.url)["version"] for name, fake in apps.items()}


def actions(project: Project, name: str, version: str) -> list[str]:
    tags = project.client.get_model_version(registered(name), version).tags
    return [json.loads(v)["action"] for k, v in sorted(tags.items()) if k.startswith("audit.")]


def test_each_model_with_a_gate_passed_version_ships_and_the_others_keep_their_champion(
    models_project, apps
):
    project = models_project
    a1, b1 = register(project, "alpha", "c1"), register(project, "beta", "c1")
    first = ship(project, apps, "v1.0.0", project.commits["c1"])
    assert [o.status for o in first.outcomes] == ["released", "released", "not served"]
    assert "gamma: not served: no version of gamma was registered" in first.summary()

    # c2: alpha retrained and passed; beta's version failed its gate; gamma's first version.
    a2 = register(project, "alpha", "c2", against=a1)
    b2 = register(project, "beta", "c2", against=b1, gate="failed")
    g1 = register(project, "gamma", "c2")
    second = ship(project, apps, "v1.1.0", project.commits["c2"])
    assert [o.status for o in second.outcomes] == ["released", "kept", "released"]
    assert f"beta: kept: champion v{b1} (version {b2} did not pass the gate (failed))" in (
        second.summary()
    )
    assert "auth: a request without the token got 401" in second.summary()
    assert champions(project) == {"alpha": a2, "beta": b1, "gamma": g1}
    assert live(apps) == {"alpha": a2, "beta": b1, "gamma": g1}
    assert state(apps["beta"].url)["history"] == [b1, b1]  # redeployed pinned, never b2
    # Audit tags per registered model: each alias move is recorded on its own model.
    assert actions(project, "alpha", a1) == ["promote", "demote"]
    assert actions(project, "beta", b1) == ["promote"] and actions(project, "beta", b2) == []
    assert actions(project, "gamma", g1) == ["promote"]


def test_a_broken_model_is_rolled_back_alone_and_the_job_fails(models_project, apps):
    project = models_project
    a1, b1 = register(project, "alpha", "c1"), register(project, "beta", "c1")
    ship(project, apps, "v1.0.0", project.commits["c1"])
    a2 = register(project, "alpha", "c2", against=a1)
    b2 = register(project, "beta", "c2", against=b1)
    g1 = register(project, "gamma", "c2")
    apps["beta"].broken.add(b2)  # its predictions are not labels: the smoke test fails
    apps["gamma"].broken.add(g1)  # a first release that fails: its application goes

    with pytest.raises(ReleaseError) as failed:
        ship(project, apps, "v1.1.0", project.commits["c2"])
    message = str(failed.value)
    assert failed.value.exit_code == 1
    assert "release v1.1.0 failed for some models" in message
    assert f"alpha: released: v{a2} (champion v{a1})" in message
    assert f"beta: rolled back: release v1.1.0 of version {b2} failed" in message
    assert f"rolled back to version {b1}, which is live (champion alias had not moved)" in message
    assert "gamma: rolled back" in message and "there was no champion before: app" in message
    assert champions(project) == {"alpha": a2, "beta": b1, "gamma": None}
    assert live(apps) == {"alpha": a2, "beta": b1, "gamma": None}
    assert state(apps["beta"].url)["history"] == [b1, b2, b1]
    assert actions(project, "beta", b2) == []  # never promoted


def test_one_models_untrusted_version_refuses_the_tag_before_anything_moves(models_project, apps):
    project = models_project
    register(project, "alpha", "c1")
    register(project, "beta", "c1", experiment="tag-classifier-pr")
    with pytest.raises(ReleaseError, match="beta: version 1 of beta was trained in experiment"):
        ship(project, apps, "v1.0.0", project.commits["c1"])
    assert champions(project) == dict.fromkeys(MODELS)
    assert all(state(fake.url)["history"] == [] for fake in apps.values())


def test_no_model_with_a_version_for_the_commit_is_nothing_to_release(models_project, apps):
    project = models_project
    register(project, "alpha", "c1", gate="failed")
    with pytest.raises(ReleaseError, match=r"nothing to release for v1\.0\.0: no model has"):
        ship(project, apps, "v1.0.0", project.commits["c1"])
    assert all(state(fake.url)["history"] == [] for fake in apps.values())


def test_models_picks_some(models_project, apps):
    project = models_project
    register(project, "alpha", "c1")
    g1 = register(project, "gamma", "c1")
    shipped = ship(project, apps, "v1.0.0", project.commits["c1"], names=["gamma"])
    assert [o.name for o in shipped.outcomes] == ["gamma"]
    assert champions(project) == {"alpha": None, "beta": None, "gamma": g1}


def test_an_interruption_rolls_back_the_model_in_progress_and_reaches_no_other(
    models_project, apps, monkeypatch
):
    import ml.registry

    project = models_project
    a1, b1, g1 = (register(project, name, "c1") for name in MODELS)
    real_record = ml.registry.record_event

    def crash(registry, name, version, action, *args, **kwargs):
        if action == "promote" and name == "beta":
            raise KeyboardInterrupt  # Ctrl-C right after beta's alias moved
        return real_record(registry, name, version, action, *args, **kwargs)

    monkeypatch.setattr(ml.registry, "record_event", crash)
    with pytest.raises(ReleaseError) as failed:
        ship(project, apps, "v1.0.0", project.commits["c1"])
    assert failed.value.exit_code == 130
    assert "beta: rolled back: " in str(failed.value) and "interrupted by SIGINT" in str(
        failed.value
    )
    assert "gamma: not reached: left as it was" in str(failed.value)
    assert champions(project) == {"alpha": a1, "beta": None, "gamma": None}
    assert live(apps) == {"alpha": a1, "beta": None, "gamma": None}
    assert state(apps["gamma"].url)["history"] == []
    assert (b1, g1) == ("1", "1")


def test_the_cli_releases_every_model_unless_a_params_file_is_named(
    models_project, monkeypatch, tmp_path
):
    """`ml release` scope: no --model/--params/$ML_PARAMS -> every declared model; --model NAME
    -> that model; a params file (--params, $ML_PARAMS) -> it alone, as before."""
    from ml.cli import common
    from ml.cli.release import _scope

    assert _scope(None) == (True, None)
    assert _scope("beta, gamma") == (True, ["beta", "gamma"])
    beta = models_project.root / "configs/beta.yaml"
    monkeypatch.setattr(common, "_state", {"params": beta, "model": "beta"})  # --model beta
    assert _scope(None) == (True, ["beta"])
    common._state.update(model=None)  # --params configs/beta.yaml: that file, as it says
    assert _scope(None) == (False, None)
    common._state.update(params=None)
    ad_hoc = tmp_path / "ad-hoc.yaml"
    ad_hoc.write_text((models_project.root / "params.yaml").read_text())
    monkeypatch.setenv("ML_PARAMS", str(ad_hoc))
    assert _scope(None) == (False, None)
    (models_project.root / "models.yaml").unlink()
    monkeypatch.delenv("ML_PARAMS")
    assert _scope(None) == (False, None)  # no models.yaml: the one model params.yaml holds
