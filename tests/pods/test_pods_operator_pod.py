"""The operator as its Deployment's pods (manifests/operator.yaml, as `kubectl apply` installs it): the
installed wheel under the image's env on a read-only root with no writable /tmp, reaching the API
in-cluster (service-account token, CA, https), two replicas electing a leader through kopf peering.
What it renders runs as real pods (the KubeletController), so a fleet it reconciles plays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from gamefleet_operator.render import GRPC_PORT
from k8s_operator.harness import Cluster as Api
from k8s_operator.harness import Emulator, wait_for

from gameserver.client import FleetClient
from gameserver.engine import GameConfig

from .apiserver import ApiAccess
from .cluster import SUFFIX, Cluster
from .controller import KubeletController
from .operated import leader, operator_pods, operator_running, peers, play, ready
from .redis_fleet import ExternalRedis, password_secret

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "manifests" / "operator.yaml"
EXAMPLES = ROOT / "manifests" / "examples"


@pytest_asyncio.fixture
async def operator(api: Emulator, cluster: Cluster, tmp_path: Path) -> AsyncIterator[ApiAccess]:
    """manifests/operator.yaml's Deployment (as `kubectl apply` installs it) running in `cluster`."""
    async with operator_running(api, cluster, yaml.safe_load(OPERATOR.read_text()), tmp_path) as access:
        await wait_for(lambda: len(operator_pods(cluster)) == 2, 120, "two operator pods running")
        yield access


def operator_requests(api: Emulator) -> list[Any]:
    return [r for r in api if not r.headers.get("User-Agent", "").startswith("kmock/")]


async def test_the_operator_pods_elect_a_leader_reconcile_a_fleet_and_the_standby_takes_over(
    api: Emulator, cluster: Cluster, operator: ApiAccess, kubelet: KubeletController
) -> None:
    await wait_for(lambda: len(peers(api)) == 2, 60, "both replicas in the peering object")
    assert set(peers(api)) == {p.name for p in operator_pods(cluster)}  # POD_ID: the pod's name

    fleets = Api(api, None, "")
    await fleets.apply(yaml.safe_load((EXAMPLES / "small.yaml").read_text()))
    await ready(fleets, "small")
    await asyncio.to_thread(play, cluster, 2)
    first = leader(api)
    (standby,) = {p.name for p in operator_pods(cluster)} - {first}
    handled = "kopf.objects"  # the logger of kopf's handlers and timers on an object
    assert handled in cluster.pods[first].log() and handled not in cluster.pods[standby].log()

    calls = operator_requests(api)
    assert calls and all(operator.authenticates(r.headers.get("Authorization")) for r in calls), (
        "every call in-cluster: the mounted service-account token as the bearer"
    )

    ended = await asyncio.to_thread(cluster.delete, [first])  # a node drained, a rolling update
    assert ended[first].exit_code == 0 and not ended[first].killed, cluster.describe()
    await wait_for(lambda: set(peers(api)) == {standby}, 60, "the leader's entry gone")
    await fleets.patch("small", {"spec": {"shards": 3}})
    await wait_for(lambda: fleets.status("small").get("readyShards") == 3, 120, "the standby's scale-up")
    await ready(fleets, "small")
    assert handled in cluster.pods[standby].log()
    await asyncio.to_thread(play, cluster, 3)

    await fleets.patch("small", {"spec": {"shards": 1}})
    cluster.pods[standby].process.kill()  # at the change (SIGKILL: no peering cleanup, handler cut short)
    await wait_for(lambda: cluster.pods[standby].status.restarts == 1, 60, "the kubelet's restart")
    await wait_for(lambda: fleets.status("small").get("readyShards") == 1, 120, "converged after the kill")
    shards = lambda: sorted(p for p in cluster.pods if p.startswith("small-shard"))  # noqa: E731
    await wait_for(lambda: shards() == ["small-shard-0"], 60, "the leaving shards gone")
    await ready(fleets, "small")
    await asyncio.to_thread(play, cluster, 1)


async def test_the_operator_pod_reads_a_managed_redis_fleets_load_and_its_cleanup_finishes(
    api: Emulator, cluster: Cluster, operator: ApiAccess, kubelet: KubeletController
) -> None:
    """The defect this guards: the operator imported the engine, whose numba cache cannot be written on
    its read-only root, so a fleet with Redis never got its load read and its deletion hung."""
    fleets = Api(api, None, "")
    await fleets.apply(yaml.safe_load((EXAMPLES / "managed-redis.yaml").read_text()))
    await ready(fleets, "durable", timeout=180)
    (address,) = cluster.resolve("durable.default.svc")[:1]
    with FleetClient(f"{address}:{GRPC_PORT}", timeout=30) as client:
        created = await asyncio.to_thread(client.create, 24, GameConfig(width=12, height=10, players=2))
        await wait_for(lambda: fleets.status("durable").get("games") == 24, 60, "the load read from Redis")
        assert await asyncio.to_thread(client.close, created.ids) == 24
    await wait_for(lambda: fleets.status("durable").get("games") == 0, 60, "the closed games out of the load")
    for pod in operator_pods(cluster):
        assert "RegistryUnavailable" not in pod.log() and "Traceback" not in pod.log(), pod.log()

    response = await api.delete("/apis/gamefleet.dev/v1/namespaces/default/gamefleets/durable")
    assert response.status == 200, await response.text()
    await wait_for(lambda: fleets.fleet("durable") is None, 60, "the cleanup finalizer done")
    await wait_for(lambda: not [p for p in cluster.pods if p.startswith("durable-")], 90, "its pods gone")


async def test_the_operator_pod_runs_the_autoscaled_example_on_its_external_redis(
    api: Emulator, cluster: Cluster, operator: ApiAccess, kubelet: KubeletController, tmp_path: Path
) -> None:
    """autoscaled.yaml as written: its Redis is redis.redis.svc:6379 (here a redis-server on the pod
    network's gateway, by that name in every pod) behind the password Secret the example names. The
    load the shards report reaches the status; deleting the fleet leaves none of its keys."""
    with ExternalRedis(cluster.network.gateway, tmp_path, port=6379) as store:
        cluster.add_external(store.host, "redis.redis.svc", f"redis.redis.svc.{SUFFIX}")
        fleets = Api(api, None, "")
        await fleets.apply(password_secret())
        await fleets.apply(yaml.safe_load((EXAMPLES / "autoscaled.yaml").read_text()))
        await ready(fleets, "autoscaled", timeout=180)
        await asyncio.to_thread(play, cluster, 2, "autoscaled")
        (address,) = cluster.resolve("autoscaled.default.svc")[:1]
        with FleetClient(f"{address}:{GRPC_PORT}", timeout=30) as client:
            await asyncio.to_thread(client.create, 24, GameConfig(width=12, height=10, players=2))
            await wait_for(lambda: fleets.status("autoscaled").get("games") == 24, 60, "the load")
        assert fleets.fleet("autoscaled")["spec"]["shards"] == 2  # 24 of 2 x 8192: minShards holds
        assert any(":snap:" in key for key in await asyncio.to_thread(store.keys, "autoscaled"))

        response = await api.delete("/apis/gamefleet.dev/v1/namespaces/default/gamefleets/autoscaled")
        assert response.status == 200, await response.text()
        await wait_for(lambda: fleets.fleet("autoscaled") is None, 120, "the cleanup finalizer done")
        await wait_for(lambda: not [p for p in cluster.pods if p.startswith("autoscaled-")], 90, "pods gone")
        assert await asyncio.to_thread(store.keys, "autoscaled") == []
