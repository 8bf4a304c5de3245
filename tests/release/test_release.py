"""ml.release against a real MLflow registry (SQLite) and a real git repository; the Serve app is
the FakeServe stand-in (fake_serve.py), which the real smoke test talks to over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ml.release import ReleaseError, release, smoke_test
from ml.release_checks import MAIN_REF_ENV, check_on_main
from tests.conftest import REPO_ROOT
from tests.evaluate.tiny import set_params
from tests.release.conftest import MODEL, Project, git
from tests.release.fake_serve import FakeServe, deploy_to, state, teardown_at

pytestmark = pytest.mark.slow  # a fresh SQLite MLflow store per test (a few seconds each)


def ship(project: Project, serving: FakeServe, tag: str, commit: str, **kwargs):
    return release(
        project.settings(), tag, commit,
        deploy=deploy_to(serving.url), teardown=teardown_at(serving.url), **kwargs,
    )  # fmt: skip


def audit(project: Project, version: str) -> list[dict]:
    tags = project.client.get_model_version(MODEL, version).tags
    return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith("audit.")]


# ---- the commit must be on main -----------------------------------------------------------------


def test_a_tag_on_a_branch_commit_is_refused_before_anything_moves(project, serving):
    v1 = project.register(project.commits["c1"])
    ship(project, serving, "v1.0.0", project.commits["c1"])
    # A version with perfect provenance otherwise: trusted experiment, gated against v1.
    branch_version = project.register(project.commits["c3"], against=v1)

    with pytest.raises(ReleaseError, match=r"is not on main \(main\).*merge it"):
        ship(project, serving, "v1.1.0", project.commits["c3"])
    assert project.champion() == v1
    assert state(serving.url) == {"version": v1, "history": [v1]}  # deploy never called

    # The check is what stops it: called with the branch standing for main, it ships.
    shipped = ship(project, serving, "v1.1.0", project.commits["c3"], main_ref="feature")
    assert shipped.version == branch_version and project.champion() == branch_version


def test_origin_main_is_main_when_the_checkout_has_it(project, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project.root), str(clone))
    git(clone, "checkout", "-q", "--detach", project.commits["c2"])
    git(clone, "branch", "-D", "main")  # a tag checkout has origin/main only
    assert check_on_main(clone, project.commits["c2"][:10]) == project.commits["c2"]
    with pytest.raises(ReleaseError, match=r"not on main \(origin/main\)"):
        check_on_main(clone, "origin/feature")


def test_a_shallow_checkout_without_main_is_a_clear_error(project, tmp_path, monkeypatch):
    """What actions/checkout does for a tag without `fetch-depth: 0`: one commit, no main."""
    shallow = tmp_path / "shallow"
    shallow.mkdir()
    git(shallow, "init", "-q")
    git(shallow, "fetch", "-q", "--depth", "1", project.root.as_uri(), project.commits["c2"])
    git(shallow, "checkout", "-q", "FETCH_HEAD")
    with pytest.raises(ReleaseError, match=r"no origin/main or main.*shallow.*fetch-depth: 0"):
        check_on_main(shallow, project.commits["c2"])
    monkeypatch.setenv(MAIN_REF_ENV, "origin/trunk")
    with pytest.raises(ReleaseError, match="no origin/trunk in"):
        check_on_main(shallow, project.commits["c2"])


# ---- provenance --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how, message",
    [
        ({"experiment": "tag-classifier-pr"}, "trained in experiment 'tag-classifier-pr'"),
        ({"run_commit": "f" * 40}, "was trained from ffff"),
        ({"run_commit": "c2-dirty"}, "neither commit"),
        ({"gate": "failed"}, "did not pass the gate"),
    ],
    ids=["pr-experiment", "other-commit", "dirty-tree", "gate-failed"],
)
def test_a_version_without_trusted_provenance_is_refused(project, serving, how, message):
    commit = project.commits["c2"]
    if how.get("run_commit") == "c2-dirty":
        how = {"run_commit": f"{commit}-dirty"}
    project.register(commit, **how)
    with pytest.raises(ReleaseError, match=message):
        ship(project, serving, "v1.0.0", commit)
    assert project.champion() is None and state(serving.url)["history"] == []


def test_artifacts_from_another_run_are_refused(project, serving):
    """A version whose artifacts are not its claimed run's (e.g. a PR run's model registered
    with the run id of a trusted run) is refused."""
    commit = project.commits["c2"]
    trusted = project.client.get_model_version(MODEL, project.register(commit))
    elsewhere = project.client.create_run(project.experiment("tag-classifier-pr"))
    planted = project.client.create_model_version(
        MODEL, f"{elsewhere.info.artifact_uri}/model", run_id=trusted.run_id,
        tags={"git_sha": commit, "gate.status": "passed", "gate.champion_version": "none"},
    )  # fmt: skip
    with pytest.raises(ReleaseError, match=f"version {planted.version} .*are not those of"):
        ship(project, serving, "v1.0.0", commit)
    assert project.champion() is None and state(serving.url)["history"] == []


def test_a_model_main_reused_from_an_earlier_commit_ships(project, serving):
    """DVC's run cache restored c1's training for c2 (unchanged stage): the run names c1."""
    version = project.register(project.commits["c2"], run_commit=project.commits["c1"])
    result = ship(project, serving, "v1.0.0", project.commits["c2"])
    assert result.version == version and result.source_commit == project.commits["c1"]


# ---- order: newer wins, downgrade only on purpose ----------------------------------------------


def test_two_releases_in_a_row_keep_the_newer_and_a_downgrade_needs_the_flag(project, serving):
    v1 = project.register(project.commits["c1"])
    v2 = project.register(project.commits["c2"], against=v1)
    first = ship(project, serving, "v1.0.0", project.commits["c1"])
    second = ship(project, serving, "v1.1.0", project.commits["c2"])
    assert (first.previous, second.previous, second.version) == (None, v1, v2)
    assert project.champion() == v2 and state(serving.url)["version"] == v2
    assert second.smoke["auth"] == "a request without the token got 401"
    assert [e["action"] for e in audit(project, v1)] == ["promote", "demote"]

    # The older tag's job runs last (two tags pushed together): refused, nothing moves.
    with pytest.raises(ReleaseError, match=f"version {v1} is older than the champion"):
        ship(project, serving, "v1.0.0", project.commits["c1"])
    assert project.champion() == v2 and state(serving.url)["history"] == [v1, v2]

    back = ship(project, serving, "v1.0.0", project.commits["c1"], allow_downgrade=True)
    assert (back.version, back.previous, project.champion()) == (v1, v2, v1)
    assert state(serving.url)["version"] == v1
    promoted = audit(project, v1)[-1]
    assert promoted["action"] == "promote" and "--allow-downgrade" in promoted["why"]


def test_rereleasing_the_champion_redeploys_it_without_moving_the_alias(project, serving):
    v1 = project.register(project.commits["c1"])
    ship(project, serving, "v1.0.0", project.commits["c1"])
    again = ship(project, serving, "v1.0.1", project.commits["c1"])
    assert (again.version, again.previous, project.champion()) == (v1, v1, v1)
    assert state(serving.url)["history"] == [v1, v1]


# ---- failures -----------------------------------------------------------------------------------


def test_a_failed_release_redeploys_the_captured_champion_before_the_alias(
    project, serving, monkeypatch
):
    """The failure comes after the alias moved (the promotion's audit write fails): the
    previous champion is redeployed and smoke-tested while the alias still names the new
    version, and only then is the alias moved back."""
    import ml.registry

    v1 = project.register(project.commits["c1"])
    v2 = project.register(project.commits["c2"], against=v1)
    ship(project, serving, "v1.0.0", project.commits["c1"])

    real_record = ml.registry.record_event

    def record_then_crash(registry, name, version, action, *args, **kwargs):
        real_record(registry, name, version, action, *args, **kwargs)
        if action == "promote" and str(version) == v2:
            raise RuntimeError("the registry went away mid-promotion")

    monkeypatch.setattr(ml.registry, "record_event", record_then_crash)
    alias_during_smoke = []

    def smoke(url, version, token):
        alias_during_smoke.append((version, project.champion()))
        return smoke_test(url, version, token)

    with pytest.raises(ReleaseError) as failed:
        ship(project, serving, "v1.1.0", project.commits["c2"], smoke=smoke)
    assert "registry went away" in str(failed.value)
    assert f"rolled back to version {v1}, which is live (champion alias moved back)" in str(
        failed.value
    )
    assert alias_during_smoke == [(v2, v1), (v1, v2)]  # redeployed v1 while the alias was v2
    assert project.champion() == v1 and state(serving.url)["history"] == [v1, v2, v1]
    assert [e["action"] for e in audit(project, v1)][-1] == "rollback"


def test_a_bad_smoke_test_rolls_back_and_the_alias_never_moves(project, serving):
    v1 = project.register(project.commits["c1"])
    v2 = project.register(project.commits["c2"], against=v1)
    ship(project, serving, "v1.0.0", project.commits["c1"])
    serving.broken.add(v2)
    with pytest.raises(ReleaseError, match=f"rolled back to version {v1}, which is live"):
        ship(project, serving, "v1.1.0", project.commits["c2"])
    assert project.champion() == v1 and state(serving.url)["history"] == [v1, v2, v1]
    assert [e["action"] for e in audit(project, v2)] == []  # never promoted


def test_an_endpoint_that_fails_open_fails_the_smoke_test(project, serving):
    project.register(project.commits["c1"])
    serving.enforce_auth = False
    with pytest.raises(ReleaseError, match="without the bearer token answered HTTP 200"):
        ship(project, serving, "v1.0.0", project.commits["c1"])
    assert project.champion() is None


def test_no_token_is_refused_before_anything_moves_unless_auth_is_off(
    project, serving, monkeypatch
):
    v1 = project.register(project.commits["c1"])
    monkeypatch.delenv("ML_SERVE_TOKEN")
    with pytest.raises(ReleaseError, match=r"nothing was released: .*ML_SERVE_TOKEN"):
        ship(project, serving, "v1.0.0", project.commits["c1"])
    assert state(serving.url)["history"] == []
    # Auth off on purpose: nothing to enforce, the check is skipped and says so.
    set_params(project.root, "serve", auth=False)
    serving.token = None
    result = ship(project, serving, "v1.0.0", project.commits["c1"])
    assert result.version == v1 and result.smoke["auth"].startswith("skipped: serving auth is off")


def test_the_pr_tier_cannot_release(project, serving, monkeypatch):
    project.register(project.commits["c1"])
    monkeypatch.setenv("ML_TIER", "pr")
    with pytest.raises(ReleaseError, match="production tier"):
        ship(project, serving, "v1.0.0", project.commits["c1"])
    assert project.champion() is None and state(serving.url)["history"] == []


def test_a_failed_first_release_deletes_the_app_and_leaves_no_champion(project, serving):
    v1 = project.register(project.commits["c1"])
    serving.broken.add(v1)
    with pytest.raises(ReleaseError, match="there was no champion before: app tag-classifier"):
        ship(project, serving, "v1.0.0", project.commits["c1"])
    assert project.champion() is None
    assert state(serving.url) == {"version": None, "history": [v1, "-"]}


def test_a_failed_first_release_after_the_alias_moved_removes_it(project, serving, monkeypatch):
    import ml.registry

    v1 = project.register(project.commits["c1"])
    real_record = ml.registry.record_event

    def crash(registry, name, version, action, *args, **kwargs):
        if action == "promote":
            raise KeyboardInterrupt  # Ctrl-C right after the alias moved
        return real_record(registry, name, version, action, *args, **kwargs)

    monkeypatch.setattr(ml.registry, "record_event", crash)
    with pytest.raises(ReleaseError, match="interrupted by SIGINT") as failed:
        ship(project, serving, "v1.0.0", project.commits["c1"])
    assert failed.value.exit_code == 130
    assert "champion alias removed" in str(failed.value)
    assert project.champion() is None and state(serving.url)["version"] is None
    assert [e["action"] for e in audit(project, v1)] == ["withdraw"]


# ---- a real SIGTERM -----------------------------------------------------------------------------


def _wait(event, what: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not event.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            out, err = process.communicate(timeout=10)
            pytest.fail(f"never saw {what}; exit {process.returncode}\n{out}\n{err}")


def _start_release(project: Project, serving: FakeServe, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.release.run_release", serving.url, "v1.1.0",
         project.commits["c2"]],
        cwd=project.root, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_sigterm_during_the_smoke_test_leaves_the_previous_version_live(project, serving):
    """`ml release`'s code in its own process; SIGTERM (a cancelled job) while its smoke test of
    v2 is in flight, and a second SIGTERM while the rollback smoke-tests v1: the rollback
    finishes, and alias and live app are on v1."""
    v1 = project.register(project.commits["c1"])
    v2 = project.register(project.commits["c2"], against=v1)
    ship(project, serving, "v1.0.0", project.commits["c1"])
    testing_v2 = serving.hold(v2)
    process = _start_release(project, serving)
    try:
        _wait(testing_v2, "the smoke test of v2", process)
        assert state(serving.url)["version"] == v2  # v2 is live, its smoke test in flight
        testing_v1 = serving.hold(v1)
        process.send_signal(signal.SIGTERM)
        _wait(testing_v1, "the rollback's smoke test of v1", process)
        process.send_signal(signal.SIGTERM)  # a second cancel must not stop the rollback
        serving.release_holds.set()
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert f"release v1.1.0 of version {v2} failed: interrupted by SIGTERM" in err
    assert f"rolled back to version {v1}, which is live" in err
    assert "SIGTERM received during the rollback was held" in err
    assert project.champion() == v1
    assert state(serving.url) == {"version": v1, "history": [v1, v2, v1]}


def test_without_the_sigterm_handler_the_unverified_version_stays_live(project, serving):
    """The same SIGTERM with the handler switched off: the process dies and v2, whose smoke
    test never finished, is what serves; the test above passes because of the handler."""
    v1 = project.register(project.commits["c1"])
    v2 = project.register(project.commits["c2"], against=v1)
    ship(project, serving, "v1.0.0", project.commits["c1"])
    testing_v2 = serving.hold(v2)
    process = _start_release(project, serving, RELEASE_TEST_UNPROTECTED="1")
    try:
        _wait(testing_v2, "the smoke test of v2", process)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGTERM
    assert state(serving.url) == {"version": v2, "history": [v1, v2]}
