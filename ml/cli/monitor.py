"""`ml monitor drift` and `ml retrain`: monitoring and continuous training."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ml.cli.common import fail, params_file, run_stage, settings

app = typer.Typer(help="Drift monitoring of the production prediction log.", no_args_is_help=True)


def _print_drift(result) -> None:
    window = result.window
    carried = (
        f"{window['records_with_embedding']} with an embedding"
        if "records_with_embedding" in window
        else f"{window['records_with_text']} with text"
    )
    typer.echo(
        f"window: {window['valid_records']} valid record(s) from {window['source']}"
        f" ({window['malformed_records']} malformed, {carried})"
    )
    for example in window["malformed_examples"]:
        typer.echo(f"  malformed: {example}")
    for signal in result.signals:
        if signal.available:
            mark = "DRIFT" if signal.drifted else "ok"
            typer.echo(
                f"  {signal.name:<12} {signal.method:<14} {signal.score:.4f} "
                f"(threshold {signal.threshold}) {mark}"
            )
        else:
            typer.echo(f"  {signal.name:<12} not checked: {signal.note}")
    verdict = result.decision.verdict
    colour = {"drift": typer.colors.RED, "no_drift": typer.colors.GREEN}.get(
        verdict, typer.colors.YELLOW
    )
    label = {"drift": "DRIFT", "no_drift": "no drift", "not_enough_data": "not enough data"}
    typer.secho(f"{label[verdict]}: " + "; ".join(result.decision.reasons), fg=colour)
    if result.summary_path:
        typer.echo(f"summary: {result.summary_path}; report: {result.html_path or '-'}")


@app.command(
    "drift",
    epilog="Exit codes: 0 no drift; 3 drift; 4 not enough data (fewer valid records than "
    "monitor.min_window); 1 error (log or reference unreadable); 2 bad config or usage. "
    "With $GITHUB_OUTPUT set, verdict=, drift=, exit_code=, valid_records= and summary= lines "
    "are appended to it. With --all/--models: the worst model's code (1, then 3, then 4), and "
    "drift=, drifted=, retrain=, retrain_any=, checked=, decisions=, exit_code= lines.",
)
def monitor_drift(
    log_dir: Annotated[
        str | None,
        typer.Option(
            help="prediction log folder or fsspec URI (s3://...); default "
            "serve.prediction_log_dir / $ML_PREDICTION_LOG_DIR"
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="window start: ISO time or duration like 24h, 7d (monitor.window_since)"),
    ] = None,
    last_n: Annotated[
        int | None, typer.Option(help="newest N records (monitor.window_last_n)")
    ] = None,
    model_dir: Annotated[
        str | None,
        typer.Option(
            help="model dir for the reference predictions (and, for images, the reference "
            "embeddings): monitor.model_dir, model.dir"
        ),
    ] = None,
    fail_on_drift: Annotated[
        bool,
        typer.Option(
            "--fail-on-drift/--no-fail-on-drift",
            help="exit 3 on drift and 4 on not enough data (default); with "
            "--no-fail-on-drift exit 0 and let GITHUB_OUTPUT carry the verdict",
        ),
    ] = True,
    every: Annotated[
        bool,
        typer.Option(
            "--all",
            help="check every model in models.yaml, each on its application's log "
            "(LOG_DIR/NAME), writing reports/NAME/drift/",
        ),
    ] = False,
    models: Annotated[
        str | None,
        typer.Option(help="with --all's layout, only these models (comma-separated or JSON)"),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            envvar="ML_RETRAIN_FORCE",
            help="with --all/--models: list every checked model in retrain=, drifted or not "
            "(a retrain forced by hand)",
        ),
    ] = False,
) -> None:
    """Compare a window of the prediction log with the training reference (Evidently): the
    task's drift signals (text: embeddings, text length, out-of-vocabulary rate; image:
    penultimate-feature embeddings, mean intensity, contrast, blank share) and the predicted
    classes and confidence. Writes reports/drift/report.html and summary.json and prints the
    verdict. With --all (or --models), every deployed model in turn: see docs/monitoring.md."""
    from ml.monitor.drift import EXIT_ERROR, write_github_output
    from ml.monitor.drift import monitor_drift as drift_stage

    if every or models is not None:
        code = _drift_fleet(models, log_dir, since, last_n, force)
        raise typer.Exit(code if fail_on_drift or code == EXIT_ERROR else 0)
    if force:
        raise fail("--force lists models to retrain: give it with --all or --models", 2)
    cfg = settings()
    result = run_stage(drift_stage, cfg, log_dir, since, last_n, model_dir, exit_code=EXIT_ERROR)
    _print_drift(result)
    write_github_output(result, os.environ.get("GITHUB_OUTPUT"))
    raise typer.Exit(result.decision.exit_code if fail_on_drift else 0)


def _drift_fleet(
    models: str | None, log_dir: str | None, since: str | None, last_n: int | None, force: bool
) -> int:
    from ml.monitor.fleet import monitor_fleet, parse_model_names

    if params_file() is not None:
        raise fail("--all/--models check each model with its own params: drop --model/--params", 2)

    def report(check) -> None:
        typer.secho(f"== {check.name} (log: {check.log_dir})", bold=True)
        if check.result is not None:
            _print_drift(check.result)
        else:
            typer.secho(f"error: {'; '.join(check.reasons)}", fg=typer.colors.RED)

    names = run_stage(parse_model_names, models)
    fleet = run_stage(monitor_fleet, names, log_dir, since, last_n, force, report=report)
    typer.echo(f"drifted: {', '.join(fleet.drifted) or 'none'}")
    typer.echo(f"to retrain: {', '.join(fleet.retrain) or 'none'}")
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write("\n".join(fleet.github_output_lines()) + "\n")
    return fleet.exit_code


def _print_retrain(result) -> None:
    for step in result.steps:
        typer.echo(f"  - {step}")
    typer.secho(result.message, fg=typer.colors.GREEN if result.gate_passed else typer.colors.RED)


def _retrain_outputs(result) -> str:
    gate_word = {True: "passed", False: "failed", None: "none"}[result.gate_passed]
    return (
        f"version={result.version}\ncreated={str(result.created).lower()}\n"
        f"gate={gate_word}\naction={result.action}\n"
        f"pr_url={result.pr_url or ''}\nbranch={result.branch or ''}\n"
    )


def _retrain_fleet(names: list[str], max_rows: int | None) -> int:
    import json

    from ml.monitor.fleet import retrain_models

    if params_file() is not None:
        raise fail("--models retrains each model with its own params: drop --model/--params", 2)

    def report(run) -> None:
        typer.secho(f"== {run.name}", bold=True)
        if run.error is None:
            _print_retrain(run.result)
        else:
            typer.secho(f"error: {run.error}", fg=typer.colors.RED)

    outcome = run_stage(retrain_models, names, max_rows, report=report)
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        rows = {
            run.name: run.result.to_dict() if run.error is None else {"error": run.error}
            for run in outcome.runs
        }
        keep = ("version", "created", "gate_passed", "action", "pr_url", "branch", "error")
        rows = {name: {k: v for k, v in row.items() if k in keep} for name, row in rows.items()}
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(f"models={json.dumps(rows, separators=(',', ':'))}\n")
    return outcome.exit_code


def retrain(
    max_rows: Annotated[int | None, typer.Option(help="cap train/val rows (smoke runs)")] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="retrain these models, one after the other, each with its own PR "
            "(comma-separated or a JSON list: the `retrain` output of `ml monitor drift --all`)",
        ),
    ] = None,
) -> None:
    """Continuous training: ingest the latest data (plus monitor.labelled_source), validate,
    split, train, evaluate, register, gate against the champion; then push the new data version
    (dvc.lock) to a retrain/ branch and open a PR with the report (default) or promote when
    monitor.auto_promote is true and the gate passed. Idempotent: a version already registered
    for the same data and params is reused, not retrained, and its PR is not opened twice."""
    from ml.monitor.fleet import parse_model_names
    from ml.monitor.retrain import retrain as retrain_stage

    names = run_stage(parse_model_names, models)
    if models is not None:
        if not names:
            typer.echo("no model to retrain (the drift check found none drifted)")
            return
        raise typer.Exit(_retrain_fleet(names, max_rows))
    result = run_stage(retrain_stage, settings(), max_rows)
    _print_retrain(result)
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(_retrain_outputs(result))
    if not result.gate_passed:
        raise typer.Exit(5)


RETRAIN_EPILOG = (
    "Exit codes: 0 done (promoted, PR opened or already open, or PR body written); 5 "
    "the gate failed (nothing promoted or proposed); 1 error (invalid data, training failed, "
    "push or GitHub API refused). With $GITHUB_OUTPUT set, version=, created=, gate=, action=, "
    "pr_url=, branch= lines are appended to it. The PR needs $ML_RETRAIN_GITHUB_TOKEN (a "
    "GitHub App installation token) and GITHUB_REPOSITORY; see docs/monitoring.md. With "
    "--models: each model in turn; 1 if any errored, else 5 if any gate failed; one models= "
    "line (JSON, per model) in $GITHUB_OUTPUT."
)


def register(app_root: typer.Typer) -> None:
    app_root.add_typer(app, name="monitor")
    app_root.command("retrain", epilog=RETRAIN_EPILOG)(retrain)
