"""`ml train`: the configured task's model trained by Ray Train V2's TorchTrainer (DDP).

The driver, here: read the splits (ml/train/inputs.py), connect to Ray and check that the
workers fit the cluster (ml/train/cluster.py), encode the splits with Ray Data, open the MLflow
run, fit (ml/train/worker.py runs in every worker; ml/train/interrupt.py turns Ctrl-C and
SIGTERM into a resumable stop), install the best checkpoint as the model dir, log the pyfunc
model, write reports/train.json.
"""

from __future__ import annotations

import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.config import Settings
from ml.io import atomic_dir, write_json

# Names other modules imported from here before the split; they live in the parts now.
from ml.train.cluster import check_ray_address, init_ray, make_trainer  # noqa: F401
from ml.train.errors import TrainError, TrainInterrupted
from ml.train.interrupt import interruption, sigterm_as_ctrl_c  # noqa: F401
from ml.train.worker import CHECKPOINT_MODEL, FAULT_ENV, interleave_plan  # noqa: F401

REPORT_ARTIFACT = "train_report.json"
TRAIN_METRICS_FILE = "train_metrics.json"


@dataclass
class TrainOptions:
    """CLI flags that override params for one run."""

    num_workers: int | None = None
    epochs: int | None = None
    address: str | None = None
    run_name: str | None = None
    storage_path: str | None = None
    use_gpu: bool | None = None
    max_rows: int | None = None  # cap on train/val rows (tests, benchmarks)
    extra_tags: dict[str, str] = field(default_factory=dict)


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    model_dir: str
    metrics: dict[str, float]
    duration_s: float
    samples_per_s: float
    run_name: str
    storage_path: str
    report_path: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunPlan:
    """One run's settings with the CLI flags applied, and where its results go."""

    settings: Settings  # train.epochs / num_workers / use_gpu as this run uses them
    address: str | None
    run_name: str
    storage_path: str
    max_rows: int | None
    extra_tags: dict[str, str]


def with_train(settings: Settings, **updates: Any) -> Settings:
    """`settings` with this run's train values (the CLI flags), validated."""
    from ml.config import override

    changed = {f"train.{k}": v for k, v in updates.items() if getattr(settings.train, k) != v}
    return override(settings, changed, "ml train option") if changed else settings


def plan_run(settings: Settings, options: TrainOptions) -> RunPlan:
    train = settings.train
    storage = options.storage_path or settings.ray.storage_path
    return RunPlan(
        with_train(
            settings,
            epochs=options.epochs or train.epochs,
            num_workers=options.num_workers or train.num_workers,
            use_gpu=train.use_gpu if options.use_gpu is None else options.use_gpu,
        ),
        options.address or settings.ray.address,
        options.run_name or time.strftime("train-%Y%m%d-%H%M%S"),
        storage if "://" in storage else str(settings.path(storage).resolve()),
        options.max_rows,
        dict(options.extra_tags),
    )


def run_training(settings: Settings, options: TrainOptions | None = None) -> TrainResult:
    """Train with Ray Train, track in MLflow, install the best model; see the module doc."""
    from ml.tasks import task_of
    from ml.train import cluster, inputs, tracking
    from ml.train.worker import WorkerConfig, fault_from_env

    started = time.perf_counter()
    plan = plan_run(settings, options or TrainOptions())
    settings, train = plan.settings, plan.settings.train
    paths = inputs.split_paths(settings)
    labels = inputs.read_labels(paths)
    splits = inputs.read_splits(settings, paths, labels, plan.max_rows)
    if len(splits["train"]) < train.num_workers:
        raise TrainError(
            f"{len(splits['train'])} train rows cannot feed {train.num_workers} workers"
        )
    # Quick checks before Ray starts, so a wrong base model or tracking URI fails at once.
    preprocessor = task_of(settings).preprocessor(settings)
    tracking.check_tracking_uri(tracking.resolve_tracking_uri(settings))
    timings = {"prepare_s": time.perf_counter() - started}

    ray_started = time.perf_counter()
    embedded = cluster.init_ray(plan.address, dashboard=settings.ray.dashboard)
    timings["ray_init_s"] = time.perf_counter() - ray_started
    # The embedded Ray never grows: no wait for nodes there.
    scaling = cluster.plan_scaling(
        train, train.num_workers, train.use_gpu, wait_s=0.0 if embedded else train.cluster_wait_s
    )
    encode_started = time.perf_counter()
    datasets, split_refs = inputs.trainer_inputs(
        settings, preprocessor, splits, private_ray=embedded
    )
    timings["encode_s"] = time.perf_counter() - encode_started
    worker_config = WorkerConfig(
        settings,
        tuple(labels),
        len(splits["train"]),
        threads_per_worker=scaling.threads_per_worker,
        use_gpu=scaling.use_gpu,
        split_refs=split_refs,
        inject_fault=fault_from_env(),
    )
    params = run_params(settings, scaling, {name: len(s) for name, s in splits.items()})
    result, tracking_uri, run_id = fit(
        plan, paths, scaling, worker_config, datasets, params, embedded, timings
    )
    return finish(plan, scaling, result, tracking_uri, run_id, started, timings)


def run_params(settings: Settings, scaling: Any, rows: dict[str, int]) -> dict[str, str]:
    """The MLflow params of a run: the task, the model/train/image sections as this run used
    them (cpus_per_worker resolved), and the row counts."""
    from ml.train import tracking

    sections = settings.as_dict()
    params = tracking.flatten_params({k: sections[k] for k in ("model", "train", "image")})
    params.update(
        {
            "task": settings.task,
            "train.cpus_per_worker": f"{scaling.cpus_per_worker:g}",
            **{f"data.{name}_rows": str(count) for name, count in rows.items()},
        }
    )
    return params


def fit(
    plan: RunPlan,
    paths: dict[str, Path],
    scaling: Any,
    worker_config: Any,
    datasets: dict[str, Any],
    params: dict[str, str],
    embedded: bool,
    timings: dict[str, float],
) -> tuple[Any, str, str]:
    """(Ray Train's Result, tracking uri, MLflow run id). A failed or interrupted fit is
    recorded on the MLflow run and raised as a TrainError saying how to resume.

    The MLflow run is opened in the background (importing MLflow, opening its store, params,
    tags, checksums: seconds of a small machine's CPU) while Ray Train starts its controller
    and workers, which leaves this process idle. The controller's epoch logger finds the run
    by its attempt tag when the first epoch reports."""
    from ml.train import tracking
    from ml.train.interrupt import fit_interruptible

    settings, attempt = plan.settings, uuid.uuid4().hex
    result, errors = None, []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ml-mlflow-run") as pool:
        opening = pool.submit(open_tracking_run, plan, paths, attempt, params)
        try:
            trainer = make_trainer(
                settings,
                scaling,
                worker_config.as_loop_config(),
                datasets,
                run_name=plan.run_name,
                storage_path=plan.storage_path,
                embedded=embedded,
                callbacks=[
                    tracking.epoch_logger(
                        tracking.resolve_tracking_uri(settings),
                        experiment=settings.mlflow.experiment,
                        attempt=attempt,
                    )
                ],
            )
            fit_started = time.perf_counter()
            with fit_interruptible(plan.run_name, plan.storage_path) as errors:
                result = trainer.fit()
            timings["fit_s"] = time.perf_counter() - fit_started
        except Exception as exc:
            errors = [exc]
        except KeyboardInterrupt:  # before fit() started
            errors = [interruption(plan.run_name, plan.storage_path, sigterm=False)]
        tracking_uri, run_id = opening.result()
    if errors:
        raise recorded_failure(plan.run_name, tracking_uri, run_id, errors[0])
    return result, tracking_uri, run_id


def recorded_failure(run_name: str, tracking_uri: str, run_id: str, error: Exception) -> Exception:
    """The error to raise for a fit that did not finish, recorded on its MLflow run first."""
    from ml.train import tracking

    if isinstance(error, TrainInterrupted):
        # KILLED, not FAILED: a rerun with the same name resumes this MLflow run, and the
        # checkpoints in storage_path, from the last epoch reported.
        tracking.mark_interrupted(tracking_uri, run_id, str(error))
        return error
    tracking.mark_failed(tracking_uri, run_id, str(error)[:500])
    if isinstance(error, TrainError):
        return error
    failure = TrainError(
        f"training run {run_name!r} failed: {str(error).splitlines()[0]}. Rerun with "
        f"--run-name {run_name} to resume from its last checkpoint."
    )
    failure.__cause__ = error
    return failure


def open_tracking_run(
    plan: RunPlan, paths: dict[str, Path], attempt: str, params: dict[str, str]
) -> tuple[str, str]:
    """(tracking uri, run id): the run's provenance (git sha, data checksums, params hash,
    system info) gathered and the MLflow run opened, new or resumed (`tracking.open_run`)."""
    from ml.train import tracking

    settings = plan.settings
    checksums = tracking.data_checksums(paths["train"].parent)
    tags = {
        "git_sha": tracking.git_sha(settings.root),
        "params_hash": tracking.params_hash(settings),
        "task": settings.task,
        "base_model": settings.model.base,
        **{f"data_sha256.{name}": digest for name, digest in checksums.items()},
        **{f"system.{k}": v for k, v in tracking.system_info().items()},
        **plan.extra_tags,
    }
    return tracking.open_run(
        settings, plan.run_name, attempt, params, tags, {"data_checksums.json": checksums}
    )


def best_checkpoint(result: Any, metric: str, mode: str) -> tuple[Any, dict[str, Any]]:
    """(the best checkpoint by `metric`, its metrics); a TrainError if there is none."""
    best_pairs = [pair for pair in (result.best_checkpoints or []) if pair[1].get(metric)]
    best = (
        result.get_best_checkpoint(metric=metric, mode=mode)
        if hasattr(result, "get_best_checkpoint")
        else None
    )
    if best is None and best_pairs:
        pick = min if mode == "min" else max
        best = pick(best_pairs, key=lambda pair: pair[1][metric])[0]
    if best is None:
        raise TrainError("the run finished without a checkpoint")
    metrics = next((m for c, m in best_pairs if c.path == best.path), result.metrics or {})
    return best, metrics


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def finish(
    plan: RunPlan,
    scaling: Any,
    result: Any,
    tracking_uri: str,
    run_id: str,
    started: float,
    timings: dict[str, float],
) -> TrainResult:
    """Install the best checkpoint as the model dir, log the pyfunc model and the metrics,
    write reports/train.json."""
    import mlflow

    from ml.train.model import read_meta
    from ml.train.pyfunc import log_pyfunc_model

    settings, train = plan.settings, plan.settings.train
    with mlflow.start_run(run_id=run_id) as run:
        best, best_metrics = best_checkpoint(result, train.metric, train.metric_mode)
        model_dir = settings.path(settings.model.dir).resolve()
        with best.as_directory() as directory:
            install_model_dir(Path(directory) / CHECKPOINT_MODEL, model_dir)
        last = result.metrics or best_metrics
        samples_per_s = float(last.get("train_samples_total", 0.0)) / max(
            float(last.get("train_seconds_total", 0.0)), 1e-9
        )
        log_started = time.perf_counter()
        model_uri = log_pyfunc_model(model_dir)
        mlflow.log_dict({"labels": read_meta(model_dir)["labels"]}, "labels.json")
        timings["log_model_s"] = time.perf_counter() - log_started
        timings.update({k: float(last[k]) for k in ("worker_start_s", "model_load_s") if k in last})
        duration = time.perf_counter() - started
        final = {f"best_{k}": v for k, v in _numbers(best_metrics).items()}
        mlflow.log_metrics({**final, "duration_s": duration, "samples_per_s": samples_per_s})
        report = {
            "run_id": run.info.run_id,
            "model_uri": model_uri,
            "model_dir": str(model_dir),
            "task": settings.task,
            "metrics": _numbers(best_metrics),
            "duration_s": round(duration, 2),
            "timings": {k: round(v, 2) for k, v in {**timings, "total_s": duration}.items()},
            "samples_per_s": round(samples_per_s, 2),
            "resources": {
                "num_workers": scaling.num_workers,
                "use_gpu": scaling.use_gpu,
                "cpus_per_worker": scaling.cpus_per_worker,
            },
            "params": {
                "model": settings.as_dict()["model"],
                "train": {
                    **settings.as_dict()["train"],
                    "cpus_per_worker": scaling.cpus_per_worker,
                },
            },
            "run_name": plan.run_name,
            "storage_path": plan.storage_path,
            "checkpoint": best.path,
            "tracking_uri": tracking_uri,
            "epochs_run": int(last.get("epoch", 0)),
        }
        write_train_reports(settings, report)
        mlflow.log_dict(report, REPORT_ARTIFACT)
    return TrainResult(
        run.info.run_id,
        model_uri,
        str(model_dir),
        report["metrics"],
        duration,
        samples_per_s,
        plan.run_name,
        plan.storage_path,
        str(settings.path(train.report)),
        report["timings"],
    )


def install_model_dir(source: Path, target: Path) -> None:
    """Copy a checkpoint's model dir into place atomically (copy beside, then swap)."""
    with atomic_dir(target) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)


def write_train_reports(settings: Settings, report: dict[str, Any]) -> None:
    """reports/train.json (the full record) and, beside it, train_metrics.json: the best
    epoch's validation metrics, small enough for `dvc metrics diff` to read well."""
    report_path = settings.path(settings.train.report)
    write_json(report_path, report)
    keep = ("val_f1", "val_f1_macro", "val_accuracy", "val_loss", "train_loss", "epoch")
    metrics = {key: report["metrics"][key] for key in keep if key in report["metrics"]}
    metrics.update(duration_s=report["duration_s"], samples_per_s=report["samples_per_s"])
    write_json(report_path.with_name(TRAIN_METRICS_FILE), metrics)


def apply_params_override(settings: Settings, override_file: Path) -> Settings:
    """Settings with the model/train/image sections of `override_file` (e.g. written by
    `ml tune`) laid over params.yaml; every value is validated like params.yaml itself."""
    from ml.config import override_from_file

    return override_from_file(settings, override_file, ("model", "train", "image"))
