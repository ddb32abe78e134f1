"""The operator in the loop: kopf (in a thread, as tests/k8s_operator's `cluster` fixture runs it)
renders a fleet into kmock, the KubeletController runs its children as real pods and writes their
status back, and the fleet's own status follows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from gamefleet_operator.render import GRPC_PORT
from k8s_operator.harness import Cluster as Api
from k8s_operator.harness import wait_for

from gameserver.client import Created, FleetClient

from .cluster import Cluster
from .controller import KubeletController
from .kubelet import PodRunner
from .operated import play, ready

SMALL = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "small.yaml"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_operator_renders_small_the_kubelet_runs_it_and_the_fleet_becomes_ready_and_plays(
    fleets: Api, kubelet: KubeletController, cluster: Cluster
) -> None:
    await fleets.apply(yaml.safe_load(SMALL.read_text()))
    await ready(fleets, "small")
    sts = fleets.get("apps/v1/statefulsets", "small-shard")
    assert sts["status"]["readyReplicas"] == 2 and sts["status"]["updatedReplicas"] == 2
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    assert sorted(cluster.pods)[-2:] == ["small-shard-0", "small-shard-1"]
    await asyncio.to_thread(play, cluster, 2)


def shard_pods(cluster: Cluster) -> list[str]:
    return sorted(n for n in cluster.pods if n.startswith("small-shard-"))


@pytest.mark.slow
@pytest.mark.asyncio
async def test_scaling_by_spec_starts_the_new_shard_and_removes_the_leaving_ones(
    fleets: Api, kubelet: KubeletController, cluster: Cluster
) -> None:
    await fleets.apply(yaml.safe_load(SMALL.read_text()))
    await ready(fleets, "small")
    await fleets.patch("small", {"spec": {"shards": 3}})
    await wait_for(lambda: cluster.pods.get("small-shard-2") and cluster.pods["small-shard-2"].status.ready,
                   60, "small-shard-2 ready")  # fmt: skip
    await wait_for(lambda: fleets.status("small").get("readyShards") == 3, 60, "3 ready shards")
    await ready(fleets, "small")
    await asyncio.to_thread(play, cluster, 3)

    await fleets.patch("small", {"spec": {"shards": 1}})
    await wait_for(lambda: shard_pods(cluster) == ["small-shard-0"], 90, "scaled down to one shard pod")
    await wait_for(lambda: fleets.status("small").get("readyShards") == 1, 60, "1 ready shard")
    await ready(fleets, "small")
    assert fleets.replicas("small") == 1
    await asyncio.to_thread(play, cluster, 1)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_deleted_or_edited_router_deployment_is_repaired_and_its_pod_comes_back(
    fleets: Api, kubelet: KubeletController, cluster: Cluster
) -> None:
    await fleets.apply(yaml.safe_load(SMALL.read_text()))
    await ready(fleets, "small")
    (old,) = [n for n in cluster.pods if n.startswith("small-router-")]
    response = await fleets.kmock.delete("/apis/apps/v1/namespaces/default/deployments/small-router")
    assert response.status == 200, await response.text()
    await wait_for(lambda: old not in cluster.pods, 60, "the old router pod gone")
    await wait_for(lambda: fleets.get("apps/v1/deployments", "small-router") is not None, 30, "recreated")

    def router_ready() -> bool:
        return any(n.startswith("small-router-") and p.status.ready for n, p in list(cluster.pods.items()))

    await wait_for(router_ready, 60, "a new router pod ready")
    await ready(fleets, "small")
    await asyncio.to_thread(play, cluster, 2)

    # edited by hand (`kubectl scale deployment small-router --replicas 0`): set back by the timer
    rendered = fleets.get("apps/v1/deployments", "small-router")["spec"]["replicas"]
    url = "/apis/apps/v1/namespaces/default/deployments/small-router"
    response = await fleets.kmock.patch(url, json={"spec": {"replicas": 0}})
    assert response.status == 200 and (await response.json())["spec"]["replicas"] == 0
    await wait_for(lambda: fleets.get("apps/v1/deployments", "small-router")["spec"]["replicas"] == rendered,
                   30, "the edit set back")  # fmt: skip
    await wait_for(router_ready, 60, "a router pod ready again")
    await ready(fleets, "small")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_deleting_the_fleet_removes_every_child_and_pod(
    fleets: Api, kubelet: KubeletController, cluster: Cluster
) -> None:
    await fleets.apply(yaml.safe_load(SMALL.read_text()))
    await ready(fleets, "small")
    assert len(cluster.pods) == 3
    response = await fleets.kmock.delete("/apis/gamefleet.dev/v1/namespaces/default/gamefleets/small")
    assert response.status == 200, await response.text()
    await wait_for(lambda: fleets.fleet("small") is None, 60, "the fleet gone (finalizer done)")
    await wait_for(lambda: not cluster.pods, 60, "every pod gone")
    await wait_for(lambda: not kubelet.objects(), 30, "every child gone from the API")


def small(**spec: Any) -> dict[str, Any]:
    body = yaml.safe_load(SMALL.read_text())
    body["spec"] |= spec
    return body


def spread(client: FleetClient) -> list[Created]:
    """Keyless batches (each a random placement key) until both shards hold some."""
    batches: list[Created] = []
    while len({b.shard for b in batches}) < 2:
        assert len(batches) < 64, "64 random keys, all on one of two shards"
        batches.append(client.create(4))
    return batches


def placed_on_shard_0(cluster: Cluster, client: FleetClient, in_a_row: int = 8) -> list[Created]:
    """A game created on each check until `in_a_row` land on shard 0: the router has seen shard 1
    stop taking games (its health checks come every few seconds)."""
    batches: list[Created] = []

    def settled() -> bool:
        batches.append(client.create(1))
        last = batches[-in_a_row:]
        return len(last) == in_a_row and all(b.shard.startswith("small-shard-0.") for b in last)

    cluster.wait(settled, 60, "the router placing new games on shard 0 only")
    return batches


def on_shard(batches: list[Created], ordinal: int) -> np.ndarray:
    return np.concatenate([b.ids for b in batches if b.shard.startswith(f"small-shard-{ordinal}.")])


def rolling(fleets: Api) -> bool:
    return fleets.condition("small", "Progressing").get("reason") == "RollingShards"


async def ends_cleanly(pod: PodRunner) -> None:
    """Until the pod's process has ended: on its own (code 0), within its grace."""
    await wait_for(lambda: pod.status.phase in ("Succeeded", "Failed"), 60, f"{pod.name} ended")
    end = pod.status.termination
    assert end.exit_code == 0 and not end.killed and end.duration < end.grace, end


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_shard_without_redis_scaled_away_keeps_serving_its_games_until_they_close(
    fleets: Api, kubelet: KubeletController, cluster: Cluster
) -> None:
    """As Agones never deletes an allocated game server: the leaving shard takes no new game, plays the
    ones it holds, and exits (code 0, within its grace) once the last is closed."""
    await fleets.apply(small(drainTimeoutSeconds=120))
    await ready(fleets, "small")
    (address,) = cluster.resolve(f"small.default.svc:{GRPC_PORT}")
    with FleetClient(f"{address}:{GRPC_PORT}", timeout=30) as client:
        await asyncio.to_thread(cluster.wait, lambda: len(client.topology().shards) == 2, 30, "the ring")
        batches = await asyncio.to_thread(spread, client)
        held = on_shard(batches, 1)
        await fleets.patch("small", {"spec": {"shards": 1}})
        leaving = cluster.pods["small-shard-1"]
        await wait_for(lambda: leaving.terminating, 60, "small-shard-1 terminating")
        batches += await asyncio.to_thread(placed_on_shard_0, cluster, client)
        for _ in range(3):
            reply = await asyncio.to_thread(client.step, held, np.full((len(held), 2), -1))
            assert (reply.status == 0).all() and leaving.process.poll() is None
        every = np.concatenate([b.ids for b in batches])
        assert await asyncio.to_thread(client.close, every) == len(every)
        await ends_cleanly(leaving)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_spec_game_drain_zero_and_dropped_settings_reach_the_pods(
    fleets: Api, kubelet: KubeletController, cluster: Cluster
) -> None:
    """drainTimeoutSeconds 0 starts (no crash loop); games created without a config get spec.game;
    a setting the spec drops (tracing off: OTEL_SDK_DISABLED) is gone from the rolled pods' env."""
    await fleets.apply(small(drainTimeoutSeconds=0))
    await ready(fleets, "small")
    shards = ["small-shard-0", "small-shard-1"]
    assert all(cluster.pods[s].status.restarts == 0 for s in shards)
    assert all(cluster.pods[s].env["OTEL_SDK_DISABLED"] == "true" for s in shards)
    (address,) = cluster.resolve(f"small.default.svc:{GRPC_PORT}")
    with FleetClient(f"{address}:{GRPC_PORT}", timeout=30) as client:
        created = await asyncio.to_thread(client.create, 4)
        assert (created.config.width, created.config.height) == (20, 20)
        assert await asyncio.to_thread(client.close, created.ids) == 4

    tracing = {"otlpEndpoint": "http://otel-collector.observability.svc:4317"}
    await fleets.patch("small", {"spec": {"telemetry": {"tracing": tracing}}})

    def rolled() -> bool:
        pods = [cluster.pods.get(s) for s in shards]
        return all(p and p.status.ready and "OTEL_EXPORTER_OTLP_ENDPOINT" in p.env for p in pods)

    await wait_for(rolled, 120, "the shards rolled onto the tracing config")
    for shard in shards:
        assert "OTEL_SDK_DISABLED" not in cluster.pods[shard].env
    await ready(fleets, "small")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_roll_without_redis_warns_and_each_shard_waits_for_its_games_to_close(
    fleets: Api, kubelet: KubeletController, cluster: Cluster
) -> None:
    """A game config edit restarts every shard, and without Redis their games cannot move: an Event
    and the Progressing condition say so, and each old shard goes only once its games are closed."""
    await fleets.apply(small(drainTimeoutSeconds=120))
    await ready(fleets, "small")
    (address,) = cluster.resolve(f"small.default.svc:{GRPC_PORT}")
    with FleetClient(f"{address}:{GRPC_PORT}", timeout=30) as client:
        await asyncio.to_thread(cluster.wait, lambda: len(client.topology().shards) == 2, 30, "the ring")
        batches = await asyncio.to_thread(spread, client)
        await fleets.patch("small", {"spec": {"game": {"width": 24}}})
        await wait_for(lambda: fleets.events("RollingShards"), 60, "the RollingShards Event")
        (event,) = fleets.events("RollingShards")
        assert event["type"] == "Warning" and "cannot move" in event["message"], event
        for ordinal in (1, 0):  # highest first, each old pod kept until its games are closed
            old = cluster.pods[f"small-shard-{ordinal}"]
            await wait_for(lambda old=old: old.terminating, 60, f"small-shard-{ordinal} terminating")
            await wait_for(lambda: rolling(fleets), 30, "Progressing: RollingShards")
            assert "cannot move" in fleets.condition("small", "Progressing")["message"]
            held = on_shard(batches, ordinal)
            reply = await asyncio.to_thread(client.step, held, np.full((len(held), 2), -1))
            assert (reply.status == 0).all() and old.process.poll() is None
            assert await asyncio.to_thread(client.close, held) == len(held)
            await ends_cleanly(old)
        await ready(fleets, "small")
    assert all(cluster.pods[f"small-shard-{i}"].env["GAMEFLEET_GAME_WIDTH"] == "24" for i in (0, 1))
