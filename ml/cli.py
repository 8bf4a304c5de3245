"""The `ml` command: wires stage functions to a Typer CLI, one sub-app per area.

Heavy libraries (ray, torch, mlflow, evidently, pandas) are imported inside commands so that
`ml --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

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
        raise fail(str(exc), getattr(exc, "exit_code", 1)) from exc


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


def _train_settings(params_override: Path | None):
    cfg = settings()
    if params_override is None:
        return cfg
    from ml.train.ray_train import apply_params_override

    return run_stage(apply_params_override, cfg, params_override)


@app.command("train")
def train(
    workers: Annotated[
        int | None, typer.Option(help="Ray Train workers (train.num_workers)")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs (train.epochs)")] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster address (default: $RAY_ADDRESS, ray.address, or local); "
            "with --submit the Jobs API URL, e.g. http://127.0.0.1:8265"
        ),
    ] = None,
    submit: Annotated[
        bool, typer.Option("--submit", help="run as a Ray Job on the cluster at --address")
    ] = False,
    run_name: Annotated[
        str | None, typer.Option(help="Ray/MLflow run name; an interrupted run resumes")
    ] = None,
    storage_path: Annotated[
        str | None, typer.Option(help="checkpoint storage (ray.storage_path); shared multi-node")
    ] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--cpu", help="train.use_gpu")] = None,
    max_rows: Annotated[
        int | None, typer.Option(help="use at most this many train/val rows (smoke runs)")
    ] = None,
    params_override: Annotated[
        Path | None, typer.Option(help="params file whose model/train sections win (ml tune)")
    ] = None,
) -> None:
    """Fine-tune the classifier with Ray Train (DDP), tracked in MLflow; writes the model dir
    and reports/train.json."""
    import os

    from ml.train.ray_train import TrainOptions

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = _train_settings(params_override)
    options = TrainOptions(
        num_workers=workers,
        epochs=epochs,
        address=address,
        run_name=run_name,
        storage_path=storage_path,
        use_gpu=gpu,
        max_rows=max_rows,
    )
    if submit:
        from ml.config import params_path
        from ml.train.submit import submit_training

        params_file = params_path(_state["params"]).resolve()
        report = run_stage(submit_training, cfg, options, params_file, params_override)
    else:
        from ml.train.ray_train import run_training

        result = run_stage(run_training, cfg, options)
        report = {
            "run_id": result.run_id,
            "model_dir": result.model_dir,
            "metrics": result.metrics,
            "duration_s": result.duration_s,
        }
    best = report["metrics"]
    typer.secho(
        f"trained: val_f1 {best.get('val_f1', float('nan')):.4f} (epoch {best.get('epoch')}) in "
        f"{report['duration_s']:.0f}s; model {report['model_dir']}; MLflow run {report['run_id']}",
        fg=typer.colors.GREEN,
    )


@app.command("tune")
def tune(
    num_samples: Annotated[int | None, typer.Option(help="trials (tune.num_samples)")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    max_rows: Annotated[int | None, typer.Option(help="cap train/val rows per trial")] = None,
    output: Annotated[Path | None, typer.Option(help="best params file (tune.output)")] = None,
) -> None:
    """Ray Tune (ASHA) over lr, batch size, epochs, dropout and max length; every trial is an
    MLflow run; the best config is written as a params file for `ml train --params-override`."""
    import os

    from ml.train.tune import run_tune

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    result = run_stage(run_tune, settings(), num_samples, address, max_rows, output)
    typer.secho(
        f"best trial: {result.best_metric_name} {result.best_metric:.4f} with "
        f"{result.best_config}; written to {result.output}",
        fg=typer.colors.GREEN,
    )


# --- evaluation, gate, registry, PR report (issue #4) ---------------------------------------
registry_app = typer.Typer(
    help="Model registry (MLflow): versions, the champion/challenger aliases, promote, rollback.",
    no_args_is_help=True,
)
report_app = typer.Typer(help="Human-readable reports.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
app.add_typer(report_app, name="report")


def run_mlflow_stage(stage: Callable[..., T], *args: Any) -> T:
    """run_stage, plus MLflow's own errors (server refused, bad URI) as one line."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.exceptions import MlflowException

    try:
        return run_stage(stage, *args)
    except MlflowException as exc:
        raise fail(f"MLflow: {exc.message}") from exc


@app.command("evaluate")
def evaluate(
    model_dir: Annotated[
        Path | None, typer.Option(help="model dir (default: model_dir in reports/train.json)")
    ] = None,
) -> None:
    """Score the trained model on the holdout: overall, per-class, slices, calibration and
    behavioural checks; writes reports/metrics.json and reports/eval/."""
    from ml.evaluate.evaluate import evaluate as evaluate_stage

    cfg = settings()
    result = run_stage(evaluate_stage, cfg, model_dir)
    o = result.overall
    typer.echo(
        f"holdout: accuracy {o['accuracy']:.4f}, weighted F1 {o['f1_weighted']:.4f}, macro F1 "
        f"{o['f1_macro']:.4f}, ECE {o['ece']:.4f}; behavioural checks {result.behavioural_status}"
    )
    typer.echo(f"metrics: {result.metrics_path}; details: {result.detail_dir}")


@app.command("gate")
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

        result = run_mlflow_stage(gate_stage, cfg, challenger, champion)
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


@registry_app.command("register")
def registry_register() -> None:
    """Register the last trained model (reports/train.json) as a new version with provenance and
    metric tags, and point the `challenger` alias at it (idempotent per training run)."""
    from ml.registry import register

    result = run_mlflow_stage(register, settings())
    if not result.registered:
        typer.echo(
            f"pr tier: {result.model_uri} (run {result.run_id}) is the challenger, unregistered; "
            f"nothing written to {result.name}"
        )
        return
    verb = "registered" if result.created else "already registered:"
    typer.echo(f"{verb} {result.name} v{result.version} (run {result.run_id}) as challenger")


access_app = typer.Typer(
    help="Who may write what in MLflow: the pr, trusted and production identities.",
    no_args_is_help=True,
)
registry_app.add_typer(access_app, name="access")


@access_app.command("apply")
def registry_access_apply() -> None:
    """Create the three identities, the production and PR experiments and the registered model,
    and grant the tier policy (ml/access.py); idempotent. Needs the admin's credentials in
    MLFLOW_TRACKING_USERNAME/PASSWORD and the identities' in ML_ACCESS_<TIER>_USERNAME/PASSWORD."""
    from ml.access import apply

    done = run_mlflow_stage(apply, settings())
    typer.echo(f"access applied on {done['tracking_uri']}")
    for user, state in done["users"].items():
        typer.echo(f"  user {user}: {state}")
    for line in done["grants"]:
        typer.echo(f"  {line}")


@registry_app.command("show")
def registry_show(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    limit: Annotated[int, typer.Option(help="versions and history rows to show")] = 20,
) -> None:
    """Aliases, newest versions (gate status, metrics, provenance) and the alias history."""
    import json

    from ml.registry import show

    info = run_mlflow_stage(show, settings(), limit)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(info["aliases"].items())) or "none"
    console = Console()
    console.print(f"[bold]{info['name']}[/bold] ({info['tracking_uri']}); aliases: {aliases}")
    versions = Table(
        "version",
        "aliases",
        "gate",
        "F1 (weighted)",
        "git sha",
        "branch",
        "PR",
        "created",
        title="versions",
    )
    for row in info["versions"]:
        versions.add_row(
            row["version"],
            ", ".join(row["aliases"]),
            row["gate"],
            row["f1_weighted"],
            row["git_sha"],
            row["branch"],
            row["pr"],
            row["created"],
        )
    console.print(versions)
    history = Table("when", "action", "alias", "version", "who", "why", title="alias history")
    for event in info["history"]:
        history.add_row(
            event.get("when", ""),
            event.get("action", ""),
            event.get("alias", ""),
            str(event.get("version", "")),
            event.get("who", ""),
            event.get("why", ""),
        )
    console.print(history)


@registry_app.command("promote")
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

    move = run_mlflow_stage(promote, settings(), version, reason, force)
    forced = " (FORCED past the gate)" if move.forced else ""
    typer.secho(
        f"{move.name}: champion v{move.previous or '-'} -> v{move.version}{forced}",
        fg=typer.colors.YELLOW if move.forced else typer.colors.GREEN,
    )


@registry_app.command("rollback")
def registry_rollback(
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="why (required; recorded on both versions)")
    ] = "",
) -> None:
    """Move `champion` back to the version it replaced (repeat to go further back)."""
    from ml.registry import rollback

    move = run_mlflow_stage(rollback, settings(), reason)
    typer.secho(
        f"{move.name}: champion v{move.previous} -> v{move.version} (rolled back)",
        fg=typer.colors.GREEN,
    )


@report_app.command("pr")
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

    cfg = settings()
    path = run_stage(write_pr_comment, cfg, base)
    typer.echo(f"PR comment: {path} ({len(path.read_text(encoding='utf-8'))} characters)")


MODEL_URI_HELP = (
    "model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...) or a local model dir "
    "(default: serve.model_uri, else models:/NAME@champion)"
)


@app.command("serve")
def serve_cmd(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help=MODEL_URI_HELP),
    ] = None,
    host: Annotated[str | None, typer.Option(help="bind address (default: serve.host)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: serve.port, 8000)")] = None,
    quantize: Annotated[
        bool | None, typer.Option("--quantize/--no-quantize", help="int8 dynamic quantization")
    ] = None,
    runtime: Annotated[
        Literal["torch", "onnxruntime"] | None,
        typer.Option(
            help="what runs the model on CPU: torch, or ONNX Runtime on an export of the same "
            "weights (faster in a replica); default: serve.runtime",
        ),
    ] = None,
    ingress: Annotated[
        Literal["proxy", "direct"] | None,
        typer.Option(
            help="proxy (any replica count) or direct (one replica serves HTTP itself: "
            "Serve's throughput profile); default: serve.ingress",
        ),
    ] = None,
    auth: Annotated[
        bool | None,
        typer.Option(
            "--auth/--no-auth",
            help="require the bearer token in $ML_SERVE_TOKEN (serve.auth_token_env); "
            "--no-auth serves without one. Default: serve.auth (on)",
        ),
    ] = None,
) -> None:
    """Serve the model over HTTP with Ray Serve (POST /predict, GET /healthz, /model, /metrics)
    until Ctrl-C or SIGTERM (then exits 0 once requests in flight are answered and the
    prediction log is flushed); every prediction goes to the prediction log."""
    import functools
    import time

    from ml.serve.auth import AuthConfigError
    from ml.serve.loader import ModelLoadError

    cfg = settings()
    overrides: dict[str, Any] = {}
    if model:
        overrides["model_uri"] = model
    if quantize is not None:
        overrides["quantize"] = quantize
    if ingress is not None:
        overrides["ingress"] = ingress
    if runtime is not None:
        overrides["runtime"] = runtime
    if auth is not None:
        overrides["auth"] = auth
    from ml.serve.app import IngressError, start_local, stop_local

    # Ctrl-C or SIGTERM at any point (even while the app is still deploying) shuts Serve down
    # gracefully: replicas finish what they hold and run __del__, which flushes the prediction
    # log; then Ray itself stops, so none of its processes outlives this command.
    start = functools.partial(start_local, sigterm_stops=True, **overrides)
    try:
        try:
            url = run_stage(start, cfg, host, port)
        except (ModelLoadError, IngressError, AuthConfigError, RuntimeError) as exc:
            raise fail(f"cannot start serving: {exc}") from exc
        typer.secho(f"serving at {url}  (POST {url}/predict; Ctrl-C stops)", fg=typer.colors.GREEN)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopping: flushing the prediction log")
    finally:
        stop_local(cfg)


@app.command("predict")
def predict(
    args: Annotated[
        list[str],
        typer.Argument(help="TEXT... to classify, or `batch INPUT OUTPUT` for a CSV/Parquet file"),
    ],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help=MODEL_URI_HELP),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="rows per Ray Data batch (batch mode)")] = 256,
) -> None:
    """Classify texts: `ml predict "some text" ["another"...]` prints JSON lines;
    `ml predict batch INPUT OUTPUT` runs batch inference over a file with Ray Data."""
    import json

    cfg = settings()
    if args and args[0] == "batch" and len(args) == 3:
        from ml.serve.batch import predict_file

        result = run_mlflow_stage(
            predict_file, cfg, Path(args[1]), Path(args[2]), model, batch_size
        )
        typer.echo(
            f"{result.rows} rows -> {result.output} in {result.seconds:.1f} s "
            f"({result.model_name} v{result.model_version})"
        )
        return
    if args and args[0] == "batch":
        raise fail("usage: ml predict batch INPUT OUTPUT", 2)
    from ml.serve.loader import default_model_uri, load_classifier
    from ml.serve.schemas import Limits, RequestError, parse_request

    try:
        texts = [parse_request(json.dumps({"text": t}).encode(), Limits())[0][0] for t in args]
    except RequestError as exc:
        raise fail(exc.message, 2) from exc
    from ml.registry import tracking_uri

    classifier, info = run_mlflow_stage(
        load_classifier,
        default_model_uri(cfg) if model is None else model,
        tracking_uri(cfg),
        cfg.serve.quantize,
        None,  # device: cuda when there is one
        None,  # threads: torch's default
        cfg.serve.runtime,  # the endpoint's runtime, so one-off answers are the endpoint's
    )
    for text, result in zip(texts, classifier.predict(texts), strict=True):
        row = {"text": text, **result, "model_name": info.name, "model_version": info.version}
        typer.echo(json.dumps(row))


# --- monitoring and continuous training (issue #6) -------------------------------------------
monitor_app = typer.Typer(
    help="Drift monitoring of the production prediction log.", no_args_is_help=True
)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command(
    "drift",
    epilog="Exit codes: 0 no drift; 3 drift; 4 not enough data (fewer valid records than "
    "monitor.min_window); 1 error (log or reference unreadable); 2 bad config or usage. "
    "With $GITHUB_OUTPUT set, verdict=, drift=, exit_code=, valid_records= and summary= lines "
    "are appended to it.",
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
        typer.Option(help="model dir for reference predictions (monitor.model_dir, model.dir)"),
    ] = None,
    fail_on_drift: Annotated[
        bool,
        typer.Option(
            "--fail-on-drift/--no-fail-on-drift",
            help="exit 3 on drift and 4 on not enough data (default); with "
            "--no-fail-on-drift exit 0 and let GITHUB_OUTPUT carry the verdict",
        ),
    ] = True,
) -> None:
    """Compare a window of the prediction log with the training reference (Evidently): text
    embeddings, text length, out-of-vocabulary rate, predicted classes and confidence. Writes
    reports/drift/report.html and summary.json and prints the verdict."""
    import os

    from ml.monitor.drift import EXIT_ERROR, write_github_output
    from ml.monitor.drift import monitor_drift as drift_stage

    cfg = settings()
    result = run_stage_code(drift_stage, EXIT_ERROR, cfg, log_dir, since, last_n, model_dir)
    window = result.window
    typer.echo(
        f"window: {window['valid_records']} valid record(s) from {window['source']}"
        f" ({window['malformed_records']} malformed, {window['records_with_text']} with text)"
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
    write_github_output(result, os.environ.get("GITHUB_OUTPUT"))
    raise typer.Exit(result.decision.exit_code if fail_on_drift else 0)


@app.command(
    "retrain",
    epilog="Exit codes: 0 done (promoted, PR opened or already open, or PR body written); 5 "
    "the gate failed (nothing promoted or proposed); 1 error (invalid data, training failed, "
    "push or GitHub API refused). With $GITHUB_OUTPUT set, version=, created=, gate=, action=, "
    "pr_url=, branch= lines are appended to it. The PR needs $ML_RETRAIN_GITHUB_TOKEN (a "
    "GitHub App installation token) and GITHUB_REPOSITORY; see docs/monitoring.md.",
)
def retrain_cmd(
    max_rows: Annotated[int | None, typer.Option(help="cap train/val rows (smoke runs)")] = None,
) -> None:
    """Continuous training: ingest the latest data (plus monitor.labelled_source), validate,
    split, train, evaluate, register, gate against the champion; then push the new data version
    (dvc.lock) to a retrain/ branch and open a PR with the report (default) or promote when
    monitor.auto_promote is true and the gate passed. Idempotent: a version already registered
    for the same data and params is reused, not retrained, and its PR is not opened twice."""
    import os

    from ml.monitor.retrain import retrain

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    result = run_mlflow_stage(retrain, settings(), max_rows)
    for step in result.steps:
        typer.echo(f"  - {step}")
    typer.secho(result.message, fg=typer.colors.GREEN if result.gate_passed else typer.colors.RED)
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        gate_word = {True: "passed", False: "failed", None: "none"}[result.gate_passed]
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(
                f"version={result.version}\ncreated={str(result.created).lower()}\n"
                f"gate={gate_word}\naction={result.action}\n"
                f"pr_url={result.pr_url or ''}\nbranch={result.branch or ''}\n"
            )
    if not result.gate_passed:
        raise typer.Exit(5)


def run_stage_code(stage: Callable[..., T], code: int, *args: Any) -> T:
    """run_stage with a chosen exit code for the stage's own errors."""
    from ml.errors import USER_ERRORS

    try:
        return stage(*args)
    except USER_ERRORS as exc:
        raise fail(str(exc), code) from exc


@app.command("release")
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
    from functools import partial

    from ml.release import release as release_stage

    stage = partial(release_stage, allow_downgrade=allow_downgrade, main_ref=main_ref)
    result = run_mlflow_stage(stage, settings(), tag, commit)
    was = f" (was v{result.previous})" if result.previous else ""
    typer.secho(
        f"released {tag}: champion v{result.version}{was} live at {result.url}; smoke test "
        f"passed ({result.smoke['labels']}; auth: {result.smoke.get('auth', 'not checked')})",
        fg=typer.colors.GREEN,
    )


if __name__ == "__main__":
    app()
