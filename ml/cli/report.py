"""`ml report`: human-readable reports."""

from __future__ import annotations

from typing import Annotated

import typer

from ml.cli.common import run_stage, settings

app = typer.Typer(help="Human-readable reports.", no_args_is_help=True)


@app.command("pr")
def report_pr(
    base: Annotated[
        str | None,
        typer.Option(
            help="git revision for the params diff (default: origin/$GITHUB_BASE_REF, "
            "else report.base_rev)"
        ),
    ] = None,
) -> None:
    """Render reports/pr_comment.md: the body of the sticky PR comment."""
    from ml.report.pr import write_pr_comment

    path = run_stage(write_pr_comment, settings(), base)
    typer.echo(f"PR comment: {path} ({len(path.read_text(encoding='utf-8'))} characters)")
