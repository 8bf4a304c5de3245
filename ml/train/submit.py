"""`ml train --submit`: the same training as a Ray Job on a running cluster.

The job runs `ml train` from an uploaded copy of the project (runtime_env working_dir), its logs
are streamed here, and this process exits with the job's status. The trained model lands in the
MLflow run; on success it is downloaded into the local model dir and reports/train.json.
Ctrl-C or SIGTERM here (a cancelled CI job) stops the Ray job too, so the cluster is not left
training for nobody; a rerun with the same --run-name resumes it.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

from ml.config import Settings
from ml.train.cluster import check_ray_address
from ml.train.errors import TrainError, TrainInterrupted
from ml.train.interrupt import interruption, sigterm_as_ctrl_c
from ml.train.ray_train import REPORT_ARTIFACT, TrainOptions, write_train_reports

# How long a stopped job gets to end (Ray sends its entrypoint SIGTERM, then SIGKILL).
STOP_WAIT_S = 30.0

# Never upload these: environments, caches, raw data and outputs the job recreates.
UPLOAD_EXCLUDES = [
    ".venv",
    ".git",
    "**/__pycache__",
    "data/raw",
    "data/*/raw",
    "models",
    "ray_results",
    "mlruns",
    "mlflow.db",
    "*.egg-info",
    ".dvc/cache",
    ".pytest_cache",
    ".ruff_cache",
    "reports",
]


def jobs_address(address: str) -> str:
    """The Jobs API (dashboard) URL: http://host:8265 style; a bare host:port gets http://."""
    return address if "://" in address else f"http://{address}"


def job_command(
    params_file: Path,
    options: TrainOptions,
    params_override: Path | None,
    model: str | None = None,
) -> str:
    # A model's settings are scoped to its folders (data/NAME/splits ...): --model makes the job
    # read the same ones, where --params alone would read the file's unscoped paths.
    scope = ["--model", model] if model else ["--params", params_file.name]
    argv = ["python", "-m", "ml.cli", *scope, "train"]
    if options.num_workers:
        argv += ["--workers", str(options.num_workers)]
    if options.epochs:
        argv += ["--epochs", str(options.epochs)]
    if options.run_name:
        argv += ["--run-name", options.run_name]
    if options.storage_path:
        argv += ["--storage-path", options.storage_path]
    if options.max_rows:
        argv += ["--max-rows", str(options.max_rows)]
    if params_override:
        argv += ["--params-override", params_override.name]
    return shlex.join(argv)


def submit_training(
    settings: Settings,
    options: TrainOptions,
    params_file: Path,
    params_override: Path | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Submit, stream logs, wait; returns reports/train.json's content (downloaded locally)."""
    import asyncio
    import os

    import ml
    from ml.train.tracking import resolve_tracking_uri

    address = options.address or settings.ray.address
    if not address:
        raise TrainError(
            "--submit needs the cluster's Jobs API address: --address "
            "http://HOST:8265 or RAY_ADDRESS"
        )
    url = jobs_address(address)
    check_ray_address(url.split("://", 1)[1].rstrip("/"))
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(url)
    except Exception as exc:
        raise TrainError(f"cannot reach the Ray Jobs API at {url}: {exc}") from exc

    tracking_uri = resolve_tracking_uri(settings)
    options.run_name = options.run_name or time.strftime("train-%Y%m%d-%H%M%S")
    env_vars = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for name in ("HF_HUB_OFFLINE", "ML_TRAIN_INJECT_FAULT"):
        if os.environ.get(name):
            env_vars[name] = os.environ[name]
    job_id = client.submit_job(
        entrypoint=job_command(params_file, options, params_override, settings.model_name),
        # The project (params, splits) as working_dir and this `ml` package beside it, so the
        # cluster runs the same code without a rebuilt image.
        runtime_env={
            "working_dir": str(settings.root),
            "py_modules": [str(Path(ml.__file__).resolve().parent)],
            "excludes": [*UPLOAD_EXCLUDES, settings.data.raw_dir],
            "env_vars": env_vars,
        },
        submission_id=f"{options.run_name}-{int(time.time())}",
    )
    print(f"submitted Ray job {job_id} to {url}", flush=True)

    async def stream() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    try:
        with sigterm_as_ctrl_c() as sigterm:
            asyncio.run(asyncio.wait_for(stream(), timeout=timeout_s))
            status = wait_for_end(client, job_id, deadline_s=None)
    except TimeoutError as exc:
        client.stop_job(job_id)
        raise TrainError(f"job {job_id} exceeded {timeout_s}s and was stopped") from exc
    except KeyboardInterrupt:
        client.stop_job(job_id)
        status = wait_for_end(client, job_id, deadline_s=STOP_WAIT_S)
        storage = options.storage_path or settings.ray.storage_path
        reason = interruption(options.run_name, storage, sigterm=bool(sigterm))
        raise TrainInterrupted(
            f"Ray job {job_id} stopped ({status.value}): {reason}", reason.exit_code
        ) from None
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(job_id)
        raise TrainError(f"Ray job {job_id} {status.value}: {info.message or 'see logs above'}")
    return fetch_outputs(settings, tracking_uri, options.run_name)


def wait_for_end(client: Any, job_id: str, deadline_s: float | None) -> Any:
    """The job's status once it is terminal, or whatever it is after deadline_s."""
    started = time.monotonic()
    status = client.get_job_status(job_id)
    while not status.is_terminal():
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            break
        time.sleep(1)
        status = client.get_job_status(job_id)
    return status


def fetch_outputs(settings: Settings, tracking_uri: str, run_name: str) -> dict[str, Any]:
    """Download the job's model dir and report from its MLflow run into this project."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ml.train.ray_train import install_model_dir

    mlflow.set_tracking_uri(tracking_uri)
    experiment = MlflowClient().get_experiment_by_name(settings.mlflow.experiment)
    runs = MlflowClient().search_runs(
        [experiment.experiment_id] if experiment else [],
        filter_string=f"tags.ray_run_name = '{run_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise TrainError(
            f"the job succeeded but no MLflow run tagged ray_run_name={run_name} "
            f"is in {tracking_uri}; is the tracking URI shared with the cluster?"
        )
    run_id = runs[0].info.run_id
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report_file = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REPORT_ARTIFACT, dst_path=tmp
        )
        report = json.loads(Path(report_file).read_text())
        # MLflow 3 stores a logged model apart from the run's files; resolve it via runs:/.
        model_root = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"runs:/{run_id}/model", dst_path=f"{tmp}/model"
            )
        )
        metas = sorted(model_root.rglob("meta.json"))
        if not metas:
            raise TrainError(f"MLflow run {run_id} has no model dir in its logged model")
        model_src = metas[0].parent
        model_dir = settings.path(settings.model.dir).resolve()
        install_model_dir(Path(model_src), model_dir)
    report["model_dir"] = str(model_dir)
    report["submitted"] = True
    write_train_reports(settings, report)
    return report
