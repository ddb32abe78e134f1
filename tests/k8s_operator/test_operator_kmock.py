"""The operator end to end: kopf runs for real against the kmock API emulator."""

from __future__ import annotations

import asyncio
import json
import threading

import aiohttp
import kmock
import prometheus_client
import pytest
from gamefleet_operator import handlers
from gamefleet_operator.autoscale import ShardState

from .harness import APPLY_PATCH, FLEETS_URL, SYNC_INTERVAL, Cluster, wait_for

pytestmark = pytest.mark.asyncio

IMAGE = "ghcr.io/gamefleet/gamefleet:0.1.0"
STS = kmock.resource("apps/v1/statefulsets")


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
    await wait_for(lambda: cluster.events("Applied"), what="the Applied event")
    status_writes = lambda: len(cluster.kmock[f"patch {FLEETS_URL}/alpha/status"])  # noqa: E731
    writes = status_writes()
    assert writes > 0
    await asyncio.sleep(4 * SYNC_INTERVAL)
    assert status_writes() == writes  # a steady fleet's timer rounds write nothing
    async with aiohttp.ClientSession() as session, session.get(cluster.liveness) as response:
        assert response.status == 200  # kopf's liveness endpoint (the Deployment's probe)
    sample = prometheus_client.REGISTRY.get_sample_value
    assert sample("gamefleet_operator_reconciles_total", {"handler": "apply_fleet"}) >= 1
    assert (
        sample("gamefleet_operator_fleet_shards", {"namespace": "default", "fleet": "alpha", "kind": "ready"})
        == 2
    )


async def test_shards_change_patches_statefulset_replicas(cluster: Cluster) -> None:
    await cluster.create("beta", {"image": IMAGE, "shards": 2})
    await wait_for(lambda: cluster.replicas("beta") == 2)
    await cluster.patch("beta", {"spec": {"shards": 5}})  # kubectl scale gf/beta --replicas=5
    await wait_for(lambda: cluster.replicas("beta") == 5, what="StatefulSet replicas 5")
    await wait_for(lambda: cluster.condition("beta", "Progressing").get("observedGeneration") == 2)
    assert cluster.condition("beta", "Progressing")["message"] == "0/5 shards ready"
    sts = "/apis/apps/v1/namespaces/default/statefulsets"
    applies = cluster.kmock[f"patch {sts}/beta-shard"]
    assert applies and all(r.headers["Content-Type"] == APPLY_PATCH for r in applies)  # server-side apply
    assert {r.params.get("fieldManager") for r in applies} == {"gamefleet-operator"}
    assert not cluster.kmock[f"post {sts}"]  # apply creates: no create-then-409 round
    update = json.loads(applies[-1].body)["spec"]  # as sent (the emulator turns it into a merge patch)
    assert update["replicas"] == 5  # the whole rendered StatefulSet, immutable fields unchanged
    assert (
        update["serviceName"] == "beta-shards"
        and update["selector"] == cluster.get("apps/v1/statefulsets", "beta-shard")["spec"]["selector"]
    )


REDIS = {"redis": {"address": "redis.default.svc:6379", "passwordSecretRef": {"name": "redis-auth"}}}
AUTOSCALED = {
    "image": IMAGE,
    "shards": 2,
    "game": {"capacityPerShard": 100},
    "autoscaling": {"enabled": True, "minShards": 1, "maxShards": 6, "targetUtilisation": 0.5},
    **REDIS,
}


async def test_autoscaler_scales_up_under_load(cluster: Cluster) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "redis-auth", "namespace": "default"},
    }
    await cluster.kmock.post(
        "/api/v1/namespaces/default/secrets", json=secret | {"data": {"password": "czNjcjN0"}}
    )
    registry = cluster.registries["gamma"]
    registry.report("gamma-shard-0", 90)
    registry.report("gamma-shard-1", 110)  # 200 games at 50% of 100 per shard -> 4 shards
    await cluster.create("gamma", AUTOSCALED)
    await wait_for(
        lambda: cluster.fleet("gamma")["spec"]["shards"] == 4, what="autoscaler to set spec.shards"
    )
    await wait_for(lambda: cluster.replicas("gamma") == 4, what="StatefulSet replicas 4")
    await wait_for(lambda: "scale up" in cluster.status("gamma").get("autoscaler", {}).get("reason", ""))
    status = cluster.fleet("gamma")["status"]
    assert status["games"] == 200
    assert cluster.registries.passwords["gamma"] == "s3cr3t"
    await wait_for(lambda: cluster.events("Autoscaled"), what="the Autoscaled event")


async def test_registry_outage_holds_the_size_and_degrades(cluster: Cluster) -> None:
    cluster.registries["theta"].down = True
    await cluster.create("theta", AUTOSCALED | {"shards": 3, "redis": {"address": "redis:6379"}})
    await wait_for(lambda: cluster.condition("theta", "Degraded").get("reason") == "RegistryUnavailable")
    await asyncio.sleep(3 * SYNC_INTERVAL)
    assert cluster.fleet("theta")["spec"]["shards"] == 3 and cluster.replicas("theta") == 3
    cluster.registries["theta"].down = False  # back: the autoscaler resumes (no load: holds)
    await wait_for(lambda: cluster.condition("theta", "Degraded").get("status") == "False")


async def test_scale_down_waits_for_drained_shards_highest_first(cluster: Cluster) -> None:
    registry = cluster.registries["delta"]
    await cluster.create("delta", {"image": IMAGE, "shards": 3, "redis": {"address": "redis:6379"}})
    await wait_for(lambda: cluster.replicas("delta") == 3)
    for i in range(3):
        registry.report(f"delta-shard-{i}", 10)
    await cluster.patch("delta", {"spec": {"shards": 1}})
    await wait_for(lambda: set(registry.drains) == {"delta-shard-1", "delta-shard-2"}, what="drain requests")
    await wait_for(lambda: cluster.condition("delta", "Progressing").get("reason") == "Draining")
    assert cluster.replicas("delta") == 3  # nobody reported drained yet
    await wait_for(lambda: cluster.events("Draining"), what="the Draining event")
    assert cluster.events("Draining")[0]["message"] == "asked delta-shard-1, delta-shard-2 to drain"
    registry.report("delta-shard-1", 0, ShardState.DRAINED)  # the lower one first: nothing can go yet
    await asyncio.sleep(3 * SYNC_INTERVAL)
    assert cluster.replicas("delta") == 3
    registry.report("delta-shard-2", 0, ShardState.DRAINED)
    await wait_for(lambda: cluster.replicas("delta") == 1, what="both leaving shards removed")
    await wait_for(lambda: cluster.events("Scaled"), what="the Scaled event")
    assert [e["message"] for e in cluster.events("Scaled")] == ["shard StatefulSet 3 -> 1"]
    # the requests stay while the pods shut down: withdrawn, a shard would take games in its preStop
    assert set(registry.drains) == {"delta-shard-1", "delta-shard-2"}
    replicas = [v["spec"]["replicas"] for v in cluster.kmock.objects[STS, "default", "delta-shard"].history]
    assert replicas == sorted(replicas, reverse=True) and 2 not in replicas  # 3 -> 1 once both drained
    await wait_for(lambda: cluster.status("delta").get("shards") == 1)
    await wait_for(lambda: cluster.condition("delta", "Progressing").get("reason") != "Draining")
    await cluster.patch("delta", {"spec": {"shards": 2}})  # delta-shard-1 comes back: it must serve
    await wait_for(lambda: cluster.replicas("delta") == 2, what="scaled back up")
    assert set(registry.drains) == {"delta-shard-2"}


async def test_delete_runs_the_cleanup_finalizer(cluster: Cluster) -> None:
    await cluster.create("eps", {"image": IMAGE, "redis": {"address": "redis:6379"}})
    await wait_for(lambda: "gamefleet.dev/cleanup" in cluster.fleet("eps")["metadata"].get("finalizers", []))
    response = await cluster.kmock.delete(f"{FLEETS_URL}/eps")
    assert response.status == 200
    await wait_for(lambda: cluster.fleet("eps") is None, what="the finalizer to let the fleet go")
    assert cluster.registries["eps"].purges == 1
    await wait_for(lambda: cluster.events("CleanedUp"), what="the CleanedUp event")


async def test_a_fleet_deleted_mid_sync_goes_once_that_sync_returns(cluster: Cluster) -> None:
    """kopf runs the finalizer only after the fleet's timer has returned; it must notice within
    seconds (its default re-check is a minute away)."""
    registry = cluster.registries["iota"]
    syncing, release = threading.Event(), threading.Event()
    loads = registry.loads

    def slow_loads() -> list:
        if not release.is_set():
            syncing.set()
            release.wait(30)
        return loads()

    await cluster.create("iota", {"image": IMAGE, "redis": {"address": "redis:6379"}})
    await wait_for(lambda: "gamefleet.dev/cleanup" in cluster.fleet("iota")["metadata"].get("finalizers", []))
    await wait_for(cluster.settled, what="the create handled")
    registry.loads = slow_loads
    await wait_for(syncing.is_set, what="a sync under way")
    await cluster.kmock.delete(f"{FLEETS_URL}/iota")
    await wait_for(lambda: cluster.fleet("iota")["metadata"].get("deletionTimestamp"), what="deleting")
    release.set()
    await wait_for(lambda: cluster.fleet("iota") is None, timeout=20, what="the finalizer after the sync")
    assert registry.purges == 1


async def test_cleanup_stops_the_shards_before_it_purges_their_keys(cluster: Cluster) -> None:
    """A live shard records its games until it stops: keys purged under it would come back."""
    registry = cluster.registries["zeta"]
    await cluster.create("zeta", {"image": IMAGE, "shards": 2, "redis": {"address": "redis:6379"}})
    await wait_for(lambda: cluster.replicas("zeta") == 2)
    registry.report("zeta-shard-0", 5)
    await cluster.kmock.delete(f"{FLEETS_URL}/zeta")
    await wait_for(lambda: cluster.replicas("zeta") is None, what="the shard StatefulSet deleted")
    assert registry.purges == 0 and cluster.fleet("zeta") is not None
    registry.reports.clear()  # its pods stopped: no heartbeat left
    await wait_for(lambda: cluster.fleet("zeta") is None, what="the finalizer to let the fleet go")
    assert registry.purges == 1


async def test_cleanup_gives_up_on_an_unreachable_redis(cluster: Cluster, monkeypatch) -> None:
    monkeypatch.setattr(handlers, "CLEANUP_RETRY_DELAY", 0.1)
    await cluster.create("eta", {"image": IMAGE, "redis": {"address": "redis:6379"}})
    await wait_for(lambda: "gamefleet.dev/cleanup" in cluster.fleet("eta")["metadata"].get("finalizers", []))
    cluster.registries["eta"].down = True
    await cluster.kmock.delete(f"{FLEETS_URL}/eta")
    await wait_for(lambda: cluster.fleet("eta") is None, what="deletion despite Redis being down")
    await wait_for(lambda: cluster.events("CleanupSkipped"), what="the CleanupSkipped warning")


async def test_malformed_fleet_is_degraded_and_the_operator_keeps_running(cluster: Cluster) -> None:
    await cluster.create(
        "bad", {"image": IMAGE, "shards": 9, "autoscaling": {"enabled": True, "maxShards": 4}}
    )
    await wait_for(lambda: cluster.condition("bad", "Degraded").get("status") == "True", what="Degraded")
    degraded = cluster.condition("bad", "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "autoscaling" in degraded["message"]
    assert cluster.get("apps/v1/statefulsets", "bad-shard") is None  # nothing rendered from a bad spec
    await wait_for(lambda: cluster.events("InvalidSpec"), what="the InvalidSpec event")
    await cluster.create("good", {"image": IMAGE})  # the operator is still there
    await wait_for(lambda: cluster.replicas("good") == 2)
    await cluster.patch("bad", {"spec": {"shards": 3, "redis": {"address": "redis:6379"}}})  # fixed
    await wait_for(lambda: cluster.condition("bad", "Degraded").get("status") == "False", what="recovery")
    assert cluster.replicas("bad") == 3


async def test_suspend_stops_shards_and_routers(cluster: Cluster) -> None:
    await cluster.create("zeta", {"image": IMAGE, "shards": 2})  # no Redis: nothing to drain through
    await wait_for(lambda: cluster.replicas("zeta") == 2)
    await cluster.patch("zeta", {"spec": {"suspend": True}})
    await wait_for(lambda: cluster.replicas("zeta") == 0, what="shards stopped")
    routers = lambda: cluster.get("apps/v1/deployments", "zeta-router")["spec"]["replicas"]  # noqa: E731
    await wait_for(lambda: routers() == 0, what="routers stopped")
    await wait_for(lambda: cluster.condition("zeta", "Ready").get("reason") == "Suspended")
