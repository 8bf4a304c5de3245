"""`ml report`: human-readable reports."""

from __future__ import annotations

from pathlib import Path
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


@app.command("combine")
def report_combine(
    reports: Annotated[
        list[str] | None,
        typer.Option(
            "--reports",
            help="NAME=DIR: an affected model and its report folder (gate.json, eval/, "
            "pr_comment.md); repeat per model",
        ),
    ] = None,
    not_affected: Annotated[
        list[str] | None,
        typer.Option("--not-affected", help="a model the PR does not affect (listed, no section)"),
    ] = None,
    affected: Annotated[
        str | None,
        typer.Option(
            "--affected",
            help="the JSON list `ml models affected --json` prints (a workflow's matrix): each "
            "model's reports are REPORTS_ROOT/NAME, every other declared model is not affected",
        ),
    ] = None,
    reports_root: Annotated[
        Path, typer.Option("--reports-root", help="with --affected: the folder holding NAME/")
    ] = Path("reports"),
    output: Annotated[
        Path | None, typer.Option(help="where to write the comment (default: report.pr_comment)")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="after writing, exit 1 when any model's gate failed or did not run "
            "(the required check)",
        ),
    ] = False,
) -> None:
    """Combine several models' reports into one sticky PR comment: a summary table, then one
    section per model (failed ones first, opened). Exits 1 with --check when a gate failed."""
    from ml.report.combined import gate_failures, parse_model, write_combined

    models = [run_stage(parse_model, option, exit_code=2) for option in reports or []]
    if affected is not None:
        from ml.models import load_models
        from ml.report.combined import from_affected

        declared = [model.name for model in run_stage(load_models).models]
        listed, unlisted = run_stage(from_affected, affected, reports_root, declared, exit_code=2)
        models += listed
        not_affected = [*(not_affected or []), *unlisted]
    if output is None:
        cfg = settings()
        output = cfg.path(cfg.report.pr_comment)
    path, _ = run_stage(
        write_combined, models, output, not_affected or [], missing_ok=affected is not None
    )
    typer.echo(f"PR comment: {path} ({len(path.read_text(encoding='utf-8'))} characters)")
    if not check:
        return
    failures = run_stage(gate_failures, models)
    for failure in failures:
        typer.echo(f"  - {failure}")
    if failures:
        typer.secho(f"gate failed for {len(failures)} model(s)", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.secho("gate passed for every model", fg=typer.colors.GREEN)
