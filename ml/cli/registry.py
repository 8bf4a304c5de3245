"""`ml registry`: versions, the champion/challenger aliases, promote, rollback, access."""

from __future__ import annotations

from typing import Annotated

import typer

from ml.cli.common import run_stage, settings

app = typer.Typer(
    help="Model registry (MLflow): versions, the champion/challenger aliases, promote, rollback.",
    no_args_is_help=True,
)
access_app = typer.Typer(
    help="Who may write what in MLflow: the pr, trusted and production identities.",
    no_args_is_help=True,
)
app.add_typer(access_app, name="access")


@app.command("register")
def registry_register() -> None:
    """Register the last trained model (reports/train.json) as a new version with provenance and
    metric tags, and point the `challenger` alias at it (idempotent per training run)."""
    from ml.registry import register

    result = run_stage(register, settings())
    if not result.registered:
        typer.echo(
            f"pr tier: {result.model_uri} (run {result.run_id}) is the challenger, unregistered; "
            f"nothing written to {result.name}"
        )
        return
    verb = "registered" if result.created else "already registered:"
    typer.echo(f"{verb} {result.name} v{result.version} (run {result.run_id}) as challenger")


@access_app.command("apply")
def registry_access_apply() -> None:
    """Create the three identities, the production and PR experiments and the registered model,
    and grant the tier policy (ml/access.py); idempotent. Needs the admin's credentials in
    MLFLOW_TRACKING_USERNAME/PASSWORD and the identities' in ML_ACCESS_<TIER>_USERNAME/PASSWORD."""
    from ml.access import apply

    done = run_stage(apply, settings())
    typer.echo(f"access applied on {done['tracking_uri']}")
    for user, state in done["users"].items():
        typer.echo(f"  user {user}: {state}")
    for line in done["grants"]:
        typer.echo(f"  {line}")


def _print_registry(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(info["aliases"].items())) or "none"
    console = Console()
    console.print(f"[bold]{info['name']}[/bold] ({info['tracking_uri']}); aliases: {aliases}")
    columns = ("version", "aliases", "gate", "f1_weighted", "git_sha", "branch", "pr", "created")
    headers = ("version", "aliases", "gate", "F1 (weighted)", "git sha", "branch", "PR", "created")
    versions = Table(*headers, title="versions")
    for row in info["versions"]:
        cells = {**row, "aliases": ", ".join(row["aliases"])}
        versions.add_row(*(cells[c] for c in columns))
    console.print(versions)
    fields = ("when", "action", "alias", "version", "who", "why")
    history = Table(*fields, title="alias history")
    for event in info["history"]:
        history.add_row(*(str(event.get(f, "")) for f in fields))
    console.print(history)


@app.command("show")
def registry_show(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    limit: Annotated[int, typer.Option(help="versions and history rows to show")] = 20,
) -> None:
    """Aliases, newest versions (gate status, metrics, provenance) and the alias history."""
    import json

    from ml.registry import show

    info = run_stage(show, settings(), limit)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    _print_registry(info)


@app.command("promote")
def registry_promote(
    version: Annotated[
        str | None, typer.Argument(help="version to promote (default: the challenger)")
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="why (required; recorded on the version)")
    ] = "",
    force: Annotated[
        bool,
        typer.Option("--force", help="promote although the gate did not pass it (recorded)"),
    ] = False,
) -> None:
    """Move the `champion` alias to a version that passed the gate; the replaced champion is
    remembered so `ml registry rollback` restores it."""
    from ml.registry import promote

    move = run_stage(promote, settings(), version, reason, force)
    forced = " (FORCED past the gate)" if move.forced else ""
    typer.secho(
        f"{move.name}: champion v{move.previous or '-'} -> v{move.version}{forced}",
        fg=typer.colors.YELLOW if move.forced else typer.colors.GREEN,
    )


@app.command("rollback")
def registry_rollback(
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="why (required; recorded on both versions)")
    ] = "",
) -> None:
    """Move `champion` back to the version it replaced (repeat to go further back)."""
    from ml.registry import rollback

    move = run_stage(rollback, settings(), reason)
    typer.secho(
        f"{move.name}: champion v{move.previous} -> v{move.version} (rolled back)",
        fg=typer.colors.GREEN,
    )


def _model_settings(model: str | None) -> list:
    """The settings of --model NAME; else of the params file chosen (--params, $ML_PARAMS, the
    global --model); else of every model models.yaml declares."""
    import os
    from pathlib import Path

    from ml.cli.common import model_params_file, params_file
    from ml.config import load_settings
    from ml.config.settings import PARAMS_ENV
    from ml.models import MODELS_FILE, load_models

    if model is not None:
        return [run_stage(load_settings, model_params_file(model, None), model=model)]
    if params_file() is not None or os.environ.get(PARAMS_ENV) or not Path(MODELS_FILE).is_file():
        return [settings()]
    catalog = run_stage(load_models)
    return [run_stage(load_settings, Path(m.params), model=m.name) for m in catalog.models]


def _print_history(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    fields = ("version", "from", "to", "action", "who", "why", "previous", "release")
    table = Table(*fields, title=f"{info['name']}: champion history (oldest first)")
    for row in info["periods"]:
        cells = {**row, "to": row["to"] or "now", "previous": row["previous"] or "-"}
        if row["forced"]:
            cells["action"] += " (forced)"
        table.add_row(*(str(cells[f] or "") for f in fields))
    console.print(table)
    if not info["registered"]:
        console.print(f"{info['name']} is not registered yet (`ml registry register`)")
    elif not info["periods"]:
        console.print(f"{info['name']} has never had a champion")


@app.command("history")
def registry_history(
    model: Annotated[
        str | None, typer.Option("--model", help="one models.yaml name (default: every model)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Per model, which version was champion from when to when, who moved it there and why, the
    champion it replaced, and the release tag that deployed it."""
    import json

    from ml.registry.history import history

    infos = [run_stage(history, s) for s in _model_settings(model)]
    if as_json:
        typer.echo(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
        return
    for info in infos:
        _print_history(info)


@app.command("card")
def registry_card(
    version: Annotated[str, typer.Argument(help="the registered version")],
    model: Annotated[str | None, typer.Option("--model", help="a models.yaml name")] = None,
) -> None:
    """Print the Markdown model card logged with VERSION (data, params, metrics with intervals,
    slices, calibration, known failures, intended use)."""
    from ml.registry.card import fetch_card

    chosen = settings() if model is None else _model_settings(model)[0]
    typer.echo(run_stage(fetch_card, chosen, version), nl=False)
