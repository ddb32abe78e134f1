"""The operator end to end: kopf runs for real against the kmock API emulator."""

from __future__ import annotations

import pytest

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.asyncio

IMAGE = "ghcr.io/gamefleet/gamefleet:0.1.0"


async def test_create_makes_owned_children_and_status(cluster: Cluster) -> None:
    await cluster.create("alpha", {"image": IMAGE, "shards": 2})
    await wait_for(
        lambda: cluster.condition("alpha", "Ready").get("reason") == "ShardsNotReady", what="status"
    )
    fleet = cluster.fleet("alpha")
    for resource, name in [
        ("v1/configmaps", "alpha-config"),
        ("v1/services", "alpha-shards"),
        ("v1/services", "alpha"),
        ("apps/v1/statefulsets", "alpha-shard"),
        ("apps/v1/deployments", "alpha-router"),
        ("policy/v1/poddisruptionbudgets", "alpha-shard"),
    ]:
        child = cluster.get(resource, name)
        assert child is not None, (resource, name)
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "GameFleet",
            "alpha",
            fleet["metadata"]["uid"],
        )
        assert owner["controller"] is True
    assert cluster.replicas("alpha") == 2
    await cluster.set_ready("alpha", 2)
    await wait_for(lambda: cluster.condition("alpha", "Ready").get("status") == "True", what="Ready")
    status = cluster.fleet("alpha")["status"]
    assert status["readyShards"] == 2 and status["shards"] == 2
    assert status["selector"] == "gamefleet.dev/fleet=alpha,app.kubernetes.io/component=shard"
    assert cluster.condition("alpha", "Degraded")["status"] == "False"
    assert cluster.condition("alpha", "Progressing")["status"] == "False"
    assert cluster.condition("alpha", "Ready")["observedGeneration"] == 1
    assert cluster.events("Applied")
