"""deploy/: the Serve config validates against Ray's own schema and builds this app; the KubeRay
manifests have the structure the operator needs; the Dockerfile and runner files are sound.

No Kubernetes API server exists here, so the KubeRay CRDs are checked structurally (required
fields of ray.io/v1 RayService/RayJob/RayCluster pod templates), not by `kubectl apply`.
"""

from __future__ import annotations

import configparser
import importlib
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _validate_serve_config(config: dict) -> None:
    from ray.serve.schema import ServeDeploySchema

    from ml.serve.app import DEPLOYMENT_NAME, USER_CONFIG_KEYS

    schema = ServeDeploySchema.model_validate(config)  # Ray's own validation of the file
    (application,) = schema.applications
    module, _, attribute = application.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    (deployment,) = application.deployments
    assert deployment.name == DEPLOYMENT_NAME
    assert set(deployment.user_config) <= set(USER_CONFIG_KEYS)
    assert deployment.max_ongoing_requests > deployment.user_config["max_batch_size"]
    assert application.args["params"] == "params.yaml"


def test_serve_config_is_valid_for_serve_deploy():
    _validate_serve_config(yaml.safe_load((DEPLOY / "serve_config.yaml").read_text()))


def test_serve_config_builds_this_app(tmp_path, monkeypatch):
    """The builder named in the file turns its args into a bound application (no cluster)."""
    from ray.serve.deployment import Application

    from ml.serve.app import build_app

    monkeypatch.chdir(REPO_ROOT)
    app = build_app({"params": "params.yaml", "model_uri": "models:/tag-classifier/3"})
    assert isinstance(app, Application)


def _pod_templates(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    for group in spec.get("workerGroupSpecs", []):
        assert group["groupName"] and "rayStartParams" in group
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert "rayStartParams" in spec["headGroupSpec"]
    return [group["template"] for group in groups]


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == importlib.import_module("ray").__version__
    for template in _pod_templates(spec):
        containers = template["spec"]["containers"]
        assert containers, "a pod template needs a container"
        for container in containers:
            assert container["name"] and ":" in container["image"]
            assert not container["image"].endswith(":latest")
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["limits"]["memory"]


def test_rayservice_has_a_safe_upgrade_and_the_same_serve_config():
    claim, service = _docs(KUBERAY / "rayservice.yaml")
    assert claim["kind"] == "PersistentVolumeClaim"
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    spec = service["spec"]
    assert spec["upgradeStrategy"]["type"] == "NewCluster"  # blue/green, not in-place restart
    embedded = yaml.safe_load(spec["serveConfigV2"])
    assert embedded == yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    _validate_serve_config(embedded)
    _check_cluster_spec(spec["rayClusterConfig"])
    workers = spec["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    (worker,) = workers["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert "secretKeyRef" in env["ML_SERVE_TOKEN"]["valueFrom"]  # the token is never inline
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    log_dir = embedded["applications"][0]["runtime_env"]["env_vars"]["ML_PREDICTION_LOG_DIR"]
    assert log_dir in mounts
    assert workers["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_rayjob_trains_with_the_cli_and_cleans_up():
    (job,) = _docs(KUBERAY / "rayjob-train.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert "ml train" in spec["entrypoint"] and "ml registry register" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["activeDeadlineSeconds"] > 0
    assert "MLFLOW_TRACKING_URI" in yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    _check_cluster_spec(spec["rayClusterSpec"])


def test_raycluster_for_runners_autoscales():
    (cluster,) = _docs(KUBERAY / "raycluster-runners.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    _check_cluster_spec(cluster["spec"])


def test_dockerfile_pins_torch_and_runs_unprivileged():
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    instructions = [line.split()[0] for line in lines]
    assert instructions[0] in ("FROM", "ARG") and "FROM" in instructions
    base = next(line for line in lines if line.startswith("FROM")).split()[1]
    assert ":" in base and not base.endswith(":latest")
    text = "\n".join(lines)
    assert "torch==2.13.0" in text and "-c constraints.txt" in text
    assert any(line.startswith("USER") and "root" not in line for line in lines)
    assert "EXPOSE 8000" in lines and "HEALTHCHECK" in instructions
    cmd = [line for line in lines if line.startswith("CMD [")][-1]  # not HEALTHCHECK's CMD
    assert '"ml", "serve"' in cmd
    for source in ("constraints.txt", "pyproject.toml", "params.yaml", "ml"):
        assert (REPO_ROOT / source).exists()


def test_runner_unit_and_setup_script():
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.read(DEPLOY / "runner" / "github-actions-runner.service")
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    assert unit["Service"]["User"] != "root" and unit["Service"]["Restart"] == "always"
    assert unit["Service"]["ExecStart"].startswith("/opt/actions-runner/")
    head = configparser.ConfigParser(strict=True, interpolation=None)
    head.read(DEPLOY / "runner" / "ray-head.service")
    assert "ray start --head" in head["Service"]["ExecStart"]

    script = DEPLOY / "runner" / "setup-runner.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    dry = subprocess.run(
        ["bash", str(script), "--url", "https://github.com/o/r", "--token", "T", "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    )
    config_line = next(line for line in dry.stdout.splitlines() if "config.sh" in line)
    assert "--labels ray" in config_line and "--unattended" in config_line
    assert "RAY_ADDRESS" in dry.stdout and "systemctl enable --now" in dry.stdout
    missing = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert missing.returncode == 2 and "--token" in missing.stderr


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_parses(path):
    assert _docs(path)
