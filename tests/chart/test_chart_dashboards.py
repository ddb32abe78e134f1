"""Dashboards: whatever charts/gamefleet/dashboards/*.json holds becomes one ConfigMap labelled
for a Grafana sidecar (kube-prometheus-stack) and mounted by the bundled Grafana; none, none."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from k8s_operator.test_operator_manifests import strict

from .helm import CHART, FULLNAME, find, template

DASHBOARDS = {
    "rl_training.json": {"title": "RL training", "uid": "gamefleet-rl", "panels": []},
    "fleet.json": {"title": "Fleet", "uid": "gamefleet-fleet", "panels": []},
}


@pytest.fixture(scope="module")
def chart_with_dashboards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart with two dashboards in it (the real ones come from telemetry work)."""
    chart = tmp_path_factory.mktemp("chart") / "gamefleet"
    shutil.copytree(CHART, chart)
    (chart / "dashboards").mkdir(exist_ok=True)
    for name in (chart / "dashboards").glob("*.json"):
        name.unlink()
    for name, dashboard in DASHBOARDS.items():
        (chart / "dashboards" / name).write_text(json.dumps(dashboard))
    return chart


def dashboards_config_map(objects: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{FULLNAME}-dashboards"
    ]
    return found[0] if found else None


def test_each_dashboard_file_is_a_key_of_the_labelled_config_map(chart_with_dashboards: Path) -> None:
    objects = template({}, chart=chart_with_dashboards)
    config_map = dashboards_config_map(objects)
    assert config_map is not None
    strict(config_map)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "GameFleet"
    assert {name: json.loads(text) for name, text in config_map["data"].items()} == DASHBOARDS
    grafana = find(objects, "Deployment", f"{FULLNAME}-grafana")["spec"]["template"]["spec"]
    assert {
        "name": "dashboards",
        "configMap": {"name": f"{FULLNAME}-dashboards"},
    } in grafana["volumes"]


def test_without_the_bundled_grafana_the_config_map_is_there_for_a_sidecar(
    chart_with_dashboards: Path,
) -> None:
    values = {"grafana": {"enabled": False}, "dashboards": {"label": "my.org/dashboard", "labelValue": "yes"}}
    objects = template(values, chart=chart_with_dashboards)
    config_map = dashboards_config_map(objects)
    assert config_map is not None and config_map["metadata"]["labels"]["my.org/dashboard"] == "yes"
    assert not [o for o in objects if o["metadata"]["name"] == f"{FULLNAME}-grafana"]


def grafana_mounts(objects: list[dict[str, Any]]) -> list[str]:
    pod = find(objects, "Deployment", f"{FULLNAME}-grafana")["spec"]["template"]["spec"]
    return [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]


def test_dashboards_off_renders_no_config_map_and_grafana_provisions_none(
    chart_with_dashboards: Path,
) -> None:
    objects = template({"dashboards": {"enabled": False}}, chart=chart_with_dashboards)
    assert dashboards_config_map(objects) is None
    assert not [m for m in grafana_mounts(objects) if "dashboards" in m]
    assert set(find(objects, "ConfigMap", f"{FULLNAME}-grafana")["data"]) == {"datasources.yaml"}


def test_a_chart_without_dashboards_renders_and_mounts_none(tmp_path: Path) -> None:
    chart = tmp_path / "gamefleet"
    shutil.copytree(CHART, chart)
    for name in (chart / "dashboards").glob("*.json"):
        name.unlink()
    objects = template({}, chart=chart)
    assert dashboards_config_map(objects) is None
    assert not [m for m in grafana_mounts(objects) if "dashboards" in m]


def test_the_charts_own_dashboards_folder_is_what_gets_shipped() -> None:
    """No dashboard files: no ConfigMap (and Grafana mounts none); else all of them."""
    files = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    config_map = dashboards_config_map(template({}))
    shipped = sorted(config_map["data"]) if config_map else []
    assert shipped == files
