"""MLflow tracking: where runs go, and the provenance each run records (git sha, data
checksums, params hash, system info). MLflow is imported inside functions."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ml.config import Settings, params_hash  # noqa: F401 (one definition, in ml.config)
from ml.errors import UserError
from ml.io import sha256_file


class TrackingError(UserError):
    """The MLflow tracking store cannot be used; the message names the URI and what to fix."""


def resolve_tracking_uri(settings: Settings) -> str:
    """Relative sqlite/file stores are resolved against the project root (the params.yaml
    folder), so every command and every Ray worker writes to the same store."""
    uri = settings.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(settings.path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri:
        return str(settings.path(uri).resolve())
    return uri


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an unreachable tracking server (MLflow itself retries for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status >= 400:
                raise TrackingError(f"MLflow server {uri} answered HTTP {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({exc}); check "
            "MLFLOW_TRACKING_URI / mlflow.tracking_uri"
        ) from exc


def setup_mlflow(settings: Settings) -> tuple[str, str]:
    """(tracking uri, experiment id), with the experiment created when missing."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = resolve_tracking_uri(settings)
    check_tracking_uri(uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(settings.mlflow.experiment)
    return uri, experiment.experiment_id


def find_unfinished_run(experiment_id: str, run_name: str) -> str | None:
    """The MLflow run of an interrupted Ray run with this name, so a rerun continues it."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.ray_run_name = '{run_name}' and attributes.status != 'FINISHED'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


ATTEMPT_TAG = "ml.train_attempt"
FAILURE_TAG = "failure"


def open_run(
    settings: Settings,
    ray_run_name: str,
    attempt: str,
    params: dict[str, str],
    tags: dict[str, str],
    dicts: dict[str, Any],
) -> tuple[str, str]:
    """(tracking uri, run id) of the MLflow run for Ray run `ray_run_name`: the interrupted one
    of that name, resumed, or a new one with `params`, `tags` and the `dicts` artifacts.

    Made with MlflowClient rather than mlflow.start_run so it can run in a background thread
    (the fluent API's active run is per thread); the tags MLflow's fluent API would add
    (user, source) are added the same way. The `attempt` tag lets the epoch logger in the Ray
    Train controller find this run (`epoch_logger`)."""
    uri, experiment_id = setup_mlflow(settings)
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    client = MlflowClient(tracking_uri=uri)
    run_id = find_unfinished_run(experiment_id, ray_run_name)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, ATTEMPT_TAG, attempt)
        if FAILURE_TAG in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, FAILURE_TAG)  # it was the previous attempt's
        return uri, run_id
    run = client.create_run(
        experiment_id,
        run_name=ray_run_name,
        tags=resolve_tags({"ray_run_name": ray_run_name, ATTEMPT_TAG: attempt, **tags}),
    )
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
    for name, payload in dicts.items():
        client.log_dict(run_id, payload, name)
    return uri, run_id


def mark_interrupted(tracking_uri: str, run_id: str, reason: str) -> None:
    """End the run as KILLED with the reason as its `failure` tag; find_unfinished_run still
    finds it, so a rerun with the same Ray run name continues it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.set_tag(run_id, FAILURE_TAG, reason[:500])
    client.set_terminated(run_id, "KILLED")


def mark_failed(tracking_uri: str, run_id: str, reason: str) -> None:
    """End the run as FAILED with the reason as its `failure` tag (a rerun with the same Ray
    run name still resumes from its checkpoints, in a new MLflow run)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.set_tag(run_id, FAILURE_TAG, reason[:500])
    client.set_terminated(run_id, "FAILED")


def find_attempt_run(client: Any, experiment: str, attempt: str, timeout_s: float) -> str:
    """The id of the run tagged with `attempt`, waiting up to timeout_s for it to appear."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        found = client.get_experiment_by_name(experiment)
        runs = (
            client.search_runs(
                [found.experiment_id], filter_string=f"tags.`{ATTEMPT_TAG}` = '{attempt}'"
            )
            if found
            else []
        )
        if runs:
            return runs[0].info.run_id
        if time.monotonic() > deadline:
            raise TrackingError(
                f"no MLflow run tagged {ATTEMPT_TAG}={attempt} in experiment {experiment!r} "
                f"after {timeout_s:.0f} s: the driver could not open its run (see its log)"
            )
        time.sleep(0.5)


def log_epoch(client: Any, run_id: str, metrics: dict[str, float], step: int) -> None:
    """One epoch's numeric metrics into the run through an MlflowClient."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(key, float(value), now, step)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    client.log_batch(run_id, metrics=batch)


def epoch_logger(
    tracking_uri: str,
    run_id: str | None = None,
    *,
    experiment: str | None = None,
    attempt: str | None = None,
    lookup_timeout_s: float = 300.0,
) -> Any:
    """A Ray Train callback that logs every epoch's metrics to the MLflow run: `run_id`, or the
    run of `experiment` tagged with `attempt` (see `open_run`), looked up at the first epoch,
    so training can start while the driver is still opening the run.

    It runs in the Ray Train controller, so the training workers never import MLflow (seconds
    of CPU on a small machine, taken from the first epoch) and never talk to its store."""
    from ray.train import UserCallback

    if run_id is None and not (experiment and attempt):
        raise ValueError("epoch_logger needs a run_id, or an experiment and an attempt tag")

    class MLflowEpochLogger(UserCallback):
        client: Any = None
        run: str | None = run_id

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any):
            # Every rank reports the same gathered metrics; rank 0's are the run's.
            if not metrics or "epoch" not in metrics[0]:
                return
            if self.client is None:
                # One client for the run: each new one sets up its store again (for SQLite,
                # an engine and a schema check), a second of CPU taken from training.
                os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
                from mlflow.tracking import MlflowClient

                self.client = MlflowClient(tracking_uri=tracking_uri)
            if self.run is None:
                self.run = find_attempt_run(self.client, experiment, attempt, lookup_timeout_s)
            log_epoch(self.client, self.run, metrics[0], int(metrics[0]["epoch"]))

    return MLflowEpochLogger()


def git_sha(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    if out.returncode != 0 or not sha:
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return sha + ("-dirty" if dirty else "")


def data_checksums(splits_dir: Path) -> dict[str, str]:
    return {
        path.name: sha256_file(path)
        for path in sorted(splits_dir.glob("*"))
        if path.is_file() and path.suffix in {".csv", ".json"}
    }


def system_info() -> dict[str, str]:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
    }
    for package in ("torch", "transformers", "ray", "mlflow"):
        try:
            from importlib.metadata import version

            info[package] = version(package)
        except Exception:
            info[package] = "absent"
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        info["cuda"] = "none"
    return info


def flatten_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)[:500]
    return flat
