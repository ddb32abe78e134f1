"""`helm lint --strict` on every value set, and values.schema.json: strict (bad values make
`helm template` fail naming the value, rendering nothing), documented, and its fleet.spec
generated from the CRD."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .fleet_spec_schema import VALUES_SCHEMA, fleet_spec_schema
from .helm import CHART, NAMESPACE, VALUE_SETS, HelmFailed, helm, template


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_strict_passes(name: str) -> None:
    out = helm("lint", "--strict", str(CHART), values=VALUE_SETS[name])
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"operator": {"syncIntervalSeconds": 0}}, "/operator/syncIntervalSeconds"),
        ({"operator": {"namespaces": ["Not_A_Namespace"]}}, "/operator/namespaces/0"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"fleet": {"name": "a" * 41}}, "/fleet/name"),
        ({"fleet": {"deleteTimeoutSeconds": 1}}, "/fleet/deleteTimeoutSeconds"),
        ({"fleet": {"spec": {"shard": 3}}}, "additional properties 'shard' not allowed"),
        ({"fleet": {"spec": {"shards": 0}}}, "/fleet/spec/shards"),
        ({"fleet": {"spec": {"durability": {"mode": "sometimes"}}}}, "/fleet/spec/durability/mode"),
        ({"fleet": {"spec": {"resources": {"requests": {"cpu": "lots"}}}}}, "/fleet/spec/resources"),
        ({"serviceMonitor": {"interval": "soon"}}, "/serviceMonitor/interval"),
        ({"serviceMonitor": {"labels": {"release": 1}}}, "/serviceMonitor/labels/release"),
        ({"prometheus": {"retention": "forever"}}, "/prometheus/retention"),
        ({"prometheus": {"retentionSize": "6Gi"}}, "/prometheus/retentionSize"),
        ({"prometheus": {"resources": {"requests": {"memory": "-1Gi"}}}}, "/prometheus/resources"),
        ({"grafana": {"prometheusUrl": "prometheus:9090"}}, "/grafana/prometheusUrl"),
        ({"grafana": {"admin": {"existingSecret": "Grafana_Admin"}}}, "/grafana/admin/existingSecret"),
        ({"grafana": {"admin": {"passwordKey": ""}}}, "/grafana/admin/passwordKey"),
        ({"grafana": {"admin": {"existingSecrets": "mine"}}}, "additional properties 'existingSecrets' not"),
        ({"jaeger": {"enabled": "yes"}}, "/jaeger/enabled"),
        ({"tracing": {"otlpEndpoint": "otel:4317"}}, "/tracing/otlpEndpoint"),
        ({"test": {"address": "fleet"}}, "/test/address"),
        ({"loadtest": {"agents": 0}}, "/loadtest/agents"),
        ({"loadtest": {"durationSeconds": 0}}, "/loadtest/durationSeconds"),
        ({"loadtest": {"players": 9}}, "/loadtest/players"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_bad_values_are_refused_by_the_schema(values: dict[str, Any], refusal: str) -> None:
    with pytest.raises(HelmFailed) as failed:
        template(values)
    assert "values don't meet the specifications of the schema" in str(failed.value)
    assert refusal in str(failed.value)


def test_a_load_test_without_a_fleet_to_load_is_refused() -> None:
    with pytest.raises(HelmFailed, match=r"loadtest\.enabled needs a fleet to load"):
        template({"loadtest": {"enabled": True}})


def test_a_fleet_the_namespaced_operator_would_not_watch_is_refused() -> None:
    """operator.namespaces without the release namespace: the chart's fleet would never run (and
    its pre-delete hook would wait for a cleanup that never comes)."""
    values = {"fleet": {"enabled": True}, "operator": {"namespaces": ["research"]}}
    with pytest.raises(HelmFailed, match=r"operator\.namespaces \(research\) leaves out"):
        template(values)
    assert template(values | {"operator": {"namespaces": ["research", NAMESPACE]}})


def test_values_yaml_defaults_pass_their_own_schema() -> None:
    assert template({})  # helm checks values.yaml against values.schema.json on every render


def test_fleet_spec_schema_is_generated_from_the_crd() -> None:
    schema = json.loads(VALUES_SCHEMA.read_text())
    assert schema["properties"]["fleet"]["properties"]["spec"] == fleet_spec_schema(), (
        "the CRD changed: run .venv/bin/python -m tests.chart.fleet_spec_schema"
    )


def undocumented(node: dict[str, Any], definitions: dict[str, Any], path: str = "") -> list[str]:
    """Paths of chart values without a description (theirs or their $ref's). fleet.spec is
    the CRD's, documented in operator/README.md, and only its root is required to say so."""
    missing = []
    for name, child in node.get("properties", {}).items():
        target = definitions.get(child.get("$ref", "").removeprefix("#/definitions/"), {})
        if "description" not in child and "description" not in target:
            missing.append(f"{path}.{name}")
        if f"{path}.{name}" != ".fleet.spec":
            missing += undocumented(child, definitions, f"{path}.{name}")
    return missing


def test_every_value_is_documented_and_no_object_takes_unknown_keys() -> None:
    schema = json.loads(VALUES_SCHEMA.read_text())
    assert undocumented(schema, schema["definitions"]) == []

    def loose(node: dict[str, Any], path: str) -> list[str]:
        found = [path] if "properties" in node and node.get("additionalProperties") is not False else []
        for name, child in node.get("properties", {}).items():
            found += loose(child, f"{path}.{name}")
        return found

    assert loose(schema, "") == []
