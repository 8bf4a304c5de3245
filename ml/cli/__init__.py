"""The `ml` command: one Typer app assembled from one module per area.

Each module wires stage functions to commands through `ml.cli.common.run_stage`, the one place
that turns a stage's errors into a message and an exit code. Heavy libraries (ray, torch,
mlflow, evidently, pandas) are imported inside commands so that `ml --help` stays fast.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from ml.cli import config, data, evaluate, models, monitor, registry, release, report, serve, train
from ml.cli.common import model_params_file, set_params_file

app = typer.Typer(
    help="One ML task chosen by params (`task:`: text or image classification) through data, "
    "training, evaluation, registry, serving and monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    params: Annotated[
        Path | None,
        typer.Option("--params", "-p", help="params file (default: $ML_PARAMS or ./params.yaml)"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="a model in models.yaml: its params file (not with --params)"),
    ] = None,
) -> None:
    set_params_file(model_params_file(model, params), model)
    # A parent that ignores SIGINT (a shell's background job, a supervisor, a test runner)
    # passes that on, and Ctrl-C / `kill -INT` would then not stop `ml serve` or
    # `ml train --submit` (whose job it cancels): every command takes SIGINT back.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


app.add_typer(config.app, name="config")
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
train.register(app)
evaluate.register(app)
app.add_typer(registry.app, name="registry")
app.add_typer(report.app, name="report")
serve.register(app)
monitor.register(app)
release.register(app)

__all__ = ["app"]
