"""Running the real helm on charts/gamefleet, and the value sets the chart tests render.

helm is the static binary .ci/get-helm unpacks from an npm package ($HELM overrides it). When
it is missing the chart tests fail with the command that installs it: they never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gamefleet"
RELEASE, NAMESPACE = "demo", "games"
FULLNAME = f"{RELEASE}-gamefleet"

EXTERNAL_PROMETHEUS = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
EXTERNAL_JAEGER = "http://jaeger-query.observability.svc:16686"
EXTERNAL_OTLP = "http://otel-collector.observability.svc:4317"
AUTOSCALED = {
    "shards": 3,
    "durability": {"mode": "snapshot"},
    "redis": {"managed": {"enabled": True, "storage": "2Gi"}},
    "autoscaling": {"enabled": True, "minShards": 2, "maxShards": 12, "targetUtilisation": 0.6},
    "game": {"capacityPerShard": 8192},
}
# name -> values: what a user would pass with -f
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "external": {  # every bundled part off: an existing kube-prometheus-stack, Grafana, collector
        "prometheus": {"enabled": False},
        "grafana": {"enabled": False},
        "jaeger": {"enabled": False},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "tracing": {"otlpEndpoint": EXTERNAL_OTLP},
        "fleet": {"enabled": True},
    },
    "fleet-autoscaled": {
        "fleet": {"enabled": True, "name": "trainers", "spec": AUTOSCALED},
        "operator": {"namespaces": [NAMESPACE, "research"], "verbose": True},
        "prometheus": {"namespaces": ["research"]},
        "grafana": {"anonymousViewer": True, "adminPassword": "s3cret"},
    },
    "loadtest": {
        "fleet": {"enabled": True},
        "loadtest": {"enabled": True, "agents": 8, "durationSeconds": 120, "targetActionsPerSecond": 50000},
    },
    "external-grafana-datasources": {
        "prometheus": {"enabled": False},
        "jaeger": {"enabled": False},
        "grafana": {"prometheusUrl": EXTERNAL_PROMETHEUS, "jaegerUrl": EXTERNAL_JAEGER},
        "loadtest": {"enabled": True, "address": "fleet.rl.svc:50051"},
    },
    "grafana-without-dashboards": {"dashboards": {"enabled": False}},
    "fleet-tls": {  # cert-manager issues the fleet's certificate
        "fleet": {"enabled": True, "certManager": {"enabled": True, "issuerRef": {"name": "fleet-ca"}}},
    },
    "user-secrets": {  # what a GitOps install names instead of passing: the user's own Secrets
        "grafana": {"admin": {"existingSecret": "grafana-admin", "passwordKey": "password"}},
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "fleet": {"enabled": True},
    },
}


def user_secrets(values: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(name, key) of the Secrets the values name but the chart does not render: the user's."""
    secrets: list[tuple[str, str | None]] = [(s["name"], None) for s in values.get("imagePullSecrets", [])]
    admin = values.get("grafana", {}).get("admin", {})
    if admin.get("existingSecret"):
        secrets.append((admin["existingSecret"], admin.get("passwordKey", "admin-password")))
    return secrets


class HelmFailed(Exception):
    """helm exited non-zero; the message is its stderr."""


@cache
def helm_binary() -> str:
    for candidate in (os.environ.get("HELM"), ROOT / ".ci" / "cache" / "bin" / "helm", shutil.which("helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError("helm is missing: run `bash .ci/get-helm` (CI does, in .ci/run), or set $HELM")


def helm(*args: str, values: dict[str, Any] | None = None) -> str:
    """stdout of `helm ARGS` with `values` passed as a values file (JSON is YAML)."""
    command = [helm_binary(), *args]
    if values is not None:
        command += ["--values", "-"]
    done = subprocess.run(
        command, input=json.dumps(values or {}), capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise HelmFailed(done.stderr.strip() or done.stdout.strip())
    return done.stdout


def template(values: dict[str, Any], release: str = RELEASE, chart: Path = CHART) -> list[dict[str, Any]]:
    """Every object `helm template --include-crds` renders (hooks and tests included)."""
    out = helm("template", release, str(chart), "--namespace", NAMESPACE, "--include-crds", values=values)
    return [d for d in yaml.safe_load_all(out) if d]


@cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    """A value set's objects, rendered once per test process."""
    return tuple(template(VALUE_SETS[name]))


def find(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]


def kinds(objects: tuple[dict[str, Any], ...]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}
