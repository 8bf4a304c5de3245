"""`ml tune`: Ray Tune (ASHA) over lr, batch size, epochs, dropout and max length.

Each trial is a Ray Train run (`trainer.fit()` inside the Tune function, the Train V2 way),
reporting per epoch to Tune through TuneReportCallback so ASHA can stop weak trials early, and
logging to its own MLflow run (a child of the tuning run). The best config is written as a
params file that `ml train --params-override FILE` applies.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.config import Settings
from ml.errors import UserError

# What a trial's driver function reserves: no CPU (it only waits on its Train workers, which
# reserve their own), and a token of memory because Tune needs a non-empty resource request.
TRIAL_DRIVER_RESOURCES = {"cpu": 0, "memory": 64 * 1024**2}


class TuneError(UserError):
    """The search cannot run or produced no usable trial."""


@dataclass
class TuneResult:
    best_config: dict[str, Any]
    best_metric: float
    best_metric_name: str
    output: str
    trials: int
    mlflow_run_id: str


def search_space(settings: Settings) -> dict[str, Any]:
    from ray import tune

    space = settings.tune
    return {
        "lr": tune.loguniform(min(space.lr), max(space.lr)),
        "batch_size": tune.choice(space.batch_size),
        "epochs": tune.choice(space.epochs),
        "dropout": tune.choice(space.dropout),
        "max_length": tune.choice(space.max_length),
    }


def settings_for_trial(settings: Settings, config: dict[str, Any]) -> Settings:
    model = settings.model.model_copy(
        update={"dropout": float(config["dropout"]), "max_length": int(config["max_length"])}
    )
    train = settings.train.model_copy(
        update={
            "lr": float(config["lr"]),
            "batch_size": int(config["batch_size"]),
            "epochs": int(config["epochs"]),
        }
    )
    trial = settings.model_copy(update={"model": model, "train": train})
    trial.root, trial.provenance = settings.root, settings.provenance
    return trial


def best_params_yaml(config: dict[str, Any], metric: str, value: float) -> str:
    import yaml

    body = {
        "model": {"dropout": float(config["dropout"]), "max_length": int(config["max_length"])},
        "train": {
            "lr": float(config["lr"]),
            "batch_size": int(config["batch_size"]),
            "epochs": int(config["epochs"]),
        },
    }
    header = (
        f"# Best `ml tune` trial ({metric} {value:.4f}). Use it with\n"
        "#   ml train --params-override THIS_FILE\n"
        "# or copy the values into params.yaml.\n"
    )
    return header + yaml.safe_dump(body, sort_keys=False)


def run_tune(
    settings: Settings,
    num_samples: int | None = None,
    address: str | None = None,
    max_rows: int | None = None,
    output: Path | None = None,
) -> TuneResult:
    import json as _json

    import mlflow
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler

    from ml.io import atomic_path
    from ml.train import ray_train, tracking
    from ml.train.model import resolve_base_model

    paths = ray_train.split_paths(settings)
    labels = _json.loads(paths["labels"].read_text())["labels"]
    frames = {
        name: ray_train.read_split(settings, paths[name], labels, max_rows)
        for name in ("train", "val")
    }
    source = resolve_base_model(settings.model.base)
    tracking_uri, experiment_id = tracking.setup_mlflow(settings)
    ray_train.init_ray(address or settings.ray.address)
    # One tokenised copy per max_length choice, made before any trial takes the CPUs.
    inputs_by_length = {
        length: ray_train.trainer_inputs(frames, source, length, settings.train.data_sharding)
        for length in sorted(set(settings.tune.max_length))
    }
    storage = settings.ray.storage_path
    storage_path = storage if "://" in storage else str(settings.path(storage).resolve())
    name = time.strftime("tune-%Y%m%d-%H%M%S")
    metric = settings.train.metric
    num_workers = settings.tune.num_workers
    train_rows = len(frames["train"])

    with mlflow.start_run(run_name=name) as parent:
        mlflow.set_tags(
            {
                "ray_run_name": name,
                "git_sha": tracking.git_sha(settings.root),
                "params_hash": tracking.params_hash(settings, ("model", "train", "tune")),
            }
        )
        mlflow.log_params(tracking.flatten_params({"tune": settings.as_dict()["tune"]}))
        parent_id = parent.info.run_id

        def trial(config: dict[str, Any]) -> None:
            import mlflow as trial_mlflow
            from ray import tune as trial_tune

            trial_settings = settings_for_trial(settings, config)
            trial_name = f"{name}-{trial_tune.get_context().get_trial_id()}"
            client = trial_mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
            run = client.create_run(
                experiment_id,
                run_name=trial_name,
                tags={
                    "mlflow.parentRunId": parent_id,
                    "ray_run_name": trial_name,
                    "tune_trial": "1",
                },
            )
            for key, value in config.items():
                client.log_param(run.info.run_id, key, value)
            worker_config = ray_train._worker_config(
                trial_settings, labels, train_rows, int(config["epochs"]), False, num_workers
            )
            datasets, worker_config["split_refs"] = inputs_by_length[int(config["max_length"])]
            trainer = ray_train.make_trainer(
                trial_settings,
                worker_config,
                datasets,
                num_workers=num_workers,
                use_gpu=False,
                run_name=trial_name,
                storage_path=storage_path,
                # Log first: once Tune has the report, ASHA may stop the trial at once.
                callbacks=[
                    tracking.epoch_logger(tracking_uri, run.info.run_id),
                    TuneReportCallback(),
                ],
            )
            status = "FAILED"
            try:
                trainer.fit()
                status = "FINISHED"
            finally:
                client.set_terminated(run.info.run_id, status=status)

        # Tune stages placement groups for queued trials ahead of time (up to 200 by default);
        # limit that to the trials that may run, so queued ones never hold resources.
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(settings.tune.max_concurrent_trials)
        tuner = tune.Tuner(
            tune.with_resources(trial, TRIAL_DRIVER_RESOURCES),
            param_space=search_space(settings),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=settings.train.metric_mode,
                num_samples=num_samples or settings.tune.num_samples,
                max_concurrent_trials=settings.tune.max_concurrent_trials,
                scheduler=ASHAScheduler(
                    time_attr="training_iteration",
                    max_t=max(settings.tune.epochs),
                    grace_period=settings.tune.grace_period,
                    reduction_factor=settings.tune.reduction_factor,
                ),
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=1),
        )
        results = tuner.fit()
        scored = [r for r in results if r.metrics and r.metrics.get(metric) is not None]
        if not scored:
            errors = [str(r.error).splitlines()[0] for r in results if r.error]
            raise TuneError(f"no trial reported {metric}; errors: {errors[:3]}")
        best = results.get_best_result(metric=metric, mode=settings.train.metric_mode, scope="all")
        best_value = float(best.metrics[metric])
        out_path = output or settings.path(settings.tune.output)
        with atomic_path(Path(out_path)) as tmp:
            tmp.write_text(best_params_yaml(best.config, metric, best_value))
        mlflow.log_params({f"best.{k}": v for k, v in best.config.items()})
        mlflow.log_metric(f"best_{metric}", best_value)
        mlflow.log_artifact(str(out_path))
        mlflow.log_dict(
            {
                "trials": [
                    {
                        "config": r.config,
                        **{
                            k: v for k, v in (r.metrics or {}).items() if isinstance(v, int | float)
                        },
                    }
                    for r in results
                ]
            },
            "trials.json",
        )
    return TuneResult(dict(best.config), best_value, metric, str(out_path), len(results), parent_id)
