"""Release every declared model (models.yaml) from one tag, as one multi-application Serve config.

Each model is the application NAME at /NAME (ml.serve.multi builds its entry), pinned to one
registered version of its own registered model:

- a model with a gate-passed version trained from the tagged commit is released: that version
  is deployed, smoke-tested with its task's smoke request, then promoted (ml.release.execute);
- a model without one keeps its champion, which is redeployed pinned and smoke-tested (the
  config names every model), and its alias does not move;
- a model with neither is not served (nothing was ever verified for it).

Every check of every model runs before anything moves: one model's untrusted version refuses
the whole tag. Rollback is per model (docs/runbooks/rollback.md says why): a model whose deploy,
smoke test or promotion fails is put back as it was (its captured champion redeployed, or its
application deleted after a failed first release) and the others go on; the job still fails.
An interruption (SIGTERM, Ctrl-C) rolls back the model in progress and leaves the rest as they
were: those already released stay released, those not reached are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ml.config import Settings
from ml.release import (
    Plan,
    ReleaseError,
    ReleaseResult,
    Terminated,
    _exit_code,
    execute,
    prepare,
    serving_token,
    sigterm_raises,
    smoke_test,
)
from ml.release_checks import check_on_main, trusted_experiment

RELEASED, KEPT, NOT_SERVED, FAILED, NOT_REACHED = (
    "released", "kept", "not served", "rolled back", "not reached",
)  # fmt: skip


@dataclass
class ModelOutcome:
    name: str
    status: str  # one of the constants above
    detail: str
    result: ReleaseResult | None = None

    def line(self) -> str:
        return f"{self.name}: {self.status}: {self.detail}"


@dataclass
class MultiRelease:
    tag: str
    commit: str
    outcomes: list[ModelOutcome] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join(outcome.line() for outcome in self.outcomes)


# ---- one application of the shared Serve instance ---------------------------------------------


def deploy_application(serving: Settings, name: str, params: str) -> Callable[[Settings, str], str]:
    """The `deploy` of model NAME's plan: its application, pinned to one version, on the shared
    proxy at /NAME (the other applications keep running as they are). `serving`: the default
    model's settings, which give Ray's address and the proxy's host and port, as in the Serve
    config (`ml serve config`)."""

    def deploy(settings: Settings, version: str) -> str:
        from ml.serve.local import start_local_apps
        from ml.serve.multi import application

        entry = application(name, params, settings)
        uri = f"models:/{settings.mlflow.registered_model}/{version}"
        urls = start_local_apps(serving, [entry], model_uri=uri)
        return urls[name]

    return deploy


def delete_application(name: str) -> Callable[[Settings], None]:
    """The `teardown` of model NAME's plan: delete its application (a failed first release)."""

    def teardown(settings: Settings) -> None:
        from ray import serve

        from ml.serve import init_ray

        init_ray(settings.ray.address)
        serve.delete(name)

    return teardown


# ---- choosing what each model does -------------------------------------------------------------

Deploy = Callable[[Settings, str], str]  # (settings, version) -> the application's URL
Teardown = Callable[[Settings], None]
# (name, params file) -> how that model's application is deployed and deleted
Apps = Callable[[str, str], tuple[Deploy, Teardown]]


def serve_apps(serving: Settings, name: str, params: str) -> tuple[Deploy, Teardown]:
    """Model NAME's application on the shared Serve instance (the default `apps`)."""
    return deploy_application(serving, name, params), delete_application(name)


@dataclass
class Choice:
    """What one model does in this release, fixed before anything moves."""

    name: str
    status: str  # RELEASED, KEPT or NOT_SERVED
    detail: str
    plan: Plan | None = None


def _candidate_or_reason(settings: Settings, commit: str) -> tuple[Any, str | None, str]:
    """(the newest version registered for `commit` if it passed the gate, the champion's
    version, why there is no candidate) for one model."""
    from ml.registry import CHAMPION, GATE_STATUS_TAG, alias_version, client

    registry = client(settings)
    name = settings.mlflow.registered_model
    champion = alias_version(registry, name, CHAMPION)
    previous = str(champion.version) if champion else None
    versions = registry.search_model_versions(f"name='{name}'")
    mine = [v for v in versions if v.tags.get("git_sha") == commit]
    if not mine:
        return None, previous, f"no version of {name} was registered for commit {commit[:12]}"
    newest = max(mine, key=lambda v: int(v.version))
    status = newest.tags.get(GATE_STATUS_TAG)
    if status != "passed":
        decision = status or "no decision"
        return None, previous, f"version {newest.version} did not pass the gate ({decision})"
    return newest, previous, ""


def choose(
    name: str,
    settings: Settings,
    tag: str,
    commit: str,
    deploy: Callable[[Settings, str], str],
    teardown: Callable[[Settings], None],
    smoke: Callable[[str, str, str | None], dict[str, Any]],
    *,
    settle_s: float = 0.0,
    allow_downgrade: bool = False,
) -> Choice:
    """Model NAME's part of the release; a ReleaseError when its candidate fails a check."""
    trusted_experiment(settings)  # the pr tier redeploys nothing either
    candidate, previous, why_not = _candidate_or_reason(settings, commit)
    route = f"/{name}"
    if candidate is not None:
        try:
            plan = prepare(settings, tag, commit, deploy, smoke, teardown,
                           settle_s=settle_s, allow_downgrade=allow_downgrade,
                           route=route)  # fmt: skip
        except ReleaseError as exc:
            raise ReleaseError(f"{name}: {exc}") from exc
        was = f"champion v{previous}" if previous else "no champion before"
        return Choice(name, RELEASED, f"v{plan.version} ({was})", plan)
    if previous is None:
        return Choice(name, NOT_SERVED, f"{why_not}, and it has no champion")
    plan = Plan(settings, tag, previous, previous, serving_token(settings), deploy, smoke,
                teardown, settle_s, False, route)  # fmt: skip
    return Choice(name, KEPT, f"champion v{previous} ({why_not})", plan)


def _smoke_for(settings: Settings) -> Callable[[str, str, str | None], dict[str, Any]]:
    from ml.tasks import task_of

    return partial(smoke_test, request=task_of(settings).smoke_request(settings))


def plan_all(
    tag: str,
    commit: str,
    names: Iterable[str] | None,
    root: Path,
    apps: Apps | None,
    smoke: Callable[..., dict[str, Any]] | None,
    **options: Any,
) -> list[Choice]:
    """Every model's choice; any model's refused check refuses the tag (nothing moved)."""
    from ml.models import load_models
    from ml.serve.multi import chosen_models, model_settings

    catalog = load_models(root)
    serving = model_settings(catalog.get(catalog.default).params, root)
    apps = apps or partial(serve_apps, serving)
    choices = []
    for model in chosen_models(names, root):
        settings = model_settings(model.params, root)
        deploy, teardown = apps(model.name, model.params)
        check = smoke or _smoke_for(settings)
        choice = choose(model.name, settings, tag, commit, deploy, teardown, check, **options)
        choices.append(choice)
    if not any(c.status == RELEASED for c in choices):
        listed = "; ".join(f"{c.name}: {c.detail}" for c in choices)
        raise ReleaseError(
            f"nothing to release for {tag}: no model has a gate-passed version trained from "
            f"commit {commit[:12]} ({listed}); the main workflow registers them for every merge"
        )
    return choices


def release_models(
    tag: str,
    commit: str,
    names: Iterable[str] | None = None,
    root: Path | None = None,
    *,
    apps: Apps | None = None,
    smoke: Callable[..., dict[str, Any]] | None = None,
    settle_s: float = 0.0,
    allow_downgrade: bool = False,
    main_ref: str | None = None,
) -> MultiRelease:
    """Release the chosen models (None: all declared) from `commit`; a ReleaseError whose
    message lists every model's outcome when any model was rolled back or not reached."""
    root = Path.cwd() if root is None else root
    with sigterm_raises():
        try:
            sha = check_on_main(root, commit, main_ref)
            choices = plan_all(tag, sha, names, root, apps, smoke,
                               settle_s=settle_s, allow_downgrade=allow_downgrade)  # fmt: skip
        except Terminated as exc:
            error = ReleaseError(f"release {tag} {exc} before anything moved; nothing changed")
            error.exit_code = _exit_code(exc)
            raise error from exc
        outcome, code = _run(MultiRelease(tag, sha), choices)
    if code:
        error = ReleaseError(f"release {tag} failed for some models:\n{outcome.summary()}")
        error.exit_code = code
        raise error
    return outcome


def _run(outcome: MultiRelease, choices: list[Choice]) -> tuple[MultiRelease, int]:
    """Each model in turn; an interruption stops the turn (the model in progress rolls back)."""
    code = 0
    for choice in choices:
        if code > 1:  # interrupted: the rest stays as it was
            outcome.outcomes.append(ModelOutcome(choice.name, NOT_REACHED, "left as it was"))
            continue
        if choice.plan is None:
            outcome.outcomes.append(ModelOutcome(choice.name, choice.status, choice.detail))
            continue
        try:
            result = execute(choice.plan)
        except ReleaseError as exc:
            outcome.outcomes.append(ModelOutcome(choice.name, FAILED, str(exc)))
            code = max(code, exc.exit_code)
            continue
        except (Terminated, KeyboardInterrupt) as exc:  # between two models: this one never moved
            outcome.outcomes.append(ModelOutcome(choice.name, NOT_REACHED, "left as it was"))
            code = _exit_code(exc)
            continue
        smoked = result.smoke
        detail = (
            f"{choice.detail}, live at {result.url}; smoke test passed ({smoked['labels']}; "
            f"auth: {smoked.get('auth', 'not checked')})"
        )
        outcome.outcomes.append(ModelOutcome(choice.name, choice.status, detail, result))
    return outcome, code
