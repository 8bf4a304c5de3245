"""`ml config`: inspect the effective configuration."""

from __future__ import annotations

from typing import Annotated

import typer

from ml.cli.common import settings

app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)


@app.command("show")
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
