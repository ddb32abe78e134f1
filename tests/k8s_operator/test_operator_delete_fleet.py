"""`gamefleet delete-fleet` (the chart's pre-delete hook) against the emulated API with the
operator running for real: it deletes the fleet, waits until the operator's cleanup finalizer
let it go, and makes only the calls the chart's hook Role grants."""

from __future__ import annotations

import asyncio

import kubernetes.config.kube_config
import pytest
from chart.helm import FULLNAME, find, rendered
from gamefleet_operator import API_VERSION, KIND

from gameserver.cli import main
from gameserver.cli.delete_fleet import USER_AGENT

from .harness import FLEETS_URL, Cluster, operator_calls, role_rules, wait_for

pytestmark = pytest.mark.asyncio

IMAGE = "ghcr.io/gamefleet/gamefleet:0.1.0"
HOOK = f"{FULLNAME}-delete-fleet"


def delete_fleet(name: str, *flags: str) -> int:
    return main(["delete-fleet", name, "--namespace", "default", "--interval", "0.1", *flags])


async def test_the_hook_deletes_the_fleet_once_the_operator_cleaned_it_up(cluster: Cluster, capsys) -> None:
    job = find(rendered("loadtest"), "Job", HOOK)["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["gamefleet", "delete-fleet"] and job["args"][0] == "gamefleet"
    await cluster.create("gamefleet", {"image": IMAGE, "redis": {"address": "redis:6379"}})
    await wait_for(
        lambda: "gamefleet.dev/cleanup" in cluster.fleet("gamefleet")["metadata"].get("finalizers", [])
    )
    assert await asyncio.to_thread(delete_fleet, "gamefleet", "--timeout", "90") == 0
    assert cluster.fleet("gamefleet") is None
    assert (
        cluster.registries["gamefleet"].purges >= 1
    )  # the cleanup ran before the fleet went (kopf may repeat it)
    assert "GameFleet default/gamefleet: deleted" in capsys.readouterr().out
    role = find(rendered("loadtest"), "Role", HOOK)
    assert operator_calls(cluster.kmock, agent=USER_AGENT) == role_rules(role)
    assert role["rules"][0]["resourceNames"] == ["gamefleet"]


async def test_a_missing_fleet_is_nothing_to_delete(kmock, kubeconfig, capsys) -> None:
    assert await asyncio.to_thread(delete_fleet, "nobody") == 0
    assert "not found, nothing to delete" in capsys.readouterr().out


async def test_a_fleet_nobody_finalizes_fails_naming_the_finalizer(kmock, kubeconfig, capsys) -> None:
    body = {"apiVersion": API_VERSION, "kind": KIND, "spec": {"image": IMAGE}}
    body["metadata"] = {"name": "stuck", "namespace": "default", "finalizers": ["gamefleet.dev/cleanup"]}
    assert (await kmock.post(FLEETS_URL, json=body)).status == 200
    assert await asyncio.to_thread(delete_fleet, "stuck", "--timeout", "0.5") == 1
    assert "finalizers: gamefleet.dev/cleanup" in capsys.readouterr().out


async def test_no_cluster_to_talk_to_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SystemExit, match="no Kubernetes API"):
        await asyncio.to_thread(delete_fleet, "f")
