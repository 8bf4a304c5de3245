"""`ml evaluate` and `ml gate`: score the model on the holdout, then judge it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ml.cli.common import run_stage, settings


def evaluate(
    model_dir: Annotated[
        Path | None, typer.Option(help="model dir (default: model_dir in reports/train.json)")
    ] = None,
) -> None:
    """Score the trained model on the holdout: overall, per-class, slices, calibration and
    behavioural checks; writes reports/metrics.json and reports/eval/."""
    from ml.evaluate.evaluate import evaluate as evaluate_stage

    result = run_stage(evaluate_stage, settings(), model_dir)
    o = result.overall
    typer.echo(
        f"holdout: accuracy {o['accuracy']:.4f}, weighted F1 {o['f1_weighted']:.4f}, macro F1 "
        f"{o['f1_macro']:.4f}, ECE {o['ece']:.4f}; behavioural checks {result.behavioural_status}"
    )
    typer.echo(f"metrics: {result.metrics_path}; details: {result.detail_dir}")


def gate(
    challenger: Annotated[
        str | None, typer.Option(help="version to judge (default: the challenger alias)")
    ] = None,
    champion: Annotated[
        str | None, typer.Option(help="version to compare with (default: the champion alias)")
    ] = None,
    exit_zero: Annotated[
        bool,
        typer.Option(
            "--exit-zero",
            help="exit 0 on a failed gate (the pipeline still writes the report; the workflow "
            "enforces the verdict later with --check)",
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="re-read reports/gate.json and exit by its verdict"),
    ] = False,
) -> None:
    """Evaluate challenger and champion on the same holdout and decide whether the challenger
    may be promoted. Writes reports/gate.json; exits 1 when the gate fails."""
    cfg = settings()
    if check:
        from ml.gate import check_report

        report = run_stage(check_report, cfg)
        passed, reasons = bool(report.get("passed")), report.get("reasons", [])
    else:
        from ml.gate import gate as gate_stage

        result = run_stage(gate_stage, cfg, challenger, champion)
        passed, reasons = result.decision.passed, result.decision.reasons
        against = (
            f"champion v{result.champion_version}"
            if result.champion_version
            else "floors (no champion)"
        )
        typer.echo(f"challenger v{result.challenger_version} vs {against}")
    for reason in reasons:
        typer.echo(f"  - {reason}")
    if passed:
        typer.secho("gate passed", fg=typer.colors.GREEN)
        return
    typer.secho("gate failed", fg=typer.colors.RED, err=True)
    if not exit_zero:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("gate")(gate)
