"""deploy/: the Serve config validates against Ray's own schema and builds this app; the KubeRay
manifests have the structure the operator needs; the actions-runner-controller values use the
chart's keys and keep each tier's runners unprivileged; the Dockerfile is sound. The VM runner
files are tested in test_runner.py.

No Kubernetes API server exists here, so the KubeRay CRDs are checked structurally (required
fields of ray.io/v1 RayService/RayJob/RayCluster pod templates), not by `kubectl apply`.
"""

from __future__ import annotations

import importlib
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
    for application in schema.applications:
        module, _, attribute = application.import_path.partition(":")
        assert callable(getattr(importlib.import_module(module), attribute))
        (deployment,) = application.deployments
        assert deployment.name == DEPLOYMENT_NAME
        assert set(deployment.user_config) <= set(USER_CONFIG_KEYS)
        assert deployment.max_ongoing_requests > deployment.user_config["max_batch_size"]
        assert (REPO_ROOT / application.args["params"]).is_file()


def test_serve_config_is_valid_for_serve_deploy():
    _validate_serve_config(yaml.safe_load((DEPLOY / "serve_config.yaml").read_text()))


def test_serve_config_has_the_applications_ml_serve_config_makes(monkeypatch):
    """One application per model in models.yaml: what ml/serve/multi.py decides (name, route,
    builder, args, model) is the file's; replica counts, resources and runtime are the
    cluster's own."""
    from ml.serve.multi import applications

    monkeypatch.chdir(REPO_ROOT)
    wanted = applications()
    found = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())["applications"]
    assert [a["name"] for a in found] == [a["name"] for a in wanted]
    for app, want in zip(found, wanted, strict=True):
        for key in ("route_prefix", "import_path", "args"):
            assert app[key] == want[key], (app["name"], key)
        ((deployment,), (wanted_deployment,)) = app["deployments"], want["deployments"]
        assert deployment["name"] == wanted_deployment["name"]
        assert set(deployment["user_config"]) == set(wanted_deployment["user_config"])
        model_uri = wanted_deployment["user_config"]["model_uri"]
        assert deployment["user_config"]["model_uri"] == model_uri, app["name"]


def test_serve_config_builds_this_app(tmp_path, monkeypatch):
    """The builder named in the file turns its args into a bound application (no cluster)."""
    from ray.serve.deployment import Application

    from ml.serve.app import build_app

    monkeypatch.chdir(REPO_ROOT)
    # Auth fails closed: the builder needs the token where it runs (the pods' secret env).
    monkeypatch.setenv("ML_SERVE_TOKEN", "a-token-from-the-secret")
    for entry in yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())["applications"]:
        app = build_app({**entry["args"], "model_uri": "models:/tag-classifier/3"})
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


# Top-level keys of the gha-runner-scale-set chart's values.yaml, version 0.14.2 (read from
# actions/actions-runner-controller, charts/gha-runner-scale-set/values.yaml; nothing vendored).
# Helm ignores a misspelt key silently, so a typo here would deploy the chart's defaults.
ARC_VALUES_KEYS = {
    "githubConfigUrl", "scaleSetLabels", "githubConfigSecret", "proxy", "maxRunners",
    "minRunners", "runnerGroup", "runnerScaleSetName", "githubServerTLS", "keyVault",
    "containerMode", "listenerTemplate", "listenerMetrics", "template",
    "controllerServiceAccount", "namespaceOverride", "annotations", "labels", "resourceMeta",
}  # fmt: skip
TIERS = ("pr", "trusted", "release")


def _arc_values(tier: str) -> dict:
    (values,) = _docs(DEPLOY / "arc" / f"ray-{tier}.values.yaml")
    return values


@pytest.mark.parametrize("tier", TIERS)
def test_arc_scale_set_per_tier_is_ephemeral_and_unprivileged(tier):
    values = _arc_values(tier)
    assert set(values) <= ARC_VALUES_KEYS, f"unknown chart keys: {set(values) - ARC_VALUES_KEYS}"
    for key in ("githubConfigUrl", "githubConfigSecret", "runnerScaleSetName", "template"):
        assert key in values, key
    # The workflows ask for [self-hosted, ray-TIER]: the name is one label, scaleSetLabels adds
    # the other.
    assert values["runnerScaleSetName"] == f"ray-{tier}"
    assert "self-hosted" in values["scaleSetLabels"]
    assert values["runnerGroup"] == f"ray-{tier}"
    assert isinstance(values["githubConfigSecret"], str), "a secret name, never an inline token"
    assert 0 <= values["minRunners"] <= values["maxRunners"]
    assert values.get("containerMode", {}).get("type") != "dind", "dind needs a privileged pod"
    spec = values["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (runner,) = spec["containers"]
    assert runner["name"] == "runner"  # the chart fills in the runner container by this name
    assert ":" in runner["image"] and not runner["image"].endswith(":latest")
    context = runner["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "privileged: true" not in yaml.safe_dump(values)
    assert not any("valueFrom" in e or "TOKEN" in e["name"] for e in runner.get("env", []))


def test_arc_tiers_share_nothing():
    values = [_arc_values(tier) for tier in TIERS]
    assert len({v["runnerScaleSetName"] for v in values}) == len(TIERS)
    assert len({v["runnerGroup"] for v in values}) == len(TIERS)


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_parses(path):
    assert _docs(path)
