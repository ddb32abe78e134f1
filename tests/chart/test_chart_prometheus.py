"""The bundled Prometheus's configuration: `promtool check config` accepts it, and its
relabelling (evaluated here on the pods the chart and the operator create) scrapes exactly
the operator, the shards and the routers, with the same target labels the ServiceMonitor gives."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from gamefleet_operator.render import render
from gamefleet_operator.spec import Fleet

from .helm import FULLNAME, NAMESPACE, VALUE_SETS, find, rendered

WITH_CONFIG = [name for name in VALUE_SETS if VALUE_SETS[name].get("prometheus", {}).get("enabled", True)]


def prometheus_config(values: str) -> dict[str, Any]:
    return yaml.safe_load(
        find(rendered(values), "ConfigMap", f"{FULLNAME}-prometheus")["data"]["prometheus.yml"]
    )


# kubernetes_sd_config as Prometheus documents it (the keys the chart may use).
KUBERNETES_SD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["role"],
    "properties": {
        "role": {"enum": ["node", "service", "pod", "endpoints", "endpointslice", "ingress"]},
        "namespaces": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "own_namespace": {"type": "boolean"},
                "names": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
            },
        },
    },
}


def promtool_check(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check config`. Debian's promtool (2.42) is built without Kubernetes service
    discovery, so each kubernetes_sd_configs block is checked against KUBERNETES_SD here and
    handed to promtool as a static target: promtool still checks everything else (globals,
    jobs, every relabel rule)."""
    config = copy.deepcopy(config)
    for job in config["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", []):
            jsonschema.Draft202012Validator(KUBERNETES_SD).validate(sd)
            job["static_configs"] = [{"targets": ["127.0.0.1:9100"]}]
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (.ci/run does)"
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("values", WITH_CONFIG)
def test_promtool_accepts_the_rendered_config(values: str, tmp_path: Path) -> None:
    done = promtool_check(prometheus_config(values), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_would_refuse_a_broken_config(tmp_path: Path) -> None:
    config = prometheus_config("default")
    config["scrape_configs"][1]["relabel_configs"][0]["action"] = "kepp"
    assert promtool_check(config, tmp_path).returncode != 0
    config = prometheus_config("default")
    config["scrape_configs"][1]["kubernetes_sd_configs"][0]["role"] = "pods"
    with pytest.raises(jsonschema.ValidationError):
        promtool_check(config, tmp_path)


def relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus relabelling (the keep and replace actions the chart uses): the target's labels,
    or None when it is dropped."""
    labels = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "replace" and match:
            new = match.expand(rule.get("replacement", "$1").replace("$1", r"\1"))
            labels[rule["target_label"]] = new
            if not new:
                del labels[rule["target_label"]]
        assert action in ("keep", "replace"), action
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def targets(pod_template: dict[str, Any], name: str, namespace: str) -> list[dict[str, Any]]:
    """What kubernetes_sd role=pod discovers for a running pod: one target per container port."""
    sanitize = lambda key: re.sub(r"[^a-zA-Z0-9_]", "_", key)  # noqa: E731
    meta = {
        f"__meta_kubernetes_pod_label_{sanitize(k)}": v for k, v in pod_template["metadata"]["labels"].items()
    }
    meta |= {"__meta_kubernetes_pod_phase": "Running", "__meta_kubernetes_namespace": namespace}
    meta |= {"__meta_kubernetes_pod_name": name}
    return [
        meta | {"__meta_kubernetes_pod_container_port_name": port.get("name", "")}
        for container in pod_template["spec"]["containers"]
        for port in container.get("ports", [])
    ]


def scraped(values: str) -> dict[str, list[dict[str, str]]]:
    """workload name -> the targets the bundled Prometheus keeps of its pod."""
    objects = rendered(values)
    rules = prometheus_config(values)["scrape_configs"][1]["relabel_configs"]
    fleet = next(o for o in objects if o["kind"] == "GameFleet")
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job")]
    workloads += [c for c in render(Fleet.from_body(fleet)) if c["kind"] in ("Deployment", "StatefulSet")]
    found = {}
    for workload in workloads:
        name, namespace = workload["metadata"]["name"], workload["metadata"]["namespace"]
        kept = [relabel(t, rules) for t in targets(workload["spec"]["template"], f"{name}-0", namespace)]
        found[name] = [t for t in kept if t is not None]
    return found


def test_prometheus_scrapes_the_operator_shards_and_routers_only() -> None:
    found = scraped("fleet-autoscaled")
    pod = lambda name: {"namespace": NAMESPACE, "pod": f"{name}-0"}  # noqa: E731
    assert found.pop(f"{FULLNAME}-operator") == [
        {"job": "gamefleet-operator", "component": "operator", **pod(f"{FULLNAME}-operator")}
    ]
    assert found.pop("trainers-shard") == [
        {"job": "gamefleet", "component": "shard", "fleet": "trainers", **pod("trainers-shard")}
    ]
    assert found.pop("trainers-router") == [
        {"job": "gamefleet", "component": "router", "fleet": "trainers", **pod("trainers-router")}
    ]
    assert {"trainers-redis", f"{FULLNAME}-prometheus", f"{FULLNAME}-grafana"} <= set(found)
    assert all(kept == [] for kept in found.values()), found


def test_pod_discovery_is_limited_to_the_namespaces_given() -> None:
    everywhere = prometheus_config("default")["scrape_configs"][1]["kubernetes_sd_configs"]
    assert everywhere == [{"role": "pod"}]
    limited = prometheus_config("fleet-autoscaled")["scrape_configs"][1]["kubernetes_sd_configs"]
    assert limited == [{"role": "pod", "namespaces": {"names": ["research", NAMESPACE]}}]


def test_service_monitor_gives_the_same_job_and_target_labels() -> None:
    monitor = find(rendered("external"), "ServiceMonitor", f"{FULLNAME}-metrics")
    rules = prometheus_config("default")["scrape_configs"][1]["relabel_configs"]
    bundled = {(tuple(r["source_labels"]), r["target_label"]) for r in rules if "target_label" in r}
    endpoint = monitor["spec"]["endpoints"][0]
    given = {(tuple(r["sourceLabels"]), r["targetLabel"]) for r in endpoint["relabelings"]}
    assert given <= bundled
    assert {target for _, target in bundled - given} == {"job", "namespace", "pod"}  # the operator sets these
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"  # job = the same label as bundled
    assert endpoint["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchExpressions"][0]["values"] == ["gamefleet", "gamefleet-operator"]
