"""The manifests in infra/k8s, validated against the Kubernetes API schemas that
`kubernetes-validate` ships (strict: unknown fields fail), and read for the probes,
limits and shutdown timing README promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.conftest import REPO_ROOT

K8S = REPO_ROOT / "infra" / "k8s"
# The oldest version README supports (preStop `sleep` is on by default from 1.30), and
# the newest the validator knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def resource(kind: str) -> dict[str, Any]:
    (match,) = [doc for _, doc in documents() if doc["kind"] == kind]
    return match


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid(version: str) -> None:
    for path, doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {exc.message} at {list(exc.path)}")


def test_the_validator_would_catch_a_mistake() -> None:
    deployment = resource("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    broken = {
        **deployment,
        "spec": {
            **deployment["spec"],
            "template": {
                **deployment["spec"]["template"],
                "spec": {"containers": [{**container, "readinessProbe": {"httpGet": "/"}}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_set_is_complete() -> None:
    kinds = sorted(doc["kind"] for _, doc in documents())
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Secret",
            "Service",
        ]
    )


def gateway_container() -> dict[str, Any]:
    (container,) = resource("Deployment")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def test_probes_use_the_health_endpoints() -> None:
    container = gateway_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"


def test_requests_limits_and_an_unprivileged_read_only_container() -> None:
    container = gateway_container()
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    pod = resource("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


def test_termination_leaves_the_gateway_its_whole_shutdown_timeout() -> None:
    pod = resource("Deployment")["spec"]["template"]["spec"]
    shutdown = float(resource("ConfigMap")["data"]["POLYGRAPH_SHUTDOWN_TIMEOUT_S"])
    pause = gateway_container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + shutdown


def test_settings_come_from_the_config_map_and_the_secret() -> None:
    sources = gateway_container()["envFrom"]
    assert {"configMapRef": {"name": "polygraph"}} in sources
    assert {"secretRef": {"name": "polygraph"}} in sources
    secret_keys = resource("Secret")["stringData"].keys()
    assert {
        "POLYGRAPH_POSTGRES_DSN",
        "POLYGRAPH_REDIS_URL",
        "POLYGRAPH_NEO4J_PASSWORD",
        "POLYGRAPH_PROMETHEUS_TOKEN",
    } <= secret_keys
    # Nothing secret in the ConfigMap.
    assert not any(
        word in key
        for key in resource("ConfigMap")["data"]
        for word in ("DSN", "PASSWORD", "URL", "TOKEN")
    )


def test_service_autoscaler_and_budget_select_the_deployment() -> None:
    labels = resource("Deployment")["spec"]["template"]["metadata"]["labels"]
    for selector in (
        resource("Service")["spec"]["selector"],
        resource("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    target = resource("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "polygraph")
    assert resource("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
