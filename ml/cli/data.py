"""`ml data`: ingest -> validate -> split."""

from __future__ import annotations

import typer

from ml.cli.common import run_stage, settings

app = typer.Typer(help="Data stages: ingest -> validate -> split.", no_args_is_help=True)


@app.command("ingest")
def data_ingest() -> None:
    """Fetch the train and holdout files into data/raw/ with checksums.

    Offline, set ML_DATA_MIRROR to a folder holding the same file names, or
    ML_DATA_MIRROR_ROOT to a folder holding each model's copy in its data.mirror_subdir.
    """
    from ml.data.ingest import ingest

    for record in run_stage(ingest, settings()):
        typer.echo(f"ingested {record.name}: {record.bytes} bytes, sha256 {record.sha256[:12]}…")


@app.command("validate")
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


@app.command("split")
def data_split() -> None:
    """Stratified, deterministic train/val split; the holdout file becomes the test set."""
    from ml.data.split import split

    result = run_stage(split, settings())
    typer.echo(
        f"split: train {result.train_rows}, val {result.val_rows}, test {result.test_rows} "
        f"rows over {len(result.labels)} labels"
    )
