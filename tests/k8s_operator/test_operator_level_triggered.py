"""Controller semantics against the emulator: the timer repairs children, server-side apply takes
away what a spec change drops, dropped optional children are deleted, and status and conditions
stay put while nothing changes."""

from __future__ import annotations

import asyncio
import threading

import kmock
import pytest
from gamefleet_operator.kube import Kube

from .harness import (
    FLEETS_URL,
    SYNC_INTERVAL,
    Cluster,
    Emulator,
    FakeRegistries,
    free_port,
    operator_thread,
    wait_for,
)

pytestmark = pytest.mark.asyncio

IMAGE = "ghcr.io/gamefleet/gamefleet:0.1.0"
NS = "/apis/apps/v1/namespaces/default"
MONITORED = {"image": IMAGE, "shards": 1, "telemetry": {"metrics": {"serviceMonitor": True}}}
NETWORK_POLICIES = "networking.k8s.io/v1/networkpolicies"


def config(cluster: Cluster, name: str) -> dict[str, str]:
    return dict((cluster.get("v1/configmaps", f"{name}-config") or {}).get("data", {}))


async def test_a_deleted_child_is_recreated_by_the_timer(cluster: Cluster) -> None:
    await cluster.create("rho", {"image": IMAGE, "shards": 1})
    await wait_for(lambda: cluster.get("apps/v1/deployments", "rho-router") is not None)
    response = await cluster.kmock.delete(f"{NS}/deployments/rho-router")
    assert response.status == 200
    assert cluster.get("apps/v1/deployments", "rho-router") is None
    await wait_for(lambda: cluster.get("apps/v1/deployments", "rho-router") is not None, what="recreated")


async def test_an_edited_child_is_set_back_by_the_timer(cluster: Cluster) -> None:
    await cluster.create("sigma", {"image": IMAGE, "shards": 1})
    await wait_for(lambda: config(cluster, "sigma").get("GAMEFLEET_DURABILITY") == "off")
    edit = {"data": {"GAMEFLEET_DURABILITY": "log", "HAND_ADDED": "x"}}  # kubectl edit
    response = await cluster.kmock.patch("/api/v1/namespaces/default/configmaps/sigma-config", json=edit)
    assert response.status == 200
    await wait_for(lambda: config(cluster, "sigma").get("GAMEFLEET_DURABILITY") == "off", what="set back")
    assert config(cluster, "sigma")["HAND_ADDED"] == "x"  # a field the operator never set is not its own


async def test_what_a_spec_change_drops_is_removed(cluster: Cluster) -> None:
    await cluster.create("tau", {"image": IMAGE, "shards": 1})
    await wait_for(lambda: config(cluster, "tau").get("OTEL_SDK_DISABLED") == "true")
    tracing = {"otlpEndpoint": "http://jaeger:4317", "samplingRatio": 0.1}
    await cluster.patch("tau", {"spec": {"telemetry": {"tracing": tracing}}})
    await wait_for(lambda: "OTEL_EXPORTER_OTLP_ENDPOINT" in config(cluster, "tau"), what="tracing on")
    assert "OTEL_SDK_DISABLED" not in config(cluster, "tau")  # a merge patch would have kept it
    await cluster.patch("tau", {"spec": {"telemetry": {"metrics": {"enabled": False}}}})
    await wait_for(lambda: "GAMEFLEET_METRICS_PORT" not in config(cluster, "tau"), what="metrics off")

    def ports() -> list[str]:
        pod = cluster.get("apps/v1/statefulsets", "tau-shard")["spec"]["template"]["spec"]
        return [port["name"] for port in pod["containers"][0]["ports"]]

    await wait_for(lambda: ports() == ["grpc"], what="the metrics port gone from the shards")


async def test_optional_children_the_spec_drops_are_deleted(cluster: Cluster) -> None:
    spec = MONITORED | {"redis": {"managed": {"enabled": True}}}
    await cluster.create("upsilon", spec)
    for resource, name in [
        ("monitoring.coreos.com/v1/servicemonitors", "upsilon"),
        ("apps/v1/statefulsets", "upsilon-redis"),
        ("v1/services", "upsilon-redis"),
    ]:
        await wait_for(lambda r=resource, n=name: cluster.get(r, n) is not None, what=name)
    off = {"telemetry": {"metrics": {"serviceMonitor": False}}, "redis": {"managed": {"enabled": False}}}
    await cluster.patch("upsilon", {"spec": off})
    await wait_for(
        lambda: cluster.get("monitoring.coreos.com/v1/servicemonitors", "upsilon") is None,
        what="the ServiceMonitor deleted",
    )
    await wait_for(lambda: cluster.get("apps/v1/statefulsets", "upsilon-redis") is None, what="Redis gone")
    assert cluster.get("v1/services", "upsilon-redis") is None
    assert cluster.get(NETWORK_POLICIES, "upsilon-redis") is None  # no Redis left to guard
    assert cluster.get(NETWORK_POLICIES, "upsilon-shard") is not None
    assert "GAMEFLEET_REDIS_URL" not in config(cluster, "upsilon")
    await wait_for(lambda: len(cluster.events("Removed")) == 4, what="an Event per removed child")


async def test_network_policies_turned_off_are_deleted_and_back_when_on(cluster: Cluster) -> None:
    await cluster.create("psi", {"image": IMAGE, "shards": 1})
    names = ("psi-shard", "psi-router")
    await wait_for(lambda: all(cluster.get(NETWORK_POLICIES, n) for n in names), what="NetworkPolicies")
    await cluster.patch("psi", {"spec": {"networkPolicy": {"enabled": False}}})
    await wait_for(lambda: not any(cluster.get(NETWORK_POLICIES, n) for n in names), what="them deleted")
    removed = {"NetworkPolicy psi-shard", "NetworkPolicy psi-router"}
    await wait_for(  # kopf posts Events in the background
        lambda: {e["message"].split(":")[0] for e in cluster.events("Removed")} == removed, what="the Events"
    )
    assert cluster.get("apps/v1/statefulsets", "psi-shard") is not None  # the pods they guarded stay
    await cluster.patch("psi", {"spec": {"networkPolicy": {"enabled": True}}})
    await wait_for(lambda: all(cluster.get(NETWORK_POLICIES, n) for n in names), what="them back")


async def test_a_child_that_cannot_be_applied_degrades_without_flapping(cluster: Cluster) -> None:
    """No prometheus-operator CRDs: every ServiceMonitor apply fails. The fleet stays Degraded
    (ApplyFailed) with one Event, the other children are applied, and steady syncs write nothing."""
    del cluster.kmock.resources[kmock.resource("monitoring.coreos.com/v1/servicemonitors")]
    await cluster.create("phi", MONITORED)
    await wait_for(lambda: cluster.condition("phi", "Degraded").get("reason") == "ApplyFailed")
    await wait_for(lambda: cluster.get("apps/v1/deployments", "phi-router") is not None)  # the rest applied
    await cluster.set_ready("phi", 1)
    await wait_for(lambda: cluster.condition("phi", "Ready").get("status") == "True", what="Ready")
    degraded = cluster.condition("phi", "Degraded")
    writes = len(cluster.kmock[f"patch {FLEETS_URL}/phi/status"])
    await asyncio.sleep(4 * SYNC_INTERVAL)  # several timer rounds, each failing the same way
    assert cluster.condition("phi", "Degraded") == degraded
    assert len(cluster.kmock[f"patch {FLEETS_URL}/phi/status"]) == writes
    assert len(cluster.events("ApplyFailed")) == 1
    assert "ServiceMonitor phi" in degraded["message"]


async def test_a_steady_fleet_costs_no_writes(cluster: Cluster) -> None:
    """Level-triggered, but quiet: a timer round that changes nothing writes no child and no status."""
    await cluster.create("chi", {"image": IMAGE, "shards": 2})
    await wait_for(lambda: cluster.get("apps/v1/deployments", "chi-router") is not None)
    await cluster.set_ready("chi", 2)
    await wait_for(lambda: cluster.condition("chi", "Ready").get("status") == "True", what="Ready")
    await asyncio.sleep(2 * SYNC_INTERVAL)
    versions = {
        key: cluster.kmock.objects[key]["metadata"]["resourceVersion"]
        for key in list(cluster.kmock.objects)
        if key[0] != kmock.resource("v1/events") and not cluster.kmock.objects[key].deleted
    }
    await asyncio.sleep(4 * SYNC_INTERVAL)
    for key, version in versions.items():
        assert cluster.kmock.objects[key]["metadata"]["resourceVersion"] == version, key


async def test_a_steadily_autoscaled_fleet_writes_no_status_each_sync(cluster: Cluster) -> None:
    """The autoscaler's window is in status: a steady recommendation keeps its time, so the timer's
    rounds leave status alone."""
    registry = cluster.registries["psi"]
    for shard in ("psi-shard-0", "psi-shard-1"):
        registry.report(shard, 50)  # 100 games at 50% of 100 per shard: 2 shards, steady
    autoscaled = {"enabled": True, "minShards": 1, "maxShards": 6, "targetUtilisation": 0.5}
    spec = {
        "image": IMAGE,
        "shards": 2,
        "game": {"capacityPerShard": 100},
        "autoscaling": autoscaled,
        "redis": {"address": "redis.default.svc:6379"},
    }
    await cluster.create("psi", spec)
    await wait_for(lambda: "steady" in cluster.status("psi").get("autoscaler", {}).get("reason", ""))
    await cluster.set_ready("psi", 2)
    await wait_for(lambda: cluster.condition("psi", "Ready").get("status") == "True", what="Ready")
    await asyncio.sleep(2 * SYNC_INTERVAL)
    writes = len(cluster.kmock[f"patch {FLEETS_URL}/psi/status"])
    await asyncio.sleep(4 * SYNC_INTERVAL)
    assert len(cluster.kmock[f"patch {FLEETS_URL}/psi/status"]) == writes


async def test_a_change_seen_by_the_timer_and_the_change_handler_at_once_is_announced_once(
    cluster: Cluster,
) -> None:
    """kopf runs the timer beside the change handler: their reconciles take turns, so only the first
    sees the old template. The registry read lingers for a second reader to force the overlap."""
    await cluster.create("psi", {"image": IMAGE, "shards": 2, "redis": {"address": "r.default.svc:6379"}})
    await wait_for(lambda: cluster.get("apps/v1/statefulsets", "psi-shard") is not None)
    registry = cluster.registries["psi"]
    registry.linger = 4 * SYNC_INTERVAL
    await cluster.patch("psi", {"spec": {"image": IMAGE.replace("0.1.0", "0.1.1")}})
    await wait_for(lambda: cluster.events("RollingShards"), what="the RollingShards event")
    await wait_for(lambda: len(cluster.events("Applied")) >= 2, what="the change applied")
    await asyncio.sleep(4 * SYNC_INTERVAL)
    registry.linger = 0.0
    assert registry.most_at_once == 1
    assert len(cluster.events("RollingShards")) == 1


@pytest.mark.parametrize(
    ("extra", "event_type"),
    [
        ({}, "Warning"),
        ({"redis": {"address": "r.default.svc:6379"}, "durability": {"mode": "log"}}, "Normal"),
    ],
    ids=["games cannot move", "games move through Redis"],
)
async def test_a_change_that_restarts_shards_is_announced_and_shown(
    cluster: Cluster, extra: dict, event_type: str
) -> None:
    """A new image rolls every shard: an Event says so (a Warning when their games cannot move),
    once, and Progressing shows the roll while the StatefulSet controller reports it."""
    await cluster.create("omega", {"image": IMAGE, "shards": 2, **extra})
    await wait_for(lambda: cluster.get("apps/v1/statefulsets", "omega-shard") is not None)
    await cluster.patch("omega", {"spec": {"image": IMAGE.replace("0.1.0", "0.1.1")}})

    def image() -> str:
        sts = cluster.get("apps/v1/statefulsets", "omega-shard")
        return sts["spec"]["template"]["spec"]["containers"][0]["image"]

    await wait_for(lambda: image().endswith("0.1.1"), what="the new template applied")
    await wait_for(lambda: cluster.events("RollingShards"), what="the RollingShards event")
    rolling = {"currentRevision": "a", "updateRevision": "b", "updatedReplicas": 1, "readyReplicas": 2}
    url = "/apis/apps/v1/namespaces/default/statefulsets/omega-shard/status"
    assert (await cluster.kmock.patch(url, json={"status": rolling})).status == 200
    await wait_for(lambda: cluster.condition("omega", "Progressing").get("reason") == "RollingShards")
    await asyncio.sleep(4 * SYNC_INTERVAL)
    (event,) = cluster.events("RollingShards")  # once, not every sync
    assert event["type"] == event_type
    assert ("cannot move" in event["message"]) is (event_type == "Warning")


async def test_kubectl_scale_through_the_scale_subresource(cluster: Cluster) -> None:
    """`kubectl scale gf/kappa --replicas=3` (and an HPA) go through /scale: spec.shards follows,
    then the StatefulSet; reading /scale gives the replicas and the pods' selector from status."""
    await cluster.create("kappa", {"image": IMAGE, "shards": 1})
    await wait_for(lambda: cluster.replicas("kappa") == 1)
    response = await cluster.kmock.patch(f"{FLEETS_URL}/kappa/scale", json={"spec": {"replicas": 3}})
    assert response.status == 200
    assert cluster.fleet("kappa")["spec"]["shards"] == 3
    await wait_for(lambda: cluster.replicas("kappa") == 3, what="StatefulSet replicas 3")
    await wait_for(lambda: cluster.status("kappa").get("shards") == 3, what="status.shards 3")
    response = await cluster.kmock.get(f"{FLEETS_URL}/kappa/scale")
    scale = await response.json()
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == "gamefleet.dev/fleet=kappa,app.kubernetes.io/component=shard"


async def test_an_operator_stopped_mid_reconcile_and_restarted_converges(
    api: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first operator dies inside its first reconcile, two children applied and no status
    written; a new operator process finds the fleet half built and finishes it."""
    applied: list[str] = []
    dying, release = threading.Event(), threading.Event()
    apply = Kube.apply

    def apply_then_die(self: Kube, manifest: dict) -> dict:
        if len(applied) >= 2 and not release.is_set():
            dying.set()
            release.wait(30)  # frozen mid-reconcile until the test has stopped this operator,
            raise RuntimeError("the operator process was killed")  # then gone: no further step of it
        applied.append(manifest["kind"])
        return apply(self, manifest)

    monkeypatch.setattr(Kube, "apply", apply_then_die)
    first = FakeRegistries()
    async with operator_thread(first, liveness=f"http://127.0.0.1:{free_port()}/healthz") as process:
        cluster = Cluster(api, first, "")
        await cluster.create("zeta", {"image": IMAGE, "shards": 2})
        await wait_for(dying.is_set, what="the first operator mid-reconcile")
        assert cluster.get("apps/v1/deployments", "zeta-router") is None and cluster.status("zeta") == {}
        process.stop()
        release.set()
    second = FakeRegistries()
    async with operator_thread(second, liveness=f"http://127.0.0.1:{free_port()}/healthz"):
        await wait_for(lambda: cluster.get("apps/v1/deployments", "zeta-router") is not None, what="rebuilt")
        await wait_for(lambda: cluster.get("apps/v1/statefulsets", "zeta-shard") is not None, what="shards")
        await cluster.set_ready("zeta", 2)
        await wait_for(lambda: cluster.condition("zeta", "Ready").get("status") == "True", what="Ready")
        for resource, name in [("v1/services", "zeta"), ("policy/v1/poddisruptionbudgets", "zeta-shard")]:
            assert cluster.get(resource, name) is not None, name
        await wait_for(cluster.settled, what="kopf to finish handling")
