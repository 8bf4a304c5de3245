"""`ml release`: ship the tagged commit's registered models to Ray Serve, or roll back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ml.cli.common import output_model, params_file, run_stage, settings


def _scope(models: str | None) -> tuple[bool, list[str] | None]:
    """(release several models, which: None for all): --models; else --model NAME; else every
    declared model, unless --params or $ML_PARAMS names a file (released alone, as it says)."""
    from ml.config.settings import PARAMS_ENV
    from ml.models import MODELS_FILE

    if models is not None:
        return True, [name.strip() for name in models.split(",") if name.strip()]
    if params_file() is None and not os.environ.get(PARAMS_ENV):
        return Path(MODELS_FILE).is_file(), None
    name = output_model()
    return (True, [name]) if name else (False, None)


def release(
    tag: Annotated[str, typer.Option(help="the release tag, e.g. v1.2.0 (recorded as the reason)")],
    commit: Annotated[str, typer.Option(help="the tagged commit whose registered models ship")],
    models: Annotated[
        str | None,
        typer.Option(help="comma-separated models.yaml names (default: every declared model)"),
    ] = None,
    allow_downgrade: Annotated[
        bool,
        typer.Option(
            "--allow-downgrade",
            envvar="ML_RELEASE_ALLOW_DOWNGRADE",
            help="ship a version older than the champion (recorded)",
        ),
    ] = False,
    main_ref: Annotated[
        str | None,
        typer.Option(
            help="the ref COMMIT must be on (default: $ML_RELEASE_MAIN_REF, origin/main, main)"
        ),
    ] = None,
) -> None:
    """Check that COMMIT is on main; for every declared model (or --models, or --model NAME)
    that has a gate-passed version trained from COMMIT, deploy it as the Serve application
    /NAME, smoke-test it over HTTP ($ML_SERVE_URL/NAME or serve.host/port), then move its
    `champion`; the other models keep their champion (redeployed and smoke-tested). A model
    whose release fails is rolled back alone (docs/runbooks/rollback.md) and the command
    fails. A --params file (or $ML_PARAMS) releases that one model at its serve.route_prefix."""
    several, names = _scope(models)
    if not several:
        _release_one(tag, commit, allow_downgrade, main_ref)
        return
    from ml.release.models import release_models

    outcome = run_stage(
        release_models, tag, commit, names, allow_downgrade=allow_downgrade, main_ref=main_ref
    )
    typer.secho(
        f"released {tag} (commit {outcome.commit[:12]}):\n{outcome.summary()}",
        fg=typer.colors.GREEN,
    )


def _release_one(tag: str, commit: str, allow_downgrade: bool, main_ref: str | None) -> None:
    from ml.release import release as release_stage

    result = run_stage(
        release_stage,
        settings(),
        tag,
        commit,
        allow_downgrade=allow_downgrade,
        main_ref=main_ref,
    )
    was = f" (was v{result.previous})" if result.previous else ""
    typer.secho(
        f"released {tag}: champion v{result.version}{was} live at {result.url}; smoke test "
        f"passed ({result.smoke['labels']}; auth: {result.smoke.get('auth', 'not checked')})",
        fg=typer.colors.GREEN,
    )


def register(app: typer.Typer) -> None:
    app.command("release")(release)
