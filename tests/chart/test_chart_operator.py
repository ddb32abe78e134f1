"""The chart installs the operator as manifests/ does: the same RBAC rules, the same
Deployment (two replicas electing a leader, rolling, liveness probe, command, hardening), wired to its
ServiceAccount."""

from __future__ import annotations

from typing import Any

import yaml
from k8s_operator.harness import NAMESPACED_RBAC, rbac_rules, role_rules

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


# --- the namespaced install: operator.namespaces ------------------------------------------------

NAMESPACED = "fleet-autoscaled"  # operator.namespaces: the release's and "research"
WATCHED = [NAMESPACE, "research"]
# What a ClusterRole must not grant in a namespaced install: any Secret, any write to a workload
SECRETS = {"secrets"}
WORKLOADS = {"pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs"}
WRITES = {"create", "update", "patch", "delete", "deletecollection", "*"}


def test_namespaced_install_has_a_role_per_watched_namespace_as_manifests_namespaced() -> None:
    objects = rendered(NAMESPACED)
    roles = [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == f"{FULLNAME}-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(WATCHED)
    for role in roles:
        assert role_rules(role) == rbac_rules(NAMESPACED_RBAC, "Role"), role["metadata"]["namespace"]
    account = operator_deployment(NAMESPACED)["spec"]["template"]["spec"]["serviceAccountName"]
    bindings = [
        o for o in objects if o["kind"] == "RoleBinding" and o["metadata"]["name"] == f"{FULLNAME}-operator"
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(WATCHED)
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": account,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    cluster_role = find(objects, "ClusterRole", f"{FULLNAME}-operator")
    assert role_rules(cluster_role) == rbac_rules(NAMESPACED_RBAC, "ClusterRole")


def dangerous_cluster_grants(objects: tuple[dict[str, Any], ...]) -> list[str]:
    """(ClusterRole, rule) pairs bound cluster-wide that grant Secrets or workload writes."""
    bound = {
        o["roleRef"]["name"]
        for o in objects
        if o["kind"] == "ClusterRoleBinding" and o["roleRef"]["kind"] == "ClusterRole"
    }
    found = []
    for role in (o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] in bound):
        for group, resource, verb in role_rules(role):
            plain = resource.split("/")[0]
            if plain in SECRETS | {"*"} or (plain in WORKLOADS and verb in WRITES) or group == "*":
                found.append(f"{role['metadata']['name']}: {group}/{resource} {verb}")
    return found


def test_namespaced_install_grants_no_secret_and_no_workload_cluster_wide() -> None:
    assert dangerous_cluster_grants(rendered(NAMESPACED)) == []
    # the check can fail: the cluster-wide install grants both through its ClusterRole
    found = dangerous_cluster_grants(rendered("default"))
    assert f"{FULLNAME}-operator: /secrets get" in found
    assert f"{FULLNAME}-operator: apps/statefulsets create" in found


def test_namespaced_operator_runs_with_the_namespaces_it_has_roles_in() -> None:
    args = operator_deployment(NAMESPACED)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a.removeprefix("--namespace=") for a in args if a.startswith("--namespace=")] == WATCHED
    assert not [
        a
        for a in operator_deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
        if "namespace" in a
    ]
    assert not [
        o
        for o in rendered("default")
        if o["kind"] in ("Role", "RoleBinding") and "operator" in o["metadata"]["name"]
    ]
