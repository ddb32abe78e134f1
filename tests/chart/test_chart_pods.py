"""Every pod the chart renders, in every value set, as the cluster would take it: what it names
is there (no pod waiting forever on a ConfigMap or Secret that was never rendered), PodSecurity
"restricted" admits it (the operator's pods for the chart's fleet too), each container has
requests and a memory limit, and only pods that call the API server mount a token. Plus: the
same values render the same bytes (GitOps tools diff every render)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from gamefleet_operator.render import render
from gamefleet_operator.spec import Fleet

from .helm import CHART, FULLNAME, NAMESPACE, RELEASE, VALUE_SETS, find, helm, rendered, user_secrets
from .pods import Ref, containers, dangling, pod_templates, restricted_violations


def created_by_hooks(objects: tuple[dict[str, Any], ...]) -> list[Ref]:
    """The Secrets the chart's create-secret hook Jobs make in the cluster: SECRET_NAME with the
    key SECRET_KEY (test_chart_grafana_admin runs the Job's command against an API server)."""
    made = []
    for o in objects:
        if o["kind"] == "Job":
            for container in o["spec"]["template"]["spec"]["containers"]:
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                if "SECRET_NAME" in env:
                    made.append(Ref("Secret", env["SECRET_NAME"], env["SECRET_KEY"]))
    return made


def provided(name: str) -> list[Ref]:
    """What a value set's pods may name besides the rendered objects."""
    refs = [Ref("Secret", secret, key) for secret, key in user_secrets(VALUE_SETS[name])]
    return refs + created_by_hooks(rendered(name))


@pytest.mark.parametrize("name", VALUE_SETS)
def test_everything_a_pod_names_is_rendered(name: str) -> None:
    """volumes (configMap, secret, projected, persistentVolumeClaim, and the keys of their items
    and subPath mounts), envFrom, env valueFrom, imagePullSecrets, serviceAccountName."""
    assert dangling(rendered(name), provided(name)) == []


def test_grafana_without_dashboards_neither_mounts_nor_provisions_them() -> None:
    objects = rendered("grafana-without-dashboards")
    assert not [o for o in objects if o["metadata"]["name"] == f"{FULLNAME}-dashboards"]
    pod = find(objects, "Deployment", f"{FULLNAME}-grafana")["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["data", "tmp", "provisioning"]
    provisioning = find(objects, "ConfigMap", f"{FULLNAME}-grafana")["data"]
    assert set(provisioning) == {"datasources.yaml"}
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert not [m for m in mounts if "dashboards" in m]


def test_the_reference_check_finds_what_is_missing() -> None:
    objects = list(rendered("default"))
    grafana = copy.deepcopy(find(objects, "Deployment", f"{FULLNAME}-grafana"))
    pod = grafana["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "extra", "configMap": {"name": "nowhere", "optional": True}})
    pod["containers"][0]["envFrom"] = [{"secretRef": {"name": "no-secret"}}]
    pod["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": f"{FULLNAME}-grafana", "key": "no-key"}}}
    )
    pod["containers"][0]["volumeMounts"].append(
        {"name": "provisioning", "mountPath": "/x", "subPath": "missing.yaml"}
    )
    pod["volumes"].append({"name": "claim", "persistentVolumeClaim": {"claimName": "no-claim"}})
    pod["serviceAccountName"] = "no-account"
    objects = [o for o in objects if o is not find(objects, "Deployment", f"{FULLNAME}-grafana")]
    found = dangling([*objects, grafana], provided("default"))
    assert len(found) == 6, found
    for what in (
        "ConfigMap/nowhere",
        "Secret/no-secret",
        "'no-key'",
        "'missing.yaml'",
        "no-claim",
        "no-account",
    ):
        assert [f for f in found if what in f], what


def fleet_pods(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The operator's children of the chart's fleet (shards, routers, managed Redis)."""
    return [c for o in objects if o["kind"] == "GameFleet" for c in render(Fleet.from_body(o))]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_pod_is_admitted_by_pod_security_restricted(name: str) -> None:
    objects = rendered(name)
    pods = [*pod_templates(objects), *pod_templates(fleet_pods(objects))]
    assert pods
    assert {where: found for where, meta, pod in pods if (found := restricted_violations(pod, meta))} == {}


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "Escalation"),
        (lambda p: p["containers"][0]["securityContext"].pop("capabilities"), "drop ALL"),
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p: p["containers"][0]["ports"][0].update(hostPort=3000), "hostPort"),
    ],
    ids=["seccomp", "non-root", "escalation", "capabilities", "privileged", "host-network", "host-path",
         "host-port"],
)  # fmt: skip
def test_the_restricted_check_refuses_what_podsecurity_would(change: Any, refusal: str) -> None:
    pod = copy.deepcopy(
        find(rendered("default"), "Deployment", f"{FULLNAME}-grafana")["spec"]["template"]["spec"]
    )
    assert restricted_violations(pod) == []
    change(pod)
    assert [f for f in restricted_violations(pod) if refusal in f]


def quantity(value: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(value)
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * factor
    return float(text)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_chart_container_has_requests_and_a_memory_limit(name: str) -> None:
    """CPU and memory requests (scheduling) and a memory limit (a leak stops at its pod) on every
    container the chart renders. No CPU limit: a busy Prometheus or load test is not throttled
    while the node has CPU to spare; its request is what it is sure of."""
    seen = 0
    for where, _, pod in pod_templates(rendered(name)):
        for container in containers(pod):
            seen += 1
            resources = container.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            assert {"cpu", "memory"} <= set(requests), f"{where} {container['name']}: {resources}"
            assert "memory" in limits, f"{where} {container['name']}: {resources}"
            assert quantity(limits["memory"]) >= quantity(requests["memory"]), f"{where} {container['name']}"
    assert seen


@pytest.mark.parametrize("name", VALUE_SETS)
def test_only_pods_that_call_the_api_server_mount_a_token(name: str) -> None:
    """A pod's token is its service account's rights: the pods bound to a role (the operator,
    Prometheus's pod discovery, the hooks) mount one; Grafana, Jaeger, the load test and the
    `helm test` pod run under the namespace's default account and mount none."""
    objects = rendered(name)
    bound = {
        s["name"]
        for o in objects
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
        for s in o.get("subjects", [])
        if s["kind"] == "ServiceAccount" and s.get("namespace", NAMESPACE) == NAMESPACE
    }
    for where, _, pod in pod_templates(objects):
        account = pod.get("serviceAccountName", "default")
        if account in bound:
            assert pod.get("automountServiceAccountToken", True) is True, where
        else:
            assert pod.get("automountServiceAccountToken") is False, where


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_same_values_render_the_same_bytes(name: str) -> None:
    args = ("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds")
    first, second = helm(*args, values=VALUE_SETS[name]), helm(*args, values=VALUE_SETS[name])
    assert first == second
