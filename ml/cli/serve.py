"""`ml serve` (Ray Serve over HTTP) and `ml predict` (one-off inputs, or a file in batch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperGroup

from ml.cli.common import MODEL_URI_HELP, fail, run_stage, settings


def serve(
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
    import time

    from ml.serve.app import IngressError, start_local, stop_local
    from ml.serve.auth import AuthConfigError
    from ml.serve.loader import ModelLoadError

    cfg = settings()
    chosen = {"model_uri": model, "quantize": quantize, "ingress": ingress, "runtime": runtime}
    overrides: dict[str, Any] = {k: v for k, v in chosen.items() if v is not None and v != ""}
    if auth is not None:
        overrides["auth"] = auth
    # Ctrl-C or SIGTERM at any point (even while the app is still deploying) shuts Serve down
    # gracefully: replicas finish what they hold and run __del__, which flushes the prediction
    # log; then Ray itself stops, so none of its processes outlives this command.
    try:
        try:
            url = run_stage(start_local, cfg, host, port, sigterm_stops=True, **overrides)
        except (ModelLoadError, IngressError, AuthConfigError, RuntimeError) as exc:
            raise fail(f"cannot start serving: {exc}") from exc
        typer.secho(f"serving at {url}  (POST {url}/predict; Ctrl-C stops)", fg=typer.colors.GREEN)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopping: flushing the prediction log")
    finally:
        stop_local(cfg)


class _DefaultToInputs(TyperGroup):
    """`ml predict X...` means `ml predict inputs X...` unless X names a sub-command."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["inputs", *args]
        return super().parse_args(ctx, args)


predict_app = typer.Typer(
    cls=_DefaultToInputs,
    help='Predict with the served model: `ml predict "some text"` or `ml predict IMAGE.png` '
    "(the same as `ml predict inputs ...`) prints JSON lines; `ml predict batch INPUT OUTPUT` "
    "runs over a file, a folder of images or an IDX file with Ray Data.",
    no_args_is_help=True,
)


@predict_app.command("inputs")
def predict_inputs(
    items: Annotated[
        list[str],
        typer.Argument(
            metavar="TEXT|IMAGE...",
            help="texts to classify, or image files (.png, .jpg) for an image model",
        ),
    ],
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_URI_HELP)] = None,
) -> None:
    """Classify one-off inputs and print one JSON line each: the endpoint's checks, runtime and
    answer (an input the endpoint would refuse exits 2 with its reason)."""
    from ml.serve.batch import predict_inputs as predict_stage

    for row in run_stage(predict_stage, settings(), items, model):
        typer.echo(json.dumps(row))


@predict_app.command("batch")
def predict_batch(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="CSV or Parquet file (a text or an image column), a folder of images, or an "
            "IDX image file",
        ),
    ],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="CSV or Parquet file")],
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_URI_HELP)] = None,
    batch_size: Annotated[int, typer.Option(help="rows per Ray Data batch")] = 256,
) -> None:
    """Batch inference over a file with Ray Data: the same model and runtime as the endpoint."""
    from ml.serve.batch import predict_file

    result = run_stage(predict_file, settings(), input_path, output, model, batch_size)
    typer.echo(
        f"{result.rows} rows -> {result.output} in {result.seconds:.1f} s "
        f"({result.model_name} v{result.model_version})"
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(predict_app, name="predict")
