"""The chart installs the operator as manifests/ does: the same RBAC rules, the same
Deployment (two replicas electing a leader, rolling, liveness probe, command, hardening), wired to its
ServiceAccount."""

from __future__ import annotations

from typing import Any

import yaml
from k8s_operator.harness import rbac_rules, role_rules

from .helm import FULLNAME, NAMESPACE, ROOT, find, rendered

MANIFEST = yaml.safe_load((ROOT / "manifests" / "operator.yaml").read_text())


def operator_deployment(values: str = "default") -> dict[str, Any]:
    return find(rendered(values), "Deployment", f"{FULLNAME}-operator")


def test_cluster_role_grants_exactly_what_manifests_rbac_grants() -> None:
    role = find(rendered("default"), "ClusterRole", f"{FULLNAME}-operator")
    assert role_rules(role) == rbac_rules()


def test_binding_ties_the_role_to_the_operators_service_account() -> None:
    binding = find(rendered("default"), "ClusterRoleBinding", f"{FULLNAME}-operator")
    pod = operator_deployment()["spec"]["template"]["spec"]
    assert binding["roleRef"]["name"] == f"{FULLNAME}-operator"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    find(rendered("default"), "ServiceAccount", pod["serviceAccountName"])


def test_deployment_matches_manifests_operator_yaml() -> None:
    chart, manifest = operator_deployment()["spec"], MANIFEST["spec"]
    assert chart["replicas"] == manifest["replicas"] == 2  # a leader (kopf peering) and a standby
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert chart["strategy"] == manifest["strategy"] == rolling
    pod, manifest_pod = chart["template"]["spec"], manifest["template"]["spec"]
    assert pod["securityContext"] == manifest_pod["securityContext"]
    ours, theirs = pod["containers"][0], manifest_pod["containers"][0]
    same = (
        "image",
        "command",
        "args",
        "env",
        "ports",
        "livenessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
    )
    assert {k: ours.get(k) for k in same} == {k: theirs.get(k) for k in same}
    assert chart["selector"]["matchLabels"].items() <= chart["template"]["metadata"]["labels"].items()


def test_metrics_service_selects_the_operator_pod() -> None:
    service = find(rendered("default"), "Service", f"{FULLNAME}-operator")
    labels = operator_deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics"}]
