"""`ml tune`: Ray Tune (ASHA) over lr, batch size, epochs and the task's own dimensions
(Task.tune_space: the text task's dropout and max length).

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


# The dimensions every task shares; a task adds its own (Task.tune_space: dotted params keys).
SHARED_DIMS = ("lr", "batch_size", "epochs")


def search_space(settings: Settings, task_space: dict[str, list[Any]]) -> dict[str, Any]:
    from ray import tune

    space = settings.tune
    return {
        "lr": tune.loguniform(min(space.lr), max(space.lr)),
        "batch_size": tune.choice(space.batch_size),
        "epochs": tune.choice(space.epochs),
        **{key: tune.choice(list(values)) for key, values in task_space.items()},
    }


def trial_sections(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A trial's config as params sections: {"train": {lr, batch_size, epochs}, "model": ...}."""
    sections: dict[str, dict[str, Any]] = {
        "train": {
            "lr": float(config["lr"]),
            "batch_size": int(config["batch_size"]),
            "epochs": int(config["epochs"]),
        }
    }
    for key, value in config.items():
        if "." in key:
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = value
    return sections


def settings_for_trial(settings: Settings, config: dict[str, Any]) -> Settings:
    """`settings` with a trial's values, each validated like params.yaml itself."""
    from ml.config import override

    return override(settings, trial_sections(config), "ml tune trial")


def best_params_yaml(config: dict[str, Any], metric: str, value: float) -> str:
    import yaml

    header = (
        f"# Best `ml tune` trial ({metric} {value:.4f}). Use it with\n"
        "#   ml train --params-override THIS_FILE\n"
        "# or copy the values into params.yaml.\n"
    )
    return header + yaml.safe_dump(trial_sections(config), sort_keys=False)


def encoded_inputs(
    settings: Settings, splits: dict[str, Any], task_space: dict[str, list[Any]]
) -> dict[str, Any]:
    """Trial preprocessor digest -> (datasets, split_refs): the splits encoded once per
    distinct preprocessor the trials may use (text: one per max_length), before any trial
    takes the CPUs."""
    import itertools

    from ml.tasks import task_of
    from ml.train import inputs

    task = task_of(settings)
    keys = list(task_space)
    by_digest: dict[str, Any] = {}
    for values in itertools.product(*(task_space[k] for k in keys)):
        trial = settings_for_trial(
            settings, _seed_config(settings, dict(zip(keys, values, strict=True)))
        )
        preprocessor = task.preprocessor(trial)
        digest = preprocessor_digest(preprocessor)
        if digest not in by_digest:
            by_digest[digest] = inputs.trainer_inputs(trial, preprocessor, splits)
    return by_digest


def _seed_config(settings: Settings, task_values: dict[str, Any]) -> dict[str, Any]:
    train = settings.train
    return {"lr": train.lr, "batch_size": train.batch_size, "epochs": train.epochs, **task_values}


def preprocessor_digest(preprocessor: Any) -> str:
    """Equal for preprocessors that encode alike (their pickles are equal)."""
    import hashlib
    import pickle

    return hashlib.sha256(pickle.dumps(preprocessor)).hexdigest()


def run_tune(
    settings: Settings,
    num_samples: int | None = None,
    address: str | None = None,
    max_rows: int | None = None,
    output: Path | None = None,
) -> TuneResult:

    import mlflow
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler

    from ml.io import atomic_path
    from ml.tasks import task_of
    from ml.train import cluster, inputs, tracking
    from ml.train.worker import WorkerConfig

    paths = inputs.split_paths(settings)
    labels = inputs.read_labels(paths)
    splits = inputs.read_splits(settings, paths, labels, max_rows)
    task = task_of(settings)
    task_space = task.tune_space(settings)
    task.preprocessor(settings)  # a wrong base model fails here, before Ray starts
    tracking_uri, experiment_id = tracking.setup_mlflow(settings)
    embedded = cluster.init_ray(address or settings.ray.address)
    scaling = cluster.plan_scaling(
        settings.train,
        settings.tune.num_workers,
        False,
        wait_s=0.0 if embedded else settings.train.cluster_wait_s,
    )
    inputs_by_digest = encoded_inputs(settings, splits, task_space)
    storage = settings.ray.storage_path
    storage_path = storage if "://" in storage else str(settings.path(storage).resolve())
    name = time.strftime("tune-%Y%m%d-%H%M%S")
    metric = settings.train.metric
    train_rows = len(splits["train"])

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
            preprocessor = task_of(trial_settings).preprocessor(trial_settings)
            datasets, split_refs = inputs_by_digest[preprocessor_digest(preprocessor)]
            worker_config = WorkerConfig(
                trial_settings,
                tuple(labels),
                train_rows,
                threads_per_worker=scaling.threads_per_worker,
                split_refs=split_refs,
            )
            trainer = cluster.make_trainer(
                trial_settings,
                scaling,
                worker_config.as_loop_config(),
                datasets,
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
            param_space=search_space(settings, task_space),
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
