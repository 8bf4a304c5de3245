"""`ml serve` (Ray Serve over HTTP) and `ml predict` (one-off inputs, or a file in batch)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperGroup

from ml.cli.common import MODEL_URI_HELP, fail, run_stage, settings

serve_app = typer.Typer(
    help="Serve models over HTTP with Ray Serve: `ml serve` (one model), `ml serve --all` (an "
    "application per declared model at /NAME), `ml serve config` (the same as a Serve config).",
)


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
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
    models: Annotated[
        str | None,
        typer.Option(
            "--models", help="serve these declared models (a,b), each as the application /NAME"
        ),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="serve every model in models.yaml, each at /NAME")
    ] = False,
) -> None:
    """Serve the model over HTTP with Ray Serve (POST /predict, GET /healthz, /model, /metrics)
    until Ctrl-C or SIGTERM (then exits 0 once requests in flight are answered and the
    prediction log is flushed); every prediction goes to the prediction log. With --all or
    --models, one application per model on the one Ray, at /NAME/predict (docs/models.md)."""
    if ctx.invoked_subcommand is not None:
        return
    from ml.serve.local import start_local, start_local_apps, stop_local

    cfg = settings()
    chosen = {"model_uri": model, "quantize": quantize, "ingress": ingress, "runtime": runtime}
    overrides: dict[str, Any] = {k: v for k, v in chosen.items() if v is not None and v != ""}
    if auth is not None:
        overrides["auth"] = auth
    if models is None and not every:
        _serve_until_stopped(
            lambda: _one_url(
                run_stage(start_local, cfg, host, port, sigterm_stops=True, **overrides)
            ),
            lambda: stop_local(cfg),
        )
        return
    from ml.serve.multi import applications, parse_names

    if model:
        raise fail(
            "--model (a model URI) serves one model; with --all/--models each model's "
            "params choose its URI",
            2,
        )
    entries = run_stage(applications, run_stage(parse_names, models, every))
    names = [entry["name"] for entry in entries]

    def start() -> str:
        urls = run_stage(
            start_local_apps, cfg, entries, host, port, sigterm_stops=True, **overrides
        )
        return (
            ", ".join(f"{name} at {url}" for name, url in urls.items())
            + " (POST URL/predict; Ctrl-C stops)"
        )

    _serve_until_stopped(start, lambda: stop_local(cfg, names))


def _one_url(url: str) -> str:
    return f"at {url}  (POST {url}/predict; Ctrl-C stops)"


def _serve_until_stopped(start: Callable[[], str], stop: Callable[[], None]) -> None:
    import time

    from ml.serve.auth import AuthConfigError
    from ml.serve.loader import ModelLoadError
    from ml.serve.local import IngressError

    # Ctrl-C or SIGTERM at any point (even while the app is still deploying) shuts Serve down
    # gracefully: replicas finish what they hold and run __del__, which flushes the prediction
    # log; then Ray itself stops, so none of its processes outlives this command.
    try:
        try:
            where = start()
        except (ModelLoadError, IngressError, AuthConfigError, RuntimeError) as exc:
            raise fail(f"cannot start serving: {exc}") from exc
        typer.secho(f"serving {where}", fg=typer.colors.GREEN)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopping: flushing the prediction log")
    finally:
        stop()


@serve_app.command("config")
def serve_config(
    models: Annotated[
        str | None,
        typer.Option("--models", help="only these declared models (a,b); default: all of them"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write it here (default: stdout)")
    ] = None,
) -> None:
    """Print (or write) the Serve config for `serve deploy` / a RayService's serveConfigV2: one
    application per model at /NAME, each with its params file's deployment options and model."""
    from ml.serve.multi import parse_names, write_serve_config

    names = None if models is None else run_stage(parse_names, models, False)
    text = run_stage(write_serve_config, output, names)
    if output is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {output}")


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
    app.add_typer(serve_app, name="serve")
    app.add_typer(predict_app, name="predict")
