"""`ml models`: the models models.yaml declares, and which of them a change affects."""

from __future__ import annotations

from typing import Annotated

import typer

from ml.cli.common import run_stage

app = typer.Typer(
    help="The declared models (models.yaml) and what a change affects.", no_args_is_help=True
)

JSON_HELP = "print one line of JSON, a list of {name, task, params}: a workflow matrix"


def _one_line(rows: list[dict]) -> str:
    import json

    # One line, so a workflow step can write it as `models=JSON` to $GITHUB_OUTPUT.
    return json.dumps(rows, separators=(",", ":"))


def _catalog():
    from ml.models import load_models

    return run_stage(load_models)


@app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Print the declared models: name, task, params file, and which is the default."""
    catalog = _catalog()
    if as_json:
        typer.echo(_one_line([model.as_dict() for model in catalog.models]))
        return
    from rich.console import Console
    from rich.table import Column, Table

    # Folded, not cut with an ellipsis: a CI log is 80 columns wide and the path is the point.
    table = Table(*(Column(h, overflow="fold") for h in ("name", "task", "params", "default")))
    for model in catalog.models:
        default = "*" if model.name == catalog.default else ""
        table.add_row(model.name, model.task, model.params, default)
    Console().print(table)


@app.command("affected")
def models_affected(
    base: Annotated[str, typer.Option("--base", help="the base commit or branch: origin/main")],
    head: Annotated[str, typer.Option("--head", help="the changed commit")] = "HEAD",
    as_json: Annotated[
        bool, typer.Option("--json", help=JSON_HELP.replace("params}", "params, reasons}"))
    ] = False,
) -> None:
    """The models the commits BASE...HEAD affect (what the branch changed since it forked),
    each with why; the model list and params files are read from the working tree."""
    from ml.models.affected import affected_between

    catalog = _catalog()
    affected = run_stage(affected_between, catalog, base, head)
    chosen = [model for model in catalog.models if model.name in affected]
    if as_json:
        rows = [{**model.as_dict(), "reasons": affected[model.name]} for model in chosen]
        typer.echo(_one_line(rows))
        return
    if not chosen:
        typer.echo(f"no model is affected by {base}...{head}")
    for model in chosen:
        typer.echo(f"{model.name} ({model.task}):")
        for reason in affected[model.name]:
            typer.echo(f"  {reason['path']}: {reason['why']}")
