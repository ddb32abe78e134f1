"""manifests/ and everything render() emits pass kubernetes-validate's strict schemas (offline),
and the install (kustomization, operator Deployment, RBAC) is wired together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from gamefleet_operator.render import render
from gamefleet_operator.spec import Fleet

from .harness import rbac_rules

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
K8S = kubernetes_validate.latest_version()
# what `kubectl apply -f manifests/` reads: the directory's .json/.yaml/.yml files, not subdirectories
INSTALL = sorted(p for p in MANIFESTS.iterdir() if p.suffix in (".json", ".yaml", ".yml"))
EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))
EVERYTHING = {
    "image": "ghcr.io/gamefleet/gamefleet:0.1.0",
    "durability": {"mode": "log"},
    "redis": {"managed": {"enabled": True, "storageClassName": "ssd"}, "passwordSecretRef": {"name": "pw"}},
    "telemetry": {"metrics": {"serviceMonitor": True}, "tracing": {"otlpEndpoint": "http://otel:4317"}},
    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2, "memory": "2Gi"}},
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def strict(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S, strict=True)


@pytest.mark.parametrize("path", INSTALL, ids=lambda p: p.name)
def test_install_manifests_are_valid(path: Path) -> None:
    for manifest in documents(path):
        strict(manifest)


def rendered() -> list[tuple[str, dict[str, Any]]]:
    bodies = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    bodies.append({"metadata": {"name": "everything", "namespace": "games"}, "spec": EVERYTHING})
    return [
        (f"{b['metadata']['name']}/{m['kind']}/{m['metadata']['name']}", m)
        for b in bodies
        for m in render(Fleet.from_body(b))
    ]


@pytest.mark.parametrize(("child", "manifest"), rendered(), ids=[c for c, _ in rendered()])
def test_rendered_children_are_valid(child: str, manifest: dict[str, Any]) -> None:
    if manifest["kind"] == "ServiceMonitor":  # a prometheus-operator CRD: no built-in schema
        assert set(manifest["spec"]) == {"selector", "namespaceSelector", "endpoints"}
        return
    strict(manifest)


def test_strict_validation_refuses_unknown_fields() -> None:
    manifest = render(Fleet.from_body({"metadata": {"name": "f"}, "spec": {"image": "i"}}))[2]
    manifest["spec"]["replicaz"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        strict(manifest)


def test_apply_k_and_apply_f_install_the_same_manifests() -> None:
    """`kubectl apply -k manifests/` reads the extensionless Kustomization; `kubectl apply -f
    manifests/` the files INSTALL lists, each a Kubernetes object (test_install_manifests_are_valid):
    the two must agree."""
    kustomization = yaml.safe_load((MANIFESTS / "Kustomization").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in INSTALL)


def test_operator_replicas_elect_a_leader_and_have_a_liveness_probe() -> None:
    deployment = documents(MANIFESTS / "operator.yaml")[0]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--standalone" not in container["args"]  # kopf peering: one replica acts at a time
    assert container["env"] == [
        {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    peering = {d["metadata"]["name"] for d in documents(MANIFESTS / "peering.yaml")}
    assert peering == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    assert container["command"] == ["gamefleet", "operator"]
    assert "--liveness-port=8080" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert ports["healthz"] == 8080
    binding = next(d for d in documents(MANIFESTS / "rbac.yaml") if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    assert binding["subjects"][0]["namespace"] == deployment["metadata"]["namespace"]


def test_rbac_grants_exactly_what_the_operator_uses() -> None:
    """The kmock tests check every call is granted; this checks every grant has a caller."""
    crud = {"create", "patch"}
    expected = {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),  # kopf: resource discovery
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),  # kopf: namespace scanning with --namespace
        ("", "namespaces", "watch"),
        ("", "events", "create"),  # kopf.info / kopf.warn
        ("gamefleet.dev", "gamefleets", "list"),
        ("gamefleet.dev", "gamefleets", "watch"),
        ("gamefleet.dev", "gamefleets", "patch"),  # finalizer, kopf annotations, spec.shards
        ("gamefleet.dev", "gamefleets/status", "patch"),
        ("gamefleet.dev", "gamefleets/finalizers", "update"),  # ownerReferences.blockOwnerDeletion
        ("", "secrets", "get"),
        ("", "secrets", "create"),  # managed Redis: the generated password  # redis.passwordSecretRef
        # kopf peering: leader election (test_operator_peering.py; KopfPeering with --namespace)
        *(
            ("kopf.dev", r, v)
            for r in ("clusterkopfpeerings", "kopfpeerings")
            for v in ("create", "list", "watch", "patch")
        ),
        *(("", "configmaps", v) for v in crud),  # server-side apply creates or patches
        *(("policy", "poddisruptionbudgets", v) for v in crud),
        *(("apps", "deployments", v) for v in (*crud, "get")),  # ready routers
        # the optional children (managed Redis, ServiceMonitor, NetworkPolicies) are read and pruned
        # when dropped
        *(("", "services", v) for v in (*crud, "get", "delete")),
        *(("monitoring.coreos.com", "servicemonitors", v) for v in (*crud, "get", "delete")),
        *(("apps", "statefulsets", v) for v in (*crud, "get", "delete")),
        *(("networking.k8s.io", "networkpolicies", v) for v in (*crud, "get", "delete")),
    }
    assert rbac_rules() == expected


# --- the namespaced install (manifests/namespaced/) ------------------------------------------------

NAMESPACED = MANIFESTS / "namespaced"
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}


@pytest.mark.parametrize("path", sorted(NAMESPACED.glob("*.yaml")), ids=lambda p: p.name)
def test_namespaced_manifests_are_valid(path: Path) -> None:
    for manifest in documents(path):
        strict(manifest)


def test_namespaced_rbac_splits_the_cluster_wide_rules_by_scope() -> None:
    """A Role grants, in its namespace, every namespaced call the cluster-wide ClusterRole grants
    (the ClusterKopfPeering aside: one KopfPeering per watched namespace instead); the ClusterRole
    keeps only the reads of cluster-scoped kinds kopf makes, and nothing about Secrets or workloads."""
    path = NAMESPACED / "rbac.yaml"
    role, cluster_role = rbac_rules(path, "Role"), rbac_rules(path, "ClusterRole")
    everything = rbac_rules()
    assert role == {r for r in everything if r[1] not in CLUSTER_SCOPED}
    assert cluster_role == {r for r in everything if r[1] in CLUSTER_SCOPED - {"clusterkopfpeerings"}}
    assert {verb for _, _, verb in cluster_role} <= {"get", "list", "watch"}


def test_the_namespaced_operator_watches_the_namespaces_it_has_a_role_in() -> None:
    """manifests/namespaced/operator.yaml is ../operator.yaml with a --namespace per Role."""
    cluster_wide = documents(MANIFESTS / "operator.yaml")[0]
    deployment = documents(NAMESPACED / "operator.yaml")[0]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    watched = [a.removeprefix("--namespace=") for a in args if a.startswith("--namespace=")]
    cluster_wide["spec"]["template"]["spec"]["containers"][0]["args"] += [f"--namespace={n}" for n in watched]
    assert deployment == cluster_wide
    rbac = documents(NAMESPACED / "rbac.yaml")
    roles = [d for d in rbac if d["kind"] == "Role"]
    bindings = [d for d in rbac if d["kind"] == "RoleBinding"]
    assert sorted(d["metadata"]["namespace"] for d in roles) == sorted(watched) == ["games"]
    assert sorted(d["metadata"]["namespace"] for d in bindings) == sorted(watched)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    for binding in [*bindings, *(d for d in rbac if d["kind"] == "ClusterRoleBinding")]:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": deployment["metadata"]["namespace"]}
        ]
        kind = "Role" if binding["kind"] == "RoleBinding" else "ClusterRole"
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": account}
    assert [d for d in rbac if d["kind"] == "ServiceAccount"] == [
        d for d in documents(MANIFESTS / "rbac.yaml") if d["kind"] == "ServiceAccount"
    ]
