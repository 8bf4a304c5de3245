"""`ml release`: ship the tagged commit's registered model to Ray Serve, or roll back."""

from __future__ import annotations

from typing import Annotated

import typer

from ml.cli.common import run_stage, settings


def release(
    tag: Annotated[str, typer.Option(help="the release tag, e.g. v1.2.0 (recorded as the reason)")],
    commit: Annotated[str, typer.Option(help="the tagged commit whose registered model ships")],
    allow_downgrade: Annotated[
        bool,
        typer.Option("--allow-downgrade", help="ship a version older than the champion (recorded)"),
    ] = False,
    main_ref: Annotated[
        str | None,
        typer.Option(
            help="the ref COMMIT must be on (default: $ML_RELEASE_MAIN_REF, origin/main, main)"
        ),
    ] = None,
) -> None:
    """Check that COMMIT is on main and that its registered model was trained there and passed
    the gate; deploy it to Ray Serve, smoke-test the live endpoint ($ML_SERVE_URL or
    serve.host/port), then move `champion`. On failure or SIGTERM the previous champion is
    redeployed and the alias restored (a failed first release deletes the app)."""
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
