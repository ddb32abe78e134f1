"""The operator in the loop: kopf (in a thread, as tests/k8s_operator's `cluster` fixture runs it)
renders a fleet into kmock, the KubeletController runs its children as real pods and writes their
status back, and the fleet's own status follows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from k8s_operator.harness import Cluster as Api
from k8s_operator.harness import wait_for

from .cluster import Cluster
from .controller import KubeletController
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
async def test_a_deleted_router_deployment_is_recreated_and_its_pod_comes_back(
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
