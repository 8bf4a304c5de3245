"""`ml train` and `ml tune`: Ray Train (DDP) and Ray Tune, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ml.cli.common import params_file, run_stage, settings


def _train_settings(params_override: Path | None):
    cfg = settings()
    if params_override is None:
        return cfg
    from ml.config import override_from_file

    return run_stage(override_from_file, cfg, params_override)


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
        Path | None,
        typer.Option(
            help="params file whose model/train/image sections win (ml tune's best params)"
        ),
    ] = None,
) -> None:
    """Train the task's model with Ray Train (DDP), tracked in MLflow; writes the model dir
    and reports/train.json."""
    from ml.train.ray_train import TrainOptions

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

        params = params_path(params_file()).resolve()
        report = run_stage(submit_training, cfg, options, params, params_override)
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


def tune(
    num_samples: Annotated[int | None, typer.Option(help="trials (tune.num_samples)")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    max_rows: Annotated[int | None, typer.Option(help="cap train/val rows per trial")] = None,
    output: Annotated[Path | None, typer.Option(help="best params file (tune.output)")] = None,
) -> None:
    """Ray Tune (ASHA) over the search space in params (tune:); every trial is an MLflow run;
    the best config is written as a params file for `ml train --params-override`."""
    from ml.train.tune import run_tune

    result = run_stage(run_tune, settings(), num_samples, address, max_rows, output)
    typer.secho(
        f"best trial: {result.best_metric_name} {result.best_metric:.4f} with "
        f"{result.best_config}; written to {result.output}",
        fg=typer.colors.GREEN,
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("tune")(tune)
