"""The `ml` command: wires stage functions to a Typer CLI, one sub-app per area.

Heavy libraries (ray, torch, mlflow, evidently, pandas) are imported inside commands so that
`ml --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    help="Text classification (title + description -> tag): data, training, evaluation, "
    "registry, serving and monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
data_app = typer.Typer(help="Data stages: ingest -> validate -> split.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")

T = TypeVar("T")
_state: dict[str, Path | None] = {"params": None}


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def settings():
    from ml.config import ConfigError, load_settings

    try:
        return load_settings(_state["params"])
    except ConfigError as exc:
        raise fail(str(exc), 2) from exc


def run_stage(stage: Callable[..., T], *args: Any) -> T:
    """Call a stage; its own errors become a one-line message and a non-zero exit."""
    from ml.errors import USER_ERRORS

    try:
        return stage(*args)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from exc


@app.callback()
def main(
    params: Annotated[
        Path | None,
        typer.Option("--params", "-p", help="params file (default: $ML_PARAMS or ./params.yaml)"),
    ] = None,
) -> None:
    _state["params"] = params


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Print the effective configuration and where each value came from."""
    import json

    from ml.config import effective_values

    rows = effective_values(settings())
    if as_json:
        typer.echo(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "value", "source")
    for key, value, source in rows:
        table.add_row(key, str(value), source)
    Console().print(table)


@data_app.command("ingest")
def data_ingest() -> None:
    """Fetch the train and holdout files into data/raw/ with checksums.

    Offline, set ML_DATA_MIRROR to a folder holding the same file names.
    """
    from ml.data.ingest import ingest

    for record in run_stage(ingest, settings()):
        typer.echo(f"ingested {record.name}: {record.bytes} bytes, sha256 {record.sha256[:12]}…")


@data_app.command("validate")
def data_validate() -> None:
    """Check schema and content of the raw files; list every problem; exit 1 on any."""
    from ml.data.validate import validate

    cfg = settings()
    report = run_stage(validate, cfg)
    for name, info in report.files.items():
        typer.echo(f"{name}: {info['rows']} rows")
    if report.passed:
        typer.secho(f"data validation passed ({len(report.labels)} labels)", fg=typer.colors.GREEN)
        return
    typer.secho(f"data validation failed: {len(report.problems)} problem(s)", fg=typer.colors.RED)
    for problem in report.problems:
        examples = f" e.g. {problem.examples}" if problem.examples else ""
        typer.echo(
            f"  [{problem.check}] {problem.file}: {problem.message} ({problem.rows} rows){examples}"
        )
    typer.echo(f"full report: {cfg.validate_.report}")
    raise typer.Exit(1)


@data_app.command("split")
def data_split() -> None:
    """Stratified, deterministic train/val split; the holdout file becomes the test set."""
    from ml.data.split import split

    result = run_stage(split, settings())
    typer.echo(
        f"split: train {result.train_rows}, val {result.val_rows}, test {result.test_rows} "
        f"rows over {len(result.labels)} labels"
    )


if __name__ == "__main__":
    app()
