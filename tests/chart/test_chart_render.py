"""`helm template` over the value sets: every object valid offline (kubernetes-validate strict
for built-in kinds, the CRD's schema and CEL rules for the GameFleet, a ServiceMonitor
schema), and each value set renders what it promises."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from gamefleet_operator.render import GRPC_PORT, render
from gamefleet_operator.spec import SPEC, Fleet, with_defaults
from k8s_operator.netpol import Pod, admitted, pod_of
from k8s_operator.test_operator_crd import SCHEMA, cel_violations
from k8s_operator.test_operator_manifests import strict

from .helm import (
    AUTOSCALED,
    EXTERNAL_JAEGER,
    EXTERNAL_OTLP,
    EXTERNAL_PROMETHEUS,
    FULLNAME,
    NAMESPACE,
    ROOT,
    VALUE_SETS,
    HelmFailed,
    find,
    kinds,
    rendered,
    template,
)

# The fields of monitoring.coreos.com/v1 ServiceMonitor the chart uses (prometheus-operator's API
# reference); no schema of that CRD is available offline, so this one refuses anything else.
STRING_LIST = {"type": "array", "items": {"type": "string"}}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "matchExpressions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["key", "operator"],
                                "properties": {
                                    "key": {"type": "string"},
                                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                    "values": STRING_LIST,
                                },
                            },
                        },
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": STRING_LIST},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)(ms|s|m|h))+)$"},
                            "relabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "sourceLabels": STRING_LIST,
                                        "targetLabel": {"type": "string"},
                                        "regex": {"type": "string"},
                                        "action": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
# cert-manager's Certificate (cert-manager.io/v1), the fields the chart sets; no schema of that CRD
# is available offline either.
USAGES = ["server auth", "client auth", "digital signature", "key encipherment"]
CERTIFICATE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName", "dnsNames", "issuerRef"],
            "properties": {
                "secretName": {"type": "string"},
                "duration": {"type": "string"},
                "renewBefore": {"type": "string"},
                "privateKey": {"type": "object"},
                "usages": {"type": "array", "items": {"enum": USAGES}},
                "dnsNames": STRING_LIST,
                "issuerRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                        "group": {"const": "cert-manager.io"},
                    },
                },
            },
        },
    },
}
CASES = [(name, i) for name in VALUE_SETS for i in range(len(rendered(name)))]


def validate(manifest: dict[str, Any]) -> None:
    if manifest["kind"] == "GameFleet":
        spec = with_defaults(SPEC, manifest["spec"])
        jsonschema.Draft202012Validator(SCHEMA).validate(manifest | {"spec": spec})
        assert cel_violations(manifest) == []
        for child in render(Fleet.from_body(manifest)):  # what the operator makes of it is valid too
            if child["kind"] != "ServiceMonitor":
                strict(child)
    elif manifest["kind"] == "Certificate":
        jsonschema.Draft202012Validator(CERTIFICATE).validate(manifest)
        strict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest["metadata"]})  # metadata
    elif manifest["kind"] == "ServiceMonitor":
        jsonschema.Draft202012Validator(SERVICE_MONITOR).validate(manifest)
        strict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest["metadata"]})  # metadata
    else:
        strict(manifest)


@pytest.mark.parametrize(("values", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_every_rendered_object_is_valid(values: str, index: int) -> None:
    validate(rendered(values)[index])


def _broken(values: str, kind: str, name: str, path: list[str | int], key: str, value: Any) -> dict[str, Any]:
    manifest = yaml.safe_load(yaml.safe_dump(find(rendered(values), kind, name)))  # a copy
    node = manifest
    for step in path:
        node = node[step]
    node[key] = value
    return manifest


@pytest.mark.parametrize(
    ("values", "kind", "name", "path", "key", "value"),
    [
        ("default", "Deployment", f"{FULLNAME}-operator", ["spec", "template", "spec", "containers", 0],
         "livenesProbe", {}),
        ("loadtest", "GameFleet", "gamefleet", ["spec"], "shards", 0),
        ("loadtest", "GameFleet", "gamefleet", ["spec"], "autoscaling", {"enabled": True}),  # CEL: no Redis
        ("external", "ServiceMonitor", f"{FULLNAME}-metrics", ["spec", "endpoints", 0], "intervall", "30s"),
    ],
    ids=["deployment-typo", "fleet-out-of-bounds", "fleet-cel-rule", "servicemonitor-typo"],
)  # fmt: skip
def test_the_validation_refuses_what_kubernetes_would(
    values: str, kind: str, name: str, path: list[str | int], key: str, value: Any
) -> None:
    """The checks above can fail."""
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError, AssertionError)):
        validate(_broken(values, kind, name, path, key, value))


def test_the_crds_are_installed_as_in_manifests() -> None:
    crds = [o for o in rendered("default") if o["kind"] == "CustomResourceDefinition"]
    manifests = [
        *yaml.safe_load_all((ROOT / "manifests" / "crd.yaml").read_text()),
        *yaml.safe_load_all((ROOT / "manifests" / "peering.yaml").read_text()),
    ]
    key = lambda crd: crd["metadata"]["name"]  # noqa: E731
    assert sorted(crds, key=key) == sorted(manifests, key=key)


def test_default_install_bundles_prometheus_grafana_and_jaeger_without_a_fleet() -> None:
    objects = kinds(rendered("default"))
    for part in ("operator", "prometheus", "grafana", "jaeger"):
        assert ("Deployment", f"{FULLNAME}-{part}") in objects
        assert ("Service", f"{FULLNAME}-{part}") in objects
    assert not {k for k, _ in objects} & {"GameFleet", "ServiceMonitor", "Pod"}
    assert {n for k, n in objects if k == "Job"} == {f"{FULLNAME}-create-grafana-admin"}  # its password


def test_everything_off_installs_only_the_operator_and_points_at_external_endpoints() -> None:
    objects = rendered("external")
    deployments = {n for k, n in kinds(objects) if k == "Deployment"}
    assert deployments == {f"{FULLNAME}-operator"}
    monitor = find(objects, "ServiceMonitor", f"{FULLNAME}-metrics")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    fleet = find(objects, "GameFleet", "gamefleet")
    assert fleet["spec"]["telemetry"]["tracing"]["otlpEndpoint"] == EXTERNAL_OTLP
    assert (
        fleet["spec"]["image"]
        == find(objects, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
    )


def test_grafana_provisions_the_given_datasources_when_the_bundled_ones_are_off() -> None:
    config = find(rendered("external-grafana-datasources"), "ConfigMap", f"{FULLNAME}-grafana")
    sources = {d["uid"]: d["url"] for d in yaml.safe_load(config["data"]["datasources.yaml"])["datasources"]}
    assert sources == {"prometheus": EXTERNAL_PROMETHEUS, "jaeger": EXTERNAL_JAEGER}
    bundled = find(rendered("default"), "ConfigMap", f"{FULLNAME}-grafana")
    sources = {d["uid"]: d["url"] for d in yaml.safe_load(bundled["data"]["datasources.yaml"])["datasources"]}
    assert sources == {
        "prometheus": f"http://{FULLNAME}-prometheus.{NAMESPACE}.svc:9090",
        "jaeger": f"http://{FULLNAME}-jaeger.{NAMESPACE}.svc:16686",
    }


def test_grafana_mounts_what_it_provisions() -> None:
    objects = rendered("default")
    pod = find(objects, "Deployment", f"{FULLNAME}-grafana")["spec"]["template"]["spec"]
    provider = yaml.safe_load(find(objects, "ConfigMap", f"{FULLNAME}-grafana")["data"]["dashboards.yaml"])
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    dashboards = mounts[provider["providers"][0]["options"]["path"]]
    volume = next(v for v in pod["volumes"] if v["name"] == dashboards["name"])
    assert volume["configMap"] == {"name": f"{FULLNAME}-dashboards"}  # rendered: test_chart_pods
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-grafana-admin",
        "key": "admin-password",
    }


def test_the_fleet_gets_the_values_spec_with_the_charts_image_and_jaeger() -> None:
    fleet = find(rendered("fleet-autoscaled"), "GameFleet", "trainers")
    assert fleet["metadata"]["namespace"] == NAMESPACE
    spec = fleet["spec"]
    assert spec["autoscaling"] == AUTOSCALED["autoscaling"] and spec["redis"] == AUTOSCALED["redis"]
    assert spec["image"] == "ghcr.io/gamefleet/gamefleet:0.1.0"
    assert spec["telemetry"]["tracing"]["otlpEndpoint"] == f"http://{FULLNAME}-jaeger.{NAMESPACE}.svc:4317"
    jaeger = find(rendered("fleet-autoscaled"), "Service", f"{FULLNAME}-jaeger")
    assert {p["name"]: p["port"] for p in jaeger["spec"]["ports"]} == {
        "otlp-grpc": 4317,
        "otlp-http": 4318,
        "ui": 16686,
    }


def test_operator_watches_the_namespaces_it_is_given() -> None:
    deployment = find(rendered("fleet-autoscaled"), "Deployment", f"{FULLNAME}-operator")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        f"--namespace={NAMESPACE}",
        "--namespace=research",
    ]
    assert "--verbose" in args


def test_helm_test_hook_probes_the_fleet_service() -> None:
    assert not [o for o in rendered("default") if o["kind"] == "Pod"]  # no fleet: nothing to probe
    pod = find(rendered("loadtest"), "Pod", f"{FULLNAME}-test-fleet-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["gamefleet", "health"]
    assert container["args"][0] == f"gamefleet.{NAMESPACE}.svc:50051"


def test_loadtest_job_waits_for_the_fleet_then_loads_it() -> None:
    job = find(rendered("loadtest"), "Job", f"{FULLNAME}-loadtest-1")
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"] == ["gamefleet", "health"]
    assert pod["initContainers"][0]["args"][0] == f"gamefleet.{NAMESPACE}.svc:50051"
    container = pod["containers"][0]
    assert container["command"] == ["gamefleet", "loadtest"]
    assert f"--address=gamefleet.{NAMESPACE}.svc:50051" in container["args"]
    assert {"--agents=8", "--duration=120", "--target-actions-per-s=50000", "--json=-"} <= set(
        container["args"]
    )
    assert job["spec"]["backoffLimit"] == 0
    other = find(rendered("external-grafana-datasources"), "Job", f"{FULLNAME}-loadtest-1")
    assert "--address=fleet.rl.svc:50051" in other["spec"]["template"]["spec"]["containers"][0]["args"]


def test_a_release_named_gamefleet_and_its_fleet_share_no_object_name() -> None:
    """The README's `helm install gamefleet` with the default fleet (also named gamefleet) and
    every optional object: the chart's objects and the operator's children never collide."""
    values = {"fleet": {"enabled": True, "spec": {"redis": {"managed": {"enabled": True}}}}}
    values |= {"serviceMonitor": {"enabled": True}, "loadtest": {"enabled": True}}
    objects = template(values, release="gamefleet")
    fleet = next(o for o in objects if o["kind"] == "GameFleet")
    fleet["spec"]["telemetry"] = {"metrics": {"serviceMonitor": True}}
    children = render(Fleet.from_body(fleet))
    ours = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert len(ours) == len(objects)
    assert ours.isdisjoint((c["kind"], c["metadata"]["name"]) for c in children)


def test_uninstall_deletes_the_fleet_first_with_a_pre_delete_hook() -> None:
    """Helm deletes custom resources last: without the hook the operator would be gone before
    the fleet's cleanup finalizer ran (the hook's command is tested against the operator in
    tests/k8s_operator/test_operator_delete_fleet.py)."""
    assert not [o for o in rendered("default") if o["metadata"]["name"] == f"{FULLNAME}-delete-fleet"]
    objects = rendered("fleet-autoscaled")
    hook = {
        k: find(objects, k, f"{FULLNAME}-delete-fleet")
        for k in ("ServiceAccount", "Role", "RoleBinding", "Job")
    }
    for kind, manifest in hook.items():
        assert manifest["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete", kind
    weight = {k: int(m["metadata"]["annotations"]["helm.sh/hook-weight"]) for k, m in hook.items()}
    assert weight["Job"] > max(weight["ServiceAccount"], weight["Role"], weight["RoleBinding"])
    pod = hook["Job"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][:2] == ["trainers", f"--namespace={NAMESPACE}"]
    assert hook["RoleBinding"]["subjects"][0]["name"] == pod["serviceAccountName"]
    assert hook["RoleBinding"]["roleRef"]["name"] == hook["Role"]["metadata"]["name"]
    assert hook["Role"]["rules"][0]["resourceNames"] == ["trainers"]


def test_the_charts_fleet_clients_get_through_its_network_policies() -> None:
    """The `helm test` pod and the load test call the chart's fleet: they carry the client label
    its NetworkPolicies admit (the operator's default), and a pod without it would not get in."""
    objects = rendered("loadtest")
    children = render(Fleet.from_body(find(objects, "GameFleet", "gamefleet")))
    policies = [c for c in children if c["kind"] == "NetworkPolicy"]
    assert policies
    router = pod_of(children, "Deployment", "gamefleet-router")
    shard = pod_of(children, "StatefulSet", "gamefleet-shard")
    test_pod = find(objects, "Pod", f"{FULLNAME}-test-fleet-health")
    loadtest = find(objects, "Job", f"{FULLNAME}-loadtest-1")["spec"]["template"]
    for client in (test_pod, loadtest):
        pod = Pod(NAMESPACE, client["metadata"]["labels"])
        assert admitted(policies, pod, router, GRPC_PORT) and admitted(policies, pod, shard, GRPC_PORT)
        unlabelled = {k: v for k, v in client["metadata"]["labels"].items() if k != "gamefleet.dev/client"}
        assert not admitted(policies, Pod(NAMESPACE, unlabelled), router, GRPC_PORT)
    other = find(rendered("external-grafana-datasources"), "Job", f"{FULLNAME}-loadtest-1")  # another fleet's
    assert "gamefleet.dev/client" not in other["spec"]["template"]["metadata"]["labels"]


def test_cert_manager_issues_the_fleets_certificate_into_the_secret_its_spec_names() -> None:
    objects = rendered("fleet-tls")
    certificate = find(objects, "Certificate", "gamefleet-tls")
    fleet = find(objects, "GameFleet", "gamefleet")
    assert (
        fleet["spec"]["security"]["tls"]["secretName"] == certificate["spec"]["secretName"] == "gamefleet-tls"
    )
    names = certificate["spec"]["dnsNames"]
    assert f"gamefleet.{NAMESPACE}.svc" in names  # the router Service trainers dial
    assert f"gamefleet-shards.{NAMESPACE}.svc" in names  # the name the fleet checks shards against
    assert {"server auth", "client auth"} <= set(certificate["spec"]["usages"])
    assert certificate["spec"]["issuerRef"] == {
        "name": "fleet-ca",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    assert not [o for o in rendered("external") if o["kind"] == "Certificate"]  # off by default
    with pytest.raises(HelmFailed, match=r"fleet\.certManager\.issuerRef\.name"):
        template({"fleet": {"enabled": True, "certManager": {"enabled": True}}})
